"""Attempts and trials in the ledger: beginning, killing, finishing, and reading them back.

An attempt is one try at a trial index; the attempt that completes its index is that index's
trial (a row in ``trials``), written in the same transaction as the attempt's outcome.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Final

import aiosqlite

from aftershock import model
from aftershock.ledger import schema, sql
from aftershock.ledger.connection import Connection
from aftershock.ledger.errors import CampaignNotFoundError, DuplicateTrialError, LedgerError
from aftershock.model import AttemptRecord, Milestone, Outcome, Victim

_MILESTONE_COLUMNS: Final = tuple(c for m in model.MILESTONES for c in schema.milestone_columns(m))
_ATTEMPT_COLUMNS: Final = (
    "id",
    "campaign_uid",
    "trial_index",
    "attempt",
    "victims",
    "victim_seed",
    "started_at",
    "finished_at",
    "outcome",
    "initial_state",
    "final_state",
    "error",
    *_MILESTONE_COLUMNS,
)
_SELECT_ATTEMPTS: Final = f"SELECT {', '.join('a.' + c for c in _ATTEMPT_COLUMNS)} FROM attempts a"
#: The subject's own milestones of the attempts a `_SELECT_ATTEMPTS` tail selects. Rows, not a
#: JSON aggregate: SQLite's JSON writes a REAL with 15 digits, and an offset must read back as
#: the float that was written.
_SELECT_SUBJECT_MILESTONES: Final = (
    'SELECT m.attempt_id, m.name, m.wall, m."offset" FROM subject_milestones m '
    "WHERE m.attempt_id IN (SELECT a.id FROM attempts a {tail})"
)


class Attempts(Connection):
    """The ledger's attempt and trial queries (a part of `aftershock.ledger.store.Ledger`)."""

    # --- attempts --------------------------------------------------------------------------

    async def interrupt_inflight(self, campaign_uid: str, reason: str, now: float) -> list[AttemptRecord]:
        """Close every attempt still in flight as ``interrupted`` with ``reason``; return them.

        Called when the operator (re)starts a campaign: an attempt without an outcome was cut
        short by a crash or restart, so nothing it measured is trusted and its index runs again.
        """
        async with self._transaction("interrupting in-flight attempts") as tx:
            return await interrupt_inflight_in(tx, campaign_uid, reason, now)

    async def begin_attempt(
        self,
        campaign_uid: str,
        trial_index: int,
        *,
        victims: Sequence[Victim],
        victim_seed: str,
        initial_state: Mapping[str, Any],
        gate_passed: Milestone | None,
        now: float,
    ) -> int:
        """Record a new attempt at ``trial_index`` before its kill; return the attempt id.

        The attempt number is one more than the attempts already made at that index. Refused
        (`LedgerError`) when the campaign is unknown, when another attempt of the campaign is
        still in flight (call `interrupt_inflight` first), and (`DuplicateTrialError`) when the
        index is already completed: in each case the kill must not happen.
        """
        gate_wall, gate_offset = schema.milestone_columns("gate_passed")
        async with self._transaction(f"starting trial {trial_index}") as tx:
            # One round trip for every check: each await is a hop to the driver's thread.
            ((known, in_flight_index, in_flight_attempt, completed, attempt),) = await sql.rows(
                tx,
                "SELECT EXISTS (SELECT 1 FROM campaigns WHERE uid = ?1), "
                "(SELECT trial_index FROM attempts WHERE campaign_uid = ?1 AND outcome IS NULL), "
                "(SELECT attempt FROM attempts WHERE campaign_uid = ?1 AND outcome IS NULL), "
                "EXISTS (SELECT 1 FROM trials WHERE campaign_uid = ?1 AND trial_index = ?2), "
                "(SELECT coalesce(max(attempt), 0) + 1 FROM attempts "
                "WHERE campaign_uid = ?1 AND trial_index = ?2)",
                (campaign_uid, trial_index),
            )
            if not known:
                raise CampaignNotFoundError(
                    f"no campaign with uid {campaign_uid} in the ledger; ensure_campaign must come first"
                )
            if in_flight_index is not None:
                raise LedgerError(
                    f"attempt {in_flight_attempt} of trial {in_flight_index} of campaign {campaign_uid} is "
                    "still in flight; interrupt_inflight must close it before another attempt starts"
                )
            if completed:
                raise DuplicateTrialError(campaign_uid, trial_index)
            cursor = await tx.execute(
                "INSERT INTO attempts (campaign_uid, trial_index, attempt, victims, victim_seed, started_at, "
                f"initial_state, {gate_wall}, {gate_offset}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    campaign_uid,
                    trial_index,
                    attempt,
                    sql.dumps([dataclasses.asdict(v) for v in victims]),
                    victim_seed,
                    now,
                    sql.dumps(initial_state),
                    None if gate_passed is None else gate_passed.wall,
                    None if gate_passed is None else gate_passed.offset,
                ),
            )
            if cursor.lastrowid is None:  # pragma: no cover - an INSERT always sets it
                raise LedgerError("SQLite returned no id for the new attempt")
            return cursor.lastrowid

    async def mark_kill_sent(
        self, attempt_id: int, kill_sent: Milestone, kill_acked: Milestone | None
    ) -> None:
        """Record that the kill left (and, if known, that the API server acknowledged it)."""
        milestones = {"kill_sent": kill_sent} | ({} if kill_acked is None else {"kill_acked": kill_acked})
        assignments, values = _milestone_assignments(milestones)
        async with self._transaction("recording the kill") as tx:
            cursor = await tx.execute(
                f"UPDATE attempts SET {assignments} WHERE id = ? AND outcome IS NULL", (*values, attempt_id)
            )
            if cursor.rowcount == 0:
                raise LedgerError(f"attempt {attempt_id} is unknown or already finished; kill not recorded")

    async def finish_attempt(
        self,
        attempt_id: int,
        outcome: Outcome,
        *,
        milestones: Mapping[str, Milestone],
        final_state: Mapping[str, Any],
        error: str | None,
        now: float,
    ) -> AttemptRecord:
        """Record how an attempt ended and, if it completes its trial, the trial: one transaction.

        Milestones given overwrite stored ones; those not given keep what `begin_attempt` and
        `mark_kill_sent` stored. Raises `DuplicateTrialError` (and changes nothing) if the
        trial's index is already completed, `LedgerError` if the attempt is unknown or finished.
        """
        own = {k: m for k, m in milestones.items() if k not in model.MILESTONES}
        assignments, values = _milestone_assignments({k: m for k, m in milestones.items() if k not in own})
        async with self._transaction(f"finishing attempt {attempt_id}") as tx:
            found = await sql.rows(
                tx, "SELECT campaign_uid, trial_index, outcome FROM attempts WHERE id = ?", (attempt_id,)
            )
            if not found:
                raise LedgerError(f"attempt {attempt_id} is not in the ledger")
            campaign_uid, trial_index, previous = str(found[0][0]), int(found[0][1]), found[0][2]
            if previous is not None:
                raise LedgerError(
                    f"attempt {attempt_id} (trial {trial_index}) already ended as {previous}; "
                    "an outcome is final"
                )
            await tx.execute(
                "UPDATE attempts SET outcome = ?, final_state = ?, error = ?, finished_at = ?"
                f"{', ' + assignments if assignments else ''} WHERE id = ?",
                (outcome.value, sql.dumps(final_state), error, now, *values, attempt_id),
            )
            await tx.executemany(
                'INSERT OR REPLACE INTO subject_milestones (attempt_id, name, wall, "offset") '
                "VALUES (?, ?, ?, ?)",
                [(attempt_id, name, m.wall, m.offset) for name, m in sorted(own.items())],
            )
            if outcome.completes_trial:
                try:
                    await tx.execute(
                        "INSERT INTO trials (campaign_uid, trial_index, attempt_id) VALUES (?, ?, ?)",
                        (campaign_uid, trial_index, attempt_id),
                    )
                except sqlite3.IntegrityError as e:
                    if "trials.trial_index" in str(e):
                        raise DuplicateTrialError(campaign_uid, trial_index) from e
                    raise
            return await _attempt_by_id(tx, attempt_id)

    async def attempts(self, campaign_uid: str) -> list[AttemptRecord]:
        """Every attempt of the campaign, by trial index then attempt number."""
        async with self._read("reading attempts") as db:
            return await _load(
                db, "WHERE a.campaign_uid = ? ORDER BY a.trial_index, a.attempt", (campaign_uid,)
            )

    async def completed_trials(self, campaign_uid: str) -> list[AttemptRecord]:
        """The attempt that completed each trial, by trial index."""
        async with self._read("reading completed trials") as db:
            return await load_completed(db, campaign_uid)

    async def next_trial_index(self, campaign_uid: str) -> int:
        """The smallest trial index not completed yet (0 for a new campaign; fills gaps first)."""
        async with self._read("finding the next trial index") as db:
            ((count, highest),) = await sql.rows(
                db, "SELECT count(*), max(trial_index) FROM trials WHERE campaign_uid = ?", (campaign_uid,)
            )
            if highest is None or highest == count - 1:
                return int(count)  # none yet, or 0..count-1 without a gap: the usual case
            value = await sql.scalar(
                db,
                "SELECT CASE WHEN NOT EXISTS "
                "(SELECT 1 FROM trials WHERE campaign_uid = ?1 AND trial_index = 0) THEN 0 ELSE "
                "(SELECT min(t.trial_index) + 1 FROM trials t WHERE t.campaign_uid = ?1 AND NOT EXISTS "
                "(SELECT 1 FROM trials u WHERE u.campaign_uid = ?1 "
                "AND u.trial_index = t.trial_index + 1)) END",
                (campaign_uid,),
            )
        return int(value)

    async def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"``, or the problems found, one a line."""
        async with self._read("checking the ledger's integrity") as db:
            rows = await sql.rows(db, "PRAGMA integrity_check")
        return "\n".join(str(r[0]) for r in rows)


