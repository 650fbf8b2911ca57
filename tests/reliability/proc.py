"""The operator as a real process for the reliability suite: like tests/e2e's, authenticated as
its own ServiceAccount, plus what this suite needs to watch it closely:

- every start and every exit is recorded, and an exit the suite did not cause is a crash;
- optionally under libfaketime (a wall clock the suite can step, monotonic left alone);
- a network witness: the `netguard` audit hook logs every connect and name lookup the process
  makes, and a sampler maps the process's socket inodes to /proc/<pid>/net/{tcp,tcp6,udp,udp6}
  (the kernel's view, so a connection made outside Python would show too).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tests.e2e.operator import free_port, operator_command

NETGUARD = Path(__file__).resolve().parent / "netguard"
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def _loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", "ip6-localhost", ""):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _hex_addr(text: str) -> str:
    """An address from /proc/net/tcp (little-endian hex) as text."""
    addr, _ = text.split(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    return str(ipaddress.IPv6Address(b"".join(words)))


@dataclass
class Operator:
    kubeconfig: str
    db: Path
    workdir: Path
    namespaces: list[str] | None = None  # None: --all-namespaces
    extra_args: list[str] = field(default_factory=list)
    allow_loopback_pd: bool = True
    faketime_file: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    starts: int = 0
    kills: int = 0  # exits the suite caused
    crashes: list[tuple[float, str]] = field(default_factory=list)  # exits it did not: (when, how)
    remote_peers: set[str] = field(default_factory=set)  # kernel view: every remote address seen
    _log: TextIO | None = None
    _sampler: threading.Thread | None = None
    _sampling: threading.Event = field(default_factory=threading.Event)

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    @property
    def net_log(self) -> Path:
        return self.workdir / "operator-net.jsonl"

    def start(self) -> None:
        if self.metrics_port == 0:
            self.metrics_port = free_port()
        args = operator_command(
            self.db,
            self.kubeconfig,
            self.metrics_port,
            self.namespaces,
            allow_loopback_pd=self.allow_loopback_pd,
        )
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, PYTHONUNBUFFERED="1")
        env.pop("AFTERSHOCK_ALLOW_LOOPBACK_PD", None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD), env.get("PYTHONPATH", "")]))
        env["RELIABILITY_NET_LOG"] = str(self.net_log)
        if self.faketime_file is not None:
            env.update(
                LD_PRELOAD=str(LIBFAKETIME),
                FAKETIME_TIMESTAMP_FILE=str(self.faketime_file),
                FAKETIME_DONT_FAKE_MONOTONIC="1",
                FAKETIME_NO_CACHE="1",
            )
        env.update(self.extra_env)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a")  # noqa: SIM115 (kept open for the process's life)
        self._log.write(
            f"\n===== start #{self.starts + 1} at {time.time():.3f}: {' '.join(args + self.extra_args)}\n"
        )
        self._log.flush()
        self.proc = subprocess.Popen(
            args + self.extra_args, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self.starts += 1
        if self._sampler is None:
            self._sampling.clear()
            self._sampler = threading.Thread(target=self._sample, name="operator-sockets", daemon=True)
            self._sampler.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> bool:
        """True when running. An exit the suite did not cause is recorded as a crash and the
        operator started again (as its Deployment would), so the run goes on and the crash is
        reported, not hidden."""
        if self.proc is None or self.proc.poll() is None:
            return True
        self.crashes.append((time.time(), f"exit code {self.proc.returncode}"))
        self.start()
        return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful stop: the crash the ledger must survive."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1

    def stop(self) -> None:
        self._sampling.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._sampler is not None:
            self._sampler.join(timeout=5)
            self._sampler = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- the network witness ---------------------------------------------------------------

    def _sample(self) -> None:
        while not self._sampling.wait(0.1):
            proc = self.proc
            if proc is None or proc.poll() is not None:
                continue
            try:
                inodes = set()
                for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                    target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                    m = re.fullmatch(r"socket:\[(\d+)\]", target)
                    if m:
                        inodes.add(m.group(1))
                for table in ("tcp", "tcp6", "udp", "udp6"):
                    lines = Path(f"/proc/{proc.pid}/net/{table}").read_text().splitlines()[1:]
                    for line in lines:
                        cols = line.split()
                        if len(cols) > 9 and cols[9] in inodes:
                            remote = _hex_addr(cols[2])
                            if remote not in ("0.0.0.0", "::"):
                                self.remote_peers.add(remote)
            except (OSError, ValueError):
                continue  # the process went away between two reads

    def non_loopback_contacts(self) -> list[str]:
        """Everything the operator contacted or looked up that is not loopback (both witnesses)."""
        bad = [f"kernel: socket to {peer}" for peer in sorted(self.remote_peers) if not _loopback(peer)]
        if self.net_log.exists():
            for line in self.net_log.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec["event"] == "socket.getaddrinfo" or rec["event"] == "socket.gethostbyname":
                    host = eval_repr(rec["host"])
                    if not _loopback(str(host)):
                        bad.append(f"python: name lookup of {host!r}")
                else:
                    addr = eval_repr(rec["addr"])
                    if rec.get("family") == 1:  # AF_UNIX: local by definition
                        continue
                    host = addr[0] if isinstance(addr, tuple) else addr
                    if not _loopback(str(host)):
                        bad.append(f"python: {rec['event']} to {addr!r}")
        return bad

    def net_events(self) -> int:
        return len(self.net_log.read_text().splitlines()) if self.net_log.exists() else 0


def eval_repr(text: str) -> object:
    """The address a repr() describes (str, bytes, tuples of those and ints)."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
