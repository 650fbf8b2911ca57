"""A campaign's report, read from the ledger: every attempt, the recovery statistics, the verdict.

`load_report` is the only function here that does I/O (it reads the ledger); everything else
is pure. The JSON (``aftershock report --format json``) holds every attempt including
interrupted and infra-error ones, timings as the ledger holds them, so an analysis can be
redone from it without the ledger file. The table is for a terminal, the markdown for a
pull-request comment; `aftershock.plots` draws the same report and `aftershock.export` flattens
it to one row per attempt.

Confidence intervals are optional (`build_report(..., bootstrap=...)`): they need numpy (the
``analysis`` extra) and some CPU, so the operator's own report endpoint goes without them.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aftershock import analysis, clocks, detection, model, stats, timeline
from aftershock.failures import FAILED_OUTCOMES, NO_ERROR, FailureReason, failure_reasons, normalise_error
from aftershock.ledger import CampaignNotFoundError, CampaignRow, Ledger
from aftershock.ledger.alerts import AlertNotice
from aftershock.model import AttemptRecord, Outcome
from aftershock.phases import (
    PHASES,
    RecoveryPhase,
    phase_medians,
    phase_seconds,
    phases_for,
    write_unavailability,
)
from aftershock.remediation import has_signals, remediator_summary, remediator_timings

__all__ = [
    "FAILED_OUTCOMES",
    "NO_ERROR",
    "PHASES",
    "FailureReason",
    "RecoveryPhase",
    "failure_reasons",
    "normalise_error",
    "phase_medians",
    "phase_seconds",
    "phases_for",
    "write_unavailability",
]


#: The ``outcome`` of an attempt without one yet; `OUTCOME_VALUES` lists all the JSON may carry.
IN_FLIGHT: Final = "in_flight"
OUTCOME_VALUES: Final = (*(o.value for o in Outcome), IN_FLIGHT)
_ERROR_WIDTH: Final = 60


@dataclass(frozen=True)
class RecoveryIntervals:
    """Bootstrap confidence intervals of the median and p95 recovery time."""

    p50: analysis.Interval
    p95: analysis.Interval
    bootstrap: analysis.Bootstrap


@dataclass(frozen=True)
class CampaignReport:
    campaign: CampaignRow
    attempts: tuple[AttemptRecord, ...]  # by trial index, then attempt number
    summary: stats.RecoverySummary  # over the recovered trials
    counts: stats.AttemptCounts
    intervals: RecoveryIntervals | None = None  # None: not asked for, or no recovered trial
    failures: tuple[FailureReason, ...] = field(default=())
    #: Alertmanager's notifications recorded for the run (`spec.detection`), in the order received.
    alerts: tuple[AlertNotice, ...] = field(default=())

    @property
    def listens(self) -> bool:
        """Whether the Campaign listened for alerts (its spec had `detection`)."""
        return detection.listens(self.campaign.spec)

    @property
    def baseline(self) -> bool:
        return is_baseline(self.campaign)

    @property
    def remediated(self) -> bool:
        """Whether the Campaign names a remediator or listens for alerts: then the report shows
        the three clocks and each trial's timeline."""
        return self.campaign.spec.get("remediator") is not None or self.listens

    @property
    def chaos_type(self) -> str | None:
        chaos = self.campaign.spec.get("chaos")
        kind = chaos.get("type") if isinstance(chaos, Mapping) else None
        return kind if isinstance(kind, str) else None

    @property
    def completed(self) -> tuple[AttemptRecord, ...]:
        """The attempt that completed each trial, by trial index."""
        return tuple(a for a in self.attempts if a.outcome is not None and a.outcome.completes_trial)


def is_baseline(campaign: CampaignRow) -> bool:
    """Whether the campaign ran in baseline mode (``spec.baseline: true`` as recorded)."""
    return campaign.spec.get("baseline") is True


def mode(campaign: CampaignRow) -> str:
    return "baseline" if is_baseline(campaign) else "normal"


