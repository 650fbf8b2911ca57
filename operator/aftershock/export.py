"""Every attempt of one or more campaigns as flat rows: CSV or JSON for spreadsheets and notebooks;
or, with ``--per campaign``, one row per Campaign run: its three clocks' p50/p95 and counts
(`CAMPAIGN_COLUMNS`, the same numbers as the status's ``clocks``: `aftershock.clocks`).

`load_rows` reads the ledger; the rest is pure. The columns are a stable interface: `COLUMNS`
names them in order with their meaning, ``docs/results.md`` documents them (a unit test keeps
the two in step), and a column, once released, keeps its name and meaning. New columns are
added at the end. After them come the subject's own (`subject_columns`): a column per
milestone a subject named for itself and per phase of its chain, named by the same rules
(``leaderElectedOffsetSeconds``, ``leaderLostToLeaderElectedSeconds``); none for TiKV.

Values are exactly what the ledger holds: seconds are written with ``repr`` (the shortest text
that reads back as the same float), timestamps both as ISO 8601 UTC (microseconds) and as unix
seconds. An empty CSV cell is JSON's null: the milestone was not seen, the attempt has no
outcome yet, there was no error.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

from aftershock import clocks, detection, model, phases, remediation, report
from aftershock.ledger import CampaignNotFoundError, CampaignRow, Ledger, schema
from aftershock.model import AttemptRecord


def milestone_column(milestone: str) -> str:
    """``kill_sent`` -> ``killSentOffsetSeconds``."""
    return f"{phases.camel(milestone)}OffsetSeconds"


def phase_column(phase: report.RecoveryPhase) -> str:
    """``killToGone`` -> ``killToGoneSeconds``."""
    return f"{phase.key}Seconds"


_MILESTONE_MEANING: Final = {
    "gate_passed": "steady state held (negative: before the kill)",
    "kill_sent": "the delete request left: 0 by definition",
    "kill_acked": "the API server answered the first delete (a sign the kill took effect)",
    "first_unhealthy": "the subject was first seen unhealthy",
    "victim_gone": "the victim pod object was gone",
    "replacement_created": "a replacement pod (new UID) existed",
    "replacement_scheduled": "the replacement was bound to a node",
    "replacement_ready": "the replacement was Ready",
    "store_up": "the subject's own view (PD) had the store Up again",
    "recovered": "the whole subject was healthy again",
    "relapsed": "the subject was unhealthy again within the settle window (the trial did not recover)",
}

#: (name, meaning) of every column, in order.
COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("campaignNamespace", "namespace of the Campaign"),
    ("campaignName", "name of the Campaign"),
    ("campaignUid", "uid of the Campaign (tells a re-created Campaign of the same name apart)"),
    ("index", "trial index, 0-based"),
    ("attempt", "attempt number at that index, 1-based (interrupted and infra-error attempts are retried)"),
    ("outcome", "recovered, unrecovered, interrupted, infra_error, dry_run, or in_flight (no outcome yet)"),
    ("victims", "names of the pods killed, separated by ';' in CSV (a list in JSON)"),
    ("startedAt", "when the attempt started, ISO 8601 UTC"),
    ("finishedAt", "when the attempt ended, ISO 8601 UTC; empty while in flight"),
    ("startedAtUnix", "startedAt as unix seconds, exactly as the ledger holds it"),
    ("finishedAtUnix", "finishedAt as unix seconds, exactly as the ledger holds it"),
    ("recoverySeconds", "kill sent -> subject healthy, monotonic clock; only for recovered attempts"),
    *(
        (milestone_column(m), f"seconds (monotonic) from the kill until {_MILESTONE_MEANING[m]}")
        for m in schema.COLUMN_MILESTONES
    ),
    *(
        (phase_column(p), f"duration of the phase {p.start} -> {p.end} (difference of the two offsets)")
        for p in report.PHASES
    ),
    ("error", "why the attempt did not recover or was retried, as recorded"),
    ("run", "which run of the Campaign (1, 2, ...: the annotation aftershock.dev/run starts a new one)"),
    (
        "timeToDetectSeconds",
        "seconds (monotonic) from the kill until the remediator's 'detected' Event was seen",
    ),
    (
        "timeToResolveSeconds",
        "seconds (monotonic) from the kill until the remediator's 'resolved' Event was seen",
    ),
    (
        "remediatorActions",
        "how many actions the remediator took in the trial window: its Events and its writes "
        "(empty: not watched)",
    ),
    (
        "timeToAlertSeconds",
        "seconds (monotonic) from the kill until the receiver got the first matching alert firing "
        "(spec.detection; empty: none)",
    ),
    (
        "timeToAlertResolvedSeconds",
        "seconds (monotonic) from the kill until every matching alert that fired was reported resolved",
    ),
    (
        "detectSeconds",
        "time to detect: seconds (monotonic) from the kill to the first matching alert firing, else to "
        "the remediator's 'detected' Event (empty: neither)",
    ),
    ("detectSource", "what detectSeconds was read from: alert or remediator (empty: neither)"),
    (
        "firstActionSeconds",
        "time to first action: seconds (monotonic) from the kill to the remediator's first action seen "
        "(empty: none)",
    ),
    (
        "actionsAfterRecovery",
        "how many of the remediator's actions came after the recovery (empty: its actions not watched)",
    ),
    (
        "recoveredNotBeforeSeconds",
        "how exact the recovery is: seconds (monotonic) from the kill to the earliest the subject can "
        "have recovered, as far as the operator's evidence goes (its last look that did not find it; "
        "empty: not recovered, or recorded before this was)",
    ),
    (
        "recoveredBySeconds",
        "seconds (monotonic) from the kill to the latest the subject can have recovered (the answer "
        "of the look that found it; the recovery's own offset when the pod watch or the heal completed it)",
    ),
)
COLUMN_NAMES: Final = tuple(name for name, _ in COLUMNS)
_DOCUMENTED: Final = frozenset(COLUMN_NAMES)

Row = dict[str, Any]

_CLOCK_NAMES: Final = {"detect": "to detect", "firstAction": "to first action", "recover": "to recover"}

#: (name, meaning) of every column of a per-Campaign row (``export --per campaign``), in order;
#: documented in ``docs/results.md`` under "Export per Campaign", stable as `COLUMNS` are.
CAMPAIGN_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("campaignNamespace", "namespace of the Campaign"),
    ("campaignName", "name of the Campaign"),
    ("campaignUid", "uid of the Campaign (tells a re-created Campaign of the same name apart)"),
    ("run", "which run of the Campaign (1, 2, ...)"),
    ("attempts", "every attempt of the run: retried, in flight and dry-run ones too"),
    ("trials", "completed trials (recovered, unrecovered or dry run): what the clocks are taken over"),
    *(
        column
        for key, meaning in clocks.CLOCKS
        for column in (
            (f"{key}Trials", f"completed trials that have a time {_CLOCK_NAMES[key]}: {meaning}"),
            (f"{key}P50Seconds", f"p50 of their times {_CLOCK_NAMES[key]}, seconds (empty: none)"),
            (f"{key}P95Seconds", f"p95 of their times {_CLOCK_NAMES[key]}, seconds (empty: none)"),
        )
    ),
)
CAMPAIGN_COLUMN_NAMES: Final = tuple(name for name, _ in CAMPAIGN_COLUMNS)


def attempt_row(campaign: CampaignRow, attempt: AttemptRecord) -> Row:
    """One attempt as a row with native values (victims as a list)."""
    row: Row = {
        "campaignNamespace": campaign.namespace,
        "campaignName": campaign.name,
        "campaignUid": campaign.object_uid,
        "index": attempt.trial_index,
        "attempt": attempt.attempt,
        "outcome": report.IN_FLIGHT if attempt.outcome is None else attempt.outcome.value,
        "victims": [v.name for v in attempt.victims],
        "startedAt": report.iso_utc(attempt.started_at),
        "finishedAt": report.iso_utc(attempt.finished_at),
        "startedAtUnix": attempt.started_at,
        "finishedAtUnix": attempt.finished_at,
        "recoverySeconds": attempt.recovery_seconds,
    }
    for m in schema.COLUMN_MILESTONES:
        found = attempt.milestones.get(m)
        row[milestone_column(m)] = None if found is None else found.offset
    for p in report.PHASES:
        row[phase_column(p)] = report.phase_seconds(attempt, p)
    row["error"] = attempt.error
    row["run"] = campaign.run
    said = remediation.remediator_timings(attempt)
    row["timeToDetectSeconds"] = said.detect
    row["timeToResolveSeconds"] = said.resolve
    row["remediatorActions"] = len(said.actions) if "remediatorActions" in attempt.final_state else None
    alerted = detection.detection_timings(attempt)
    row["timeToAlertSeconds"] = alerted.firing
    row["timeToAlertResolvedSeconds"] = alerted.resolved
    times = clocks.trial_clocks(attempt)
    row["detectSeconds"] = times.detect
    row["detectSource"] = times.detect_source
    row["firstActionSeconds"] = times.first_action
    row["actionsAfterRecovery"] = (
        len(model.actions_after_recovery(said.actions, attempt.milestones))
        if "remediatorActions" in attempt.final_state
        else None
    )
    span = attempt.final_state.get("recoveryBracket")
    span = span if isinstance(span, dict) else {}
    row["recoveredNotBeforeSeconds"] = _number(span.get("notBeforeOffset"))
    row["recoveredBySeconds"] = _number(span.get("byOffset"))
    return row


def _number(value: Any) -> float | None:
    """A float from the ledger's JSON, or None (absent, or not a number: never trusted blindly)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


