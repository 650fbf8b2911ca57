"""A Campaign's runs side by side (`aftershock report NAME --runs`, the HTML page's run chart):
per run its p50, p95 and verdict, and how it compared with the previous and the baseline run
(the judgements the operator recorded when the run ended, ADR 0015). Runs pruned by retention
keep their summary row, so the trend outlives their attempts. Pure rendering over the ledger's
values, plus one loader."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aftershock.ledger import CampaignRow, Ledger, RunSummary, TickRow
from aftershock.ledger.errors import CampaignNotFoundError
from aftershock.report import iso_utc, md_cell, seconds_text


@dataclass(frozen=True)
class Trend:
    campaign: CampaignRow  # the latest run's row
    runs: tuple[RunSummary, ...]
    ticks: tuple[TickRow, ...]


async def load_trend(ledger: Ledger, namespace: str, name: str) -> Trend:
    """Every run of the newest Campaign called `namespace/name`, oldest first."""
    campaign = await ledger.find_campaign(namespace, name)
    if campaign is None:
        raise CampaignNotFoundError(f"no campaign {namespace}/{name} in the ledger at {ledger.path}")
    runs = await ledger.run_summaries(campaign.object_uid)
    ticks = await ledger.ticks(campaign.object_uid)
    return Trend(campaign=campaign, runs=tuple(runs), ticks=tuple(ticks))


def _judged(run: RunSummary, against: str) -> str:
    j = run.judged(against)
    if j is None:
        return "-"
    if j.p_value is None:
        return f"{j.verdict} (run {j.against_run})"
    return f"{j.verdict} (run {j.against_run}, p={j.p_value:.3g})"


HEADERS: Final = ("run", "started", "phase", "verdict", "n", "p50", "p95", "vs previous", "vs baseline", "")


def _rows(trend: Trend) -> list[list[str]]:
    return [
        [
            str(r.run),
            iso_utc(r.started_at) or "-",
            r.phase.value,
            r.verdict.value or "-",
            f"{r.recovered}/{r.completed}",
            seconds_text(r.summary.p50),
            seconds_text(r.summary.p95),
            _judged(r, "previous"),
            _judged(r, "baseline"),
            "pruned" if r.pruned else "",
        ]
        for r in trend.runs
    ]


def render_table(trend: Trend) -> str:
    c = trend.campaign
    rows = _rows(trend)
    widths = [max(len(row[i]) for row in [list(HEADERS), *rows]) for i in range(len(HEADERS))]
    numeric = {0, 4, 5, 6}

    def line(row: Sequence[str]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in pairs).rstrip()

    lines = [line(row) for row in [list(HEADERS), *rows]]
    if not rows:
        lines.append("(no run yet)")
    skipped = [t for t in trend.ticks if t.action.value in ("skipped", "missed")]
    tail = [f"{c.namespace}/{c.name}: {len(trend.runs)} run(s); n is recovered/completed trials"]
    tail += [
        f"tick {iso_utc(t.tick)} {t.action.value}" + (f" (run {t.run})" if t.run else "") for t in skipped
    ]
    return "\n".join([*lines, "", *tail]) + "\n"


def to_json_value(trend: Trend) -> dict[str, Any]:
    c = trend.campaign
    return {
        "campaign": {"namespace": c.namespace, "name": c.name, "uid": c.object_uid},
        "runs": [
            {
                "run": r.run,
                "runId": r.run_uid,
                "token": r.token,
                "phase": r.phase.value,
                "verdict": r.verdict.value,
                "startedAt": iso_utc(r.started_at),
                "finishedAt": iso_utc(r.finished_at),
                "recovered": r.recovered,
                "unrecovered": r.unrecovered,
                "completed": r.completed,
                "p50Seconds": r.summary.p50,
                "p95Seconds": r.summary.p95,
                "maxSeconds": r.summary.max,
                "meanSeconds": r.summary.mean,
                "pruned": r.pruned,
                "judgements": [
                    {
                        "against": j.against,
                        "againstRun": j.against_run,
                        "verdict": j.verdict,
                        "pValue": j.p_value,
                        "medianDifferenceSeconds": j.median_difference,
                        "low": j.low,
                        "high": j.high,
                        "message": j.message,
                    }
                    for j in r.judgements
                ],
            }
            for r in trend.runs
        ],
        "ticks": [{"tick": iso_utc(t.tick), "action": t.action.value, "run": t.run} for t in trend.ticks],
    }


def render_json(trend: Trend) -> str:
    return json.dumps(to_json_value(trend), indent=2, allow_nan=False) + "\n"


def render_markdown(trend: Trend) -> str:
    c = trend.campaign
    out = [
        f"### {c.namespace}/{c.name}: runs",
        "",
        "| " + " | ".join(h or "note" for h in HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
        *("| " + " | ".join(md_cell(cell) for cell in row) + " |" for row in _rows(trend)),
    ]
    return "\n".join(out) + "\n"


# --- the chart -------------------------------------------------------------------------------

_W, _H, _LEFT, _TOP, _PLOT_H, _PLOT_W = 760, 230, 56, 10, 170, 680
_VERDICT_COLOURS: Final = {"Pass": "#009E73", "Fail": "#D55E00", "HardFail": "#D55E00"}


def _f(value: float) -> str:
    return f"{value:.1f}"


def trend_svg(runs: Sequence[RunSummary]) -> str:
    """p50 and p95 per run (lines), each run's verdict (the dot's colour) and a ring around a run
    that regressed against the previous or the baseline run."""
    measured = [r for r in runs if r.summary.p95 is not None]
    if not measured:
        return '<p class="empty">No run with a recovered trial yet: nothing to draw.</p>'
    top_value = max(r.summary.p95 or 0.0 for r in measured) * 1.15 or 1.0
    first, last = runs[0].run, runs[-1].run
    span = max(last - first, 1)

    def x(run: int) -> float:
        return _LEFT + 10 + (_PLOT_W - 20) * (run - first) / span

    def y(value: float) -> float:
        return _TOP + _PLOT_H * (1 - value / top_value)

    out = [
        f'<svg class="chart trend" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
        'aria-label="p50 and p95 recovery time per run">'
    ]
    for k in range(5):
        value = top_value * k / 4
        at = _f(y(value))
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + _PLOT_W}" y1="{at}" y2="{at}"/>')
        out.append(f'<text class="ytick" x="{_LEFT - 8}" y="{_f(y(value) + 4)}">{value:.2f}</text>')
    for r in runs:
        out.append(f'<text class="tick" x="{_f(x(r.run))}" y="{_TOP + _PLOT_H + 16}">{r.run}</text>')
    out.append(f'<text class="axis-title" x="{_LEFT + _PLOT_W / 2}" y="{_H - 6}">run</text>')
    for label, dash in (("p50", ""), ("p95", "5 3")):
        values = [(r.run, r.summary.p50 if label == "p50" else r.summary.p95) for r in measured]
        points = " ".join(f"{_f(x(run))},{_f(y(v))}" for run, v in values if v is not None)
        style = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline class="ecdf-line" points="{points}"{style}><title>{label}</title></polyline>')
    for r in measured:
        colour = _VERDICT_COLOURS.get(r.verdict.value, "#E69F00")
        regressed = [j for j in r.judgements if j.verdict == "Regressed"]
        note = "; ".join(j.message for j in r.judgements) or "not compared"
        title = (
            f"run {r.run}: {r.verdict.value or 'no verdict'}, p50 {seconds_text(r.summary.p50)} s, "
            f"p95 {seconds_text(r.summary.p95)} s; {note}"
        )
        for point in (r.summary.p50, r.summary.p95):
            if point is None:
                continue
            cx, cy = _f(x(r.run)), _f(y(point))
            out.append(f'<circle cx="{cx}" cy="{cy}" r="4.5" fill="{colour}"><title>{title}</title></circle>')
            if regressed:
                out.append(
                    f'<circle class="regressed" cx="{cx}" cy="{cy}" r="8.5" fill="none" stroke="#D55E00" '
                    'stroke-width="2"/>'
                )
    out.append("</svg>")
    return "".join(out)
