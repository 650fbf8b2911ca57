"""In-memory fakes of the engine's ports (`aftershock.engine.ports`), shared by the unit tests.

They behave like the real thing where the engine's safety depends on it: `FakeCluster` lists
with a resourceVersion and replays the watch from it, honours the delete's UID precondition
(409 on a mismatch, 404 when the pod is gone), and replaces a deleted pod the way a
StatefulSet controller does (same name, new uid: ADDED, then scheduled, then Ready). Errors
are `aftershock.errors.ApiError`s, as the kube adapter raises them. Time is real but short:
every delay is a few milliseconds unless a test asks for more.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import itertools
import re
import time
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aftershock.engine.outcomes import InfraBackoff
from aftershock.engine.runner import RunnerSettings
from aftershock.errors import ApiError, ConflictError, NotFoundError, ProbeUnavailableError
from aftershock.model import (
    DEFAULT_PROTECTED_NAMESPACES,
    ContainerState,
    EphemeralState,
    ExecResult,
    NodeState,
    PodState,
    ProbeResult,
)
from aftershock.subjects.tikv import TiKVJudging

# --- pods ---------------------------------------------------------------------------------------


def make_pod(
    name: str,
    *,
    namespace: str = "db",
    uid: str | None = None,
    labels: Mapping[str, str] | None = None,
    node: str | None = "node-a",
    ready: bool = True,
    deleting: bool = False,
    restart_count: int = 0,
    shares_process_namespace: bool = True,
    host_network: bool = False,
) -> PodState:
    # A pod IP of its own per name (the node's for hostNetwork), as the pod network gives one.
    ip = "192.0.2.1" if host_network else f"10.88.{sum(map(ord, name)) % 250}.{len(name) + 1}"
    container = ContainerState(
        "main", f"containerd://{name}-c{restart_count}", ready, restart_count, time.time()
    )
    return PodState(
        name=name,
        uid=uid if uid is not None else f"uid-{name}",
        namespace=namespace,
        labels=dict(labels) if labels is not None else {"app": "tikv"},
        node=node,
        phase="Running" if ready else ("Pending" if node is None else "Running"),
        ready=ready,
        restart_count=restart_count,
        created_at=time.time(),
        deleting=deleting,
        owner_kind="StatefulSet",
        containers=(container,),
        shares_process_namespace=shares_process_namespace,
        ip=ip,
        host_network=host_network,
    )


_REQUIREMENT = re.compile(r"^\s*(!?)([^\s!=(),]+)\s*(?:(=|==|!=)\s*(\S*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def selector_matches(query: str, labels: Mapping[str, str]) -> bool:
    """The API server's ``labelSelector`` matching, for the forms `LabelSelector.to_query` writes."""
    parts: list[str] = []
    depth, current = 0, ""
    for ch in query:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    for part in parts:
        m = _REQUIREMENT.match(part)
        if m is None:
            raise ValueError(f"the fake cannot parse selector requirement {part!r}")
        negate, key, eq_op, eq_value, set_op, set_values = m.groups()
        if negate:
            ok = key not in labels
        elif eq_op is not None:
            ok = labels.get(key) == eq_value if eq_op != "!=" else labels.get(key) != eq_value
        elif set_op is not None:
            values = {v.strip() for v in set_values.split(",")}
            ok = labels.get(key) in values if set_op == "in" else labels.get(key) not in values
        else:
            ok = key in labels
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class PodEvent:
    type: str
    pod: PodState
    resource_version: str


@dataclass(frozen=True)
class DeleteCall:
    namespace: str
    name: str
    uid: str
    grace_period_seconds: int


_CLOSE = object()


