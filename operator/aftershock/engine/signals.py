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

from collections.abc import Sequence
from dataclasses import dataclass

from aftershock.engine.listwatch import ListWatch
from aftershock.engine.ports import Clock, EventApi
from aftershock.model import (
    REMEDIATOR_DETECTED,
    REMEDIATOR_RESOLVED,
    ClusterEvent,
    Milestone,
    RemediatorAction,
    RemediatorSignals,
)


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
        actions.append(
            RemediatorAction(
                s.event.reason, s.event.message, s.event.involved, s.wall, offset, identity=s.event.controller
            )
        )
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
    """List, then watch, the namespace's Events; keeps those of one controller, as seen. Its
    `last_action_mono` makes it a `RemediatorActivity` (the quiet wait's)."""

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
        self.signals = signals
        self._clock = clock
        self._keep = keep
        self._seen: list[Seen] = []
        self._counts: dict[str, int] = {}
        self._last_mono: float | None = None

        self._loop = ListWatch[ClusterEvent](
            what=f"event watch in {namespace}",
            list_=lambda: api.list_events(namespace),
            watch=lambda version: api.watch_events(namespace, version),
            on_list=self._listed,
            on_change=self._changed,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )

    async def wait_synced(self, timeout: float) -> bool:
        return await self._loop.wait_synced(timeout)

    def last_action_mono(self) -> float | None:
        """When the remediator's latest Event was seen (monotonic); None: none yet."""
        return self._last_mono

    def trial(self, kill_mono: float, end_mono: float) -> TrialSignals:
        return in_window(self._seen, self.signals, kill_mono, end_mono)

    def _listed(self, events: Sequence[ClusterEvent]) -> None:
        # What the first list finds happened before any trial: only counted. After a broken
        # watch, what the list shows new is recorded late but kept.
        for event in events:
            self._note(event, record=self._loop.synced)

    def _changed(self, etype: str, event: ClusterEvent) -> None:
        if etype != "DELETED":
            self._note(event, record=True)

    def _note(self, event: ClusterEvent, *, record: bool) -> None:
        if event.controller != self.signals.controller:
            return
        before = self._counts.get(event.uid, 0)
        self._counts[event.uid] = max(before, event.count)
        if record and event.count > before:
            self._seen.append(Seen(event, self._clock.monotonic(), self._clock.wall()))
            self._last_mono = self._seen[-1].mono
            # A long Campaign must not grow without bound: only recent trials ask.
            del self._seen[: max(0, len(self._seen) - self._keep)]

    async def run(self) -> None:
        """Until cancelled."""
        await self._loop.run()
