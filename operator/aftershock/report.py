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

import datetime
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aftershock import analysis, model, stats
from aftershock.ledger import CampaignNotFoundError, CampaignRow, Ledger
from aftershock.model import AttemptRecord, Outcome


@dataclass(frozen=True)
class RecoveryPhase:
    """One step of a recovery: from one milestone to the next."""

    header: str  # table column
    key: str  # JSON key; the export's ``<key>Seconds`` column
    start: str  # milestone
    end: str  # milestone
    label: str  # for people (legends)


#: The recovery, kill to healthy, as consecutive phases; their durations add up to the recovery
#: time when every milestone was seen.
PHASES: Final = (
    RecoveryPhase("kill->gone", "killToGone", "kill_sent", "victim_gone", "kill \u2192 victim gone"),
    RecoveryPhase(
        "gone->created",
        "goneToCreated",
        "victim_gone",
        "replacement_created",
        "gone \u2192 replacement created",
    ),
    RecoveryPhase(
        "created->scheduled",
        "createdToScheduled",
        "replacement_created",
        "replacement_scheduled",
        "created \u2192 scheduled",
    ),
    RecoveryPhase(
        "scheduled->ready",
        "scheduledToReady",
        "replacement_scheduled",
        "replacement_ready",
        "scheduled \u2192 Ready",
    ),
    RecoveryPhase(
        "ready->storeUp", "readyToStoreUp", "replacement_ready", "store_up", "Ready \u2192 store Up"
    ),
    RecoveryPhase("storeUp->healthy", "storeUpToHealthy", "store_up", "recovered", "store Up \u2192 healthy"),
)

#: The ``outcome`` of an attempt without one yet; `OUTCOME_VALUES` lists all the JSON may carry.
IN_FLIGHT: Final = "in_flight"
OUTCOME_VALUES: Final = (*(o.value for o in Outcome), IN_FLIGHT)
_ERROR_WIDTH: Final = 60


#: Outcomes that cost time without completing a measurement; `failure_reasons` ranks them.
FAILED_OUTCOMES: Final = (Outcome.UNRECOVERED, Outcome.INFRA_ERROR, Outcome.INTERRUPTED)
NO_ERROR: Final = "(no error recorded)"


@dataclass(frozen=True)
class RecoveryIntervals:
    """Bootstrap confidence intervals of the median and p95 recovery time."""

    p50: analysis.Interval
    p95: analysis.Interval
    bootstrap: analysis.Bootstrap


@dataclass(frozen=True)
class FailureReason:
    """Attempts that failed the same way: ``reason`` is their normalised error."""

    outcome: Outcome
    reason: str
    count: int
    seconds_lost: float  # wall time from start to finish of those attempts, summed
    attempts: tuple[tuple[int, int], ...]  # (trial index, attempt number)

    @property
    def impact(self) -> float:
        """count x time lost: what the ranking sorts by. A reason that strikes often and costs
        much ranks first; one frequent but instant, or one slow but once, ranks below."""
        return self.count * self.seconds_lost


@dataclass(frozen=True)
class CampaignReport:
    campaign: CampaignRow
    attempts: tuple[AttemptRecord, ...]  # by trial index, then attempt number
    summary: stats.RecoverySummary  # over the recovered trials
    counts: stats.AttemptCounts
    intervals: RecoveryIntervals | None = None  # None: not asked for, or no recovered trial
    failures: tuple[FailureReason, ...] = field(default=())

    @property
    def baseline(self) -> bool:
        return is_baseline(self.campaign)

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
    return build_report(campaign, attempts, bootstrap=bootstrap)


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


# --- phases and failures -----------------------------------------------------------------------


def phase_seconds(attempt: AttemptRecord, phase: RecoveryPhase) -> float | None:
    """How long the phase took; None unless both its milestones were seen."""
    a, b = attempt.milestones.get(phase.start), attempt.milestones.get(phase.end)
    return None if a is None or b is None else b.offset - a.offset


#: Milestones that are not steps of the recovery chain (before the kill, beside it, after it).
_OFF_CHAIN: Final = frozenset(
    {
        "gate_passed",
        "kill_acked",
        "first_unhealthy",
        "relapsed",
        "writes_failed",
        "writes_restored",
        # What the remediator said: beside the recovery, not a step of it.
        model.REMEDIATOR_DETECTED,
        model.REMEDIATOR_RESOLVED,
    }
)


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


def phases_for(attempts: Iterable[AttemptRecord]) -> tuple[RecoveryPhase, ...]:
    """The recovery's phases: TiKV's fixed chain, or, when the subject named milestones of its
    own (etcd's election), the chain of every milestone seen, in the order they were reached."""
    recovered = [a for a in attempts if a.outcome is Outcome.RECOVERED]
    names = {n for a in recovered for n in a.milestones} - _OFF_CHAIN
    if names <= set(model.MILESTONES):
        return PHASES
    median = {
        n: stats.percentile([m.offset for a in recovered if (m := a.milestones.get(n)) is not None], 50)
        or 0.0
        for n in names
    }
    chain = sorted(names, key=lambda n: (median[n], n == "recovered"))
    return tuple(
        RecoveryPhase(f"{a}->{b}", f"{a}To{b}", a, b, f"{a} \u2192 {b}") for a, b in itertools.pairwise(chain)
    )


