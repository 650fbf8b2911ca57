"""A live picture of the subject's pods: one list, then one watch, for the whole campaign.

A single long-lived watch serves the steady-state gate and every trial's observation, so a
trial costs no list or watch requests of its own. Subscribers receive every change with the
moment it was observed (monotonic and wall clock). When the watch breaks, the view lists
again and reports the difference as synthetic events, so a subscriber never misses that a
pod disappeared; only the precision of that one moment suffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass

from aftershock.engine.ports import Clock, PodApi
from aftershock.errors import ApiError
from aftershock.model import PodState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observation:
    type: str  # ADDED, MODIFIED, DELETED
    pod: PodState
    mono: float
    wall: float


class PodView:
    def __init__(
        self,
        api: PodApi,
        namespace: str,
        selector: str,
        clock: Clock,
        *,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._selector = selector
        self._clock = clock
        self._pods: dict[str, PodState] = {}
        self._subscribers: set[asyncio.Queue[Observation]] = set()
        self._synced = asyncio.Event()
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        #: The last error that kept the view from being current (for conditions), or None.
        self.error: str | None = None
        self.resyncs = 0

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def pods(self) -> list[PodState]:
        """The pods that currently exist, ordered by name."""
        return sorted(self._pods.values(), key=lambda p: p.name)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Observation]]:
        queue: asyncio.Queue[Observation] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def _publish(self, type_: str, pod: PodState) -> None:
        obs = Observation(type_, pod, self._clock.monotonic(), self._clock.wall())
        for q in self._subscribers:
            q.put_nowait(obs)

    def _apply(self, type_: str, pod: PodState) -> None:
        if type_ == "DELETED":
            self._pods.pop(pod.uid, None)
        else:
            self._pods[pod.uid] = pod
        self._publish(type_, pod)

    def _resync(self, pods: list[PodState]) -> None:
        fresh = {p.uid: p for p in pods}
        first = not self._synced.is_set()
        for uid, old in list(self._pods.items()):
            if uid not in fresh:
                self._apply("DELETED", old)
        for uid, pod in fresh.items():
            if uid not in self._pods:
                self._apply("ADDED", pod)
            elif self._pods[uid] != pod:
                self._apply("MODIFIED", pod)
        if not first:
            self.resyncs += 1

    async def run(self) -> None:
        """List and watch until cancelled. Transient errors back off with jitter."""
        backoff = self._backoff_initial
        rv = ""
        while True:
            try:
                if not rv:
                    pods, rv = await self._api.list_pods(self._namespace, self._selector)
                    self._resync(pods)
                    self._synced.set()
                    self.error = None
                async for event in self._api.watch_pods(self._namespace, self._selector, rv):
                    rv = event.resource_version or rv
                    if event.type in ("ADDED", "MODIFIED", "DELETED"):
                        self._apply(event.type, event.pod)
                    backoff = self._backoff_initial
                # The server closed the watch normally (timeout): resume from rv.
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                gone = isinstance(exc, ApiError) and exc.status == 410
                rv = ""  # list again: we cannot know what we missed
                if gone:
                    continue
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("pod watch in %s failed, retrying in %.1fs: %s", self._namespace, backoff, exc)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, self._backoff_max)


async def next_observation(queue: asyncio.Queue[Observation], timeout: float) -> Observation | None:
    """The next observation, or None after `timeout` seconds (never negative)."""
    try:
        return await asyncio.wait_for(queue.get(), max(timeout, 0.0))
    except TimeoutError:
        return None
