"""`Ledger`: the trial ledger on one SQLite file, and the only code that speaks SQL.

Durability: the file lives on the operator's PVC, in WAL mode with ``synchronous=FULL``, and
every write is one explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``. An attempt is committed before
its pod is killed and its outcome is committed in the same transaction as the completed
trial, so after a crash or a power loss the ledger holds either the whole trial or an
in-flight attempt that `Ledger.interrupt_inflight` turns into ``interrupted``, never half.

Concurrency: one `Ledger` is one connection, shared by coroutines; an `asyncio.Lock` keeps
their transactions from interleaving on it. Another process holding the write lock makes a
write wait up to ``busy_timeout`` and then fail with a `LedgerError` saying so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NoReturn

import aiosqlite

from aftershock import model, stats
from aftershock.ledger import schema
from aftershock.ledger.errors import CampaignNotFoundError, DuplicateTrialError, LedgerError
from aftershock.model import AttemptRecord, CampaignRef, Milestone, Outcome, Phase, Verdict, Victim

#: How long a write waits for another connection's write lock before failing, in ms.
BUSY_TIMEOUT_MS: Final = 5000

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
#: The subject's own milestones of the attempt, as one JSON object {name: [wall, offset]}.
_SUBJECT_MILESTONES: Final = (
    '(SELECT json_group_object(m.name, json_array(m.wall, m."offset")) '
    "FROM subject_milestones m WHERE m.attempt_id = a.id)"
)
_SELECT_ATTEMPTS: Final = (
    f"SELECT {', '.join('a.' + c for c in _ATTEMPT_COLUMNS)}, {_SUBJECT_MILESTONES} FROM attempts a"
)
_CAMPAIGN_COLUMNS: Final = (
    "c.uid, c.namespace, c.name, c.spec, c.requested_trials, c.seed, c.phase, c.verdict, c.created_at, "
    "c.started_at, c.finished_at, c.deleted_at, coalesce(r.run, 1), coalesce(r.campaign_uid, c.uid), "
    "coalesce(r.token, '')"
)
_FROM_CAMPAIGNS: Final = "FROM campaigns c LEFT JOIN runs r ON r.run_uid = c.uid"


@dataclass(frozen=True)
class RunRow:
    """One run of a Campaign: ``run_uid`` keys its rows (the Campaign's uid for run 1)."""

    run_uid: str
    campaign_uid: str
    run: int
    token: str


@dataclass(frozen=True)
class CampaignRow:
    """One campaign as the ledger holds it. ``spec`` is the raw spec recorded at first sight."""

    uid: str
    namespace: str
    name: str
    spec: Mapping[str, Any]
    requested_trials: int
    seed: str
    phase: Phase
    verdict: Verdict
    created_at: float
    started_at: float | None
    finished_at: float | None
    deleted_at: float | None = None  # when the Campaign object was deleted, if it was
    #: Which run of its Campaign this row is (re-runs by annotation); ``uid`` is the run's id.
    run: int = 1
    #: The Campaign object's uid ('' when constructed by hand: then ``uid``).
    campaign_uid: str = ""
    #: The ``aftershock.dev/run`` annotation's value that started this run ('' for none).
    run_token: str = ""

    @property
    def ref(self) -> CampaignRef:
        return CampaignRef(namespace=self.namespace, name=self.name, uid=self.uid)

    @property
    def object_uid(self) -> str:
        return self.campaign_uid or self.uid


class Ledger:
    """The trial ledger. Open with `Ledger.open`; close with `close` or ``async with``."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        """Use `Ledger.open`: it sets the pragmas and migrates the schema."""
        self._db: aiosqlite.Connection | None = db
        self._path = path
        self._lock = asyncio.Lock()

    @property
    def path(self) -> str:
        return self._path

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path) -> Ledger:
        """Open (creating if needed) the ledger at ``path`` and bring its schema up to date.

        Raises `LedgerError` if the file cannot be opened, is not an aftershock ledger, or was
        written by a newer aftershock (its schema version is higher than this code knows).
        """
        where = str(path)
        # Checked first because a failed connect leaves aiosqlite's thread finishing after us.
        missing = await asyncio.to_thread(_missing_directory, where)
        if missing is not None:
            raise LedgerError(
                f"{where}: the directory {missing} does not exist; mount the ledger volume there "
                "or give another path"
            )
        with _translated(where, "opening the ledger"):
            # isolation_level=None: the driver never opens transactions behind our back; every
            # write below is an explicit BEGIN IMMEDIATE ... COMMIT.
            db = await aiosqlite.connect(where, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        ledger = cls(db, where)
        try:
            await ledger._configure()
            await ledger._migrate()
            await ledger._check_schema()
        except BaseException:
            await ledger.close()
            raise
        return ledger

    async def close(self) -> None:
        """Close the connection; idempotent."""
        db, self._db = self._db, None
        if db is not None:
            with _translated(self._path, "closing the ledger"):
                await db.close()

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _configure(self) -> None:
        db = self._conn()
        with _translated(self._path, "configuring the ledger"):
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = await _scalar(db, "PRAGMA journal_mode = WAL")
            # WAL: readers (the report, the status projection) never block the trial loop's
            # writes, and a commit appends to the log instead of rewriting pages in place.
            if str(mode).lower() != "wal" and not (self._path == ":memory:" and mode == "memory"):
                raise LedgerError(
                    f"{self._path}: SQLite refused WAL journal mode (got {mode!r}); the ledger needs a "
                    "local filesystem with shared-memory support (not NFS/SMB): use a ReadWriteOnce PVC"
                )
            # FULL: fsync the WAL at every commit. NORMAL (the usual WAL pairing) may lose the
            # last commits on power loss; a lost "trial completed" row means that trial's index
            # runs again and the pod is killed one more time than the ledger says.
            await db.execute("PRAGMA synchronous = FULL")
            await db.execute("PRAGMA foreign_keys = ON")

    async def _migrate(self) -> None:
        db = self._conn()
        with _translated(self._path, "checking the ledger's schema version"):
            version = int(await _scalar(db, "PRAGMA user_version"))
            application_id = int(await _scalar(db, "PRAGMA application_id"))
        self._refuse_newer(version)
        if version == 0:
            await self._refuse_foreign_file()
        elif application_id != schema.APPLICATION_ID:
            raise LedgerError(f"{self._path} is a SQLite file but not an aftershock ledger; refused")
        while version < schema.SCHEMA_VERSION:
            async with self._transaction(f"migrating the ledger to schema version {version + 1}") as tx:
                # Re-read inside the write lock: another process may have migrated meanwhile.
                version = int(await _scalar(tx, "PRAGMA user_version"))
                self._refuse_newer(version)
                if version >= schema.SCHEMA_VERSION:
                    break
                for statement in schema.MIGRATIONS[version]:
                    await tx.execute(statement)
                version += 1
                # user_version lives in the file header, which is part of this transaction.
                await tx.execute(f"PRAGMA user_version = {version}")

    def _refuse_newer(self, version: int) -> None:
        if version > schema.SCHEMA_VERSION:
            raise LedgerError(
                f"{self._path} has ledger schema version {version}, but this aftershock only knows up to "
                f"version {schema.SCHEMA_VERSION}: it was written by a newer aftershock. Upgrade the "
                "operator/CLI, or point it at another file; do not downgrade over an existing ledger."
            )

    async def _refuse_foreign_file(self) -> None:
        with _translated(self._path, "inspecting the ledger file"):
            tables = await _scalar(self._conn(), "SELECT count(*) FROM sqlite_master")
        if int(tables):
            raise LedgerError(
                f"{self._path} already holds a SQLite database that is not an aftershock ledger; refusing to "
                "add tables to it"
            )

    async def _check_schema(self) -> None:
        async with self._read("checking the ledger's columns") as db:
            columns = [str(row[1]) for row in await _rows(db, "PRAGMA table_info(attempts)")]
        missing = schema.missing_milestone_columns(columns, model.MILESTONES)
        if missing:
            raise LedgerError(
                f"{self._path}: the ledger schema has no columns for milestones {missing}; "
                "aftershock.ledger.schema needs a migration that adds them"
            )

    # --- campaigns -------------------------------------------------------------------------

    async def ensure_campaign(
        self,
        ref: CampaignRef,
        spec: Mapping[str, Any],
        requested_trials: int,
        seed: str,
        now: float,
    ) -> None:
        """Record a campaign at first sight; a uid already recorded keeps its row unchanged."""
        async with self._transaction("recording a campaign") as tx:
            await tx.execute(
                "INSERT INTO campaigns (uid, namespace, name, spec, requested_trials, seed, phase, "
                "verdict, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO NOTHING",
                (
                    ref.uid,
                    ref.namespace,
                    ref.name,
                    _dumps(spec),
                    requested_trials,
                    seed,
                    Phase.PENDING.value,
                    Verdict.NONE.value,
                    now,
                ),
            )

    async def set_campaign_state(
        self,
        campaign_uid: str,
        phase: Phase,
        verdict: Verdict,
        now: float,
        *,
        started: bool = False,
        finished: bool = False,
    ) -> None:
        """Record phase and verdict; ``started``/``finished`` stamp ``now`` once (the first time)."""
        async with self._transaction("updating a campaign's state") as tx:
            cursor = await tx.execute(
                "UPDATE campaigns SET phase = ?, verdict = ?, "
                "started_at = CASE WHEN ? THEN coalesce(started_at, ?) ELSE started_at END, "
                "finished_at = CASE WHEN ? THEN coalesce(finished_at, ?) ELSE finished_at END "
                "WHERE uid = ?",
                (phase.value, verdict.value, started, now, finished, now, campaign_uid),
            )
            if cursor.rowcount == 0:
                raise CampaignNotFoundError(f"no campaign with uid {campaign_uid} in the ledger")

    async def mark_deleted(self, campaign_uid: str, reason: str, now: float) -> list[AttemptRecord]:
        """Record that the Campaign was deleted at ``now``; return the attempts this interrupted.

        In one transaction: every attempt still in flight becomes ``interrupted`` with ``reason``
        (it measured nothing; the Campaign will not run it again), and an unfinished Campaign's
        phase becomes ``Deleted``. A finished one keeps its phase and verdict. The first
        deletion time stands; a uid the ledger never saw is left alone (nothing to record).
        """
        async with self._transaction("recording a campaign's deletion") as tx:
            interrupted = await _interrupt_inflight(tx, campaign_uid, reason, now)
            await tx.execute(
                "UPDATE campaigns SET deleted_at = coalesce(deleted_at, ?), "
                "phase = CASE WHEN phase IN (?, ?) THEN phase ELSE ? END WHERE uid = ?",
                (now, Phase.SUCCEEDED.value, Phase.FAILED.value, Phase.DELETED.value, campaign_uid),
            )
            return interrupted

    async def get_campaign(self, uid: str) -> CampaignRow | None:
        """The row of one run (``uid``: the run's id; the Campaign's uid for its first run)."""
        async with self._read("reading a campaign") as db:
            rows = await _rows(db, f"SELECT {_CAMPAIGN_COLUMNS} {_FROM_CAMPAIGNS} WHERE c.uid = ?", (uid,))
        return _campaign(rows[0]) if rows else None

    async def find_campaign(self, namespace: str, name: str, run: int | None = None) -> CampaignRow | None:
        """The most recently created campaign with that namespace and name (names get reused):
        its latest run, or run number `run` of it."""
        async with self._read("looking up a campaign") as db:
            rows = await _rows(
                db,
                f"SELECT {_CAMPAIGN_COLUMNS} {_FROM_CAMPAIGNS} WHERE c.namespace = ?1 AND c.name = ?2 "
                "AND (?3 IS NULL OR coalesce(r.run, 1) = ?3) "
                "ORDER BY c.created_at DESC, c.rowid DESC LIMIT 1",
                (namespace, name, run),
            )
        return _campaign(rows[0]) if rows else None

    async def list_campaigns(self) -> list[CampaignRow]:
        """Every campaign run, by namespace, name, then creation time."""
        async with self._read("listing campaigns") as db:
            rows = await _rows(
                db,
                f"SELECT {_CAMPAIGN_COLUMNS} {_FROM_CAMPAIGNS} "
                "ORDER BY c.namespace, c.name, c.created_at, c.rowid",
            )
        return [_campaign(r) for r in rows]

    async def campaigns_in_flight(self) -> list[CampaignRow]:
        """Every campaign run with an attempt in flight (no outcome yet)."""
        async with self._read("listing campaigns with attempts in flight") as db:
            rows = await _rows(
                db,
                f"SELECT {_CAMPAIGN_COLUMNS} {_FROM_CAMPAIGNS} WHERE EXISTS "
                "(SELECT 1 FROM attempts a WHERE a.campaign_uid = c.uid AND a.outcome IS NULL) "
                "ORDER BY c.namespace, c.name, c.created_at, c.rowid",
            )
        return [_campaign(r) for r in rows]

    # --- runs ---------------------------------------------------------------------------------

    async def latest_run(self, campaign_uid: str) -> RunRow | None:
        """The Campaign's newest run: from ``runs``, or its pre-runs row as run 1 (no token)."""
        async with self._read("reading a campaign's runs") as db:
            rows = await _rows(
                db,
                "SELECT run_uid, campaign_uid, run, token FROM runs WHERE campaign_uid = ?1 "
                "UNION ALL SELECT uid, uid, 1, '' FROM campaigns WHERE uid = ?1 "
                "AND NOT EXISTS (SELECT 1 FROM runs WHERE run_uid = ?1) ORDER BY 3 DESC LIMIT 1",
                (campaign_uid,),
            )
        return RunRow(str(rows[0][0]), str(rows[0][1]), int(rows[0][2]), str(rows[0][3])) if rows else None

    async def record_run(self, run: RunRow) -> None:
        """Record a run before it starts; recording the same run again changes nothing."""
        async with self._transaction("recording a run") as tx:
            await tx.execute(
                "INSERT INTO runs (run_uid, campaign_uid, run, token) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (run.run_uid, run.campaign_uid, run.run, run.token),
            )

    async def campaign_counts(self, campaign_uid: str) -> stats.AttemptCounts:
        """How the campaign's attempts ended so far (``in_flight``: not ended yet)."""
        async with self._read("counting attempts") as db:
            rows = await _rows(
                db,
                "SELECT outcome, count(*) FROM attempts WHERE campaign_uid = ? GROUP BY outcome",
                (campaign_uid,),
            )
        return stats.count_outcomes(
            outcome for value, n in rows for outcome in [None if value is None else Outcome(value)] * int(n)
        )

    # --- attempts --------------------------------------------------------------------------

    async def interrupt_inflight(self, campaign_uid: str, reason: str, now: float) -> list[AttemptRecord]:
        """Close every attempt still in flight as ``interrupted`` with ``reason``; return them.

        Called when the operator (re)starts a campaign: an attempt without an outcome was cut
        short by a crash or restart, so nothing it measured is trusted and its index runs again.
        """
        async with self._transaction("interrupting in-flight attempts") as tx:
            return await _interrupt_inflight(tx, campaign_uid, reason, now)

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
            ((known, in_flight_index, in_flight_attempt, completed, attempt),) = await _rows(
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
                    _dumps([dataclasses.asdict(v) for v in victims]),
                    victim_seed,
                    now,
                    _dumps(initial_state),
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
            found = await _rows(
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
                (outcome.value, _dumps(final_state), error, now, *values, attempt_id),
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
            rows = await _rows(
                db,
                f"{_SELECT_ATTEMPTS} WHERE a.campaign_uid = ? ORDER BY a.trial_index, a.attempt",
                (campaign_uid,),
            )
        return [_attempt(r) for r in rows]

    async def completed_trials(self, campaign_uid: str) -> list[AttemptRecord]:
        """The attempt that completed each trial, by trial index."""
        async with self._read("reading completed trials") as db:
            rows = await _rows(
                db,
                f"{_SELECT_ATTEMPTS} JOIN trials t ON t.attempt_id = a.id "
                "WHERE t.campaign_uid = ? ORDER BY t.trial_index",
                (campaign_uid,),
            )
        return [_attempt(r) for r in rows]

    async def next_trial_index(self, campaign_uid: str) -> int:
        """The smallest trial index not completed yet (0 for a new campaign; fills gaps first)."""
        async with self._read("finding the next trial index") as db:
            ((count, highest),) = await _rows(
                db, "SELECT count(*), max(trial_index) FROM trials WHERE campaign_uid = ?", (campaign_uid,)
            )
            if highest is None or highest == count - 1:
                return int(count)  # none yet, or 0..count-1 without a gap: the usual case
            value = await _scalar(
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
            rows = await _rows(db, "PRAGMA integrity_check")
        return "\n".join(str(r[0]) for r in rows)

    # --- plumbing --------------------------------------------------------------------------

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise LedgerError(f"the ledger at {self._path} is closed")
        return self._db

    @asynccontextmanager
    async def _read(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """Serialise with the transactions of other coroutines on this connection."""
        async with self._lock:
            db = self._conn()
            with _translated(self._path, action):
                yield db

    @asynccontextmanager
    async def _transaction(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any error or cancellation.

        IMMEDIATE takes the write lock at once, so a busy database fails here, before anything
        was read that could be stale, rather than at the first write.
        """
        async with self._lock:
            db = self._conn()
            with _translated(self._path, action):
                try:
                    await db.execute("BEGIN IMMEDIATE")
                    yield db
                    await db.execute("COMMIT")
                except BaseException:
                    # Unconditional: the driver runs statements in order, so even if the caller was
                    # cancelled while BEGIN or a write was still queued, this ROLLBACK runs after
                    # it. Shielded, so a second cancellation cannot leave the transaction open.
                    await asyncio.shield(_rollback(db))
                    raise


# --- rows to model values ------------------------------------------------------------------


async def _interrupt_inflight(
    tx: aiosqlite.Connection, campaign_uid: str, reason: str, now: float
) -> list[AttemptRecord]:
    ids = [
        int(r[0])
        for r in await _rows(
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


def _campaign(row: sqlite3.Row | tuple[Any, ...]) -> CampaignRow:
    return CampaignRow(
        uid=row[0],
        namespace=row[1],
        name=row[2],
        spec=json.loads(row[3]),
        requested_trials=int(row[4]),
        seed=row[5],
        phase=Phase(row[6]),
        verdict=Verdict(row[7]),
        created_at=float(row[8]),
        started_at=row[9],
        finished_at=row[10],
        deleted_at=row[11],
        run=int(row[12]),
        campaign_uid=str(row[13]),
        run_token=str(row[14]),
    )


def _attempt(row: sqlite3.Row | tuple[Any, ...]) -> AttemptRecord:
    value = dict(zip(_ATTEMPT_COLUMNS, row[:-1], strict=True))
    milestones: dict[str, Milestone] = {}
    for name in model.MILESTONES:
        wall_col, offset_col = schema.milestone_columns(name)
        wall, offset = value[wall_col], value[offset_col]
        if wall is not None and offset is not None:
            milestones[name] = Milestone(wall=float(wall), offset=float(offset))
    # Then the subject's own, in the order they were reached.
    own = {
        str(n): Milestone(wall=float(w), offset=float(o)) for n, (w, o) in json.loads(row[-1] or "{}").items()
    }
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
    rows = await _rows(db, f"{_SELECT_ATTEMPTS} WHERE a.id = ?", (attempt_id,))
    if not rows:  # pragma: no cover - callers hold the id of a row they just wrote
        raise LedgerError(f"attempt {attempt_id} is not in the ledger")
    return _attempt(rows[0])


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


def _dumps(value: Any) -> str:
    """Canonical JSON; any Mapping/sequence (e.g. kopf's spec views) becomes an object/array."""

    def default(o: Any) -> Any:
        if isinstance(o, Mapping):
            return dict(o)
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        raise TypeError(f"{type(o).__name__} cannot be stored in the ledger as JSON")

    return json.dumps(value, default=default, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _missing_directory(path: str) -> str | None:
    if path == ":memory:" or path.startswith("file:"):
        return None
    directory = os.path.dirname(os.path.abspath(path))
    return None if os.path.isdir(directory) else directory


async def _rows(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Every row, read to the end so no statement stays open holding a read snapshot."""
    return [tuple(r) for r in await db.execute_fetchall(sql, params)]


async def _scalar(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    rows = await _rows(db, sql, params)
    return rows[0][0] if rows else None


async def _rollback(db: aiosqlite.Connection) -> None:
    try:
        await db.execute("ROLLBACK")
    except sqlite3.OperationalError as e:
        if "no transaction is active" not in str(e):
            raise


# --- errors a person can act on --------------------------------------------------------------

_ADVICE: Final = {
    "SQLITE_BUSY": "the database is locked by another process (is a second operator replica or an "
    f"`aftershock` command writing to it?); gave up after {BUSY_TIMEOUT_MS} ms",
    "SQLITE_LOCKED": "the database is locked by another connection of this process",
    "SQLITE_FULL": "the disk is full: grow the operator's ledger PVC (or free space) and restart",
    "SQLITE_READONLY": "the file or its directory is read-only: the ledger needs a writable volume",
    "SQLITE_CANTOPEN": "cannot open the file: does its directory exist and is it writable by the operator?",
    "SQLITE_CORRUPT": "the file is corrupt: keep a copy and run `sqlite3 <file> 'PRAGMA integrity_check'`",
    "SQLITE_NOTADB": "the file is not a SQLite database: check the ledger path",
    "SQLITE_IOERR": "an I/O error from the volume: check the PVC and the node's disk",
    "SQLITE_PERM": "permission denied: the operator's user cannot write the ledger file",
}


@contextmanager
def _translated(path: str, action: str) -> Iterator[None]:
    """Re-raise driver errors as `LedgerError` saying what failed and what to do; keep the cause."""
    try:
        yield
    except sqlite3.Error as e:
        _raise_ledger_error(path, action, e)
    except ValueError as e:
        # aiosqlite raises ValueError("no active connection") once its connection is gone.
        if "connection" in str(e).lower():
            raise LedgerError(f"{path}: {action} failed: the connection is closed ({e})") from e
        raise


def _raise_ledger_error(path: str, action: str, e: sqlite3.Error) -> NoReturn:
    name = str(getattr(e, "sqlite_errorname", "") or "")
    advice = _ADVICE.get("_".join(name.split("_")[:2]))  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    if advice is None:
        text = str(e).lower()
        if "locked" in text:
            advice = _ADVICE["SQLITE_BUSY"]
        elif "disk is full" in text or "database or disk is full" in text:
            advice = _ADVICE["SQLITE_FULL"]
    message = f"{path}: {action} failed: {e}"
    raise LedgerError(f"{message} ({advice})" if advice else message) from e
