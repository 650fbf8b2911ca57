"""Comparing two campaigns (`aftershock compare`): B's recovered trials against A's, with
the statistics of `analysis.compare`, rendered as a table, JSON or Markdown."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aftershock import analysis, clocks, significance, stats
from aftershock.remediation import remediator_summary
from aftershock.report import CampaignReport, md_cell, mode, seconds_text


@dataclass(frozen=True)
class ClockComparison:
    """One clock of B against A: each side's values, and the test's judgement when both have."""

    key: str
    a: tuple[float, ...]
    b: tuple[float, ...]
    judgement: significance.Judgement | None

    @property
    def why_not(self) -> str | None:
        """Why there is no judgement (None: there is one)."""
        if self.judgement is not None:
            return None
        return "no values in " + " and ".join(x for x, v in (("A", self.a), ("B", self.b)) if not v)


def compare_clocks(
    a: CampaignReport,
    b: CampaignReport,
    *,
    alpha: float,
    min_effect_seconds: float,
    bootstrap: analysis.Bootstrap,
) -> tuple[ClockComparison, ...]:
    """Time to detect, to first action and to recover, B against A, where both have values."""
    va, vb = clocks.clock_values(a.attempts), clocks.clock_values(b.attempts)
    found = []
    for key, _ in clocks.CLOCKS:
        xa, xb = tuple(va[key]), tuple(vb[key])
        judgement = None
        if xa and xb:
            judgement = significance.compare(
                xa,
                xb,
                alpha=alpha,
                min_effect_seconds=min_effect_seconds,
                resamples=bootstrap.resamples,
                seed=bootstrap.seed,
            )
        found.append(ClockComparison(key, xa, xb, judgement))
    return tuple(found)


@dataclass(frozen=True)
class CampaignComparison:
    """Two campaigns' reports and the statistics of B against A (`analysis.compare`)."""

    a: CampaignReport
    b: CampaignReport
    result: analysis.Comparison
    a_source: str = ""  # where each ledger was read from, for the record
    b_source: str = ""
    #: The three clocks (`aftershock.clocks`) of B against A by the same test and rule, each
    #: where both sides have values (None: one side has none).
    clocks: tuple[ClockComparison, ...] = ()

    @property
    def remediator(self) -> str | None:
        """Between a baseline and an assisted campaign, what the verdict says of the remediator:
        the same test read from the assisted side (None when both ran in one mode)."""
        if self.a.baseline == self.b.baseline:
            return None
        verdict = self.result.verdict
        if verdict is analysis.ComparisonVerdict.NO_CHANGE:
            return "no significant difference with the remediator"
        # Improved means B recovered faster than A.
        assisted_faster = (verdict is analysis.ComparisonVerdict.IMPROVED) == self.a.baseline
        return "the remediator helped" if assisted_faster else "the remediator made recovery slower"

    @property
    def notes(self) -> tuple[str, ...]:
        """What a reader must know to trust (or not) the verdict."""
        notes = []
        if self.a.baseline != self.b.baseline:
            notes.append(
                f"the campaigns ran in different modes: A {mode(self.a.campaign)}, B {mode(self.b.campaign)}"
            )
        ua, ub = self.a.counts.unrecovered, self.b.counts.unrecovered
        if ua or ub:
            notes.append(
                f"only recovered trials are compared; unrecovered trials: A {ua}, B {ub} "
                "(read them in each campaign's report)"
            )
        for label, r in (("A", self.a), ("B", self.b)):
            if not r.campaign.phase.finished:
                notes.append(f"{label} has not finished (phase {r.campaign.phase.value})")
        return tuple(notes)


def compare_reports(
    a: CampaignReport,
    b: CampaignReport,
    *,
    alpha: float = 0.05,
    min_effect_seconds: float = 0.0,
    bootstrap: analysis.Bootstrap | None = None,
    a_source: str = "",
    b_source: str = "",
) -> CampaignComparison:
    """Compare B's recovered trials with A's; raises ValueError when either has none."""
    bootstrap = bootstrap or analysis.Bootstrap()
    result = analysis.compare(
        stats.recovery_times(a.attempts),
        stats.recovery_times(b.attempts),
        alpha=alpha,
        min_effect_seconds=min_effect_seconds,
        resamples=bootstrap.resamples,
        seed=bootstrap.seed,
    )
    return CampaignComparison(
        a=a,
        b=b,
        result=result,
        a_source=a_source,
        b_source=b_source,
        clocks=compare_clocks(a, b, alpha=alpha, min_effect_seconds=min_effect_seconds, bootstrap=bootstrap),
    )


