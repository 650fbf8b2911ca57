"""Trends across runs: each finished run judged against the previous run and the baseline run
(``spec.trend.baselineRun``) by `aftershock compare`'s test (`aftershock.significance`), the
judgements recorded in the ledger and shown as the ``Regressed`` condition.

The condition speaks for the latest finished run: True when it regressed against either run it
was compared with, False otherwise (reason ``NoRegression``, or ``NotCompared`` when a side had
no recovered trial); the message names the runs and gives each p-value. It never changes
``Ready`` or ``Stalled``: a run's verdict is about its SLO, a regression is about its neighbours,
and GitOps health stays the verdict's (README, "Trends").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aftershock import significance
from aftershock.engine import runs, status
from aftershock.engine.ports import LedgerPort
from aftershock.ledger import Judgement, RunRow
from aftershock.model import TrendSpec

#: The condition type (README, CRD).
REGRESSED = status.REGRESSED


async def judge_run(
    *,
    ledger: LedgerPort,
    run: RunRow,
    trend: TrendSpec,
    recoveries: Sequence[float],
    now: float,
) -> list[Judgement]:
    """Judge `run` (its recovered trials' `recoveries`) against the previous run and the
    baseline run, record each judgement, and return them (none for run 1)."""
    against: list[tuple[str, int]] = []
    if run.run > 1:
        against.append(("previous", run.run - 1))
    if trend.baseline_run is not None and trend.baseline_run < run.run:
        against.append(("baseline", trend.baseline_run))
    found: list[Judgement] = []
    for kind, other in against:
        times = await ledger.recovery_times_of(runs.run_uid(run.campaign_uid, other))
        judgement = await _judge(run.run, kind, other, times, recoveries, trend, now)
        await ledger.record_judgement(run.run_uid, judgement)
        found.append(judgement)
    return found


async def _judge(
    run: int,
    kind: str,
    other: int,
    earlier: Sequence[float] | None,
    recoveries: Sequence[float],
    trend: TrendSpec,
    now: float,
) -> Judgement:
    if not earlier or not recoveries:
        why = (
            f"run {other}'s attempts were pruned"
            if earlier is None
            else "no recovered trial on " + ("both sides" if not earlier and not recoveries else "one side")
        )
        return Judgement(run, kind, other, "NotCompared", None, None, None, None, f"not compared: {why}", now)
    # A bootstrap of 10,000 resamples in plain Python: off the event loop.
    result = await asyncio.to_thread(
        significance.compare,
        earlier,
        recoveries,
        alpha=trend.alpha,
        min_effect_seconds=trend.min_effect_seconds,
    )
    diff = result.median_difference
    message = (
        f"run {run} vs run {other} ({kind}): {result.verdict.value}, p = {result.p_value:.4g}, "
        f"median {diff.estimate:+.3f} s ({1 - trend.alpha:.0%} CI [{diff.low:+.3f}, {diff.high:+.3f}])"
    )
    return Judgement(
        run=run,
        against=kind,
        against_run=other,
        verdict=result.verdict.value,
        p_value=result.p_value,
        median_difference=diff.estimate,
        low=diff.low,
        high=diff.high,
        message=message,
        judged_at=now,
    )


def condition(judgements: Sequence[Judgement]) -> tuple[bool, str, str] | None:
    """The ``Regressed`` condition for a run's judgements: (status, reason, message); None for
    a run judged against nothing (the first)."""
    if not judgements:
        return None
    message = "; ".join(j.message for j in judgements)
    regressed = [j for j in judgements if j.verdict == significance.ComparisonVerdict.REGRESSED.value]
    if regressed:
        reason = "RegressedFromBaseline" if regressed[0].against == "baseline" else "RegressedFromPrevious"
        if len(regressed) == 2:
            reason = "RegressedFromPreviousAndBaseline"
        return True, reason, message
    if all(j.verdict == "NotCompared" for j in judgements):
        return False, "NotCompared", message
    return False, "NoRegression", message
