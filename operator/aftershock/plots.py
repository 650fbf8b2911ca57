"""Pictures of a campaign: the per-trial recovery timeline and the distribution of recovery times.

Two renderings of the same pictures:

- `timeline_svg`/`ecdf_svg`: inline SVG written here, which `aftershock.page` puts in one
  self-contained HTML page. Every trial's bar is one ``<g>`` element carrying
  ``data-trial="<index>"``.
- `write_figure`: PNG or SVG through matplotlib (Agg). matplotlib is imported inside that
  function only: the operator process never imports it, and it comes with the ``analysis``
  extra.

Rule: no I/O except `write_figure` writing the file it is given. The bars are built by
`timeline_bars` for both renderings, so they draw the same thing.

`events_svg` (inline SVG only) draws each trial's events, the entries of its timeline
(`aftershock.timeline`, the table the page shows below it), on one axis from the fault: one
``<g class="trial-events" data-trial="<index>">`` per trial, one titled mark per event.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from aftershock import analysis, report, timeline
from aftershock.model import AttemptRecord, Outcome

#: One per phase: Okabe-Ito's (distinguishable with the common colour-vision deficiencies), then
#: Paul Tol's muted set for subjects with longer chains (etcd's has eight phases). The red is
#: kept for "not recovered".
PHASE_COLOURS: Final = (
    "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#CC79A7",
    "#882255", "#44AA99", "#332288", "#999933", "#AA4499", "#88CCEE",
)  # fmt: skip
UNRECOVERED_COLOUR: Final = "#D55E00"
NOT_RECOVERED: Final = -1  # `Segment.phase` of the time an unrecovered trial waited in vain


def phase_colour(index: int) -> str:
    """The colour of the campaign's `index`-th phase (repeats only past twelve phases)."""
    return PHASE_COLOURS[index % len(PHASE_COLOURS)]


@dataclass(frozen=True)
class Segment:
    phase: int  # index into the campaign's phases (`report.phases_for`), or `NOT_RECOVERED`
    start: float  # seconds since the kill
    end: float
    name: str = "not recovered"  # the phase's header


@dataclass(frozen=True)
class Bar:
    """One completed trial (the attempt that completed its index) on the timeline."""

    index: int
    attempt: int
    outcome: Outcome
    segments: tuple[Segment, ...]
    end: float  # where the bar ends: the recovery time, or when the attempt gave up

    def describe(self) -> str:
        head = f"trial {self.index} (attempt {self.attempt}): "
        if self.outcome is Outcome.RECOVERED:
            head += f"recovered in {self.end:.3f} s"
        else:
            head += f"not recovered after {self.end:.3f} s"
        parts = [f"{s.name} {s.end - s.start:.3f} s" for s in self.segments if s.phase != NOT_RECOVERED]
        return head + ("; " + ", ".join(parts) if parts else "")


def attempt_segments(
    attempt: AttemptRecord, phases: Sequence[report.RecoveryPhase] = report.PHASES
) -> tuple[tuple[Segment, ...], float]:
    """The bar of one attempt: `phases` (its campaign's) as consecutive segments from the
    kill, and its end.

    A phase whose end milestone was not seen is skipped: its time goes to the next phase that
    was seen (the bar never has a gap). Milestones seen out of order never draw backwards. An
    unrecovered attempt ends with a `NOT_RECOVERED` segment up to when it gave up.
    """
    kill = attempt.milestones.get("kill_sent")
    cursor = 0.0 if kill is None else kill.offset
    segments: list[Segment] = []
    for i, phase in enumerate(phases):
        seen = attempt.milestones.get(phase.end)
        if seen is None:
            continue
        end = max(cursor, seen.offset)
        segments.append(Segment(i, cursor, end, phase.header))
        cursor = end
    if attempt.outcome is Outcome.RECOVERED:
        return tuple(segments), cursor
    gave_up = cursor
    if kill is not None and attempt.finished_at is not None:
        gave_up = max(cursor, attempt.finished_at - kill.wall)
    if gave_up > cursor:
        segments.append(Segment(NOT_RECOVERED, cursor, gave_up))
    return tuple(segments), gave_up


