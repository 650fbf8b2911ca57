"""Simulated tikv-server processes for pods where no process runs (kwok nodes).

Each Ready pod of the pod source "runs" one store process, which reports to the stand-in as
`tests.pdstub.store` does on a real kubelet: ``PutStore`` with ``start_timestamp`` = now when
it starts, then a heartbeat every `Timing.heartbeat_interval`, the first one a full interval after
the start (tikv-server registers its store before it starts its heartbeat tick). A pod that is
not Ready, being deleted, gone, or replaced (new uid) "dies": its heartbeats stop. Ready again
later, it starts a new process.

The fleet never sets a store's state: the stand-in judges it from the heartbeats alone, with the
same rules as for real store processes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.pdstub.server import TIKV_PORT, TIKV_STATUS_PORT, VERSION, PodSource

if TYPE_CHECKING:
    from tests.pdstub.server import PdStandIn


def store_id_for_ordinal(ordinal: int) -> int:
    """The id a fresh PD allocates to the n-th store: 1, then 4, 5, 6, ... (2 and 3 go to the
    first region and its peer). `tests.pdstub.store` uses the same rule for ``POD_NAME``."""
    return 1 if ordinal == 0 else ordinal + 3


@dataclass
class _Process:
    uid: str
    store_id: int
    next_heartbeat: float


class StoreFleet:
    """One simulated store process per Ready pod; `step()` advances them to PD's clock now."""

    def __init__(
        self, stand_in: PdStandIn, pods: PodSource, *, headless_service: str, namespace: str
    ) -> None:
        self._stand_in = stand_in
        self._pods = pods
        self.headless_service = headless_service
        self.namespace = namespace
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}  # by pod name: a replaced pod keeps its volume, hence its store
        self._starts: dict[str, int] = {}  # last start_timestamp by pod name
        self._running: dict[str, _Process] = {}
        #: Seconds a replacement pod is Ready before its store process starts: a test that needs a
        #: trial caught mid-recovery holds the victim's store back this long (0: at once).
        self.restart_delay_seconds = 0.0
        self._ready_seen: dict[str, float] = {}  # by pod uid: when a replacement was first seen Ready

    def running(self) -> dict[str, int]:
        """Pod name -> store id of every process alive now."""
        with self._lock:
            return {name: p.store_id for name, p in self._running.items()}

    def step(self) -> None:
        with self._lock:
            pods = {p["name"]: p for p in self._pods()}
            now = self._stand_in.now()
            for name, proc in list(self._running.items()):
                pod = pods.get(name)
                if pod is None or not pod.get("ready") or pod["uid"] != proc.uid:
                    del self._running[name]  # killed: no more heartbeats
            for name, pod in sorted(pods.items()):
                if (
                    pod.get("ready")
                    and name not in self._running
                    and not self._held_back(name, pod["uid"], now)
                ):
                    self._start(name, pod["uid"], now)
            interval = self._stand_in.timing.heartbeat_interval
            for proc in self._running.values():
                if now >= proc.next_heartbeat:
                    self._stand_in.heartbeat(proc.store_id)
                    while proc.next_heartbeat <= now:
                        proc.next_heartbeat += interval

    def _held_back(self, name: str, uid: str, now: float) -> bool:
        if name not in self._starts or self.restart_delay_seconds <= 0:
            return False  # a first start is never held: the subject must come up healthy
        return now - self._ready_seen.setdefault(uid, now) < self.restart_delay_seconds

    def _start(self, name: str, uid: str, now: float) -> None:
        store_id = self._ids.get(name)
        if store_id is None:
            store_id = store_id_for_ordinal(len(self._ids))
            self._ids[name] = store_id
        # A real tikv-server takes seconds to start, so its start second always moves; a
        # simulated pod can be back within the same second: move it on by one.
        start = max(int(now), self._starts.get(name, 0) + 1)
        self._starts[name] = start
        host = f"{name}.{self.headless_service}.{self.namespace}.svc"
        self._stand_in.put_store(
            store_id,
            address=f"{host}:{TIKV_PORT}",
            status_address=f"{host}:{TIKV_STATUS_PORT}",
            version=VERSION,
            start_timestamp=start,
        )
        self._running[name] = _Process(uid, store_id, now + self._stand_in.timing.heartbeat_interval)
