"""What the remediator said in each trial (its "detected" and "resolved" Events, its actions),
read from the attempts the ledger holds; summarised over a campaign. Pure: over attempts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aftershock import model, stats
from aftershock.model import AttemptRecord


@dataclass(frozen=True)
class RemediatorTimings:
    """What the remediator said in one attempt: seconds from the kill to its "detected" and
    "resolved" Events (None: it did not say so), and its Events in the trial window."""

    detect: float | None
    resolve: float | None
    actions: tuple[model.RemediatorAction, ...]


def remediator_timings(attempt: AttemptRecord) -> RemediatorTimings:
    detected = attempt.milestones.get(model.REMEDIATOR_DETECTED)
    resolved = attempt.milestones.get(model.REMEDIATOR_RESOLVED)
    return RemediatorTimings(
        None if detected is None else detected.offset,
        None if resolved is None else resolved.offset,
        model.remediator_actions(attempt.final_state),
    )


def has_signals(attempts: Iterable[AttemptRecord]) -> bool:
    """Whether any attempt was watched for the remediator's Events (its Campaign said how)."""
    return any("remediatorActions" in a.final_state for a in attempts)


def remediator_summary(attempts: Iterable[AttemptRecord]) -> dict[str, Any] | None:
    """Medians of time-to-detect and time-to-resolve, and actions per trial, over completed
    attempts; None when the Campaign's remediator did not say how it reports."""
    done = [a for a in attempts if a.outcome is not None and a.outcome.completes_trial]
    if not has_signals(done):
        return None
    timings = [remediator_timings(a) for a in done]
    detects = [t.detect for t in timings if t.detect is not None]
    resolves = [t.resolve for t in timings if t.resolve is not None]
    actions = [len(t.actions) for t in timings]
    return {
        "trials": len(done),
        "detected": len(detects),
        "resolved": len(resolves),
        "detectP50Seconds": stats.percentile(detects, 50),
        "detectP95Seconds": stats.percentile(detects, 95),
        "resolveP50Seconds": stats.percentile(resolves, 50),
        "resolveP95Seconds": stats.percentile(resolves, 95),
        "actionsPerTrial": (sum(actions) / len(actions)) if actions else None,
    }
