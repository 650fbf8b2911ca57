"""The three clocks of a trial, and their p50/p95 over a Campaign: time to detect, time to first
action, time to recover. Pure: over attempts.

- Time to detect: seconds from the fault to the first matching alert firing (``alert_firing``,
  the on-call person's clock, `spec.detection`); without one, to the remediator's "detected"
  Event (``remediator_detected``, `spec.remediator.signals`). None when neither was seen.
- Time to first action: seconds from the fault to the remediator's first action seen in the
  trial window (`aftershock.records.RemediatorAction`, from whichever source saw it).
- Time to recover: the recovery time, as everywhere else (from the first sign the fault took
  effect, ADR 0008); only recovered trials have one.

Statistics are over the attempts that completed their trial (recovered or not): a trial that no
alert reported, or in which the remediator did nothing, counts in ``trials`` but adds no value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from aftershock import model, stats
from aftershock.model import AttemptRecord, Outcome

#: Where a time to detect came from.
FROM_ALERT: Final = "alert"
FROM_REMEDIATOR: Final = "remediator"

#: The clocks by key (JSON, export columns, metrics' label), with what each measures.
CLOCKS: Final = (
    ("detect", "fault -> first alert firing (else the remediator's 'detected' Event)"),
    ("firstAction", "fault -> the remediator's first action"),
    ("recover", "the recovery time (recovered trials)"),
)


@dataclass(frozen=True)
class TrialClocks:
    """One attempt's three clocks, seconds (None: not seen)."""

    detect: float | None
    detect_source: str | None
    first_action: float | None
    recover: float | None

    def by_key(self) -> dict[str, float | None]:
        return {"detect": self.detect, "firstAction": self.first_action, "recover": self.recover}


def trial_clocks(attempt: AttemptRecord) -> TrialClocks:
    alert = attempt.milestones.get(model.ALERT_FIRING)
    said = attempt.milestones.get(model.REMEDIATOR_DETECTED)
    detect, source = (
        (alert.offset, FROM_ALERT)
        if alert is not None
        else (said.offset, FROM_REMEDIATOR)
        if said is not None
        else (None, None)
    )
    actions = [a.offset for a in model.remediator_actions(attempt.final_state) if a.offset >= 0]
    recover = attempt.recovery_seconds if attempt.outcome is Outcome.RECOVERED else None
    return TrialClocks(detect, source, min(actions) if actions else None, recover)


def _completed(attempts: Iterable[AttemptRecord]) -> list[AttemptRecord]:
    return [a for a in attempts if a.outcome is not None and a.outcome.completes_trial]


def clock_values(attempts: Iterable[AttemptRecord]) -> dict[str, list[float]]:
    """Each clock's values over the completed trials, in the attempts' order."""
    values: dict[str, list[float]] = {key: [] for key, _ in CLOCKS}
    for attempt in _completed(attempts):
        for key, value in trial_clocks(attempt).by_key().items():
            if value is not None:
                values[key].append(value)
    return values


def clocks_summary(attempts: Iterable[AttemptRecord]) -> dict[str, Any]:
    """Per clock: how many completed trials have a value, and its p50/p95 (None: no value)."""
    done = _completed(attempts)
    values = clock_values(done)
    summary: dict[str, Any] = {"trials": len(done)}
    for key, _ in CLOCKS:
        found = values[key]
        summary[key] = {
            "n": len(found),
            "p50Seconds": stats.percentile(found, 50),
            "p95Seconds": stats.percentile(found, 95),
        }
    return summary