#: Milestones with documented columns: TiKV's v1 chain, and the remediator's (timeToDetect/Resolve).
_NOT_SUBJECT_COLUMNS: Final = frozenset(
    {
        *schema.COLUMN_MILESTONES,
        model.REMEDIATOR_DETECTED,
        model.REMEDIATOR_RESOLVED,
        model.ALERT_FIRING,
        model.ALERT_RESOLVED,
    }
)


def subject_columns(attempts: Sequence[AttemptRecord]) -> tuple[list[str], tuple[report.RecoveryPhase, ...]]:
    """What a campaign's subject adds to the documented columns: the milestones it named for
    itself (etcd's ``leader_elected``), in recovery order, and its phases when they are not
    TiKV's (`phases.phases_for`). Both empty for TiKV."""
    names = {n for a in attempts for n in a.milestones} - _NOT_SUBJECT_COLUMNS
    chain = phases.phases_for(attempts)
    return phases.in_recovery_order(attempts, names), (() if chain == report.PHASES else chain)


def build_rows(campaign: CampaignRow, attempts: Iterable[AttemptRecord]) -> list[Row]:
    """The campaign's attempts as rows: the documented columns, then its subject's (the same
    keys on every row of the campaign, None where an attempt did not see a milestone)."""
    ordered = sorted(attempts, key=lambda a: (a.trial_index, a.attempt))
    names, chain = subject_columns(ordered)
    rows = []
    for a in ordered:
        row = attempt_row(campaign, a)
        for n in names:
            found = a.milestones.get(n)
            row[milestone_column(n)] = None if found is None else found.offset
        for p in chain:
            row[phase_column(p)] = report.phase_seconds(a, p)
        rows.append(row)
    return rows