def timeline_bars(data: report.CampaignReport) -> list[Bar]:
    """One bar per measured trial (recovered or unrecovered), by trial index; segments are the
    campaign's phases, its subject's (`report.phases_for`)."""
    phases = report.phases_for(data.attempts)
    bars = []
    for a in data.completed:
        if a.outcome not in (Outcome.RECOVERED, Outcome.UNRECOVERED):
            continue  # dry run: nothing was killed
        segments, end = attempt_segments(a, phases)
        bars.append(Bar(a.trial_index, a.attempt, a.outcome, segments, end))
    return bars


def timeline_limit(bars: Sequence[Bar]) -> float:
    """Where the timeline's axis ends: the data, except that the waiting of unrecovered trials does
    not squash the recovered ones. When recovered bars exist, the axis ends a quarter beyond the
    longest recovery (or the last milestone an unrecovered trial reached); longer "not recovered"
    segments are cut at the edge and labelled with how long they waited."""
    longest = max((b.end for b in bars), default=1.0)
    recovered = [b.end for b in bars if b.outcome is Outcome.RECOVERED]
    if not recovered:
        return longest
    reached = [s.end for b in bars for s in b.segments if s.phase != NOT_RECOVERED]
    return min(longest, max([*recovered, *reached]) * 1.25)


