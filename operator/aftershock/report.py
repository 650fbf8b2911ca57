"""A campaign's report, read from the ledger: every attempt, the recovery statistics, the verdict.

`load_report` is the only function here that does I/O (it reads the ledger); `render_json` and
`render_table` are pure. The JSON is the export format (``aftershock report -o json``): every
attempt including interrupted and infra-error ones, timings as the ledger holds them, so an
analysis can be redone from it without the ledger file.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aftershock import model, stats
from aftershock.ledger import CampaignNotFoundError, CampaignRow, Ledger
from aftershock.model import AttemptRecord, Outcome

#: The columns of `render_table`: (header, from milestone, to milestone).
PHASES: Final = (
    ("kill->gone", "kill_sent", "victim_gone"),
    ("gone->created", "victim_gone", "replacement_created"),
    ("created->scheduled", "replacement_created", "replacement_scheduled"),
    ("scheduled->ready", "replacement_scheduled", "replacement_ready"),
    ("ready->storeUp", "replacement_ready", "store_up"),
)

#: The ``outcome`` of an attempt without one yet; `OUTCOME_VALUES` lists all the JSON may carry.
IN_FLIGHT: Final = "in_flight"
OUTCOME_VALUES: Final = (*(o.value for o in Outcome), IN_FLIGHT)
_ERROR_WIDTH: Final = 60


@dataclass(frozen=True)
class CampaignReport:
    campaign: CampaignRow
    attempts: tuple[AttemptRecord, ...]  # by trial index, then attempt number
    summary: stats.RecoverySummary  # over the recovered trials
    counts: stats.AttemptCounts


async def load_report(ledger: Ledger, namespace: str, name: str) -> CampaignReport:
    """The report of the newest campaign called ``namespace/name`` in the ledger.

    Raises `CampaignNotFoundError` (a `LedgerError`) naming the campaign and the file when
    there is none: a typo, or a Campaign the operator never started.
    """
    campaign = await ledger.find_campaign(namespace, name)
    if campaign is None:
        raise CampaignNotFoundError(
            f"no campaign {namespace}/{name} in the ledger at {ledger.path}; "
            "check the namespace and name (`aftershock report` lists what the ledger holds)"
        )
    return build_report(campaign, await ledger.attempts(campaign.uid))


def build_report(campaign: CampaignRow, attempts: Sequence[AttemptRecord]) -> CampaignReport:
    ordered = tuple(sorted(attempts, key=lambda a: (a.trial_index, a.attempt)))
    return CampaignReport(
        campaign=campaign,
        attempts=ordered,
        summary=stats.summarize(stats.recovery_times(ordered)),
        counts=stats.count_outcomes(a.outcome for a in ordered),
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
            for name in model.MILESTONES
            if (m := attempt.milestones.get(name)) is not None
        },
        "initialState": dict(attempt.initial_state),
        "finalState": dict(attempt.final_state),
        "error": attempt.error,
    }


def to_json_value(report: CampaignReport) -> dict[str, Any]:
    """The report as plain JSON values (what `render_json` serialises)."""
    c, s, n = report.campaign, report.summary, report.counts
    return {
        "campaign": {
            "namespace": c.namespace,
            "name": c.name,
            "uid": c.uid,
            "phase": c.phase.value,
            "verdict": c.verdict.value,
            "requestedTrials": c.requested_trials,
            "seed": c.seed,
            "createdAt": iso_utc(c.created_at),
            "startedAt": iso_utc(c.started_at),
            "finishedAt": iso_utc(c.finished_at),
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
        },
    }


def render_json(report: CampaignReport) -> str:
    return json.dumps(to_json_value(report), indent=2, allow_nan=False) + "\n"


# --- table -----------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _between(attempt: AttemptRecord, start: str, end: str) -> float | None:
    a, b = attempt.milestones.get(start), attempt.milestones.get(end)
    return None if a is None or b is None else b.offset - a.offset


def _one_line(text: str | None) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= _ERROR_WIDTH else flat[: _ERROR_WIDTH - 3] + "..."


def render_table(report: CampaignReport) -> str:
    """One row per attempt with its phase durations in seconds, then a summary block."""
    headers = ["index", "attempt", "outcome", "victims", *(p[0] for p in PHASES), "recovery", "error"]
    numeric = {0, 1, *range(4, 4 + len(PHASES) + 1)}
    rows = [
        [
            str(a.trial_index),
            str(a.attempt),
            IN_FLIGHT if a.outcome is None else a.outcome.value,
            ",".join(v.name for v in a.victims) or "-",
            *(_seconds(_between(a, start, end)) for _, start, end in PHASES),
            _seconds(a.recovery_seconds),
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
    return "\n".join([*lines, "", *_summary_lines(report)]) + "\n"


def _summary_lines(report: CampaignReport) -> list[str]:
    c, s, n = report.campaign, report.summary, report.counts
    verdict = c.verdict.value or "-"
    return [
        f"campaign   {c.namespace}/{c.name}  uid {c.uid}  seed {c.seed}",
        f"state      phase {c.phase.value}, verdict {verdict}",
        f"started    {iso_utc(c.started_at) or '-'}   finished {iso_utc(c.finished_at) or '-'}",
        f"trials     {n.completed}/{c.requested_trials} completed: {n.recovered} recovered, "
        f"{n.unrecovered} unrecovered, {n.dry_run} dry run",
        f"retried    {n.interrupted} interrupted, {n.infra_error} infra errors, {n.in_flight} in flight",
        f"recovery   n={s.n}  p50={_seconds(s.p50)}  p95={_seconds(s.p95)}  max={_seconds(s.max)}  "
        f"mean={_seconds(s.mean)}  (seconds)",
    ]
