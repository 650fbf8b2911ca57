"""The suite's own cluster and the faults it can inflict on the control plane.

The suite runs against a cluster of its own (``AFTERSHOCK_CLUSTER_NAME``, default
``aftershock-reliability``), because it kills and restarts that cluster's API server and etcd.
kwokctl (binary runtime) starts each component as a detached process, records its pid in
``pids/<name>.pid`` and its binary and arguments in ``kwok.yaml``; kwokctl itself has no
per-component stop/start (only ``stop/start cluster``), so a component is restarted here the way
kwokctl started it: same binary, same arguments, same working directory, output appended to
``logs/<name>.log``, and its new pid written back to the pid file so ``kwokctl delete cluster``
(``cluster.sh down``) still finds it.

A real cluster has a kubelet or systemd that restarts a control-plane process that exited;
here `ControlPlane.supervise` plays that part (kube-controller-manager and kube-scheduler exit
on their own when they cannot renew their leader lease during a long API-server outage).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import testbed

CLUSTER_NAME = os.environ.get("RELIABILITY_CLUSTER_NAME", "aftershock-reliability")


def cache_root() -> Path:
    return Path(os.environ.get("AFTERSHOCK_CACHE", str(Path.home() / ".cache" / "aftershock")))


def _cluster_env(name: str) -> dict[str, str]:
    return dict(os.environ, AFTERSHOCK_CLUSTER_NAME=name)


def start_cluster(name: str = CLUSTER_NAME, real_node: bool = False) -> testbed.Cluster:
    """Start (or reuse) the named cluster; build the binaries first if needed. `real_node`: with
    a real node of its own (realnode.sh's instance named after the cluster: its own containerd,
    kubelet, bridge and cgroups, beside the default cluster's)."""
    bin_dir = testbed.run([str(testbed.TESTBED / "build.sh")], timeout=3600).stdout.strip().splitlines()[-1]
    running = (
        subprocess.run(
            [str(testbed.TESTBED / "cluster.sh"), "status"],
            capture_output=True,
            check=False,
            env=_cluster_env(name),
        ).returncode
        == 0
    )
    env = dict(_cluster_env(name), AFTERSHOCK_REAL_NODE="1" if real_node else "0")
    out = testbed.run([str(testbed.TESTBED / "cluster.sh"), "up"], timeout=600, env=env)
    kubeconfig = out.stdout.strip().splitlines()[-1]
    return testbed.Cluster(kubeconfig=kubeconfig, bin_dir=bin_dir, started_here=not running)


def stop_cluster(name: str = CLUSTER_NAME) -> None:
    testbed.run(
        [str(testbed.TESTBED / "cluster.sh"), "down"], check=False, timeout=300, env=_cluster_env(name)
    )


def import_subject_images(name: str = CLUSTER_NAME) -> None:
    """The subject images (shell, etcd, Python for the TiKV stand-in) into the cluster's real node."""
    testbed.run(
        [str(testbed.TESTBED / "images.sh"), "import-subjects"],
        timeout=1800,
        env=dict(os.environ, AFTERSHOCK_REAL_NODE_INSTANCE=name),
    )


def audit_log_path(name: str = CLUSTER_NAME) -> Path:
    out = testbed.run([str(testbed.TESTBED / "cluster.sh"), "audit-log"], env=_cluster_env(name))
    return Path(out.stdout.strip())


@dataclass(frozen=True)
class Component:
    name: str
    binary: str
    args: tuple[str, ...]
    work_dir: str


class ControlPlane:
    """Kill and restart the named cluster's components by pid, as kwokctl started them."""

    def __init__(self, name: str = CLUSTER_NAME) -> None:
        self.name = name
        self.dir = cache_root() / "clusters" / name / "kwok" / "clusters" / name
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: list[tuple[str, float, str]] = []  # (component, when, why)

    def components(self) -> dict[str, Component]:
        found: dict[str, Component] = {}
        for doc in yaml.safe_load_all((self.dir / "kwok.yaml").read_text()):
            for c in (doc or {}).get("components") or []:
                found[c["name"]] = Component(
                    name=c["name"],
                    binary=c["binary"],
                    args=tuple(c.get("args") or ()),
                    work_dir=c.get("workDir") or str(self.dir),
                )
        return found

    def pid(self, component: str) -> int:
        return int((self.dir / "pids" / f"{component}.pid").read_text().strip())

    def alive(self, component: str) -> bool:
        child = self._children.get(component)
        if child is not None:
            return child.poll() is None
        try:
            status = Path(f"/proc/{self.pid(component)}/status").read_text()
        except (OSError, ValueError):
            return False
        state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "X")
        return state not in ("Z", "X")

    def kill(self, component: str) -> None:
        """SIGKILL: no graceful shutdown, as an OOM kill or a node losing power would do it."""
        pid = self.pid(component)
        child = self._children.get(component)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if child is not None:
                if child.poll() is not None:
                    break
            elif not self.alive(component):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"{component} (pid {pid}) survived SIGKILL for 10s")

    def start(self, component: str, why: str) -> int:
        c = self.components()[component]
        log = open(self.dir / "logs" / f"{component}.log", "ab")  # noqa: SIM115 (the child keeps it)
        try:
            proc = subprocess.Popen(
                [c.binary, *c.args],
                cwd=c.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # like kwokctl: its own session, not our terminal's
            )
        finally:
            log.close()
        self._children[component] = proc
        # kwokctl writes the pid without a newline; so do we, so that `kwokctl delete cluster` reads it.
        (self.dir / "pids" / f"{component}.pid").write_text(str(proc.pid))
        self.restarts.append((component, time.time(), why))
        return proc.pid

    def restart(self, component: str, down_seconds: float, why: str) -> None:
        self.kill(component)
        time.sleep(down_seconds)
        self.start(component, why)

    def supervise(self) -> list[str]:
        """Start every component that is not running (what a kubelet would do); say which."""
        started = []
        for name in self.components():
            if not self.alive(name):
                self.start(name, "found dead (supervisor)")
                started.append(name)
        return started

    def wait_ready(self, cluster: testbed.Cluster, timeout: float = 120) -> None:
        def ready() -> bool:
            # A /readyz that takes longer than 10 s is a not-ready answer, asked again until the
            # deadline: on a loaded machine (load 20) one such call raised and failed the module.
            try:
                proc = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
            except subprocess.TimeoutExpired:
                return False
            return proc.returncode == 0

        testbed.wait_for(ready, timeout, interval=0.3, what="API server /readyz")

    def describe(self) -> dict[str, Any]:
        return {name: {"pid": self.pid(name), "alive": self.alive(name)} for name in self.components()}