# --- rows to model values ------------------------------------------------------------------


async def load_completed(db: aiosqlite.Connection, campaign_uid: str) -> list[AttemptRecord]:
    """The attempt that completed each trial of `campaign_uid` (a run's id), by trial index."""
    return await _load(
        db,
        "JOIN trials t ON t.attempt_id = a.id WHERE t.campaign_uid = ? ORDER BY t.trial_index",
        (campaign_uid,),
    )


async def interrupt_inflight_in(
    tx: aiosqlite.Connection, campaign_uid: str, reason: str, now: float
) -> list[AttemptRecord]:
    """Inside ``tx``: close the campaign's attempts in flight as ``interrupted``; return them."""
    ids = [
        int(r[0])
        for r in await sql.rows(
            tx,
            "SELECT id FROM attempts WHERE campaign_uid = ? AND outcome IS NULL ORDER BY id",
            (campaign_uid,),
        )
    ]
    await tx.execute(
        "UPDATE attempts SET outcome = ?, error = ?, finished_at = ? "
        "WHERE campaign_uid = ? AND outcome IS NULL",
        (Outcome.INTERRUPTED.value, reason, now, campaign_uid),
    )
    return [await _attempt_by_id(tx, i) for i in ids]


async def _load(db: aiosqlite.Connection, tail: str, params: tuple[Any, ...]) -> list[AttemptRecord]:
    """The attempts `tail` (a join, WHERE and ORDER BY on ``attempts a``) selects, each with the
    subject's own milestones."""
    own: dict[int, dict[str, Milestone]] = {}
    for attempt_id, name, wall, offset in await sql.rows(
        db, _SELECT_SUBJECT_MILESTONES.format(tail=tail), params
    ):
        own.setdefault(int(attempt_id), {})[str(name)] = Milestone(wall=float(wall), offset=float(offset))
    return [
        _attempt(r, own.get(int(r[0]), {})) for r in await sql.rows(db, f"{_SELECT_ATTEMPTS} {tail}", params)
    ]