async def load_report(
    ledger: Ledger,
    namespace: str,
    name: str,
    *,
    bootstrap: analysis.Bootstrap | None = None,
    role: str | None = None,
    run: int | None = None,
) -> CampaignReport:
    """The report of the newest campaign called ``namespace/name`` in the ledger: its latest
    run, or run number `run`.

    Raises `CampaignNotFoundError` (a `LedgerError`) naming the campaign and the file when
    there is none: a typo, or a Campaign the operator never started. With ``bootstrap``, also
    `analysis.AnalysisUnavailableError` when numpy is missing.
    """
    campaign = await ledger.find_campaign(namespace, name, run)
    if campaign is None:
        raise CampaignNotFoundError(
            f"no campaign {namespace}/{name}{'' if run is None else f' run {run}'} "
            f"in the ledger at {ledger.path}; "
            "check the namespace and name (`aftershock export --all` lists what the ledger holds)"
        )
    attempts = await ledger.attempts(campaign.uid)
    if role is not None:
        # Only the attempts whose every victim had this role when it was chosen (etcd's Leader).
        attempts = [a for a in attempts if a.victims and all(v.role == role for v in a.victims)]
    built = build_report(campaign, attempts, bootstrap=bootstrap)
    if not detection.listens(campaign.spec):
        return built
    return dataclasses.replace(built, alerts=tuple(await ledger.alert_notices(campaign.uid)))


def build_report(
    campaign: CampaignRow,
    attempts: Sequence[AttemptRecord],
    *,
    bootstrap: analysis.Bootstrap | None = None,
) -> CampaignReport:
    """The report; with ``bootstrap``, with confidence intervals (needs numpy)."""
    ordered = tuple(sorted(attempts, key=lambda a: (a.trial_index, a.attempt)))
    times = stats.recovery_times(ordered)
    intervals = None
    if bootstrap is not None and times:
        found = analysis.percentile_intervals(times, (50, 95), bootstrap)
        assert found is not None  # times is not empty
        intervals = RecoveryIntervals(p50=found[0], p95=found[1], bootstrap=bootstrap)
    return CampaignReport(
        campaign=campaign,
        attempts=ordered,
        summary=stats.summarize(times),
        counts=stats.count_outcomes(a.outcome for a in ordered),
        intervals=intervals,
        failures=failure_reasons(ordered),
    )


# --- JSON ------------------------------------------------------------------------------------


