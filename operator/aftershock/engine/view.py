"""A live picture of the subject's pods for the whole Campaign, from a shared watch.

A single long-lived watch (`aftershock.engine.podwatch`, shared with the other Campaigns of the
namespace or of the cluster) serves the steady-state gate and every trial's observation, so a
trial costs no list or watch requests of its own. Subscribers receive every change with the
moment it was observed (monotonic and wall clock). When the watch breaks, the feed lists
again and reports the difference as synthetic events, so a subscriber never misses that a
pod disappeared; only the precision of that one moment suffers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aftershock.engine.listwatch import wait_set
from aftershock.engine.podwatch import PodFeed, PodWatches
from aftershock.model import LabelSelector, PodState


@dataclass(frozen=True)
class Observation:
    type: str  # ADDED, MODIFIED, DELETED
    pod: PodState
    mono: float
    wall: float


class PodView:
    """The pods of one Campaign: those in its namespace that its selector matches.

    Fed by a shared `PodFeed` that watches every pod there; the selector is matched here, with
    the API server's rules (`LabelSelector.matches`), and a pod whose labels stop (or start)
    matching leaves (or enters) the view as a DELETED (or ADDED) event, as a watch with the
    selector would report it."""

    def __init__(self, watches: PodWatches, namespace: str, selector: LabelSelector) -> None:
        self._watches = watches
        self.namespace = namespace
        self.selector = selector
        self._pods: dict[str, PodState] = {}
        self._subscribers: set[asyncio.Queue[Observation]] = set()
        self._synced = asyncio.Event()
        self._feed: PodFeed | None = None
        #: Told of every change to a pod of the view (before, after, when seen): the
        #: remediator's managedFields writes (`aftershock.engine.actions`). None: nobody asks.
        self.on_change: Callable[[PodState | None, PodState, float, float], None] | None = None
        #: Whether `on_change` reads the pods' managedFields (the Campaign names a field
        #: manager): the shared watch then keeps them decoded for this namespace, and else
        #: keeps none (`aftershock.model.ManagedFields`, ADR 0025).
        self.reads_managed_fields = False

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    @property
    def error(self) -> str | None:
        """The last error that kept the shared watch from being current (for conditions), or None."""
        return self._feed.error if self._feed is not None else None

    @property
    def resyncs(self) -> int:
        """Lists after the first, each one reported to the subscribers as a difference."""
        return self._feed.relists if self._feed is not None else 0

    async def wait_synced(self, timeout: float | None = None) -> bool:
        return await wait_set(self._synced, timeout)

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

    def mark_synced(self) -> None:
        """The feed's picture has reached this view (called by the feed)."""
        self._synced.set()

    def offer(self, type_: str, pod: PodState, mono: float, wall: float) -> None:
        """A change the feed saw in this view's namespace (called by the feed)."""
        if pod.namespace != self.namespace:
            return
        known = self._pods.get(pod.uid)
        if type_ != "DELETED" and self.selector.matches(pod.labels):
            self._pods[pod.uid] = pod
            if self.on_change is not None:
                self.on_change(known, pod, mono, wall)
            self._publish(Observation("MODIFIED" if known is not None else "ADDED", pod, mono, wall))
        elif known is not None:
            # Gone, or no longer matching: the API server's selector watch sends DELETED with
            # the last state that matched when only the labels changed.
            del self._pods[pod.uid]
            self._publish(Observation("DELETED", pod if type_ == "DELETED" else known, mono, wall))

    def _publish(self, obs: Observation) -> None:
        for q in self._subscribers:
            q.put_nowait(obs)

    async def run(self) -> None:
        """Take part in the shared watch until cancelled."""
        async with self._watches.share(self) as feed:
            self._feed = feed
            try:
                await asyncio.Event().wait()  # until cancelled
            finally:
                self._feed = None


async def next_observation(queue: asyncio.Queue[Observation], timeout: float) -> Observation | None:
    """The next observation, or None after `timeout` seconds (never negative)."""
    try:
        return await asyncio.wait_for(queue.get(), max(timeout, 0.0))
    except TimeoutError:
        return None