def phase_medians(attempts: Iterable[AttemptRecord]) -> dict[str, float | None]:
    """Per phase key, the median duration over the recovered attempts that saw both milestones."""
    recovered = [a for a in attempts if a.outcome is Outcome.RECOVERED]
    return {
        p.key: stats.percentile([s for a in recovered if (s := phase_seconds(a, p)) is not None], 50)
        for p in phases_for(recovered)
    }


def write_unavailability(
    attempts: Iterable[AttemptRecord], key: str = "unavailableSeconds"
) -> stats.RecoverySummary | None:
    """Per recovered trial, how long writes failed (`key` ``unavailableSeconds``) or the
    slowest write (``slowestSeconds``), for subjects with a write probe; summarised."""
    seconds = [
        float(w[key])
        for a in attempts
        if a.outcome is Outcome.RECOVERED
        and isinstance(w := a.final_state.get("writes"), Mapping)
        and isinstance(w.get(key), int | float)
    ]
    return stats.summarize(seconds) if seconds else None


_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)
_IP = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
_HEX = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.IGNORECASE)
_HTTP_STATUS = re.compile(r"^[45]\d\d$")
_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(?:\.\d+)?")
_MAX_REASON: Final = 160


def normalise_error(text: str | None) -> str:
    """The error with what differs between occurrences of the same failure replaced, so they group.

    UUIDs become ``<uid>``, IP addresses ``<ip>``, long hex ids ``<id>``, and numbers ``N``
    (pod ordinals, store ids, seconds), except HTTP error statuses (400-599), which tell
    failures apart. Whitespace is collapsed and the result cut at 160 characters.
    """
    if text is None or not text.strip():
        return NO_ERROR
    flat = " ".join(text.split())
    flat = _UUID.sub("<uid>", flat)
    flat = _IP.sub("<ip>", flat)
    flat = _HEX.sub("<id>", flat)
    flat = _NUMBER.sub(lambda m: m.group(0) if _HTTP_STATUS.match(m.group(0)) else "N", flat)
    return flat if len(flat) <= _MAX_REASON else flat[: _MAX_REASON - 3] + "..."


def failure_reasons(attempts: Iterable[AttemptRecord]) -> tuple[FailureReason, ...]:
    """Unrecovered, infra-error and interrupted attempts grouped by outcome and normalised error.

    Ranked by count x time lost (time lost: wall time from each attempt's start to its end,
    summed), ties by count, then time lost: the first rows are where fixing something pays most.
    """
    groups: dict[tuple[Outcome, str], list[AttemptRecord]] = {}
    for a in attempts:
        if a.outcome in FAILED_OUTCOMES:
            groups.setdefault((a.outcome, normalise_error(a.error)), []).append(a)
    reasons = [
        FailureReason(
            outcome=outcome,
            reason=reason,
            count=len(members),
            seconds_lost=math.fsum(max(0.0, (a.finished_at or a.started_at) - a.started_at) for a in members),
            attempts=tuple((a.trial_index, a.attempt) for a in members),
        )
        for (outcome, reason), members in groups.items()
    ]
    return tuple(
        sorted(reasons, key=lambda r: (-r.impact, -r.count, -r.seconds_lost, r.outcome.value, r.reason))
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
        "storeId": victim.store_id,
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


def _attempt_json(attempt: AttemptRecord) -> dict[str, Any]:
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
        "initialState": dict(attempt.initial_state),
        "finalState": dict(attempt.final_state),
        "error": attempt.error,
    }


def _remediator_json(attempt: AttemptRecord) -> dict[str, Any]:
    t = remediator_timings(attempt)
    return {
        "timeToDetectSeconds": t.detect,
        "timeToResolveSeconds": t.resolve,
        "remediatorActions": [a.as_json() for a in t.actions],
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
        "trials": [_attempt_json(a) for a in report.attempts],
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
        },
        "failureReasons": [_failure_json(r) for r in report.failures],
    }


def render_json(report: CampaignReport) -> str:
    return json.dumps(to_json_value(report), indent=2, allow_nan=False) + "\n"