def _side_json(r: CampaignReport, source: str) -> dict[str, Any]:
    c = r.campaign
    return {
        "namespace": c.namespace,
        "name": c.name,
        "uid": c.object_uid,
        "run": c.run,
        "ledger": source,
        "phase": c.phase.value,
        "verdict": c.verdict.value,
        "baseline": r.baseline,
        "mode": mode(c),
        "n": r.summary.n,
        "unrecovered": r.counts.unrecovered,
        "p50Seconds": r.summary.p50,
        "p95Seconds": r.summary.p95,
        "meanSeconds": r.summary.mean,
        "maxSeconds": r.summary.max,
    }


def _difference_json(interval: analysis.Interval) -> dict[str, float]:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high}


def _values_json(values: tuple[float, ...]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50Seconds": stats.percentile(values, 50),
        "p95Seconds": stats.percentile(values, 95),
    }


def _clock_json(c: ClockComparison) -> dict[str, Any]:
    j = c.judgement
    return {
        "a": _values_json(c.a),
        "b": _values_json(c.b),
        "verdict": None if j is None else j.verdict.value,
        "pValue": None if j is None else j.p_value,
        "medianDifferenceSeconds": None if j is None else _difference_json(j.median_difference),
        "evidence": [c.why_not] if j is None else list(j.evidence),
    }


def comparison_json_value(cmp: CampaignComparison) -> dict[str, Any]:
    r = cmp.result
    return {
        "verdict": r.verdict.value,
        "exitCode": r.verdict.exit_code,
        "a": _side_json(cmp.a, cmp.a_source),
        "b": _side_json(cmp.b, cmp.b_source),
        "medianDifferenceSeconds": _difference_json(r.median_difference),
        "p95DifferenceSeconds": _difference_json(r.p95_difference),
        "mannWhitney": {
            "u": r.u_statistic,
            "pValue": r.p_value,
            "alternative": "two-sided",
            "probabilityBSlower": r.probability_b_slower,
        },
        "alpha": r.alpha,
        "minEffectSeconds": r.min_effect_seconds,
        "confidence": {
            "level": r.bootstrap.level,
            "method": "percentile bootstrap",
            "resamples": r.bootstrap.resamples,
            "seed": r.bootstrap.seed,
        },
        "evidence": list(r.evidence),
        "notes": list(cmp.notes),
        "remediator": cmp.remediator,
        "remediatorSignals": {
            "a": remediator_summary(cmp.a.attempts),
            "b": remediator_summary(cmp.b.attempts),
        },
        "clocks": {c.key: _clock_json(c) for c in cmp.clocks},
    }


def render_comparison_json(cmp: CampaignComparison) -> str:
    return json.dumps(comparison_json_value(cmp), indent=2, allow_nan=False) + "\n"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _ci_text(interval: analysis.Interval) -> str:
    return f"[{_signed(interval.low)}, {_signed(interval.high)}]"


def _comparison_rows(cmp: CampaignComparison) -> list[tuple[str, str, str, str, str]]:
    a, b, r = cmp.a.summary, cmp.b.summary, cmp.result
    return [
        ("recovered trials", str(a.n), str(b.n), "", ""),
        ("unrecovered trials", str(cmp.a.counts.unrecovered), str(cmp.b.counts.unrecovered), "", ""),
        (
            "p50 (s)",
            seconds_text(a.p50),
            seconds_text(b.p50),
            _signed(r.median_difference.estimate),
            _ci_text(r.median_difference),
        ),
        (
            "p95 (s)",
            seconds_text(a.p95),
            seconds_text(b.p95),
            _signed(r.p95_difference.estimate),
            _ci_text(r.p95_difference),
        ),
        ("mean (s)", seconds_text(a.mean), seconds_text(b.mean), "", ""),
        ("max (s)", seconds_text(a.max), seconds_text(b.max), "", ""),
    ]