def iso_utc(unix_seconds: float | None) -> str | None:
    """``2024-05-01T12:00:00.250000Z``; microsecond precision (the offsets keep full precision)."""
    if unix_seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(unix_seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _victim_json(victim: model.Victim) -> dict[str, Any]:
    return {
        "name": victim.name,
        "uid": victim.uid,
        "node": victim.node,
        "restartCount": victim.restart_count,
        "memberId": victim.member_id,
    }


def _interval_json(interval: analysis.Interval) -> dict[str, float]:
    return {"low": interval.low, "high": interval.high}


def _confidence_json(intervals: RecoveryIntervals | None) -> dict[str, Any] | None:
    if intervals is None:
        return None
    b = intervals.bootstrap
    return {
        "level": b.level,
        "method": "percentile bootstrap",
        "resamples": b.resamples,
        "seed": b.seed,
        "p50Seconds": _interval_json(intervals.p50),
        "p95Seconds": _interval_json(intervals.p95),
    }


def _failure_json(reason: FailureReason) -> dict[str, Any]:
    return {
        "outcome": reason.outcome.value,
        "reason": reason.reason,
        "count": reason.count,
        "secondsLost": reason.seconds_lost,
        "attempts": [{"index": i, "attempt": n} for i, n in reason.attempts],
    }


def _attempt_json(attempt: AttemptRecord, report: CampaignReport | None = None) -> dict[str, Any]:
    alerts: dict[str, Any] = {}
    if report is not None and report.listens:
        t = detection.detection_timings(attempt)
        alerts = {
            "timeToAlertSeconds": t.firing,
            "timeToAlertResolvedSeconds": t.resolved,
            "alertNotifications": detection.notices_of(attempt, report.alerts),
        }
    return {
        "index": attempt.trial_index,
        "attempt": attempt.attempt,
        "outcome": IN_FLIGHT if attempt.outcome is None else attempt.outcome.value,
        "victims": [_victim_json(v) for v in attempt.victims],
        "victimSeed": attempt.victim_seed,
        "startedAt": iso_utc(attempt.started_at),
        "finishedAt": iso_utc(attempt.finished_at),
        "recoverySeconds": attempt.recovery_seconds,
        "timings": {
            name: {"wall": iso_utc(m.wall), "offsetSeconds": m.offset}
            for name, m in attempt.milestones.items()
        },
        "phaseSeconds": {p.key: phase_seconds(attempt, p) for p in phases_for([attempt])},
        **_remediator_json(attempt),
        **alerts,
        **(_timeline_json(attempt, report) if report is not None and report.remediated else {}),
        "initialState": dict(attempt.initial_state),
        "finalState": dict(attempt.final_state),
        "error": attempt.error,
    }


def _remediator_json(attempt: AttemptRecord) -> dict[str, Any]:
    t = remediator_timings(attempt)
    recovered = attempt.milestones.get("recovered")
    return {
        "timeToDetectSeconds": t.detect,
        "timeToResolveSeconds": t.resolve,
        "remediatorActions": [
            {**a.as_json(), "afterRecovery": model.after_recovery(a, recovered)} for a in t.actions
        ],
    }


def _timeline_json(attempt: AttemptRecord, report: CampaignReport) -> dict[str, Any]:
    """The attempt's three clocks and its timeline (a Campaign with a remediator or alerts)."""
    c = clocks.trial_clocks(attempt)
    return {
        "clocks": {
            "detectSeconds": c.detect,
            "detectSource": c.detect_source,
            "firstActionSeconds": c.first_action,
            "recoverSeconds": c.recover,
        },
        "timeline": [e.as_json() for e in timeline.trial_timeline(attempt, report.chaos_type)],
    }


def to_json_value(report: CampaignReport) -> dict[str, Any]:
    """The report as plain JSON values (what `render_json` serialises).

    ``confidence`` is null when the report was built without a bootstrap or nothing recovered.
    """
    c, s, n = report.campaign, report.summary, report.counts
    return {
        "campaign": {
            "namespace": c.namespace,
            "name": c.name,
            "uid": c.object_uid,
            "run": c.run,
            "runId": c.uid,
            "runToken": c.run_token,
            "phase": c.phase.value,
            "verdict": c.verdict.value,
            "requestedTrials": c.requested_trials,
            "seed": c.seed,
            "baseline": report.baseline,
            "mode": mode(c),
            "createdAt": iso_utc(c.created_at),
            "startedAt": iso_utc(c.started_at),
            "finishedAt": iso_utc(c.finished_at),
            "deletedAt": iso_utc(c.deleted_at),
            "spec": dict(c.spec),
        },
        "trials": [_attempt_json(a, report) for a in report.attempts],
        "summary": {
            "n": s.n,
            "p50Seconds": s.p50,
            "p95Seconds": s.p95,
            "maxSeconds": s.max,
            "meanSeconds": s.mean,
            "completed": n.completed,
            "recovered": n.recovered,
            "failed": n.unrecovered,
            "dryRun": n.dry_run,
            "interrupted": n.interrupted,
            "infraErrors": n.infra_error,
            "inFlight": n.in_flight,
            "confidence": _confidence_json(report.intervals),
            "phaseP50Seconds": phase_medians(report.attempts),
            "writeUnavailableSeconds": _write_json(write_unavailability(report.attempts)),
            "slowestWriteSeconds": _write_json(write_unavailability(report.attempts, "slowestSeconds")),
            "remediator": remediator_summary(report.attempts),
            "detection": detection.detection_summary(report.attempts) if report.listens else None,
            "clocks": clocks.clocks_summary(report.attempts) if report.remediated else None,
        },
        "failureReasons": [_failure_json(r) for r in report.failures],
    }


def render_json(report: CampaignReport) -> str:
    return json.dumps(to_json_value(report), indent=2, allow_nan=False) + "\n"


# --- table -----------------------------------------------------------------------------------


def seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _one_line(text: str | None) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= _ERROR_WIDTH else flat[: _ERROR_WIDTH - 3] + "..."


def render_table(report: CampaignReport) -> str:
    """One row per attempt with its phase durations in seconds, then a summary block."""
    signals = has_signals(report.attempts)
    extra = ["detect", "resolve", "actions"] if signals else []
    if report.listens:
        extra += ["alert", "alert-resolved"]
    resets = any(reset_of(a) is not None for a in report.attempts)
    chain = phases_for(report.attempts)
    headers = [
        "index",
        "attempt",
        "outcome",
        "victims",
        *(p.header for p in chain),
        "recovery",
        *extra,
        *(["reset"] if resets else []),
        "error",
    ]
    numeric = {0, 1, *range(4, 4 + len(chain) + 1 + len(extra))}
    rows = [
        [
            str(a.trial_index),
            str(a.attempt),
            IN_FLIGHT if a.outcome is None else a.outcome.value,
            ",".join(v.name for v in a.victims) or "-",
            *(seconds_text(phase_seconds(a, p)) for p in chain),
            seconds_text(a.recovery_seconds),
            *(_remediator_cells(a) if signals else []),
            *(_alert_cells(a) if report.listens else []),
            *([_reset_cell(a)] if resets else []),
            _one_line(a.error),
        ]
        for a in report.attempts
    ]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in pairs).rstrip()

    lines = [line(headers), *(line(r) for r in rows)]
    if not rows:
        lines.append("(no attempts yet)")
    return (
        "\n".join([*lines, "", *_summary_lines(report), *_failure_lines(report), *_timeline_lines(report)])
        + "\n"
    )


