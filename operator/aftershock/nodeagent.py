"""The node agent: what fails a node for ``node_failure`` (ADR 0021), one per node, opt-in.

It runs privileged with the host's PID namespace and cgroup tree, and watches its own Node.
When aftershock writes a request on it (annotation ``aftershock.dev/node-failure``: an id and a
deadline), the agent

1. SIGSTOPs the node's kubelet (the kubelet process whose ``--hostname-override`` is the node,
   or the only kubelet): the node stops posting status and renewing its lease, so the control
   plane marks it NotReady after its grace period, as for a node that lost power or network;
2. freezes the cgroup of every pod bound to the node but its own (cgroup v1 ``freezer.state``,
   v2 ``cgroup.freeze``): their processes stop where they are, holding their sockets and
   files, as on a hung machine;
3. answers on the Node (annotation ``aftershock.dev/node-failure-state``): frozen, when, the
   kubelet's PID and every pod it froze (other namespaces' too).

It thaws (pods, then SIGCONT the kubelet) and answers ``thawed`` when the request is taken back,
or at the request's deadline on its own: the node comes back even if the operator, or the API
server, never speaks again. What it froze is written to a state file first, so an agent that
restarts thaws what an earlier one left.

Limit: the agent is the one process that can thaw the node. If it is killed while the node is
frozen, its container is not restarted (the kubelet is stopped) until someone thaws the node
by hand (``aftershock node-agent --thaw`` on the node, or SIGCONT the kubelet): ADR 0021.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aftershock.chaos.node_failure import REQUEST, STATE, read_json
from aftershock.errors import ApiError
from aftershock.kube import Kube
from aftershock.model import NodeState

log = logging.getLogger("aftershock.nodeagent")


@dataclass(frozen=True)
class Proc:
    """A process by PID and start time (field 22 of /proc/PID/stat): a reused PID is not it."""

    pid: int
    start: int


def _stat_start(proc: Path, pid: int) -> int | None:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def find_kubelet(node: str, proc: Path = Path("/proc"), own_uid: str | None = None) -> Proc | None:
    """The node's kubelet: the one whose ``--hostname-override`` names the node, else the only
    kubelet without one. Where several name it (one host serving one node name to two
    clusters, as the test bed's second cluster does), the one whose ``--root-dir`` holds the
    agent's own pod (`own_uid`): the kubelet that runs the agent runs the node it fails."""
    named: list[tuple[int, str]] = []
    unnamed: list[tuple[int, str]] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0].decode(errors="replace")) != "kubelet":
            continue
        args = [a.decode(errors="replace") for a in argv[1:] if a]
        override = _flag(args, "--hostname-override")
        root_dir = _flag(args, "--root-dir") or "/var/lib/kubelet"
        if override == node:
            named.append((int(entry.name), root_dir))
        elif override is None:
            unnamed.append((int(entry.name), root_dir))
    found = named or (unnamed if len(unnamed) == 1 else [])
    if len(found) > 1 and own_uid is not None:
        # Through the kubelet's own root (/proc/PID/root): the agent's mount namespace is not it.
        found = [
            (pid, d)
            for pid, d in found
            if (proc / str(pid) / "root" / d.lstrip("/") / "pods" / own_uid).is_dir()
        ]
    if len(found) != 1:
        return None
    pid = found[0][0]
    start = _stat_start(proc, pid)
    return None if start is None else Proc(pid, start)