def _who(r: CampaignReport) -> str:
    c = r.campaign
    verdict = c.verdict.value or "-"
    return (
        f"{c.namespace}/{c.name} (uid {c.object_uid}, run {c.run}, mode {mode(c)}, {c.phase.value} {verdict})"
    )


def render_comparison_table(cmp: CampaignComparison) -> str:
    r = cmp.result
    level = f"{r.bootstrap.level:.0%} CI"
    rows = [("", "A", "B", "B - A", level), *_comparison_rows(cmp)]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"A          {_who(cmp.a)}", f"B          {_who(cmp.b)}", ""]
    for row in rows:
        lines.append(
            "  ".join(
                [
                    row[0].ljust(widths[0]),
                    *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)),
                ]
            ).rstrip()
        )
    lines += [
        "",
        f"test       Mann-Whitney U = {r.u_statistic:g}, p = {r.p_value:.4g} (two-sided); "
        f"P(a B trial is slower than an A trial) = {r.probability_b_slower:.2f}",
        f"verdict    {r.verdict.value}" + (f": {cmp.remediator}" if cmp.remediator else ""),
        *(f"evidence   {e}" for e in r.evidence),
        *(f"note       {n}" for n in cmp.notes),
        f"method     alpha {r.alpha:g}, minimum effect {r.min_effect_seconds:g} s, percentile bootstrap "
        f"({r.bootstrap.resamples} resamples, seed {r.bootstrap.seed})",
        *_clock_lines(cmp),
    ]
    return "\n".join(lines) + "\n"


_CLOCK_WORDS = {"detect": "detect", "firstAction": "first action", "recover": "recover"}


def _clock_text(c: ClockComparison) -> str:
    def side(values: tuple[float, ...]) -> str:
        p50, p95 = stats.percentile(values, 50), stats.percentile(values, 95)
        return f"p50 {seconds_text(p50)} p95 {seconds_text(p95)} (n={len(values)})"

    j = c.judgement
    judged = (
        f"{c.why_not}: not compared"
        if j is None
        else f"B - A median {_signed(j.median_difference.estimate)} {_ci_text(j.median_difference)}, "
        f"p = {j.p_value:.4g}: {j.verdict.value}"
    )
    return f"{_CLOCK_WORDS[c.key]:<13} A {side(c.a)}  B {side(c.b)}  {judged}"


def _clock_lines(cmp: CampaignComparison) -> list[str]:
    """The three clocks, when either side had a remediator or alerts (the recovery alone is above)."""
    if not (cmp.a.remediated or cmp.b.remediated) or not cmp.clocks:
        return []
    return ["", "clocks     (seconds from the fault; same test and rule as the verdict)"] + [
        f"  {_clock_text(c)}" for c in cmp.clocks
    ]


def render_comparison_markdown(cmp: CampaignComparison) -> str:
    r = cmp.result
    ca, cb = cmp.a.campaign, cmp.b.campaign
    out = [
        f"### aftershock compare: {r.verdict.value}",
        "",
        f"A: `{ca.namespace}/{ca.name}` ({mode(ca)}), B: `{cb.namespace}/{cb.name}` ({mode(cb)})",
        "",
        f"| | A | B | B - A | {r.bootstrap.level:.0%} CI |",
        "|---|--:|--:|--:|--:|",
        *(f"| {' | '.join(row)} |" for row in _comparison_rows(cmp)),
        "",
        f"Mann-Whitney U = {r.u_statistic:g}, p = {r.p_value:.4g} (two-sided), alpha {r.alpha:g}; "
        f"minimum effect {r.min_effect_seconds:g} s.",
        "",
        *(f"- {md_cell(e)}" for e in r.evidence),
        *(f"- note: {md_cell(n)}" for n in cmp.notes),
    ]
    if (cmp.a.remediated or cmp.b.remediated) and cmp.clocks:
        out += ["", "Clocks (seconds from the fault):", ""] + [
            f"- {md_cell(_clock_text(c))}" for c in cmp.clocks
        ]
    return "\n".join(out) + "\n"
