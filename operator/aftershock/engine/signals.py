"""The remediator's signals: its Kubernetes Events, seen by one watch for the whole Campaign.

A trial asks, when its observation ends, for the remediator's Events seen since the kill: the
first with the "detected" reason and the first "resolved" one after it become milestones, and
all of them, in the order seen, are the trial's actions. Times are when the watch saw each
Event (monotonic for offsets from the kill, wall for the record): core/v1 Event timestamps are
whole seconds, coarser than the recoveries measured. An Event the API folds into an earlier
one (its count grows) is a new occurrence. Events the watch had not yet delivered when the trial
ended are not the trial's: the window is kill -> end of observation, settle window included.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from aftershock.engine.ports import Clock, EventApi
from aftershock.errors import ApiError
from aftershock.model import (
    REMEDIATOR_DETECTED,
    REMEDIATOR_RESOLVED,
    ClusterEvent,
    Milestone,
    RemediatorAction,
    RemediatorSignals,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seen:
    event: ClusterEvent
    mono: float
    wall: float


@dataclass(frozen=True)
class TrialSignals:
    """What the remediator said during one trial."""

    milestones: dict[str, Milestone]
    actions: tuple[RemediatorAction, ...]


def in_window(
    seen: Sequence[Seen], signals: RemediatorSignals, kill_mono: float, end_mono: float
) -> TrialSignals:
    """The remediator's Events seen in [kill, end], as milestones and actions. Pure."""
    actions: list[RemediatorAction] = []
    milestones: dict[str, Milestone] = {}
    for s in seen:
        if not kill_mono <= s.mono <= end_mono or s.event.controller != signals.controller:
            continue
        offset = s.mono - kill_mono
        actions.append(RemediatorAction(s.event.reason, s.event.message, s.event.involved, s.wall, offset))
        if s.event.reason == signals.detected_reason and REMEDIATOR_DETECTED not in milestones:
            milestones[REMEDIATOR_DETECTED] = Milestone(s.wall, offset)
        # Resolved counts only once it was detected: a "resolved" left over from an earlier
        # incident must not read as this one's.
        elif (
            s.event.reason == signals.resolved_reason
            and REMEDIATOR_DETECTED in milestones
            and REMEDIATOR_RESOLVED not in milestones
        ):
            milestones[REMEDIATOR_RESOLVED] = Milestone(s.wall, offset)
    return TrialSignals(milestones, tuple(actions))


class SignalWatch:
    """List, then watch, the namespace's Events; keeps those of one controller, as seen."""

    def __init__(
        self,
        api: EventApi,
        namespace: str,
        signals: RemediatorSignals,
        clock: Clock,
        *,
        keep: int = 10_000,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self.signals = signals
        self._clock = clock
        self._keep = keep
        self._seen: list[Seen] = []
        self._counts: dict[str, int] = {}
        self._synced = asyncio.Event()
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max

    async def wait_synced(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def trial(self, kill_mono: float, end_mono: float) -> TrialSignals:
        return in_window(self._seen, self.signals, kill_mono, end_mono)

    def _note(self, event: ClusterEvent, *, record: bool) -> None:
        if event.controller != self.signals.controller:
            return
        before = self._counts.get(event.uid, 0)
        self._counts[event.uid] = max(before, event.count)
        if record and event.count > before:
            self._seen.append(Seen(event, self._clock.monotonic(), self._clock.wall()))
            # A long Campaign must not grow without bound: only recent trials ask.
            del self._seen[: max(0, len(self._seen) - self._keep)]

    async def run(self) -> None:
        """Until cancelled. What the first list finds happened before any trial: only counted."""
        backoff = self._backoff_initial
        rv = ""
        while True:
            try:
                if not rv:
                    events, rv = await self._api.list_events(self._namespace)
                    for e in events:
                        # After a broken watch, what the list shows new is recorded late but kept.
                        self._note(e, record=self._synced.is_set())
                    self._synced.set()
                async for etype, event, version in self._api.watch_events(self._namespace, rv):
                    rv = version or rv
                    if etype in ("ADDED", "MODIFIED"):
                        self._note(event, record=True)
                    backoff = self._backoff_initial
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                rv = ""
                if isinstance(exc, ApiError) and exc.status == 410:
                    continue
                log.warning("event watch in %s failed, retrying in %.1fs: %s", self._namespace, backoff, exc)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, self._backoff_max)