class FakeCluster:
    """The `PodApi` port in memory, with a StatefulSet controller that replaces deleted pods.

    Knobs (all may be changed while a test runs):
    - ``recreate_delay``, ``schedule_delay``, ``ready_delay``: seconds from the delete to the
      replacement's ADDED, from ADDED to scheduled, from scheduled to Ready.
    - ``ready_delays``: consumed one per replacement before ``ready_delay``; ``None`` in it means
      that replacement never becomes Ready.
    - ``recreate``: False and deleted pods stay gone.
    - ``fail_before_delete`` / ``fail_after_delete``: errors raised by the next delete calls,
      before the pod is deleted, or after it was (the answer lost on the way back).
    """

    def __init__(
        self,
        *,
        recreate_delay: float = 0.005,
        schedule_delay: float = 0.005,
        ready_delay: float = 0.01,
    ) -> None:
        self.recreate_delay = recreate_delay
        self.schedule_delay = schedule_delay
        self.ready_delay = ready_delay
        self.ready_delays: list[float | None] = []
        self.recreate = True
        self.fail_before_delete: list[ApiError] = []
        self.fail_after_delete: list[ApiError] = []
        #: Called with each replacement pod before it is ADDED (the StatefulSet controller
        #: creating missing claims first, as `FakeVolumes` does).
        self.before_replace: Callable[[PodState], None] | None = None
        #: Called right after a delete removed its pod (e.g. to break the watches then).
        self.after_delete: Callable[[], None] | None = None
        #: Every exec call (namespace, pod, container, command), in order.
        self.exec_calls: list[tuple[str, str, str, tuple[str, ...]]] = []
        #: Pods a test kind's fault holds now ("namespace/name"): see `exec_in_pod`.
        self.held: set[str] = set()
        #: Set at the first hold.
        self.holding = asyncio.Event()
        #: Answers of the next exec calls instead of a kill (e.g. an image without sh).
        self.exec_results: list[ExecResult] = []
        #: Nodes by name (node-level kinds), and whether a node agent answers on them: it
        #: freezes on a node_failure request (its pods not Ready) and thaws when it is removed.
        self.nodes: dict[str, NodeState] = {}
        self.node_agent = True
        #: Every node annotation patch (node, annotations), in order.
        self.node_patches: list[tuple[str, dict[str, str | None]]] = []
        #: Ephemeral containers added, per "namespace/pod": name -> (state, exit code).
        self.ephemerals: dict[str, dict[str, tuple[str, int | None]]] = {}
        #: Every ephemeral container added (namespace, pod, the container's body), in order.
        self.ephemeral_calls: list[tuple[str, str, dict[str, Any]]] = []
        #: Errors the next ephemeral container patches raise (a Pod Security refusal, RBAC).
        self.fail_ephemeral: list[ApiError] = []
        #: Pods whose network a partition container holds cut off now ("namespace/name").
        self.partitioned: set[str] = set()
        #: True: ephemeral containers stay waiting (not started) until `start_ephemerals`.
        self.start_waiting = False
        #: Every delete call, in order, whatever it answered.
        self.delete_calls: list[DeleteCall] = []
        #: The pods a delete actually removed, in order.
        self.deleted: list[PodState] = []
        #: Raised by every list call while set (e.g. RBAC refusing the pod list).
        self.list_error: ApiError | None = None
        self.list_calls = 0
        self.watch_calls = 0
        self._pods: dict[tuple[str, str], PodState] = {}
        self._rv = 100
        self._log: list[PodEvent] = []
        self._watchers: list[asyncio.Queue[Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._uids = itertools.count(1)

    # --- setting the scene and looking at it ----------------------------------------------------

    def add_pod(self, pod: PodState) -> PodState:
        self._put("ADDED", pod)
        return pod

    def add_statefulset(
        self,
        prefix: str = "tikv",
        replicas: int = 3,
        *,
        namespace: str = "db",
        labels: Mapping[str, str] | None = None,
    ) -> list[PodState]:
        return [
            self.add_pod(
                dataclasses.replace(
                    make_pod(f"{prefix}-{i}", namespace=namespace, labels=labels, node=f"node-{i}"),
                    owner_name=prefix,
                )
            )
            for i in range(replicas)
        ]

    def pods(self, namespace: str = "db") -> list[PodState]:
        return sorted((p for (ns, _), p in self._pods.items() if ns == namespace), key=lambda p: p.name)

    def pod(self, name: str, namespace: str = "db") -> PodState | None:
        return self._pods.get((namespace, name))

    def modify_pod(self, pod: PodState) -> PodState:
        """The pod as it is now (a MODIFIED event), e.g. decoded from a raw object."""
        self._put("MODIFIED", pod)
        return pod

    def set_ready(self, name: str, ready: bool = True, namespace: str = "db") -> None:
        pod = self._pods[(namespace, name)]
        self._put("MODIFIED", dataclasses.replace(pod, ready=ready, phase="Running"))

    def remove_pod(self, name: str, namespace: str = "db") -> None:
        """The pod disappears without a replacement (not a delete call: nothing is recorded)."""
        pod = self._pods.pop((namespace, name))
        self._emit("DELETED", pod)

    def open_watches(self) -> int:
        """Watches open now (each one a connection to the API server)."""
        return len(self._watchers)

    def break_watches(self, error: ApiError) -> None:
        """Every open watch fails with `error` (410 makes the engine list again)."""
        for q in self._watchers:
            q.put_nowait(error)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for q in self._watchers:
            q.put_nowait(_CLOSE)

    # --- events -----------------------------------------------------------------------------------

    def events_of(self, type_: str) -> list[PodState]:
        """The pods of every event of `type_` so far, in order."""
        return [e.pod for e in self._log if e.type == type_]

    def _put(self, type_: str, pod: PodState) -> None:
        self._pods[(pod.namespace, pod.name)] = pod
        self._emit(type_, pod)

    def _emit(self, type_: str, pod: PodState) -> None:
        self._rv += 1
        event = PodEvent(type_, pod, str(self._rv))
        self._log.append(event)
        for q in self._watchers:
            q.put_nowait(event)

    # --- the PodApi port ------------------------------------------------------------------------

    async def list_pods(self, namespace: str | None, selector: str) -> tuple[list[PodState], str]:
        self.list_calls += 1
        await asyncio.sleep(0)
        if self.list_error is not None:
            raise self.list_error
        pods = [
            p
            for (ns, _), p in sorted(self._pods.items())
            if namespace in (None, ns) and selector_matches(selector, p.labels)
        ]
        return pods, str(self._rv)

    async def watch_pods(
        self, namespace: str | None, selector: str, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncGenerator[PodEvent, None]:
        """Every event after `resource_version`, then live ones, until closed or broken."""
        self.watch_calls += 1
        queue: asyncio.Queue[Any] = asyncio.Queue()
        after = int(resource_version or 0)
        for event in self._log:
            if int(event.resource_version) > after:
                queue.put_nowait(event)
        self._watchers.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is _CLOSE:
                    return
                if isinstance(item, BaseException):
                    raise item
                if namespace in (None, item.pod.namespace) and selector_matches(selector, item.pod.labels):
                    yield item
        finally:
            self._watchers.remove(queue)

    async def delete_pod(self, namespace: str, name: str, uid: str, grace_period_seconds: int) -> None:
        self.delete_calls.append(DeleteCall(namespace, name, uid, grace_period_seconds))
        await asyncio.sleep(0)
        if self.fail_before_delete:
            raise self.fail_before_delete.pop(0)
        pod = self._pods.get((namespace, name))
        if pod is None:
            raise NotFoundError(f'pods "{name}" not found', 404)
        if pod.uid != uid:
            raise ConflictError(
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {pod.uid}", 409
            )
        del self._pods[(namespace, name)]
        self.deleted.append(pod)
        self._emit("DELETED", dataclasses.replace(pod, deleting=True))
        if self.recreate:
            delay = self.ready_delays.pop(0) if self.ready_delays else self.ready_delay
            task = asyncio.create_task(self._replace(pod, delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.after_delete is not None:
            self.after_delete()
        if self.fail_after_delete:
            raise self.fail_after_delete.pop(0)

    async def add_ephemeral_container(
        self, namespace: str, pod: str, uid: str, container: Mapping[str, Any]
    ) -> None:
        """An ephemeral container that runs at once; a partition's ``hold`` cuts the pod off
        until its ``heal`` (by exec) or until `end_ephemeral` ends it."""
        self.ephemeral_calls.append((namespace, pod, dict(container)))
        await asyncio.sleep(0)
        if self.fail_ephemeral:
            raise self.fail_ephemeral.pop(0)
        current = self._pods.get((namespace, pod))
        if current is None:
            raise NotFoundError(f'pods "{pod}" not found', 404)
        if current.uid != uid:
            raise ConflictError(f"Precondition failed: UID in precondition: {uid}", 409)
        key = f"{namespace}/{pod}"
        mode = container["command"][4]
        if self.start_waiting:
            # Added, not started: it holds once `start_ephemerals` runs it.
            self.ephemerals.setdefault(key, {})[container["name"]] = ("waiting", None)
            return
        if mode == "hold":
            self.partitioned.add(key)
            self.ephemerals.setdefault(key, {})[container["name"]] = ("running", None)
        else:  # heal: removes the rules and ends
            self.partitioned.discard(key)
            self.ephemerals.setdefault(key, {})[container["name"]] = ("terminated", 0)

    def start_ephemerals(self) -> None:
        """Every waiting ephemeral container starts: a partition holder cuts its pod off."""
        self.start_waiting = False
        for key, containers in self.ephemerals.items():
            for name, (state, _) in list(containers.items()):
                if state == "waiting":
                    containers[name] = ("running", None)
                    self.partitioned.add(key)

    def end_ephemeral(self, namespace: str, pod: str, exit_code: int, *, keep_rules: bool) -> None:
        """Our container ended by itself: at its deadline (exit 0, rules removed), or killed
        (exit 137, its rules left in place)."""
        key = f"{namespace}/{pod}"
        for name, (state, _) in list(self.ephemerals.get(key, {}).items()):
            if state == "running":
                self.ephemerals[key][name] = ("terminated", exit_code)
        if not keep_rules:
            self.partitioned.discard(key)

    async def ephemeral_containers(self, namespace: str, pod: str) -> tuple[EphemeralState, ...] | None:
        await asyncio.sleep(0)
        current = self._pods.get((namespace, pod))
        if current is None:
            return None
        return tuple(
            EphemeralState(current.uid, state, code, name=name)
            for name, (state, code) in self.ephemerals.get(f"{namespace}/{pod}", {}).items()
        )

    def _exec_partition(self, namespace: str, pod: str, container: str, mode: str) -> ExecResult:
        key = f"{namespace}/{pod}"
        state = self.ephemerals.get(key, {}).get(container)
        if state is None or state[0] != "running":
            raise ApiError(f"container {container} is not running", 400)
        if mode == "check":
            return ExecResult(f"rules {4 if key in self.partitioned else 0}\n", "")
        self.partitioned.discard(key)
        self.ephemerals[key][container] = ("terminated", 0)
        return ExecResult("healed\n", "", "command terminated with non-zero exit code: 137")

    async def exec_in_pod(
        self, namespace: str, pod: str, container: str, command: Sequence[str], timeout: float
    ) -> ExecResult:
        """A kill of the container's main process, as the kubelet then restarts it: the pod
        goes not Ready, a new container (new id, restartCount + 1) starts, then gets Ready."""
        self.exec_calls.append((namespace, pod, container, tuple(command)))
        await asyncio.sleep(0)
        if container.startswith("aftershock-"):
            return self._exec_partition(namespace, pod, container, command[4])
        if command and command[0] in ("hold", "release"):
            # A stand-in for a fault that stays until healed (tests' own chaos kind).
            (self.held.add if command[0] == "hold" else self.held.discard)(f"{namespace}/{pod}")
            if command[0] == "hold":
                self.holding.set()
            return ExecResult(f"{command[0]} ok\n", "")
        if self.exec_results:
            return self.exec_results.pop(0)
        current = self._pods.get((namespace, pod))
        if current is None:
            raise NotFoundError(f'pods "{pod}" not found', 404)
        task = asyncio.create_task(self._restart(current, container))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ExecResult("killed 7 1234\n", "")

    async def get_node(self, name: str) -> NodeState:
        await asyncio.sleep(0)
        node = self.nodes.get(name)
        if node is None:
            raise NotFoundError(f'nodes "{name}" not found', 404)
        return node

    async def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None]) -> None:
        """A merge patch of the node's annotations; with `node_agent` the agent's answer
        follows at once, as the real agent's does a moment later."""
        import json

        self.node_patches.append((name, dict(annotations)))
        node = await FakeCluster.get_node(self, name)  # the store, whatever a test put in front
        merged = {**node.annotations, **{k: v for k, v in annotations.items() if v is not None}}
        for k, v in annotations.items():
            if v is None:
                merged.pop(k, None)
        request_key, state_key = "aftershock.dev/node-failure", "aftershock.dev/node-failure-state"
        if self.node_agent and request_key in annotations:
            on_node = [p for p in self._pods.values() if p.node == name]
            if annotations[request_key] is not None:
                ident = json.loads(str(annotations[request_key]))["id"]
                pods = [f"{p.namespace}/{p.name}" for p in on_node] + ["kube-system/bystander"]
                merged[state_key] = json.dumps(
                    {"id": ident, "state": "frozen", "at": time.time(), "pods": pods}
                )
                for p in on_node:
                    self._put("MODIFIED", dataclasses.replace(p, ready=False))
            elif state_key in merged:
                state = json.loads(merged[state_key])
                merged[state_key] = json.dumps({**state, "state": "thawed", "at": time.time()})
                for p in on_node:
                    self._put("MODIFIED", dataclasses.replace(p, ready=True))
        self.nodes[name] = dataclasses.replace(node, annotations=merged)

    async def _restart(self, pod: PodState, name: str) -> None:
        """What the kubelet does after the container's main process died."""
        old = next(c for c in pod.containers if c.name == name)
        down = dataclasses.replace(old, ready=False, started_at=None)
        others = tuple(c for c in pod.containers if c.name != name)
        pod = dataclasses.replace(pod, ready=False, containers=(down, *others))
        self._put("MODIFIED", pod)
        await asyncio.sleep(self.recreate_delay)
        restarts = old.restart_count + 1
        new = ContainerState(name, f"containerd://{pod.name}-c{restarts}", False, restarts, time.time())
        pod = dataclasses.replace(pod, restart_count=restarts, containers=(new, *others))
        self._put("MODIFIED", pod)
        await asyncio.sleep(self.ready_delay)
        ready = dataclasses.replace(new, ready=True)
        self._put(
            "MODIFIED",
            dataclasses.replace(pod, ready=True, ready_at=time.time(), containers=(ready, *others)),
        )

    async def _replace(self, old: PodState, ready_delay: float | None) -> None:
        """What the StatefulSet controller and the kubelet do after a delete."""
        await asyncio.sleep(self.recreate_delay)
        key = (old.namespace, old.name)
        new = dataclasses.replace(
            old,
            uid=f"uid-{old.name}-r{next(self._uids)}",
            node=None,
            phase="Pending",
            ready=False,
            restart_count=0,
            created_at=time.time(),
            deleting=False,
            ready_at=None,
        )
        if self.before_replace is not None:
            self.before_replace(new)
        self._put("ADDED", new)
        await asyncio.sleep(self.schedule_delay)
        if self._pods.get(key) is not new:
            return
        new = dataclasses.replace(new, node=old.node or "node-x")
        self._put("MODIFIED", new)
        if ready_delay is None:
            return
        await asyncio.sleep(ready_delay)
        if self._pods.get(key) is not new:
            return
        self._put("MODIFIED", dataclasses.replace(new, phase="Running", ready=True, ready_at=time.time()))


class FakeVolumes:
    """The `VolumeApi` port: StatefulSets' volumeClaimTemplates and their claims. As the
    StatefulSet controller does, a replacement pod gets a new claim (new UID) for every
    template whose ``<template>-<pod>`` claim is missing. The UID precondition is the API's."""

    def __init__(self, cluster: FakeCluster, templates: Mapping[str, Sequence[str]]) -> None:
        self.templates = {k: list(v) for k, v in templates.items()}
        self.claims: dict[tuple[str, str], str] = {}
        #: (namespace, name, uid) of every claim a delete removed, in order.
        self.deleted: list[tuple[str, str, str]] = []
        self._uids = itertools.count(1)
        for pod in cluster.pods("db"):
            self._create_missing(pod)
        cluster.before_replace = self._create_missing

    def add_claim(self, name: str, namespace: str = "db") -> str:
        uid = f"pvc-{name}-{next(self._uids)}"
        self.claims[(namespace, name)] = uid
        return uid

    def _create_missing(self, pod: PodState) -> None:
        for template in self.templates.get(pod.owner_name or "", ()):
            if (pod.namespace, f"{template}-{pod.name}") not in self.claims:
                self.add_claim(f"{template}-{pod.name}", pod.namespace)

    async def claim_templates(self, namespace: str, statefulset: str) -> list[str]:
        await asyncio.sleep(0)
        if statefulset not in self.templates:
            raise NotFoundError(f'statefulsets.apps "{statefulset}" not found', 404)
        return list(self.templates[statefulset])

    async def get_claim(self, namespace: str, name: str) -> str | None:
        await asyncio.sleep(0)
        return self.claims.get((namespace, name))

    async def delete_claim(self, namespace: str, name: str, uid: str) -> None:
        await asyncio.sleep(0)
        current = self.claims.get((namespace, name))
        if current is None:
            raise NotFoundError(f'persistentvolumeclaims "{name}" not found', 404)
        if current != uid:
            raise ConflictError(f"Precondition failed: UID in precondition: {uid}", 409)
        del self.claims[(namespace, name)]
        self.deleted.append((namespace, name, uid))


# --- the other ports --------------------------------------------------------------------------------


class FakeLock:
    """The `SubjectLock` port. ``busy``: another Campaign (``other``) holds the subject."""

    def __init__(self, *, busy: bool = False, other: str = "db/other-campaign/uid-other") -> None:
        self.busy = busy
        self.other = other
        self.acquire_calls = 0
        self.release_calls = 0
        self._held = False
        #: The keys held, and every set of keys asked for.
        self.keys: set[str] = set()
        self.asked: list[frozenset[str]] = []

    @property
    def held(self) -> bool:
        return self._held

    def holds(self, keys: Collection[str]) -> bool:
        return self._held and set(keys) <= self.keys

    @property
    def holder(self) -> str | None:
        return self.other if self.busy else None

    @property
    def wait_reason(self) -> tuple[str, str] | None:
        return None

    async def try_acquire(self, keys: Collection[str]) -> bool:
        self.acquire_calls += 1
        self.asked.append(frozenset(keys))
        if self.busy:
            return False
        self._held = True
        self.keys = set(keys)
        return True

    async def release(self) -> None:
        self.release_calls += 1
        self._held = False

    def lose(self) -> None:
        """The lease expired and another Campaign took it (a renewal failed)."""
        self._held = False
        self.busy = True


class FakeProbe(TiKVJudging):  # the judging is TiKV's own, not faked
    """The `SubjectProbe` port, reading the cluster the way PD reads TiKV.

    Each store's start timestamp follows its pod's uid (a replacement pod is a restarted store);
    a store is Up when its pod is Ready. ``healthy = False`` makes PD report the subject unhealthy
    whatever the pods say; ``error`` makes every check raise it.
    """

    def __init__(
        self,
        *,
        healthy: bool = True,
        error: Exception | None = None,
        during_check: Callable[[], None] | None = None,
    ) -> None:
        self.healthy = healthy
        self.error = error
        #: Called while a check is under way (the world changes while PD is asked).
        self.during_check = during_check
        self.checks = 0
        self.closed = False
        self._starts: dict[str, int] = {}
        self._store_ids: dict[str, int] = {}

    def start_timestamp(self, pod: PodState) -> int:
        return self._starts.setdefault(pod.uid, 1_700_000_000 + len(self._starts))

    async def check(self, pods: Sequence[PodState], now: float) -> ProbeResult:
        self.checks += 1
        if self.during_check is not None:
            self.during_check()
        await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error
        reasons = [f"store of {p.name} is not Up" for p in pods if not p.ready]
        if not self.healthy:
            reasons.append("PD: region health check failed")
        return ProbeResult(
            healthy=not reasons,
            reasons=tuple(reasons),
            restarts={p.name: self.start_timestamp(p) for p in pods},
            up={p.name: p.ready for p in pods},
            summary={
                "storeIds": {
                    p.name: self._store_ids.setdefault(p.name, len(self._store_ids) + 1) for p in pods
                }
            },
        )

    async def close(self) -> None:
        self.closed = True


def unavailable(message: str = "PD at http://pd.db.svc:2379 answered 503") -> ProbeUnavailableError:
    return ProbeUnavailableError(message, 503)


class ListSink:
    """The `StatusSink` and `EventSink` ports: keeps every status published and event emitted."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self._changed = asyncio.Event()

    async def publish(self, status: Mapping[str, Any]) -> None:
        self.statuses.append(copy.deepcopy(dict(status)))
        self._changed.set()

    async def emit(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))
        self._changed.set()

    @property
    def last(self) -> dict[str, Any]:
        assert self.statuses, "no status was published"
        return self.statuses[-1]

    def condition(self, type_: str, status: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        body = self.last if status is None else status
        for c in body.get("conditions", []):
            if c["type"] == type_:
                return dict(c)
        return None

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 3.0
    ) -> dict[str, Any]:
        """The first status published that satisfies `predicate`; fails after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for status in self.statuses[seen:]:
                if predicate(status):
                    return status
            seen = len(self.statuses)
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"no status satisfied the predicate in {timeout}s; last: {self.statuses[-1:]}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


class RealClock:
    """The `Clock` port on the real clocks (the fakes' delays are milliseconds)."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class Stop:
    """The `StopSignal` port on an `asyncio.Event`."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._deleted = False

    def set(self, *, deleted: bool = False) -> None:
        self._deleted = deleted
        self._event.set()

    @property
    def deleted(self) -> bool:
        return self._deleted

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        return self._event.is_set()


# --- a Campaign that runs fast, for tests that drive the whole engine -----------------------------

FAST_SETTINGS = RunnerSettings(
    protected_namespaces=DEFAULT_PROTECTED_NAMESPACES,
    probe_interval=0.02,
    lock_retry_interval=0.05,
    infra=InfraBackoff(initial=0.01, max=0.05),
    kill_retry_budget=5.0,
)


def fast_campaign(**overrides: Any) -> dict[str, Any]:
    """A Campaign spec that runs fast: no interval, no stable period, short timeouts."""
    spec: dict[str, Any] = {
        "subject": {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}},
        "chaos": {"type": "node_kill", "mode": "one"},
        "trials": 3,
        "intervalSeconds": 0,
        "steadyState": {"timeoutSeconds": 5, "stableSeconds": 0},
        "recovery": {"timeoutSeconds": 5, "settleSeconds": 0},
        "seed": 7,
    }
    spec.update(overrides)
    return spec
