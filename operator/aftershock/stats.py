"""Recovery statistics and the Campaign verdict: pure functions over ledger records.

Rule: no I/O here. Everything takes values (seconds, `AttemptRecord`s) and returns values, so
the engine, the status projection and ``aftershock report`` all compute the same numbers
from the same ledger rows.

Percentiles are Hyndman-Fan type 7 (linear interpolation between closest ranks), which is
numpy's default and ``statistics.quantiles(..., method="inclusive")``: a p95 reported here
can be checked with either tool.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aftershock.model import AttemptRecord, Outcome, Verdict


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values``, type 7; None for no values.

    Monotone in every value, which `slo_unreachable` relies on. ``math.inf`` is accepted
    (an unrecovered trial counted as "never"); interpolating between two infinities gives
    infinity rather than NaN.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be between 0 and 100, got {q}")
    if any(math.isnan(v) for v in values):
        raise ValueError("percentile of a NaN is undefined")
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    h = (n - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    frac = h - lo
    a, b = ordered[lo], ordered[hi]
    if frac == 0.0 or a == b:
        return float(a)
    return float(a + frac * (b - a))


@dataclass(frozen=True)
class RecoverySummary:
    """Recovery times of a campaign's recovered trials, in seconds; None when there are none."""

    n: int
    p50: float | None
    p95: float | None
    max: float | None
    mean: float | None


def summarize(recovery_seconds: Sequence[float]) -> RecoverySummary:
    n = len(recovery_seconds)
    return RecoverySummary(
        n=n,
        p50=percentile(recovery_seconds, 50),
        p95=percentile(recovery_seconds, 95),
        max=max(recovery_seconds) if n else None,
        mean=math.fsum(recovery_seconds) / n if n else None,
    )


@dataclass(frozen=True)
class AttemptCounts:
    """How many attempts of a campaign ended each way (``in_flight``: no outcome yet)."""

    recovered: int = 0
    unrecovered: int = 0
    interrupted: int = 0
    infra_error: int = 0
    dry_run: int = 0
    in_flight: int = 0

    @property
    def completed(self) -> int:
        """Trials whose index is filled (`Outcome.completes_trial`)."""
        return self.recovered + self.unrecovered + self.dry_run

    @property
    def total(self) -> int:
        return self.completed + self.interrupted + self.infra_error + self.in_flight

    def plus(self, outcome: Outcome | None) -> AttemptCounts:
        """These counts and one more attempt that ended as `outcome` (None: in flight)."""
        name = "in_flight" if outcome is None else _COUNT_FIELDS[outcome]
        return dataclasses.replace(self, **{name: getattr(self, name) + 1})


_COUNT_FIELDS: dict[Outcome, str] = {
    Outcome.RECOVERED: "recovered",
    Outcome.UNRECOVERED: "unrecovered",
    Outcome.INTERRUPTED: "interrupted",
    Outcome.INFRA_ERROR: "infra_error",
    Outcome.DRY_RUN: "dry_run",
}


def count_outcomes(outcomes: Iterable[Outcome | None]) -> AttemptCounts:
    tally = dict.fromkeys((*Outcome, None), 0)
    for outcome in outcomes:
        tally[outcome] += 1
    return AttemptCounts(
        recovered=tally[Outcome.RECOVERED],
        unrecovered=tally[Outcome.UNRECOVERED],
        interrupted=tally[Outcome.INTERRUPTED],
        infra_error=tally[Outcome.INFRA_ERROR],
        dry_run=tally[Outcome.DRY_RUN],
        in_flight=tally[None],
    )


def recovery_times(completed: Iterable[AttemptRecord]) -> list[float]:
    """Recovery seconds of the recovered trials, in the order given."""
    return [s for a in completed if (s := a.recovery_seconds) is not None]


def verdict(
    *,
    requested_trials: int,
    completed: Sequence[AttemptRecord],
    stopped_on_unrecovered: bool,
    aborted_on_infra_error: bool,
    slo_p95_seconds: float | None,
    stopped_on_slo: bool = False,
) -> Verdict:
    """The Campaign's verdict from its completed trials (`verdict_of_counts` gives the rules).

    ``completed`` holds the attempts that completed a trial (`Outcome.completes_trial`);
    interrupted, infra-error and in-flight attempts are retried, do not count, and are
    ignored if passed.
    """
    completed = [a for a in completed if a.outcome is not None and a.outcome.completes_trial]
    return verdict_of_counts(
        requested_trials=requested_trials,
        counts=count_outcomes(a.outcome for a in completed),
        recoveries=recovery_times(completed),
        stopped_on_unrecovered=stopped_on_unrecovered,
        aborted_on_infra_error=aborted_on_infra_error,
        slo_p95_seconds=slo_p95_seconds,
        stopped_on_slo=stopped_on_slo,
    )


def verdict_of_counts(
    *,
    requested_trials: int,
    counts: AttemptCounts,
    recoveries: Sequence[float],
    stopped_on_unrecovered: bool,
    aborted_on_infra_error: bool,
    slo_p95_seconds: float | None,
    stopped_on_slo: bool = False,
) -> Verdict:
    """The Campaign's verdict from how its attempts ended (`counts`) and the recovered trials'
    recovery times (`recoveries`). Rules, first match wins:

    1. ``HardFail``: the campaign stopped because a trial did not recover
       (``recovery.stopOnUnrecovered``, the default). The remaining trials never ran.
    2. ``InfraError``: the campaign was aborted because the test bed itself kept failing
       (API errors, no steady state to start from). Says nothing about the subject.
    3. ``Fail``: the campaign stopped early because `slo_unreachable` said no remaining
       trial could bring the p95 back within the SLO.
    4. ``""`` (no verdict) while the campaign has not finished: fewer completed trials than
       requested and neither stopped nor aborted.
    5. ``""`` for a dry run: no trial measured anything (every completed trial is ``dry_run``).
    6. ``Partial``: all trials ran but some did not recover (only possible with
       ``stopOnUnrecovered: false``). The p95 of the others would flatter the subject, so
       the SLO is not judged.
    7. ``Fail``: every trial recovered but the p95 recovery time exceeds ``slo.p95RecoverySeconds``.
    8. ``Pass``: every trial recovered and the p95 is within the SLO, or there is no SLO.

    Interrupted, infra-error and in-flight attempts are retried and do not count.
    """
    if stopped_on_unrecovered:
        return Verdict.HARD_FAIL
    if aborted_on_infra_error:
        return Verdict.INFRA_ERROR
    if stopped_on_slo:
        return Verdict.FAIL
    if counts.completed < requested_trials:
        return Verdict.NONE
    if counts.recovered + counts.unrecovered == 0:
        return Verdict.NONE
    if counts.unrecovered:
        return Verdict.PARTIAL
    p95 = percentile(recoveries, 95)
    if slo_p95_seconds is not None and p95 is not None and p95 > slo_p95_seconds:
        return Verdict.FAIL
    return Verdict.PASS


def slo_unreachable(recovery_seconds_so_far: Sequence[float], remaining_trials: int, slo_p95: float) -> bool:
    """Whether the final p95 must exceed ``slo_p95`` whatever the remaining trials measure.

    The best case for the remaining trials is that each recovers in 0 s; the percentile is
    monotone in every value, so if even that p95 exceeds the SLO, no outcome can pass and
    the campaign may stop early. Pass unrecovered trials as ``math.inf``.
    """
    if remaining_trials < 0:
        raise ValueError(f"remaining_trials must be >= 0, got {remaining_trials}")
    best = percentile([*recovery_seconds_so_far, *([0.0] * remaining_trials)], 95)
    return best is not None and best > slo_p95