def nice_ticks(maximum: float, count: int = 6) -> list[float]:
    """Round tick values from 0 to at least ``maximum``, about ``count`` of them."""
    if not maximum > 0 or math.isinf(maximum):
        maximum = 1.0
    raw = maximum / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw)
    return [round(i * step, 12) for i in range(math.ceil(maximum / step - 1e-9) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:g}"


def _f(value: float, digits: int = 2) -> str:
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


# --- SVG ---------------------------------------------------------------------------------------

_WIDTH: Final = 1100
_LEFT: Final = 64
_RIGHT: Final = 24
_PLOT_WIDTH: Final = _WIDTH - _LEFT - _RIGHT


def timeline_svg(data: report.CampaignReport) -> str:
    """Stacked horizontal bars: one per trial, top to bottom by index, segments = phases."""
    bars = timeline_bars(data)
    if not bars:
        return '<p class="empty">No measured trial yet: nothing to draw.</p>'
    n = len(bars)
    row = 15.0 if n <= 30 else 450.0 / n  # up to 30 trials 15 px each, then 450 px shared
    plot_h = max(row * n, 15.0)
    top, bottom = 8, 40
    height = top + plot_h + bottom
    ticks = nice_ticks(timeline_limit(bars))
    edge = ticks[-1]
    scale = _PLOT_WIDTH / edge
    bar_h = row * 0.72 if row >= 6 else row
    label_every = max(1, math.ceil(14 / row))
    out = [
        f'<svg class="chart timeline" viewBox="0 0 {_WIDTH} {_f(height)}" width="{_WIDTH}" '
        f'height="{_f(height)}" role="img" aria-label="Recovery timeline, one bar per trial">'
    ]
    out += _x_axis(ticks, scale, top, plot_h, "seconds since the kill")
    for i, bar in enumerate(bars):
        y = top + i * row + (row - bar_h) / 2
        out.append(
            f'<g class="trial" data-trial="{bar.index}" data-outcome="{bar.outcome.value}">'
            f"<title>{html.escape(bar.describe())}</title>"
        )
        for seg in bar.segments:
            colour = UNRECOVERED_COLOUR if seg.phase == NOT_RECOVERED else phase_colour(seg.phase)
            extra = ' class="gave-up"' if seg.phase == NOT_RECOVERED else ""
            start, end = min(seg.start, edge), min(seg.end, edge)
            out.append(
                f'<rect{extra} x="{_f(_LEFT + start * scale)}" y="{_f(y, 3)}" '
                f'width="{_f(max((end - start) * scale, 0.0))}" height="{_f(bar_h, 3)}" fill="{colour}"/>'
            )
        if bar.end > edge and bar_h >= 9:
            out.append(
                f'<text class="cut" x="{_LEFT + _PLOT_WIDTH - 6}" y="{_f(y + bar_h / 2 + 3.5)}">'
                f"not recovered after {bar.end:.1f} s &#8594;</text>"
            )
        out.append("</g>")
        if i % label_every == 0:
            out.append(
                f'<text class="ylabel" x="{_LEFT - 8}" y="{_f(top + i * row + row / 2 + 4)}" '
                f'text-anchor="end">#{bar.index}</text>'
            )
    out.append("</svg>")
    return "".join(out)


# --- the events of each trial ---------------------------------------------------------------


@dataclass(frozen=True)
class MarkKind:
    """One kind of mark on the events chart: its legend label, shape and colour."""

    key: str
    label: str
    shape: Literal["triangle", "diamond", "square", "circle", "tick", "bar"]
    colour: str
    hollow: bool = False
    #: Drawn larger and ringed in dark (the first action among the others).
    ringed: bool = False


#: Paul Tol's "bright" scheme (safe with the common colour-vision deficiencies, apart from the
#: phase colours above); each kind also differs by shape or fill, never by colour alone.
MARK_KINDS: Final = (
    MarkKind("fault", "fault injected", "triangle", "#EE6677"),
    MarkKind("fault_healed", "fault healed", "triangle", "#EE6677", hollow=True),
    MarkKind("alert_firing", "alert firing", "diamond", "#CCBB44"),
    MarkKind("alert_resolved", "alert resolved", "diamond", "#CCBB44", hollow=True),
    MarkKind("remediator_detected", "remediator said detected", "square", "#AA3377"),
    MarkKind("remediator_resolved", "remediator said resolved", "square", "#AA3377", hollow=True),
    MarkKind("first_action", "first action", "circle", "#4477AA", ringed=True),
    MarkKind("action", "action", "circle", "#4477AA"),
    MarkKind("action_after_recovery", "action after recovery", "circle", "#4477AA", hollow=True),
    MarkKind("milestone", "subject milestone", "tick", "#777777"),
    MarkKind("recovered", "recovered", "bar", "#228833"),
    MarkKind("trial_ended", "trial ended", "bar", "#1d2330"),
)
_MARK_KIND: Final = {k.key: k for k in MARK_KINDS}

#: Milestones with a mark of their own; every other one is a "subject milestone".
_OWN_MARK: Final = {
    "kill_sent": "fault",
    "fault_healed": "fault_healed",
    "alert_firing": "alert_firing",
    "alert_resolved": "alert_resolved",
    "remediator_detected": "remediator_detected",
    "remediator_resolved": "remediator_resolved",
    "recovered": "recovered",
    timeline.TRIAL_ENDED: "trial_ended",
}


@dataclass(frozen=True)
class Mark:
    kind: str  # a `MarkKind.key`
    offset: float  # seconds since the fault
    text: str  # what it was, for the mark's title


@dataclass(frozen=True)
class EventRow:
    """One completed trial on the events chart: its marks, and when the subject recovered."""

    index: int
    attempt: int
    marks: tuple[Mark, ...]
    recovered: float | None
    end: float  # the last mark's offset


def mark_kind(entry: timeline.Entry) -> str:
    """Which mark a timeline entry gets."""
    if entry.kind == timeline.ACTION:
        if entry.after_recovery:
            return "action_after_recovery"
        return "first_action" if entry.event == timeline.FIRST_ACTION else "action"
    return _OWN_MARK.get(entry.event, "milestone")


def event_rows(data: report.CampaignReport) -> list[EventRow]:
    """One row per completed trial that injected its fault, by index: its timeline's entries
    (`aftershock.timeline`, the table's) from the fault on; what came before it (the steady
    state's gate) is in the table only."""
    rows = []
    for a in data.completed:
        entries = [e for e in timeline.trial_timeline(a, data.chaos_type) if e.offset >= 0]
        if not entries:
            continue
        marks = tuple(
            Mark(
                mark_kind(e), e.offset, f"{e.what} +{e.offset:.3f} s" + (f": {e.detail}" if e.detail else "")
            )
            for e in entries
        )
        recovered = a.milestones.get("recovered")
        rows.append(
            EventRow(
                a.trial_index,
                a.attempt,
                marks,
                None if recovered is None else recovered.offset,
                max(m.offset for m in marks),
            )
        )
    return rows


def _mark_svg(kind: MarkKind, x: float, y: float, size: float, title: str, css: str = "ev") -> str:
    """One mark centred on (x, y), `size` px across, with its title (a tooltip; what a screen
    reader reads)."""
    r = size / 2 * (1.3 if kind.ringed else 1.0)
    fill = "#fff" if kind.hollow else kind.colour
    stroke = "#1d2330" if kind.ringed else kind.colour
    paint = f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"'
    head = f'class="{css} ev-{kind.key}" data-kind="{kind.key}"'
    tip = f"<title>{html.escape(title)}</title>"
    if kind.shape == "circle":
        return f'<circle {head} cx="{_f(x, 3)}" cy="{_f(y, 3)}" r="{_f(r * 0.8, 3)}" {paint}>{tip}</circle>'
    if kind.shape == "square":
        side = r * 1.5
        return (
            f'<rect {head} x="{_f(x - side / 2, 3)}" y="{_f(y - side / 2, 3)}" width="{_f(side, 3)}" '
            f'height="{_f(side, 3)}" {paint}>{tip}</rect>'
        )
    if kind.shape in ("tick", "bar"):
        width = 2.0 if kind.shape == "tick" else 3.0
        high = r * 1.2 if kind.shape == "tick" else r * 2.2
        return (
            f'<rect {head} x="{_f(x - width / 2, 3)}" y="{_f(y - high / 2, 3)}" width="{_f(width, 3)}" '
            f'height="{_f(high, 3)}" fill="{kind.colour}">{tip}</rect>'
        )
    if kind.shape == "diamond":
        points = [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]
    else:  # a triangle pointing down at the moment
        points = [(x - r, y - r), (x + r, y - r), (x, y + r * 0.8)]
    drawn = " ".join(f"{_f(px, 3)},{_f(py, 3)}" for px, py in points)
    return f'<polygon {head} points="{drawn}" {paint}>{tip}</polygon>'


def events_svg(data: report.CampaignReport) -> str:
    """The events of every trial on one time axis from the fault: a row per trial, a mark per
    event (the fault, alerts, the remediator's word and each of its actions, the subject's
    milestones, the recovery, the heal, the trial's end), actions after the recovery hollow on
    a band that starts at the recovery. A legend of the kinds drawn; each mark has a title."""
    rows = event_rows(data)
    if not rows:
        return '<p class="empty">No trial injected its fault yet: no events to draw.</p>'
    n = len(rows)
    row = 20.0 if n <= 30 else max(600.0 / n, 2.0)
    size = min(row * 0.6, 11.0)
    kinds = [k for k in MARK_KINDS if any(m.kind == k.key for r in rows for m in r.marks)]
    legend, legend_h = _legend(kinds)
    top, bottom = legend_h + 8, 40
    plot_h = row * n
    height = top + plot_h + bottom
    ticks = nice_ticks(max(r.end for r in rows))
    scale = _PLOT_WIDTH / ticks[-1]
    label_every = max(1, math.ceil(14 / row))
    out = [
        f'<svg class="chart events" viewBox="0 0 {_WIDTH} {_f(height)}" width="{_WIDTH}" '
        f'height="{_f(height)}" role="img" aria-label="Events of each trial, seconds from the fault">'
    ]
    out += legend
    out += _x_axis(ticks, scale, top, plot_h, "seconds since the fault")
    for i, r in enumerate(rows):
        y = top + i * row + row / 2
        x0, x1 = _LEFT, _LEFT + r.end * scale
        out.append(f'<g class="trial-events" data-trial="{r.index}" data-attempt="{r.attempt}">')
        out.append(f"<title>trial {r.index} (attempt {r.attempt}): {len(r.marks)} events</title>")
        if r.recovered is not None and r.end > r.recovered:
            band_x = _LEFT + r.recovered * scale
            out.append(
                f'<rect class="after-recovery" x="{_f(band_x)}" y="{_f(y - row * 0.4, 3)}" '
                f'width="{_f(x1 - band_x)}" height="{_f(row * 0.8, 3)}"/>'
            )
        out.append(f'<line class="span" x1="{x0}" x2="{_f(x1)}" y1="{_f(y, 3)}" y2="{_f(y, 3)}"/>')
        for m in r.marks:
            out.append(
                _mark_svg(_MARK_KIND[m.kind], _LEFT + m.offset * scale, y, size, f"trial {r.index}: {m.text}")
            )
        out.append("</g>")
        if i % label_every == 0:
            out.append(
                f'<text class="ylabel" x="{_LEFT - 8}" y="{_f(y + 4)}" text-anchor="end">#{r.index}</text>'
            )
    out.append("</svg>")
    return "".join(out)


#: The legend's line height, and roughly how wide its label text runs (11.5 px system-ui).
_LEGEND_LINE: Final = 20.0
_LEGEND_CHAR: Final = 6.4


def _legend(kinds: Sequence[MarkKind]) -> tuple[list[str], float]:
    """The kinds drawn, left to right at the top of the chart, on as many lines as they need;
    and the legend's height."""
    out = ['<g class="events-legend">']
    x, y = float(_LEFT), _LEGEND_LINE / 2
    for k in kinds:
        width = 24 + _LEGEND_CHAR * len(k.label)
        if x > _LEFT and x + width > _WIDTH - _RIGHT:
            x, y = float(_LEFT), y + _LEGEND_LINE
        out.append(_mark_svg(k, x + 5, y, 10.0, k.label, css="key"))
        label = html.escape(k.label)
        out.append(f'<text class="legend-label" x="{_f(x + 14)}" y="{_f(y + 4)}">{label}</text>')
        x += width
    out.append("</g>")
    return out, y + _LEGEND_LINE / 2


def _x_axis(ticks: Sequence[float], scale: float, top: float, plot_h: float, title: str) -> list[str]:
    out = []
    for t in ticks:
        x = _f(_LEFT + t * scale)
        out.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{top}" y2="{_f(top + plot_h)}"/>')
        out.append(f'<text class="tick" x="{x}" y="{_f(top + plot_h + 16)}">{_tick_label(t)}</text>')
    out.append(
        f'<text class="axis-title" x="{_LEFT + _PLOT_WIDTH / 2}" y="{_f(top + plot_h + 34)}">'
        f"{html.escape(title)}</text>"
    )
    return out


def ecdf_points(values: Sequence[float]) -> list[tuple[float, float]]:
    """The empirical CDF's steps: (value, fraction of values <= it), one per distinct value."""
    ordered = sorted(values)
    n = len(ordered)
    points: list[tuple[float, float]] = []
    for i, v in enumerate(ordered, start=1):
        if points and points[-1][0] == v:
            points[-1] = (v, i / n)
        else:
            points.append((v, i / n))
    return points


def ecdf_svg(data: report.CampaignReport) -> str:
    """The share of trials recovered within x seconds, with p50 and p95 (and their intervals)."""
    times = [s for a in data.attempts if (s := a.recovery_seconds) is not None]
    if not times:
        return '<p class="empty">No recovered trial: no distribution to draw.</p>'
    top, plot_h, bottom = 8, 150, 40
    height = top + plot_h + bottom
    ticks = nice_ticks(max(times))
    scale = _PLOT_WIDTH / ticks[-1]

    def y(fraction: float) -> str:
        return _f(top + plot_h * (1.0 - fraction))

    out = [
        f'<svg class="chart ecdf" viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}" '
        'role="img" aria-label="Distribution of recovery times (empirical CDF)">'
    ]
    out += _x_axis(ticks, scale, top, plot_h, "recovery time, seconds")
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + _PLOT_WIDTH}" y1="{y(frac)}" y2="{y(frac)}"/>'
        )
        out.append(f'<text class="ytick" x="{_LEFT - 8}" y="{_f(float(y(frac)) + 4)}">{frac:.0%}</text>')
    ci = data.intervals
    level = "" if ci is None else f"{ci.bootstrap.level:.0%} CI "
    marks = [("p50", data.summary.p50, None if ci is None else ci.p50)]
    marks.append(("p95", data.summary.p95, None if ci is None else ci.p95))
    for label, value, interval in marks:
        if value is None:
            continue
        if interval is not None:
            x0, x1 = _LEFT + interval.low * scale, _LEFT + interval.high * scale
            out.append(
                f'<rect class="ci" x="{_f(x0)}" y="{top}" width="{_f(max(x1 - x0, 1.0))}" height="{plot_h}">'
                f"<title>{label} {level}[{interval.low:.3f}, {interval.high:.3f}] s</title></rect>"
            )
        x = _f(_LEFT + value * scale)
        out.append(f'<line class="mark" x1="{x}" x2="{x}" y1="{top}" y2="{top + plot_h}"/>')
        label_y = top + (12 if label == "p50" else 28)
        out.append(f'<text class="mark-label" x="{x}" y="{label_y}" dx="4">{label} {value:.3f} s</text>')
    path = [f"M{_LEFT},{y(0.0)}"]
    previous = 0.0
    for value, fraction in ecdf_points(times):
        x = _f(_LEFT + value * scale)
        path.append(f"H{x}V{y(fraction)}")
        previous = fraction
    if previous >= 1.0:
        path.append(f"H{_LEFT + _PLOT_WIDTH}")
    out.append(f'<path class="ecdf-line" d="{"".join(path)}"/>')
    out.append("</svg>")
    return "".join(out)


