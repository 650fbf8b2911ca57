"""The HTML report page (`aftershock report --html`): one self-contained page, charts as
inline SVG (`aftershock.plots`), CSS inline; no script, font, image or stylesheet is fetched,
so it opens from a mail attachment or a CI artifact as is. Pure: returns the text."""

from __future__ import annotations

import html
from typing import Final

from aftershock import analysis, clocks, detection, report, timeline, trends
from aftershock.model import Outcome
from aftershock.plots import (
    UNRECOVERED_COLOUR,
    ecdf_svg,
    events_svg,
    phase_colour,
    timeline_bars,
    timeline_svg,
)

_CSS: Final = """
:root { color-scheme: light; }
body { margin: 0; padding: 16px 28px 32px; background: #f6f7f9; color: #1d2330;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header { display: flex; align-items: baseline; gap: 14px; flex-wrap: wrap; }
h1 { font-size: 22px; margin: 0; font-weight: 650; }
h2 { font-size: 15px; margin: 0 0 8px; font-weight: 650; }
h2 .sub { font-weight: 400; color: #5b6475; font-size: 13px; }
.meta { color: #5b6475; margin: 4px 0 12px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 999px; font-size: 13px; font-weight: 650;
  background: #e4e7ec; color: #1d2330; }
.badge.Pass { background: #d7f0e0; color: #11643a; }
.badge.Fail, .badge.HardFail { background: #fbdcd3; color: #9a2b0b; }
.badge.Partial, .badge.InfraError { background: #fbefc9; color: #7a5200; }
.cards { display: grid; grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 10px; margin-bottom: 14px; }
.card { background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 8px 12px; }
.card .k { color: #5b6475; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .ci { color: #5b6475; font-size: 12px; font-variant-numeric: tabular-nums; }
section { background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 12px 14px;
  margin-bottom: 14px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 0 0 6px; padding: 0; list-style: none;
  font-size: 12.5px; color: #333b4a; }
.legend i { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 5px;
  vertical-align: -1px; }
.chart { display: block; max-width: 100%; height: auto; }
.chart text { font-size: 11.5px; fill: #4a5263; }
.chart .tick { text-anchor: middle; }
.chart .ytick { text-anchor: end; }
.chart .axis-title { text-anchor: middle; fill: #5b6475; }
.chart .grid { stroke: #eceef2; stroke-width: 1; }
.chart .trial:hover rect { opacity: .75; }
.chart .cut { text-anchor: end; fill: #fff; font-size: 10px; font-weight: 600; }
.chart .ci { fill: #0072B2; opacity: .12; }
.chart .mark { stroke: #0072B2; stroke-width: 1.2; stroke-dasharray: 4 3; }
.chart .mark-label { fill: #0b4f7c; font-weight: 600; }
.chart .ecdf-line { fill: none; stroke: #1d2330; stroke-width: 1.6; }
.chart .span { stroke: #c9ced8; stroke-width: 1; }
.chart .after-recovery { fill: #228833; opacity: .09; }
.chart .trial-events:hover .span { stroke: #1d2330; }
.chart .legend-label { fill: #333b4a; font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eceef2; white-space: nowrap; }
td.num, th.num { text-align: right; }
td.reason { white-space: normal; }
details summary { cursor: pointer; font-weight: 650; }
.empty { color: #5b6475; }
footer { color: #7a8292; font-size: 12px; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _card(key: str, value: str, note: str = "") -> str:
    note_html = f'<div class="ci">{_e(note)}</div>' if note else ""
    return (
        f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_e(value)}</div>{note_html}</div>'
    )


def _lost(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:,.0f} s"


def _ci_note(interval: analysis.Interval | None, level: float | None) -> str:
    if interval is None or level is None:
        return ""
    return f"{level:.0%} CI {interval.low:.3f} - {interval.high:.3f}"


def render_html(
    data: report.CampaignReport, *, source: str | None = None, trend: trends.Trend | None = None
) -> str:
    """The whole report as one HTML page (``source``: where the ledger was, for the footer);
    with `trend`, and more than one run, a chart of the runs too."""
    c, s, n, ci = data.campaign, data.summary, data.counts, data.intervals
    title = f"aftershock report: {c.namespace}/{c.name}"
    verdict = c.verdict.value or "no verdict"
    level = None if ci is None else ci.bootstrap.level
    medians = report.phase_medians(data.attempts)
    failed = sum(r.count for r in data.failures)
    lost = sum(r.seconds_lost for r in data.failures)
    cards = "".join(
        [
            _card("trials", f"{n.completed}/{c.requested_trials}", f"{n.recovered} recovered"),
            _card("p50", f"{_s(s.p50)} s", _ci_note(None if ci is None else ci.p50, level)),
            _card("p95", f"{_s(s.p95)} s", _ci_note(None if ci is None else ci.p95, level)),
            _card("max", f"{_s(s.max)} s"),
            _card("mean", f"{_s(s.mean)} s"),
            _card("failed attempts", str(failed), f"{_lost(lost)} lost" if failed else ""),
            *_detection_cards(data),
            *_clock_cards(data),
        ]
    )
    legend = "".join(
        f'<li><i style="background:{phase_colour(i)}"></i>{_e(p.label)} '
        f"<span>(p50 {_s(medians[p.key])} s)</span></li>"
        for i, p in enumerate(report.phases_for(data.attempts))
    )
    if any(b.outcome is Outcome.UNRECOVERED for b in timeline_bars(data)):
        legend += f'<li><i style="background:{UNRECOVERED_COLOUR}"></i>not recovered</li>'
    started, finished = report.iso_utc(c.started_at) or "-", report.iso_utc(c.finished_at) or "-"
    meta = (
        f"{c.phase.value} &middot; mode {_e(report.mode(c))} &middot; "
        + ("" if c.seed == c.uid else f"seed {_e(c.seed)} &middot; ")
        + f"started {_e(started)} &middot; finished {_e(finished)} &middot; "
        f"retried {n.interrupted} interrupted, {n.infra_error} infra errors"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f'<header><h1>{_e(c.namespace)}/{_e(c.name)}</h1><span class="badge {_e(c.verdict.value)}">'
        f"{_e(verdict)}</span></header>",
        f'<p class="meta">{meta}</p>',
        f'<div class="cards">{cards}</div>',
        "<section><h2>Recovery timeline (one bar per trial)</h2>",
        f'<ul class="legend">{legend}</ul>{timeline_svg(data)}</section>',
        _events_html(data),
        "<section><h2>Distribution of recovery times"
        + (
            ""
            if ci is None
            else f' <span class="sub">(shaded: {ci.bootstrap.level:.0%} CI of p50 and p95)</span>'
        )
        + "</h2>",
        f"{ecdf_svg(data)}</section>",
        _trend_html(trend),
        _failures_html(data),
        _attempts_html(data),
        _timelines_html(data),
        f"<footer>{_e(title)} &middot; uid {_e(c.uid)}"
        + (f" &middot; ledger {_e(source)}" if source else "")
        + (
            f" &middot; intervals: percentile bootstrap, {ci.bootstrap.resamples} resamples, "
            f"seed {ci.bootstrap.seed}"
            if ci is not None
            else ""
        )
        + "</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _trend_html(trend: trends.Trend | None) -> str:
    if trend is None or len(trend.runs) < 2:
        return ""
    legend = (
        '<ul class="legend"><li>solid: p50, dashed: p95 (seconds)</li>'
        '<li><i style="background:#009E73"></i>Pass</li><li><i style="background:#D55E00"></i>Fail</li>'
        '<li><i style="background:#E69F00"></i>other or none</li>'
        "<li>ringed: regressed against the previous or the baseline run</li></ul>"
    )
    return (
        f'<section><h2>Runs <span class="sub">({len(trend.runs)} runs of this Campaign)</span></h2>'
        f"{legend}{trends.trend_svg(trend.runs)}</section>"
    )


def _failures_html(data: report.CampaignReport) -> str:
    if not data.failures:
        return ""
    rows = "".join(
        f'<tr><td class="num">{r.count}</td><td class="num">{r.seconds_lost:.3f}</td>'
        f'<td>{_e(r.outcome.value)}</td><td class="reason">{_e(r.reason)}</td></tr>'
        for r in data.failures
    )
    return (
        "<section><h2>Failure reasons (by count x time lost)</h2><table>"
        '<tr><th class="num">attempts</th><th class="num">time lost (s)</th><th>outcome</th>'
        f"<th>reason</th></tr>{rows}</table></section>"
    )


def _detection_cards(data: report.CampaignReport) -> list[str]:
    """Time to detect (fault -> first matching alert firing at the receiver), p50 and p95."""
    if not data.listens:
        return []
    d = detection.detection_summary(data.attempts)
    fired = f"{d['alerted']}/{d['trials']} trials alerted"
    return [
        _card("time to detect p50", f"{_s(d['timeToDetectP50Seconds'])} s", fired),
        _card("time to detect p95", f"{_s(d['timeToDetectP95Seconds'])} s", "fault -> alert firing"),
    ]


def _clock_cards(data: report.CampaignReport) -> list[str]:
    """Time to detect (alert, else the remediator's word) and to its first action, p50/p95."""
    if not data.remediated:
        return []
    found = clocks.clocks_summary(data.attempts)
    cards = []
    for key, label in (("detect", "detect"), ("firstAction", "first action")):
        c = found[key]
        note = f"{c['n']}/{found['trials']} trials"
        cards.append(_card(f"{label} p50 / p95", f"{_s(c['p50Seconds'])} / {_s(c['p95Seconds'])} s", note))
    return cards


def _events_html(data: report.CampaignReport) -> str:
    """Each trial's events on one axis from the fault (`plots.events_svg`): for Campaigns with
    a remediator or alerts, as the timeline tables below."""
    if not data.remediated:
        return ""
    return (
        '<section><h2>Trial events <span class="sub">(one row per trial, seconds from the fault; '
        "hollow: after the recovery, on the shaded band; hover a mark for what it was)</span></h2>"
        f"{events_svg(data)}</section>"
    )


_AFTER: Final = " <b>(after recovery)</b>"


def _timelines_html(data: report.CampaignReport) -> str:
    """Each attempt's timeline (`aftershock.timeline`), folded: the fault, alerts, the
    remediator's word and actions, the subject's milestones, the recovery and the trial's end."""
    if not data.remediated:
        return ""
    blocks = []
    for a in data.attempts:
        entries = timeline.trial_timeline(a, data.chaos_type)
        if not entries:
            continue
        rows = "".join(
            f'<tr class="{_e(e.kind)}"><td class="num">{e.offset:+.3f}</td><td>{_e(e.what)}</td>'
            f'<td class="reason">{_e(e.detail)}{_AFTER if e.after_recovery else ""}</td></tr>'
            for e in entries
        )
        outcome = report.IN_FLIGHT if a.outcome is None else a.outcome.value
        blocks.append(
            f"<details><summary>trial {a.trial_index} attempt {a.attempt} ({_e(outcome)})</summary>"
            '<table><tr><th class="num">seconds</th><th>what</th><th>detail</th></tr>'
            f"{rows}</table></details>"
        )
    if not blocks:
        return ""
    return (
        '<section><h2>Trial timelines <span class="sub">(seconds from the fault)</span></h2>'
        + "".join(blocks)
        + "</section>"
    )


def _attempts_html(data: report.CampaignReport) -> str:
    chain = report.phases_for(data.attempts)
    head = "".join(f'<th class="num">{_e(p.header)}</th>' for p in chain)
    if data.listens:
        head += '<th class="num">alert firing</th><th class="num">alert resolved</th>'
    rows = []
    for a in data.attempts:
        phases = "".join(f'<td class="num">{_s(report.phase_seconds(a, p))}</td>' for p in chain)
        if data.listens:
            t = detection.detection_timings(a)
            phases += f'<td class="num">{_s(t.firing)}</td><td class="num">{_s(t.resolved)}</td>'

        outcome = report.IN_FLIGHT if a.outcome is None else a.outcome.value
        rows.append(
            f'<tr><td class="num">{a.trial_index}</td><td class="num">{a.attempt}</td><td>{_e(outcome)}</td>'
            f"<td>{_e(','.join(v.name for v in a.victims) or '-')}</td>{phases}"
            f'<td class="num">{_s(a.recovery_seconds)}</td><td class="reason">{_e(a.error or "")}</td></tr>'
        )
    return (
        f"<section><details><summary>Every attempt ({len(data.attempts)})</summary><table>"
        f'<tr><th class="num">index</th><th class="num">attempt</th><th>outcome</th><th>victims</th>{head}'
        f'<th class="num">recovery</th><th>error</th></tr>{"".join(rows)}</table></details></section>'
    )
