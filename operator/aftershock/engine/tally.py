"""What a Campaign's attempts add up to so far, kept as each one is committed.

The status, the verdict and the next trial need only this of the ledger's attempts: how many
ended each way, the recovered trials' recovery times, which attempt finished last, and how
many attempts each trial index has had. Reading every attempt back (with its pods, probe
looks and milestones) to rebuild these on each of a trial's ~3 status publishes made a
publish cost grow with the Campaign's length; the tally makes it constant.

It is seeded once from the ledger when a runner takes the Campaign up (`Tally.of`), then
updated with each attempt the runner commits (`Tally.record`), so it is always what the
ledger holds: the same numbers as a rebuild from every attempt, which is what a restarted
operator publishes. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from aftershock import clocks, stats
from aftershock.model import AttemptRecord


def finish_order(record: AttemptRecord) -> tuple[float, int, int]:
    """Which of two attempts finished later (ties, and attempts without a finish time, by trial
    index, then attempt number): the order a rebuild from the ledger picks the last trial by."""
    return (record.finished_at or 0.0, record.trial_index, record.attempt)


@dataclass
class Tally:
    """The Campaign's attempts as far as the status, the verdict and the next trial need them."""

    #: Attempts by how they ended (``in_flight``: begun, not ended).
    counts: stats.AttemptCounts = field(default_factory=stats.AttemptCounts)
    #: Recovery seconds of the recovered trials, in the order they were committed.
    recoveries: list[float] = field(default_factory=list)
    #: The completed trials' clocks (`aftershock.clocks`: detect, firstAction, recover), each
    #: with the trials that had a value, in the order they were committed.
    clocks: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k, _ in clocks.CLOCKS})
    #: The attempt that finished last (`finish_order`): the status's ``lastTrial``.
    last: AttemptRecord | None = None
    #: Attempts made so far per trial index: the next attempt at an index is one more.
    attempts_at: dict[int, int] = field(default_factory=dict)
    #: The subject's pod count the latest attempt in the ledger was judged against, when the
    #: Campaign was taken up (later trials learn it from their own gate).
    expected_pods: int | None = None

    @classmethod
    def of(cls, attempts: Iterable[AttemptRecord]) -> Tally:
        """The tally of every attempt the ledger holds, in the ledger's order (trial index,
        then attempt number)."""
        tally = cls()
        for a in attempts:
            tally.record(a)
            expected = a.initial_state.get("expectedPods")
            if isinstance(expected, int):
                tally.expected_pods = expected
        return tally

    def record(self, attempt: AttemptRecord) -> None:
        """One more attempt committed to the ledger (ended, or, from the ledger, in flight)."""
        self.counts = self.counts.plus(attempt.outcome)
        self.attempts_at[attempt.trial_index] = self.attempts_at.get(attempt.trial_index, 0) + 1
        if attempt.outcome is None:
            return
        seconds = attempt.recovery_seconds
        if seconds is not None and attempt.outcome.completes_trial:
            self.recoveries.append(seconds)
        for key, values in clocks.clock_values([attempt]).items():
            self.clocks[key].extend(values)
        if self.last is None or finish_order(attempt) > finish_order(self.last):
            self.last = attempt

    @property
    def completed(self) -> int:
        """Trials whose index is filled (`Outcome.completes_trial`)."""
        return self.counts.completed

    def attempt_number(self, index: int) -> int:
        """The number the next attempt at trial `index` gets (1-based)."""
        return self.attempts_at.get(index, 0) + 1

    def slo_values(self) -> list[float]:
        """The completed trials' recovery times, an unrecovered one (no recovery time) counted
        as never: what `stats.slo_unreachable` judges."""
        return [*self.recoveries, *[float("inf")] * (self.completed - len(self.recoveries))]