# --- matplotlib --------------------------------------------------------------------------------


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise analysis.AnalysisUnavailableError(
            f"PNG and SVG plots need matplotlib: {analysis.INSTALL_HINT}"
        ) from exc
    matplotlib.use("Agg")
    return matplotlib


def write_figure(data: report.CampaignReport, path: str | Path, fmt: Literal["png", "svg"]) -> None:  # noqa: PLR0915 - one page, top to bottom
    """The timeline above the distribution, as a PNG or SVG file at ``path``.

    Raises `analysis.AnalysisUnavailableError` when matplotlib is not installed.
    """
    mpl = _matplotlib()
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    bars = timeline_bars(data)
    times = sorted(s for a in data.attempts if (s := a.recovery_seconds) is not None)
    rows = max(len(bars), 1)
    timeline_height = 1.2 + min(rows, 40) * 0.22
    c = data.campaign
    with mpl.rc_context({"svg.hashsalt": "aftershock", "font.size": 9}):
        fig = Figure(figsize=(11, timeline_height + 3.2), layout="constrained")
        top, bottom = fig.subplots(2, 1, height_ratios=[timeline_height, 3.0])
        fig.suptitle(f"{c.namespace}/{c.name}: {c.verdict.value or 'no verdict'}", fontweight="bold")
        polygons: dict[int, list[list[tuple[float, float]]]] = {}
        edge = nice_ticks(timeline_limit(bars))[-1]
        for i, bar in enumerate(bars):
            for seg in bar.segments:
                y0, y1 = i - 0.36, i + 0.36
                x0, x1 = min(seg.start, edge), min(seg.end, edge)
                polygons.setdefault(seg.phase, []).append([(x0, y0), (x0, y1), (x1, y1), (x1, y0)])
            if bar.end > edge and len(bars) <= 40:
                top.annotate(
                    f"not recovered after {bar.end:.1f} s \u2192",
                    (edge, i),
                    xytext=(-4, 0),
                    textcoords="offset points",
                    ha="right",
                    va="center",
                    color="white",
                    fontsize=8,
                    fontweight="bold",
                )
        for phase, polys in sorted(polygons.items()):
            colour = UNRECOVERED_COLOUR if phase == NOT_RECOVERED else phase_colour(phase)
            top.add_collection(PolyCollection(polys, facecolors=colour, edgecolors="none"))
        top.set_xlim(0, edge)
        top.set_ylim(rows - 0.5, -0.5)
        if len(bars) <= 40:
            top.set_yticks(range(len(bars)), [f"#{b.index}" for b in bars])
        top.set_xlabel("seconds since the kill")
        top.set_title("Recovery timeline (one bar per trial)", loc="left")
        phases = report.phases_for(data.attempts)
        handles = [Patch(color=phase_colour(i), label=p.label) for i, p in enumerate(phases)]
        if NOT_RECOVERED in polygons:
            handles.append(Patch(color=UNRECOVERED_COLOUR, label="not recovered"))
        top.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        top.grid(axis="x", color="#e6e6e6")
        top.set_axisbelow(True)

        if times:
            steps = ecdf_points(times)
            right = nice_ticks(times[-1])[-1]
            xs, ys = [0.0, *(x for x, _ in steps), right], [0.0, *(f for _, f in steps), 1.0]
            bottom.step(xs, ys, where="post", color="#1d2330")
            ci = data.intervals
            for label, value, interval in (
                ("p50", data.summary.p50, None if ci is None else ci.p50),
                ("p95", data.summary.p95, None if ci is None else ci.p95),
            ):
                if value is None:
                    continue
                if interval is not None:
                    bottom.axvspan(interval.low, interval.high, color="#0072B2", alpha=0.12, linewidth=0)
                bottom.axvline(value, color="#0072B2", linestyle="--", linewidth=1)
                bottom.annotate(
                    f"{label} {value:.3f} s",
                    (value, 1.0),
                    xytext=(4, -12 if label == "p50" else -26),
                    textcoords="offset points",
                    color="#0b4f7c",
                )
            bottom.set_xlim(0, right)
        bottom.set_ylim(0, 1.02)
        bottom.set_xlabel("recovery time, seconds")
        bottom.set_ylabel("share of trials recovered")
        bottom.set_title("Distribution of recovery times (empirical CDF)", loc="left")
        bottom.grid(color="#e6e6e6")
        metadata = {"Date": None} if fmt == "svg" else {}
        fig.savefig(str(path), format=fmt, dpi=120, metadata=metadata)