def column_names(rows: Sequence[Row]) -> tuple[str, ...]:
    """The documented columns, then every subject column the rows hold, in first-seen order."""
    extra = {c: None for row in rows for c in row if c not in _DOCUMENTED}
    return (*COLUMN_NAMES, *extra)


def campaign_row(campaign: CampaignRow, attempts: Iterable[AttemptRecord]) -> Row:
    """One Campaign run as a row: its counts and each clock's p50/p95 (`clocks.clocks_summary`,
    as its status shows them), with native values."""
    every = list(attempts)
    found = clocks.clocks_summary(every)
    row: Row = {
        "campaignNamespace": campaign.namespace,
        "campaignName": campaign.name,
        "campaignUid": campaign.object_uid,
        "run": campaign.run,
        "attempts": len(every),
        "trials": found["trials"],
    }
    for key, _ in clocks.CLOCKS:
        row[f"{key}Trials"] = found[key]["n"]
        row[f"{key}P50Seconds"] = found[key]["p50Seconds"]
        row[f"{key}P95Seconds"] = found[key]["p95Seconds"]
    return row


async def load_campaign_rows(
    ledger: Ledger, namespace: str | None = None, name: str | None = None, run: int | None = None
) -> list[Row]:
    """`campaign_row` of each campaign `load_rows` would export, in the same order."""
    return [campaign_row(c, attempts) for c, attempts in await _load(ledger, namespace, name, run)]


async def load_rows(
    ledger: Ledger, namespace: str | None = None, name: str | None = None, run: int | None = None
) -> list[Row]:
    """The rows of the newest campaign ``namespace/name`` (its latest run, or run `run`), or of
    every campaign and every run when both are None.

    Every campaign: by namespace, name, creation; a re-created Campaign's older runs included.
    Raises `CampaignNotFoundError` for a name the ledger does not hold.
    """
    rows: list[Row] = []
    for campaign, attempts in await _load(ledger, namespace, name, run):
        rows += build_rows(campaign, attempts)
    return rows


async def _load(
    ledger: Ledger, namespace: str | None, name: str | None, run: int | None
) -> list[tuple[CampaignRow, list[AttemptRecord]]]:
    if name is None:
        campaigns = await ledger.list_campaigns()
    else:
        found = await ledger.find_campaign(namespace or "default", name, run)
        if found is None:
            raise CampaignNotFoundError(
                f"no campaign {namespace}/{name} in the ledger at {ledger.path}; "
                "`aftershock export --all` exports every campaign it holds"
            )
        campaigns = [found]
    return [(campaign, list(await ledger.attempts(campaign.uid))) for campaign in campaigns]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def render_csv(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    """RFC 4180 CSV with a header row; ``\\r\\n`` line ends as the RFC says. `columns`: in
    this order (default: `column_names`, for attempt rows)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    columns = column_names(rows) if columns is None else columns
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue()


def render_json(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    """A JSON array of objects with the same keys, the columns, in column order (`columns`, as
    for `render_csv`)."""
    columns = column_names(rows) if columns is None else columns
    ordered = [{c: row.get(c) for c in columns} for row in rows]
    return json.dumps(ordered, indent=1, allow_nan=False) + "\n"