def _timeline_lines(report: CampaignReport) -> list[str]:
    """Each attempt's timeline, for a Campaign with a remediator or alerts."""
    if not report.remediated:
        return []
    lines: list[str] = []
    for a in report.attempts:
        entries = timeline.trial_timeline(a, report.chaos_type)
        if not entries:
            continue
        outcome = IN_FLIGHT if a.outcome is None else a.outcome.value
        lines += [
            "",
            f"timeline   trial {a.trial_index} attempt {a.attempt} ({outcome}; seconds from the fault)",
        ]
        lines += timeline.render_text(entries)
    return lines


def reset_of(attempt: AttemptRecord) -> Mapping[str, Any] | None:
    """The reset before the attempt's gate (`spec.reset`), as recorded; never recovery time."""
    reset = attempt.final_state.get("reset") or attempt.initial_state.get("reset")
    return reset if isinstance(reset, Mapping) else None


def _reset_cell(attempt: AttemptRecord) -> str:
    """`Recreate 3.201s (3 pods, 3 claims)`, or `-` for an attempt without a reset."""
    reset = reset_of(attempt)
    if reset is None:
        return "-"
    seconds = reset.get("seconds")
    took = seconds_text(float(seconds)) + "s" if isinstance(seconds, int | float) else "-"
    pods, claims = len(reset.get("pods") or ()), len(reset.get("claims") or ())
    return f"{reset.get('mode', '?')} {took} ({pods} pods, {claims} claims)"


def _remediator_cells(attempt: AttemptRecord) -> list[str]:
    t = remediator_timings(attempt)
    return [seconds_text(t.detect), seconds_text(t.resolve), str(len(t.actions))]


