"""The harness's own view of every kill: an independent watch on the subject's pods.

No tool under test is trusted to time itself. A daemon thread lists and watches the pods of one
namespace with the official client, under the admin identity, and stamps every event with the
harness's monotonic clock on arrival. `kills()` turns that event log into one `Kill` per pod
kill: when the victim was first seen being deleted and when the set was whole again.

Why "first seen being deleted" and not "delete request sent": the senders are other processes
(the operator, `chaos run`, the Krkn runner) that the harness cannot hook, and the test bed's API
server has no audit log unless it was created with the audit policy (see docs/performance.md).
The first watch event that shows the victim's deletionTimestamp (or its DELETED event, whichever
comes first) is the server's commit of the delete plus one watch delivery: every tool's own
"kill" stamp is earlier by its request's round trip, so the ground truth recovery is a few
milliseconds shorter than any tool's, for every tool alike.

"Ready again" is the first moment after the kill at which the StatefulSet's expected number of
pods are all live (not being deleted), all Ready, and the victim's UID is gone: the replacement's
first Ready event in the usual case. When kwok's by-name delete (ADR 0005) also removes the first
replacement, this is the replacement of the replacement, which is what "recovered" means.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch


@dataclass(frozen=True)
class PodEvent:
    mono: float
    wall: float  # time.time() at arrival: only to match a tool's own kill stamp (same host clock)
    type: str  # ADDED, MODIFIED, DELETED, or LISTED for the initial list
    name: str
    uid: str
    ready: bool
    deleting: bool
    #: (container name, containerID, running, ready) per container status (container kills).
    containers: tuple[tuple[str, str, bool, bool], ...] = ()


@dataclass(frozen=True)
class Kill:
    victim: str
    victim_uid: str
    deleted_at: float  # harness monotonic: first sight of the victim being deleted
    ready_at: float | None  # harness monotonic: the set whole again (None: never, in the log)
    replacement_uid: str | None
    by_tool: bool = True  # False: a deletion no tool asked for (kwok's by-name delete, ADR 0005)
    #: The pods alone whole again, when `ready_at` also waits for the store (PD in the loop).
    pods_ready_at: float | None = None

    @property
    def recovery(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.deleted_at

    @property
    def pod_recovery(self) -> float | None:
        """Recovery of the pods alone (equal to `recovery` without PD in the loop)."""
        at = self.pods_ready_at if self.pods_ready_at is not None else self.ready_at
        return None if at is None else at - self.deleted_at


def _pod_event(type_: str, obj: dict[str, Any], mono: float, wall: float) -> PodEvent:
    meta = obj.get("metadata") or {}
    conds = (obj.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    containers = tuple(
        (
            str(cs.get("name") or ""),
            str(cs.get("containerID") or ""),
            "running" in (cs.get("state") or {}),
            bool(cs.get("ready")),
        )
        for cs in (obj.get("status") or {}).get("containerStatuses") or []
    )
    return PodEvent(
        mono=mono,
        wall=wall,
        type=type_,
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        ready=ready,
        deleting=meta.get("deletionTimestamp") is not None,
        containers=containers,
    )


class PodWatcher:
    """List then watch the pods of one namespace until stopped; every event time-stamped."""

    def __init__(self, api_client: client.ApiClient, namespace: str, *, max_rounds: int = 50) -> None:
        self._v1 = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.events: list[PodEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._max_rounds = max_rounds  # bounded: a broken API server does not spin this forever
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name=f"gt-{namespace}", daemon=True)

    def start(self) -> PodWatcher:
        self._thread.start()
        if not self._synced.wait(30):
            raise RuntimeError(f"ground-truth watch of {self.namespace} did not sync in 30s")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout=2)

    def snapshot(self) -> list[PodEvent]:
        with self._lock:
            return list(self.events)

    def _append(self, ev: PodEvent) -> None:
        with self._lock:
            self.events.append(ev)

    def _run(self) -> None:
        rv: str | None = None
        for _ in range(self._max_rounds):
            if self._stop.is_set():
                return
            try:
                if rv is None:
                    resp = self._v1.list_namespaced_pod(
                        self.namespace, _request_timeout=30, _preload_content=False
                    )
                    listed = json.loads(resp.data)
                    now, wall = time.monotonic(), time.time()
                    for obj in listed["items"]:
                        self._append(_pod_event("LISTED", obj, now, wall))
                    rv = listed["metadata"]["resourceVersion"]
                    self._synced.set()
                w = watch.Watch()
                self._watch = w
                for event in w.stream(
                    self._v1.list_namespaced_pod,
                    self.namespace,
                    resource_version=rv,
                    timeout_seconds=300,
                    allow_watch_bookmarks=True,
                    deserialize=False,
                ):
                    now, wall = time.monotonic(), time.time()
                    obj = event["object"]
                    if event["type"] == "BOOKMARK":
                        rv = obj["metadata"]["resourceVersion"]
                        continue
                    if event["type"] == "ERROR":
                        rv = None  # 410 Gone: list again
                        break
                    rv = obj["metadata"]["resourceVersion"]
                    self._append(_pod_event(event["type"], obj, now, wall))
                    if self._stop.is_set():
                        return
            except Exception:
                if self._stop.is_set():
                    return
                rv = None
                self._stop.wait(0.5)


#: How far a deletion may land from the tool's own kill stamp and still be that kill: the
#: stamp is taken before the request (so the deletion is later, by its round trip), and clocks of
#: processes on one host agree to well under the lower bound.
MATCH_BEFORE_S = 0.05
MATCH_AFTER_S = 2.0


def kills(
    events: list[PodEvent], expected_pods: int, stamps: list[tuple[str, float]] | None = None
) -> list[Kill]:
    """Every disruption in the log, in order. A disruption starts when a Ready, live pod is seen
    being deleted while the set was whole; deletions during a recovery (kwok's by-name delete of
    a replacement that is not Ready yet) belong to that recovery.

    `stamps` are the tool's own (victim name, wall time) per kill. With them, a disruption that no
    stamp explains is marked ``by_tool=False``: kwok's by-name delete can also hit a replacement
    that has just become Ready, which the set then has to recover from a second time. Such a
    disruption is no trial; a tool kill that lands during it starts its own.
    """
    pending = list(stamps) if stamps is not None else None
    live: dict[str, PodEvent] = {}  # uid -> latest event
    found: list[Kill] = []
    current: dict[str, Any] | None = None

    def whole() -> bool:
        pods = [e for e in live.values() if not e.deleting]
        return len(pods) == expected_pods and all(e.ready for e in pods)

    def stamp_for(ev: PodEvent) -> tuple[str, float] | None:
        if pending is None:
            return None
        return next(
            (
                s
                for s in pending
                if s[0] == ev.name and s[1] - MATCH_BEFORE_S <= ev.wall <= s[1] + MATCH_AFTER_S
            ),
            None,
        )

    for ev in events:
        before = live.get(ev.uid)
        was_whole = whole()
        if ev.type == "DELETED":
            live.pop(ev.uid, None)
        else:
            live[ev.uid] = ev
        gone_now = ev.type == "DELETED" or ev.deleting
        hit = before is not None and before.ready and not before.deleting and gone_now
        if hit:
            stamp = stamp_for(ev)
            starts = current is None and was_whole
            if current is not None and not current["by_tool"] and stamp is not None:
                found.append(Kill(current["victim"], current["uid"], current["at"], None, None, False))
                starts = True
            if starts:
                if stamp is not None and pending is not None:
                    pending.remove(stamp)
                by_tool = pending is None or stamp is not None
                current = {"victim": ev.name, "uid": ev.uid, "at": ev.mono, "by_tool": by_tool}
                continue
        if current is not None and whole() and current["uid"] not in live:
            repl = next((e.uid for e in live.values() if e.name == current["victim"]), None)
            found.append(
                Kill(current["victim"], current["uid"], current["at"], ev.mono, repl, current["by_tool"])
            )
            current = None
    if current is not None:
        found.append(Kill(current["victim"], current["uid"], current["at"], None, None, current["by_tool"]))
    return found


# --- PD in the loop: when the victim's store reported again -------------------------------------


@dataclass(frozen=True)
class StoreReport:
    """One report a store made to the PD stand-in, stamped by the harness on receipt."""

    mono: float
    wall: float
    kind: str  # "put" (PutStore: a process started) or "heartbeat"
    store_id: int
    address: str  # of the store at that moment; its first DNS label is the pod's name
    start: int  # the store's start_timestamp at that moment (unix seconds)


class PdWatch:
    """Every PutStore and heartbeat the PD stand-in receives, stamped as it arrives.

    The stand-in runs in the harness's process and the stores report to it (simulated ones in
    a thread here, real processes over HTTP on the real node): wrapping its two report methods
    sees each report at the moment PD takes it, with no poll in between. This is the store-level
    ground truth, independent of how any tool reads PD.
    """

    def __init__(self, stand_in: Any) -> None:
        self.reports: list[StoreReport] = []
        self._lock = threading.Lock()
        self._addresses: dict[int, str] = {}
        self._starts: dict[int, int] = {}
        put, beat = stand_in.put_store, stand_in.heartbeat

        def put_store(store_id: int, *, address: str, start_timestamp: int, **kw: Any) -> None:
            put(store_id, address=address, start_timestamp=start_timestamp, **kw)
            self._record("put", store_id, address=address, start=start_timestamp)

        def heartbeat(store_id: int) -> None:
            beat(store_id)
            self._record("heartbeat", store_id)

        stand_in.put_store = put_store
        stand_in.heartbeat = heartbeat
        #: Every GET the stand-in answered: (path, arrived, left: harness monotonic; newest
        #: heartbeat in PD then, ns), for the step-by-step breakdown of a store-Up stamp.
        self.answers: list[tuple[str, float, float, int]] = []

        def on_answer(path: str, arrived: float, left: float, newest_ns: int) -> None:
            with self._lock:
                self.answers.append((path, arrived, left, newest_ns))

        stand_in.on_answer = on_answer

    def _record(
        self, kind: str, store_id: int, *, address: str | None = None, start: int | None = None
    ) -> None:
        mono, wall = time.monotonic(), time.time()
        with self._lock:
            if address is not None:
                self._addresses[store_id] = address
            if start is not None:
                self._starts[store_id] = start
            self.reports.append(
                StoreReport(
                    mono,
                    wall,
                    kind,
                    store_id,
                    self._addresses.get(store_id, ""),
                    self._starts.get(store_id, 0),
                )
            )

    def snapshot(self) -> list[StoreReport]:
        with self._lock:
            return list(self.reports)

    def answered(self) -> list[tuple[str, float, float, int]]:
        with self._lock:
            return list(self.answers)


def store_back(reports: list[StoreReport], pod: str, after: float) -> float | None:
    """When the store of `pod` was back after the kill at `after` (harness monotonic): its first
    heartbeat from a process that started after the kill (a new start_timestamp, and a heartbeat
    no older than that start: PD's own "heartbeated since start"). None if not in the log."""

    def names_pod(r: StoreReport) -> bool:
        return r.address.split(":", 1)[0].split(".", 1)[0] == pod

    before = [r.start for r in reports if r.mono <= after and names_pod(r)]
    old_start = before[-1] if before else None
    for r in reports:
        if r.mono <= after or not names_pod(r) or r.kind != "heartbeat":
            continue
        if r.start != old_start and r.wall >= r.start:
            return r.mono
    return None


# --- container kills (the pod stays; its container is replaced in place) ----------------------


@dataclass(frozen=True)
class ContainerKill:
    """One container kill as the harness's own pod watch saw it: the victim's container went
    down (not running, not Ready, or a new containerID) and a new container came up Ready, in the
    same pod (same UID)."""

    victim: str
    stamp: float  # the tool's kill stamp (wall) this kill answers
    uid: str
    old_id: str
    down_at: float  # harness monotonic: first sight of the container down or replaced
    ready_at: float | None  # the new container Ready (None: never, in the log)
    new_id: str | None
    same_pod: bool  # the pod's UID never changed (no delete)

    @property
    def recovery(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.down_at


def _container(ev: PodEvent, name: str | None) -> tuple[str, str, bool, bool] | None:
    for c in ev.containers:
        if name is None or c[0] == name:
            return c
    return None


def container_kills(
    events: list[PodEvent], stamps: list[tuple[str, float]], container: str | None = None
) -> list[ContainerKill]:
    """Per tool kill stamp (victim pod, wall time of the kill request), what the watch saw:
    the container Ready with some ID before the stamp, then first down or replaced after it,
    then a different containerID running and Ready."""
    found = []
    for victim, stamp in stamps:
        mine = [e for e in events if e.name == victim]
        before = [e for e in mine if e.wall <= stamp and e.type != "DELETED"]
        if not before:
            continue
        last = before[-1]
        c = _container(last, container)
        if c is None:
            continue
        old_id = c[1]
        down_at = ready_at = None
        new_id = None
        for e in mine:
            if e.wall < stamp - MATCH_BEFORE_S:
                continue
            now = _container(e, container)
            if now is None:
                continue
            if down_at is None and (now[1] != old_id or not now[2] or not now[3]):
                down_at = e.mono
            if down_at is not None and now[1] and now[1] != old_id and now[2] and now[3]:
                ready_at, new_id = e.mono, now[1]
                break
        if down_at is None:
            continue
        uids = {e.uid for e in mine if e.wall >= stamp - MATCH_BEFORE_S}
        found.append(
            ContainerKill(victim, stamp, last.uid, old_id, down_at, ready_at, new_id, uids == {last.uid})
        )
    return found