# --- table -----------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
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
    resets = any(reset_of(a) is not None for a in report.attempts)
    headers = [
        "index",
        "attempt",
        "outcome",
        "victims",
        *(p.header for p in PHASES),
        "recovery",
        *extra,
        *(["reset"] if resets else []),
        "error",
    ]
    numeric = {0, 1, *range(4, 4 + len(PHASES) + 1 + len(extra))}
    rows = [
        [
            str(a.trial_index),
            str(a.attempt),
            IN_FLIGHT if a.outcome is None else a.outcome.value,
            ",".join(v.name for v in a.victims) or "-",
            *(_seconds(phase_seconds(a, p)) for p in PHASES),
            _seconds(a.recovery_seconds),
            *(_remediator_cells(a) if signals else []),
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
    return "\n".join([*lines, "", *_summary_lines(report), *_failure_lines(report)]) + "\n"


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
    took = _seconds(float(seconds)) + "s" if isinstance(seconds, int | float) else "-"
    pods, claims = len(reset.get("pods") or ()), len(reset.get("claims") or ())
    return f"{reset.get('mode', '?')} {took} ({pods} pods, {claims} claims)"


def _remediator_cells(attempt: AttemptRecord) -> list[str]:
    t = remediator_timings(attempt)
    return [_seconds(t.detect), _seconds(t.resolve), str(len(t.actions))]


def _with_ci(value: float | None, interval: analysis.Interval | None) -> str:
    text = _seconds(value)
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
        f"recovery   n={s.n}  p50={_seconds(s.p50)}  p95={_seconds(s.p95)}  max={_seconds(s.max)}  "
        f"mean={_seconds(s.mean)}  (seconds)",
    ]
    if ci is not None:
        b = ci.bootstrap
        lines.append(
            f"{b.level:.0%} CI     p50 {_with_ci(s.p50, ci.p50)}  p95 {_with_ci(s.p95, ci.p95)}  "
            f"(percentile bootstrap, {b.resamples} resamples, seed {b.seed})"
        )
    if s.n:
        phases = phases_for(report.attempts)
        lines.append("phase p50  " + "  ".join(f"{p.header}={_seconds(medians[p.key])}" for p in phases))
    said = remediator_summary(report.attempts)
    if said is not None:
        lines.append(
            f"remediator detected {said['detected']}/{said['trials']}  "
            f"detect p50={_seconds(said['detectP50Seconds'])}  "
            f"resolved {said['resolved']}/{said['trials']}  "
            f"resolve p50={_seconds(said['resolveP50Seconds'])}  "
            f"actions/trial={_seconds(said['actionsPerTrial'])}  (seconds from the kill)"
        )
    writes = write_unavailability(report.attempts)
    slowest = write_unavailability(report.attempts, "slowestSeconds")
    if writes is not None:
        lines.append(
            f"writes     unavailable p50={_seconds(writes.p50)}  p95={_seconds(writes.p95)}  "
            f"max={_seconds(writes.max)}  (seconds per trial)"
        )
    if slowest is not None:
        lines.append(
            f"           slowest write p50={_seconds(slowest.p50)}  p95={_seconds(slowest.p95)}  "
            f"max={_seconds(slowest.max)}"
        )
    return lines


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


def _md(text: str) -> str:
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
        f"{_seconds(s.max)} | {_seconds(s.mean)} |",
        "",
        "Seconds; p50/p95 over recovered trials."
        + (
            f" Intervals: percentile bootstrap, {ci.bootstrap.resamples} resamples, seed {ci.bootstrap.seed}."
            if ci is not None
            else ""
        ),
    ]
    if report.failures:
        out += ["", "| failures | time lost (s) | outcome | reason |", "|--:|--:|---|---|"]
        out += [
            f"| {r.count} | {r.seconds_lost:.3f} | {r.outcome.value} | {_md(r.reason)} |"
            for r in report.failures
        ]
    rows = report.attempts[:MARKDOWN_TRIAL_ROWS]
    if rows:
        out += [
            "",
            f"<details><summary>Per-trial phases ({len(report.attempts)} attempts, seconds)</summary>",
            "",
            "| # | try | outcome | " + " | ".join(p.header for p in PHASES) + " | recovery |",
            "|--:|--:|---|" + "--:|" * (len(PHASES) + 1),
        ]
        out += [
            f"| {a.trial_index} | {a.attempt} | {IN_FLIGHT if a.outcome is None else a.outcome.value} | "
            + " | ".join(_seconds(phase_seconds(a, p)) for p in PHASES)
            + f" | {_seconds(a.recovery_seconds)} |"
            for a in rows
        ]
        if len(report.attempts) > len(rows):
            more = len(report.attempts) - len(rows)
            out += ["", f"... {more} more: `aftershock export` has every attempt."]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


# --- comparing two campaigns -------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignComparison:
    """Two campaigns' reports and the statistics of B against A (`analysis.compare`)."""

    a: CampaignReport
    b: CampaignReport
    result: analysis.Comparison
    a_source: str = ""  # where each ledger was read from, for the record
    b_source: str = ""

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
    return CampaignComparison(a=a, b=b, result=result, a_source=a_source, b_source=b_source)


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
            _seconds(a.p50),
            _seconds(b.p50),
            _signed(r.median_difference.estimate),
            _ci_text(r.median_difference),
        ),
        (
            "p95 (s)",
            _seconds(a.p95),
            _seconds(b.p95),
            _signed(r.p95_difference.estimate),
            _ci_text(r.p95_difference),
        ),
        ("mean (s)", _seconds(a.mean), _seconds(b.mean), "", ""),
        ("max (s)", _seconds(a.max), _seconds(b.max), "", ""),
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
    ]
    return "\n".join(lines) + "\n"


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
        *(f"- {_md(e)}" for e in r.evidence),
        *(f"- note: {_md(n)}" for n in cmp.notes),
    ]
    return "\n".join(out) + "\n"