def _attempt(row: sqlite3.Row | tuple[Any, ...], own: Mapping[str, Milestone]) -> AttemptRecord:
    value = dict(zip(_ATTEMPT_COLUMNS, row, strict=True))
    milestones: dict[str, Milestone] = {}
    for name in model.MILESTONES:
        wall_col, offset_col = schema.milestone_columns(name)
        wall, offset = value[wall_col], value[offset_col]
        if wall is not None and offset is not None:
            milestones[name] = Milestone(wall=float(wall), offset=float(offset))
    # Then the subject's own, in the order they were reached.
    milestones.update(sorted(own.items(), key=lambda kv: kv[1].offset))
    return AttemptRecord(
        campaign_uid=value["campaign_uid"],
        trial_index=int(value["trial_index"]),
        attempt=int(value["attempt"]),
        victims=tuple(Victim(**v) for v in json.loads(value["victims"])),
        victim_seed=value["victim_seed"],
        started_at=float(value["started_at"]),
        outcome=None if value["outcome"] is None else Outcome(value["outcome"]),
        milestones=milestones,
        initial_state=json.loads(value["initial_state"]),
        final_state=json.loads(value["final_state"]),
        error=value["error"],
        finished_at=value["finished_at"],
    )


async def _attempt_by_id(db: aiosqlite.Connection, attempt_id: int) -> AttemptRecord:
    found = await _load(db, "WHERE a.id = ?", (attempt_id,))
    if not found:  # pragma: no cover - callers hold the id of a row they just wrote
        raise LedgerError(f"attempt {attempt_id} is not in the ledger")
    return found[0]


def _milestone_assignments(milestones: Mapping[str, Milestone]) -> tuple[str, list[float]]:
    unknown = sorted(set(milestones) - set(model.MILESTONES))
    if unknown:
        raise ValueError(f"unknown milestones {unknown}; known: {list(model.MILESTONES)}")
    parts: list[str] = []
    values: list[float] = []
    for name in model.MILESTONES:
        m = milestones.get(name)
        if m is None:
            continue
        wall, offset = schema.milestone_columns(name)
        parts.append(f"{wall} = ?, {offset} = ?")
        values += [m.wall, m.offset]
    return ", ".join(parts), values