def _alert_cells(attempt: AttemptRecord) -> list[str]:
    t = detection.detection_timings(attempt)
    return [seconds_text(t.firing), seconds_text(t.resolved)]


def _with_ci(value: float | None, interval: analysis.Interval | None) -> str:
    text = seconds_text(value)
    return text if interval is None else f"{text} [{interval.low:.3f}, {interval.high:.3f}]"


def _summary_lines(report: CampaignReport) -> list[str]:
    c, s, n, ci = report.campaign, report.summary, report.counts, report.intervals
    verdict = c.verdict.value or "-"
    medians = phase_medians(report.attempts)
    lines = [
        f"campaign   {c.namespace}/{c.name}  uid {c.object_uid}  run {c.run}  seed {c.seed}  mode {mode(c)}",
        f"state      phase {c.phase.value}, verdict {verdict}",
        f"started    {iso_utc(c.started_at) or '-'}   finished {iso_utc(c.finished_at) or '-'}"
        + (f"   deleted {iso_utc(c.deleted_at)}" if c.deleted_at is not None else ""),
        f"trials     {n.completed}/{c.requested_trials} completed: {n.recovered} recovered, "
        f"{n.unrecovered} unrecovered, {n.dry_run} dry run",
        f"retried    {n.interrupted} interrupted, {n.infra_error} infra errors, {n.in_flight} in flight",
        f"recovery   n={s.n}  p50={seconds_text(s.p50)}  p95={seconds_text(s.p95)}  "
        f"max={seconds_text(s.max)}  mean={seconds_text(s.mean)}  (seconds)",
    ]
    if ci is not None:
        b = ci.bootstrap
        lines.append(
            f"{b.level:.0%} CI     p50 {_with_ci(s.p50, ci.p50)}  p95 {_with_ci(s.p95, ci.p95)}  "
            f"(percentile bootstrap, {b.resamples} resamples, seed {b.seed})"
        )
    if s.n:
        phases = phases_for(report.attempts)
        lines.append("phase p50  " + "  ".join(f"{p.header}={seconds_text(medians[p.key])}" for p in phases))
    said = remediator_summary(report.attempts)
    if said is not None:
        lines.append(
            f"remediator detected {said['detected']}/{said['trials']}  "
            f"detect p50={seconds_text(said['detectP50Seconds'])}  "
            f"resolved {said['resolved']}/{said['trials']}  "
            f"resolve p50={seconds_text(said['resolveP50Seconds'])}  "
            f"actions/trial={seconds_text(said['actionsPerTrial'])}  (seconds from the kill)"
        )
    if report.listens:
        d = detection.detection_summary(report.attempts)
        lines.append(
            f"alerts     fired {d['alerted']}/{d['trials']}  "
            f"time to detect p50={seconds_text(d['timeToDetectP50Seconds'])}  "
            f"p95={seconds_text(d['timeToDetectP95Seconds'])}  "
            f"resolved {d['resolved']}/{d['trials']}  "
            f"p50={seconds_text(d['timeToResolveP50Seconds'])}  "
            f"p95={seconds_text(d['timeToResolveP95Seconds'])}  (seconds from the kill)"
        )
    if report.remediated:
        lines.append(_clocks_line(report))
    writes = write_unavailability(report.attempts)
    slowest = write_unavailability(report.attempts, "slowestSeconds")
    if writes is not None:
        lines.append(
            f"writes     unavailable p50={seconds_text(writes.p50)}  p95={seconds_text(writes.p95)}  "
            f"max={seconds_text(writes.max)}  (seconds per trial)"
        )
    if slowest is not None:
        lines.append(
            f"           slowest write p50={seconds_text(slowest.p50)}  p95={seconds_text(slowest.p95)}  "
            f"max={seconds_text(slowest.max)}"
        )
    return lines


