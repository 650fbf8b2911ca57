"""Detection from the alerting chain, per trial and over a Campaign: time from the fault to
the first matching alert firing (time to detect) and to every such alert resolved, as the
receiver got Alertmanager's notifications. Pure: over attempts and the ledger's notices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aftershock import model, stats
from aftershock.ledger.alerts import AlertNotice
from aftershock.model import AttemptRecord


@dataclass(frozen=True)
class DetectionTimings:
    """Seconds from the kill to the first matching alert firing and to all of them resolved
    (None: not seen)."""

    firing: float | None
    resolved: float | None


def detection_timings(attempt: AttemptRecord) -> DetectionTimings:
    firing = attempt.milestones.get(model.ALERT_FIRING)
    resolved = attempt.milestones.get(model.ALERT_RESOLVED)
    return DetectionTimings(
        None if firing is None else firing.offset, None if resolved is None else resolved.offset
    )


def listens(spec: Mapping[str, Any]) -> bool:
    """Whether the Campaign (its spec as recorded) listened for alerts."""
    return isinstance(spec.get("detection"), Mapping)


def detection_summary(attempts: Iterable[AttemptRecord]) -> dict[str, Any]:
    """Time to detect (fault -> alert_firing) and to alert resolved, p50/p95, over the attempts
    that completed their trial; a trial whose fault no alert reported counts in `trials` only."""
    done = [a for a in attempts if a.outcome is not None and a.outcome.completes_trial]
    timings = [detection_timings(a) for a in done]
    firing = [t.firing for t in timings if t.firing is not None]
    resolved = [t.resolved for t in timings if t.resolved is not None]
    return {
        "trials": len(done),
        "alerted": len(firing),
        "resolved": len(resolved),
        "timeToDetectP50Seconds": stats.percentile(firing, 50),
        "timeToDetectP95Seconds": stats.percentile(firing, 95),
        "timeToResolveP50Seconds": stats.percentile(resolved, 50),
        "timeToResolveP95Seconds": stats.percentile(resolved, 95),
    }


def notices_of(attempt: AttemptRecord, notices: Iterable[AlertNotice]) -> list[dict[str, Any]]:
    """The attempt's notifications, in the order received."""
    return [
        n.as_json() for n in notices if (n.trial_index, n.attempt) == (attempt.trial_index, attempt.attempt)
    ]