def _flag(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def pod_cgroups(root: Path, uids: Iterable[str]) -> list[Path]:
    """The cgroup folders of these pods: ``pod<uid>`` (cgroupfs driver) or
    ``...-pod<uid_with_underscores>.slice`` (systemd driver), in the freezer hierarchy (v1) or
    the unified one (v2)."""
    base = root / "freezer" if (root / "freezer").is_dir() else root
    wanted: dict[str, str] = {}
    for uid in uids:
        wanted[f"pod{uid}"] = uid
        wanted[f"pod{uid.replace('-', '_')}.slice"] = uid
    found: list[Path] = []
    for dirpath, dirnames, _files in os.walk(base):
        depth = len(Path(dirpath).relative_to(base).parts)
        for d in list(dirnames):
            key = d if d in wanted else ("pod" + d.split("-pod", 1)[1] if "-pod" in d else "")
            if key in wanted:
                found.append(Path(dirpath) / d)
                dirnames.remove(d)  # its containers freeze with it
        if depth >= 4:
            dirnames.clear()
    return found


def _freeze_file(cgroup: Path) -> tuple[Path, str, str]:
    if (cgroup / "freezer.state").exists():
        return cgroup / "freezer.state", "FROZEN", "THAWED"
    return cgroup / "cgroup.freeze", "1", "0"


def freeze(cgroup: Path) -> None:
    path, frozen, _ = _freeze_file(cgroup)
    path.write_text(frozen)


def thaw(cgroup: Path) -> None:
    path, _, thawed = _freeze_file(cgroup)
    with contextlib.suppress(FileNotFoundError):  # the pod is gone: nothing of it is frozen
        path.write_text(thawed)


def frozen(cgroup: Path) -> bool:
    path, value, _ = _freeze_file(cgroup)
    try:
        return path.read_text().strip() in (value, "FREEZING")
    except FileNotFoundError:
        return False


@dataclass
class Held:
    """What one failure froze: enough to undo it, also from a state file."""

    ident: str
    until: float
    kubelet: Proc | None
    cgroups: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        k = None if self.kubelet is None else [self.kubelet.pid, self.kubelet.start]
        return {
            "id": self.ident,
            "until": self.until,
            "kubelet": k,
            "cgroups": self.cgroups,
            "pods": self.pods,
        }

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Held:
        k = raw.get("kubelet")
        return cls(
            ident=str(raw.get("id", "")),
            until=float(raw.get("until") or 0),
            kubelet=None if not k else Proc(int(k[0]), int(k[1])),
            cgroups=[str(c) for c in raw.get("cgroups") or []],
            pods=[str(p) for p in raw.get("pods") or []],
        )


class Host:
    """The node's processes and cgroups, as the agent changes them."""

    def __init__(
        self, node: str, cgroup_root: Path, proc: Path, state_file: Path, own_uid: str | None = None
    ) -> None:
        self.node = node
        self.own_uid = own_uid
        self.cgroup_root = cgroup_root
        self.proc = proc
        self.state_file = state_file

    def fail(self, held: Held, pod_uids: dict[str, str]) -> None:
        """Stop the kubelet, then freeze the pods (`pod_uids`: uid -> namespace/name)."""
        kubelet = find_kubelet(self.node, self.proc, self.own_uid)
        if kubelet is None:
            raise RuntimeError(f"no kubelet process for node {self.node} (hostPID, --hostname-override?)")
        cgroups = pod_cgroups(self.cgroup_root, pod_uids)
        held.kubelet = kubelet
        held.cgroups = [str(c) for c in cgroups]
        held.pods = sorted(pod_uids.values())
        # Recorded before anything is done: an agent that restarts undoes it.
        self._save(held)
        os.kill(kubelet.pid, signal.SIGSTOP)
        for c in cgroups:
            freeze(c)

    def restore(self, held: Held) -> None:
        """Thaw the pods, then let the kubelet go on (only the process that was stopped)."""
        for c in held.cgroups:
            thaw(Path(c))
        k = held.kubelet
        if k is not None and _stat_start(self.proc, k.pid) == k.start:
            os.kill(k.pid, signal.SIGCONT)
        self.state_file.unlink(missing_ok=True)

    def _save(self, held: Held) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(held.as_json()))
        tmp.replace(self.state_file)

    def left_behind(self) -> Held | None:
        try:
            return Held.of(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return None


class Agent:
    """Follows the node's request annotation; holds at most one failure at a time."""

    def __init__(self, kube: Kube, host: Host, own_uid: str) -> None:
        self.kube = kube
        self.host = host
        self.own_uid = own_uid
        self.held: Held | None = None
        self._deadline: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        left = self.host.left_behind()
        if left is not None:
            log.warning("thawing what an earlier agent left frozen (%s)", left.ident)
            self.host.restore(left)
            await self._answer(left.ident, "thawed", note="left by an earlier agent")

    async def on_node(self, node: NodeState) -> None:
        async with self._lock:
            request = read_json(node.annotations.get(REQUEST))
            ident = str(request.get("id", ""))
            until = float(request.get("until") or 0)
            if self.held is not None and (ident != self.held.ident or time.time() >= self.held.until):
                await self._restore("the request was taken back")
            if ident and self.held is None and time.time() < until:
                state = read_json(node.annotations.get(STATE))
                if state.get("id") == ident and state.get("state") in ("thawed", "error"):
                    return  # this request was served already (e.g. thawed at its deadline)
                await self._fail(ident, until)

    async def _fail(self, ident: str, until: float) -> None:
        pods = await self.kube.pods_on_node(self.host.node)
        uids = {uid: f"{ns}/{name}" for ns, name, uid in pods if uid != self.own_uid}
        held = Held(ident, until, None)
        try:
            await asyncio.to_thread(self.host.fail, held, uids)
        except Exception as exc:
            log.exception("could not fail node %s", self.host.node)
            await asyncio.to_thread(self.host.restore, held)
            await self._answer(ident, "error", error=str(exc))
            return
        self.held = held
        log.warning("node %s failed (%s): kubelet %s stopped, %d pods frozen", self.host.node, ident,
                    held.kubelet, len(held.cgroups))  # fmt: skip
        self._deadline = asyncio.create_task(self._at_deadline(held))
        await self._answer(
            ident,
            "frozen",
            kubeletPid=None if held.kubelet is None else held.kubelet.pid,
            pods=held.pods,
            cgroups=len(held.cgroups),
        )

    async def _at_deadline(self, held: Held) -> None:
        await asyncio.sleep(max(0.0, held.until - time.time()))
        async with self._lock:
            if self.held is held:
                await self._restore("its deadline passed")

    async def _restore(self, why: str) -> None:
        held = self.held
        if held is None:
            return
        await asyncio.to_thread(self.host.restore, held)
        self.held = None
        if self._deadline is not None and self._deadline is not asyncio.current_task():
            self._deadline.cancel()
        log.warning("node %s back (%s): %s", self.host.node, held.ident, why)
        await self._answer(held.ident, "thawed", note=why)

    async def _answer(self, ident: str, state: str, **extra: Any) -> None:
        body = json.dumps({"id": ident, "state": state, "at": time.time(), **extra}, sort_keys=True)
        for attempt in range(30):
            try:
                await self.kube.patch_node_annotations(self.host.node, {STATE: body})
                return
            except ApiError as exc:
                # The thaw itself does not depend on this answer: it is done already.
                log.warning("could not answer %s on node %s (%s), retrying", state, self.host.node, exc)
                await asyncio.sleep(min(5.0, 0.2 * 2**attempt))


async def run(
    node: str, own_uid: str, cgroup_root: Path, state_dir: Path, proc: Path = Path("/proc")
) -> None:
    """Watch the node for requests until cancelled; thaw whatever is held on the way out."""
    kube = await Kube.connect()
    host = Host(node, cgroup_root, proc, state_dir / f"{node}.json", own_uid)
    agent = Agent(kube, host, own_uid)
    await agent.start()
    try:
        while True:
            try:
                async for seen in kube.watch_node(node, timeout_seconds=120):
                    await agent.on_node(seen)
            except ApiError as exc:
                log.warning("watch of node %s broke (%s); watching again", node, exc)
                await asyncio.sleep(1.0)
    finally:
        if agent.held is not None:
            host.restore(agent.held)
        await kube.close()


def thaw_left_behind(node: str, state_dir: Path, cgroup_root: Path, proc: Path = Path("/proc")) -> str:
    """By hand, on the node: undo what the state file says an agent froze."""
    host = Host(node, cgroup_root, proc, state_dir / f"{node}.json")
    held = host.left_behind()
    if held is None:
        return f"nothing recorded as frozen on {node}"
    host.restore(held)
    return f"thawed {len(held.cgroups)} pod cgroups and the kubelet of {node} ({held.ident})"


__all__ = ["Agent", "Held", "Host", "find_kubelet", "frozen", "pod_cgroups", "run", "thaw_left_behind"]