def _clocks_line(report: CampaignReport) -> str:
    found = clocks.clocks_summary(report.attempts)
    words = {"detect": "detect", "firstAction": "first action", "recover": "recover"}
    parts = [
        f"{words[key]} p50={seconds_text(found[key]['p50Seconds'])} "
        f"p95={seconds_text(found[key]['p95Seconds'])} ({found[key]['n']}/{found['trials']})"
        for key, _ in clocks.CLOCKS
    ]
    return "clocks     " + "  ".join(parts) + "  (seconds from the fault)"


def _write_json(summary: stats.RecoverySummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {"n": summary.n, "p50": summary.p50, "p95": summary.p95, "max": summary.max}


def _failure_lines(report: CampaignReport) -> list[str]:
    if not report.failures:
        return []
    lines = ["", "failures   (by count x time lost)"]
    for r in report.failures:
        lines.append(f"  {r.count:>5} x  {r.seconds_lost:>10.3f} s  {r.outcome.value:<12} {r.reason}")
    return lines


# --- markdown ----------------------------------------------------------------------------------

#: Per-trial rows in the markdown; more would not fit a pull-request comment (65,536 characters).
MARKDOWN_TRIAL_ROWS: Final = 50


def md_cell(text: str) -> str:
    """Text for a markdown table cell: no pipes, no line breaks, no HTML (``<uid>`` stays visible)."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(report: CampaignReport) -> str:
    """For a pull-request comment: the summary table first, per-trial phases folded below."""
    c, s, n, ci = report.campaign, report.summary, report.counts, report.intervals
    verdict = c.verdict.value or "no verdict"
    out = [
        f"### aftershock: `{c.namespace}/{c.name}` {verdict}",
        "",
        f"{c.phase.value}, mode {mode(c)}: {n.completed}/{c.requested_trials} trials completed "
        f"({n.recovered} recovered, {n.unrecovered} unrecovered); retried: {n.interrupted} interrupted, "
        f"{n.infra_error} infra errors.",
        "",
    ]
    level = f" ({ci.bootstrap.level:.0%} CI)" if ci is not None else ""
    p50_ci, p95_ci = (None, None) if ci is None else (ci.p50, ci.p95)
    out += [
        f"| n | p50{level} | p95{level} | max | mean |",
        "|--:|--:|--:|--:|--:|",
        f"| {s.n} | {_with_ci(s.p50, p50_ci)} | {_with_ci(s.p95, p95_ci)} | "
        f"{seconds_text(s.max)} | {seconds_text(s.mean)} |",
        "",
        "Seconds; p50/p95 over recovered trials."
        + (
            f" Intervals: percentile bootstrap, {ci.bootstrap.resamples} resamples, seed {ci.bootstrap.seed}."
            if ci is not None
            else ""
        ),
    ]
    if report.remediated:
        out += ["", "Clocks: " + _clocks_line(report).removeprefix("clocks").strip()]
    if report.failures:
        out += ["", "| failures | time lost (s) | outcome | reason |", "|--:|--:|---|---|"]
        out += [
            f"| {r.count} | {r.seconds_lost:.3f} | {r.outcome.value} | {md_cell(r.reason)} |"
            for r in report.failures
        ]
    rows, chain = report.attempts[:MARKDOWN_TRIAL_ROWS], phases_for(report.attempts)
    if rows:
        out += [
            "",
            f"<details><summary>Per-trial phases ({len(report.attempts)} attempts, seconds)</summary>",
            "",
            "| # | try | outcome | " + " | ".join(p.header for p in chain) + " | recovery |",
            "|--:|--:|---|" + "--:|" * (len(chain) + 1),
        ]
        out += [
            f"| {a.trial_index} | {a.attempt} | {IN_FLIGHT if a.outcome is None else a.outcome.value} | "
            + " | ".join(seconds_text(phase_seconds(a, p)) for p in chain)
            + f" | {seconds_text(a.recovery_seconds)} |"
            for a in rows
        ]
        if len(report.attempts) > len(rows):
            more = len(report.attempts) - len(rows)
            out += ["", f"... {more} more: `aftershock export` has every attempt."]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"
