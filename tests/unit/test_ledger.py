"""The ledger on real SQLite files: schema and migrations, the trial lifecycle, and the guarantees
(no two completed trials per index, nothing half-written, errors a person can act on)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aftershock import model
from aftershock.ledger import (
    SCHEMA_VERSION,
    CampaignNotFoundError,
    DuplicateTrialError,
    Ledger,
    LedgerError,
    schema,
    store,
)
from aftershock.model import CampaignRef, Milestone, Outcome, Phase, Verdict, Victim

REF = CampaignRef(namespace="chaos", name="tikv-kill", uid="0b5e-uid-1")
SPEC = {"subject": {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}}, "trials": 3}
VICTIM = Victim(name="tikv-1", uid="pod-uid-1", node="node-a", restart_count=2, member_id=5)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
async def ledger(db_path: Path) -> AsyncIterator[Ledger]:
    async with await Ledger.open(db_path) as opened:
        await opened.ensure_campaign(REF, SPEC, requested_trials=3, seed="42", now=1000.0)
        yield opened


async def run_trial(
    ledger: Ledger, index: int, outcome: Outcome = Outcome.RECOVERED, *, recovery: float = 12.5
) -> model.AttemptRecord:
    attempt_id = await ledger.begin_attempt(
        REF.uid,
        index,
        victims=[VICTIM],
        victim_seed=f"seed-{index}",
        initial_state={"stores": 3},
        gate_passed=Milestone(wall=2000.0, offset=-10.0),
        now=2000.0,
    )
    await ledger.mark_kill_sent(attempt_id, Milestone(wall=2010.0, offset=0.0), None)
    return await ledger.finish_attempt(
        attempt_id,
        outcome,
        milestones={"recovered": Milestone(wall=2010.0 + recovery, offset=recovery)},
        final_state={"stores": 3},
        error=None,
        now=2030.0,
    )


def raw(path: Path) -> sqlite3.Connection:
    """A second, plain connection: what another process (or a person with sqlite3) would do."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class TestSchema:
    async def test_empty_file_is_migrated_to_the_current_version(self, db_path: Path) -> None:
        async with await Ledger.open(db_path):
            pass
        conn = raw(db_path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"campaigns", "attempts", "trials"} <= tables

    async def test_wal_mode_is_on_in_the_file(self, ledger: Ledger, db_path: Path) -> None:
        assert raw(db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    async def test_every_milestone_has_its_two_columns(self, ledger: Ledger, db_path: Path) -> None:
        columns = [r[1] for r in raw(db_path).execute("PRAGMA table_info(attempts)")]
        assert schema.missing_milestone_columns(columns, model.MILESTONES) == []
        for name in model.MILESTONES:
            assert {f"{name}_wall", f"{name}_offset"} <= set(columns)

    async def test_reopening_keeps_data_and_does_not_migrate_again(self, db_path: Path) -> None:
        async with await Ledger.open(db_path) as first:
            await first.ensure_campaign(REF, SPEC, requested_trials=3, seed="42", now=1000.0)
            await run_trial(first, 0)
        async with await Ledger.open(db_path) as second:
            assert [t.trial_index for t in await second.completed_trials(REF.uid)] == [0]
        assert raw(db_path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    async def test_file_from_a_newer_schema_is_refused(self, db_path: Path) -> None:
        async with await Ledger.open(db_path):
            pass
        raw(db_path).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(LedgerError, match="newer aftershock"):
            await Ledger.open(db_path)

    async def test_other_sqlite_database_is_refused(self, db_path: Path) -> None:
        raw(db_path).execute("CREATE TABLE notes (x)")
        with pytest.raises(LedgerError, match="not an aftershock ledger"):
            await Ledger.open(db_path)
        assert [r[0] for r in raw(db_path).execute("SELECT name FROM sqlite_master")] == ["notes"]

    async def test_a_ledger_from_before_schema_6_reads_back_in_subject_neutral_terms(
        self, db_path: Path
    ) -> None:
        """Schema 6 renamed the victim's TiKV-only ``store_id`` to ``member_id`` and made TiKV's
        ``store_up`` a subject milestone: a ledger written before keeps every victim, in order,
        with the id under the new name, and every store_up exactly as written."""
        conn = raw(db_path)
        for migration in schema.MIGRATIONS[:5]:
            for statement in migration:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 5")
        conn.execute(
            "INSERT INTO campaigns (uid, namespace, name, spec, requested_trials, seed, phase, created_at) "
            "VALUES (?, 'chaos', 'tikv-kill', '{}', 3, '42', 'Running', 1000.0)",
            (REF.uid,),
        )
        old_victims = [
            {"name": f"tikv-{i}", "uid": f"u{i}", "node": None, "restart_count": 0, "store_id": i + 4}
            for i in (2, 0, 1)
        ]
        old_victims.append({"name": "tikv-3", "uid": "u3", "node": "n", "restart_count": 1, "store_id": None})
        store_up = Milestone(wall=1_714_564_808.774713, offset=6.774713325500816)  # 16-17 digits
        for index, victims in enumerate((old_victims, [])):
            conn.execute(
                "INSERT INTO attempts (campaign_uid, trial_index, attempt, victims, victim_seed, started_at, "
                "store_up_wall, store_up_offset) VALUES (?, ?, 1, ?, 's', 1.0, ?, ?)",
                (
                    REF.uid,
                    index,
                    json.dumps(victims),
                    *((store_up.wall, store_up.offset) if index == 0 else (None, None)),
                ),
            )
        conn.close()
        async with await Ledger.open(db_path) as ledger:
            first, second = await ledger.attempts(REF.uid)
        assert first.milestones == {"store_up": store_up}
        assert second.milestones == {}
        assert raw(db_path).execute(
            "SELECT count(*) FROM attempts WHERE store_up_wall IS NOT NULL"
        ).fetchone() == (0,)
        assert first.victims == (
            Victim("tikv-2", "u2", member_id=6),
            Victim("tikv-0", "u0", member_id=4),
            Victim("tikv-1", "u1", member_id=5),
            Victim("tikv-3", "u3", node="n", restart_count=1),
        )
        assert second.victims == ()
        assert raw(db_path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 6

    async def test_versioned_database_of_another_application_is_refused(self, db_path: Path) -> None:
        conn = raw(db_path)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("PRAGMA application_id = 1234")
        with pytest.raises(LedgerError, match="not an aftershock ledger"):
            await Ledger.open(db_path)

    async def test_file_that_is_not_sqlite_is_refused_with_the_cause(self, db_path: Path) -> None:
        await asyncio.to_thread(db_path.write_bytes, b"this is not a database at all, just some text" * 100)
        with pytest.raises(LedgerError, match="not a SQLite database") as info:
            await Ledger.open(db_path)
        assert isinstance(info.value.__cause__, sqlite3.DatabaseError)

    async def test_missing_directory_says_what_to_check(self, tmp_path: Path) -> None:
        with pytest.raises(LedgerError, match="no-such-dir does not exist; mount the ledger volume"):
            await Ledger.open(tmp_path / "no-such-dir" / "ledger.db")

    async def test_integrity_check_ok(self, ledger: Ledger) -> None:
        await run_trial(ledger, 0)
        assert await ledger.integrity_check() == "ok"

    async def test_closed_ledger_raises_ledger_error(self, db_path: Path) -> None:
        opened = await Ledger.open(db_path)
        await opened.close()
        await opened.close()  # idempotent
        with pytest.raises(LedgerError, match="closed"):
            await opened.list_campaigns()


class TestCampaigns:
    async def test_ensure_campaign_is_idempotent_and_keeps_the_first_row(self, ledger: Ledger) -> None:
        await ledger.ensure_campaign(REF, {"other": True}, requested_trials=99, seed="x", now=5000.0)
        row = await ledger.get_campaign(REF.uid)
        assert row is not None
        assert row.spec == SPEC
        assert (row.requested_trials, row.seed, row.created_at) == (3, "42", 1000.0)
        assert (row.phase, row.verdict) == (Phase.PENDING, Verdict.NONE)
        assert row.ref == REF

    async def test_find_campaign_returns_the_newest_with_that_name(self, ledger: Ledger) -> None:
        recreated = CampaignRef(REF.namespace, REF.name, "0b5e-uid-2")
        await ledger.ensure_campaign(recreated, SPEC, requested_trials=3, seed="43", now=3000.0)
        found = await ledger.find_campaign(REF.namespace, REF.name)
        assert found is not None
        assert found.uid == recreated.uid
        assert await ledger.find_campaign("elsewhere", REF.name) is None
        assert [c.uid for c in await ledger.list_campaigns()] == [REF.uid, recreated.uid]
        assert await ledger.get_campaign("nope") is None

    async def test_state_stamps_start_and_finish_once(self, ledger: Ledger) -> None:
        await ledger.set_campaign_state(REF.uid, Phase.RUNNING, Verdict.NONE, 1100.0, started=True)
        await ledger.set_campaign_state(REF.uid, Phase.RUNNING, Verdict.NONE, 1200.0, started=True)
        await ledger.set_campaign_state(REF.uid, Phase.SUCCEEDED, Verdict.PASS, 1300.0, finished=True)
        await ledger.set_campaign_state(REF.uid, Phase.SUCCEEDED, Verdict.PASS, 1400.0, finished=True)
        row = await ledger.get_campaign(REF.uid)
        assert row is not None
        assert (row.phase, row.verdict, row.started_at, row.finished_at) == (
            Phase.SUCCEEDED,
            Verdict.PASS,
            1100.0,
            1300.0,
        )

    async def test_state_of_unknown_campaign(self, ledger: Ledger) -> None:
        with pytest.raises(CampaignNotFoundError):
            await ledger.set_campaign_state("nope", Phase.RUNNING, Verdict.NONE, 1.0)


class TestAttempts:
    async def test_every_milestone_and_state_round_trips(self, ledger: Ledger, db_path: Path) -> None:
        # Distinct, non-round values so a column mix-up cannot go unnoticed.
        milestones = {
            name: Milestone(wall=1_700_000_000.123456 + i * 1.1, offset=-10.25 + i * 3.3)
            for i, name in enumerate(model.MILESTONES)
        }
        initial = {"stores": [{"id": 5, "state": "Up", "start_ts": 1.5}], "leader": None, "ok": True}
        final = {"stores": [{"id": 5, "state": "Up"}], "note": "ünïcode ✓"}
        victims = [VICTIM, Victim(name="tikv-2", uid="pod-uid-2")]
        attempt_id = await ledger.begin_attempt(
            REF.uid,
            0,
            victims=victims,
            victim_seed="seed-0",
            initial_state=initial,
            gate_passed=milestones["gate_passed"],
            now=2000.5,
        )
        await ledger.mark_kill_sent(attempt_id, milestones["kill_sent"], milestones["kill_acked"])
        rest = {k: v for k, v in milestones.items() if k not in ("gate_passed", "kill_sent", "kill_acked")}
        returned = await ledger.finish_attempt(
            attempt_id, Outcome.RECOVERED, milestones=rest, final_state=final, error=None, now=2100.25
        )
        async with await Ledger.open(db_path) as reopened:
            (stored,) = await reopened.attempts(REF.uid)
        for record in (returned, stored):
            assert dict(record.milestones) == milestones
            assert record.initial_state == initial
            assert record.final_state == final
            assert record.victims == tuple(victims)
            assert (record.started_at, record.finished_at) == (2000.5, 2100.25)
            assert (record.trial_index, record.attempt, record.victim_seed) == (0, 1, "seed-0")
            # From the first sign the kill took effect, never before the kill (ADR 0008); this
            # fixture's offsets are arbitrary, some negative.
            start = max(0.0, min(milestones["kill_acked"].offset, milestones["first_unhealthy"].offset))
            assert record.recovery_seconds == milestones["recovered"].offset - start

    @pytest.mark.parametrize("outcome", list(Outcome))
    async def test_every_outcome_is_accepted(self, ledger: Ledger, outcome: Outcome) -> None:
        record = await run_trial(ledger, 0, outcome)
        assert record.outcome is outcome
        completed = await ledger.completed_trials(REF.uid)
        assert [t.outcome for t in completed] == ([outcome] if outcome.completes_trial else [])

    async def test_attempts_are_numbered_per_index(self, ledger: Ledger) -> None:
        await run_trial(ledger, 0)
        await run_trial(ledger, 1, Outcome.INFRA_ERROR)
        await run_trial(ledger, 1, Outcome.INTERRUPTED)
        await run_trial(ledger, 1, Outcome.UNRECOVERED)
        assert [(a.trial_index, a.attempt, a.outcome) for a in await ledger.attempts(REF.uid)] == [
            (0, 1, Outcome.RECOVERED),
            (1, 1, Outcome.INFRA_ERROR),
            (1, 2, Outcome.INTERRUPTED),
            (1, 3, Outcome.UNRECOVERED),
        ]
        assert [(t.trial_index, t.attempt) for t in await ledger.completed_trials(REF.uid)] == [
            (0, 1),
            (1, 3),
        ]
        counts = await ledger.campaign_counts(REF.uid)
        assert (counts.recovered, counts.unrecovered, counts.infra_error, counts.interrupted) == (1, 1, 1, 1)
        assert counts.completed == 2

    async def test_next_trial_index_fills_gaps_first(self, ledger: Ledger) -> None:
        assert await ledger.next_trial_index(REF.uid) == 0
        for index in (0, 1, 3):
            await run_trial(ledger, index)
        await run_trial(ledger, 2, Outcome.INFRA_ERROR)  # not completed: still the gap
        assert await ledger.next_trial_index(REF.uid) == 2
        await run_trial(ledger, 2)
        assert await ledger.next_trial_index(REF.uid) == 4

    async def test_next_trial_index_when_zero_is_the_gap(self, ledger: Ledger) -> None:
        await run_trial(ledger, 1)
        assert await ledger.next_trial_index(REF.uid) == 0

    async def test_in_flight_attempt_is_interrupted_on_reopen(self, db_path: Path) -> None:
        async with await Ledger.open(db_path) as before_crash:
            await before_crash.ensure_campaign(REF, SPEC, requested_trials=3, seed="42", now=1000.0)
            await run_trial(before_crash, 0)
            attempt_id = await before_crash.begin_attempt(
                REF.uid, 1, victims=[VICTIM], victim_seed="s", initial_state={}, gate_passed=None, now=3000.0
            )
            await before_crash.mark_kill_sent(attempt_id, Milestone(3001.0, 0.0), Milestone(3001.2, 0.2))
            # the operator dies here: no finish_attempt
        async with await Ledger.open(db_path) as after:
            assert (await after.campaign_counts(REF.uid)).in_flight == 1
            (interrupted,) = await after.interrupt_inflight(REF.uid, "operator restarted", now=4000.0)
            assert (interrupted.trial_index, interrupted.attempt) == (1, 1)
            assert interrupted.outcome is Outcome.INTERRUPTED
            assert interrupted.error == "operator restarted"
            assert interrupted.finished_at == 4000.0
            assert set(interrupted.milestones) == {"kill_sent", "kill_acked"}
            assert await after.interrupt_inflight(REF.uid, "again", now=4001.0) == []
            assert await after.next_trial_index(REF.uid) == 1
            rerun = await run_trial(after, 1)
            assert rerun.attempt == 2

    async def test_begin_refused_while_another_attempt_is_in_flight(self, ledger: Ledger) -> None:
        await ledger.begin_attempt(
            REF.uid, 0, victims=[VICTIM], victim_seed="s", initial_state={}, gate_passed=None, now=1.0
        )
        with pytest.raises(LedgerError, match="still in flight"):
            await ledger.begin_attempt(
                REF.uid, 1, victims=[VICTIM], victim_seed="s", initial_state={}, gate_passed=None, now=2.0
            )

    async def test_begin_refused_for_unknown_campaign(self, ledger: Ledger) -> None:
        with pytest.raises(CampaignNotFoundError, match="ensure_campaign"):
            await ledger.begin_attempt(
                "nope", 0, victims=[], victim_seed="s", initial_state={}, gate_passed=None, now=1.0
            )

    async def test_begin_refused_for_a_completed_index(self, ledger: Ledger) -> None:
        await run_trial(ledger, 0)
        with pytest.raises(DuplicateTrialError):
            await run_trial(ledger, 0)
        assert len(await ledger.attempts(REF.uid)) == 1

    async def test_outcome_is_final(self, ledger: Ledger) -> None:
        record = await run_trial(ledger, 0, Outcome.INFRA_ERROR)
        (row,) = await ledger.attempts(REF.uid)
        attempt_id = await _attempt_id(ledger, record.trial_index, record.attempt)
        with pytest.raises(LedgerError, match="already ended"):
            await ledger.finish_attempt(
                attempt_id, Outcome.RECOVERED, milestones={}, final_state={}, error=None, now=1.0
            )
        with pytest.raises(LedgerError, match="already finished"):
            await ledger.mark_kill_sent(attempt_id, Milestone(1.0, 0.0), None)
        assert await ledger.attempts(REF.uid) == [row]

    async def test_a_subjects_own_milestones_are_kept_in_the_order_they_were_reached(
        self, ledger: Ledger
    ) -> None:
        attempt_id = await ledger.begin_attempt(
            REF.uid, 0, victims=[], victim_seed="s", initial_state={}, gate_passed=None, now=1.0
        )
        record = await ledger.finish_attempt(
            attempt_id,
            Outcome.RECOVERED,
            milestones={
                "recovered": Milestone(5.0, 4.0),
                "member_healthy": Milestone(4.0, 3.0),
                "leader_elected": Milestone(1.5, 0.5),
            },
            final_state={},
            error=None,
            now=6.0,
        )
        assert list(record.milestones) == ["recovered", "leader_elected", "member_healthy"]
        assert (await ledger.attempts(REF.uid))[0].milestones["leader_elected"] == Milestone(1.5, 0.5)


async def _attempt_id(ledger: Ledger, index: int, attempt: int) -> int:
    """Test-only lookup of a row id, through a plain connection to the same file."""
    conn = raw(Path(ledger.path))
    row = conn.execute(
        "SELECT id FROM attempts WHERE campaign_uid = ? AND trial_index = ? AND attempt = ?",
        (REF.uid, index, attempt),
    ).fetchone()
    return int(row[0])


class TestNoDuplicateTrials:
    async def test_database_refuses_a_second_completed_trial_for_an_index(
        self, ledger: Ledger, db_path: Path
    ) -> None:
        await run_trial(ledger, 0)
        conn = raw(db_path)
        conn.execute(
            "INSERT INTO attempts (campaign_uid, trial_index, attempt, victims, victim_seed, started_at, "
            "finished_at, outcome) VALUES (?, 0, 2, '[]', 's', 1.0, 2.0, 'recovered')",
            (REF.uid,),
        )
        second = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        with pytest.raises(sqlite3.IntegrityError, match=r"UNIQUE constraint failed: trials"):
            conn.execute(
                "INSERT INTO trials (campaign_uid, trial_index, attempt_id) VALUES (?, 0, ?)",
                (REF.uid, second),
            )

    async def test_database_refuses_a_trial_for_an_unfinished_or_retried_attempt(
        self, ledger: Ledger, db_path: Path
    ) -> None:
        conn = raw(db_path)
        for outcome in (None, "interrupted", "infra_error"):
            conn.execute(
                "INSERT INTO attempts (campaign_uid, trial_index, attempt, victims, victim_seed, started_at, "
                "finished_at, outcome) "
                "VALUES (?, 0, (SELECT 1 + count(*) FROM attempts), '[]', 's', 1.0, ?, ?)",
                (REF.uid, None if outcome is None else 2.0, outcome),
            )
            attempt_id = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            with pytest.raises(sqlite3.IntegrityError, match="completing outcome"):
                conn.execute(
                    "INSERT INTO trials (campaign_uid, trial_index, attempt_id) VALUES (?, 0, ?)",
                    (REF.uid, attempt_id),
                )

    async def test_database_refuses_a_trial_pointing_at_another_index(
        self, ledger: Ledger, db_path: Path
    ) -> None:
        await run_trial(ledger, 0)
        attempt_id = await _attempt_id(ledger, 0, 1)
        with pytest.raises(sqlite3.IntegrityError):
            raw(db_path).execute(
                "INSERT INTO trials (campaign_uid, trial_index, attempt_id) VALUES (?, 7, ?)",
                (REF.uid, attempt_id),
            )

    async def test_finish_rolls_back_when_the_index_was_completed_meanwhile(
        self, ledger: Ledger, db_path: Path
    ) -> None:
        attempt_id = await ledger.begin_attempt(
            REF.uid, 0, victims=[VICTIM], victim_seed="s", initial_state={}, gate_passed=None, now=1.0
        )
        # Another writer (a second operator, a bug) completes index 0 behind this attempt's back.
        conn = raw(db_path)
        conn.execute(
            "INSERT INTO attempts (campaign_uid, trial_index, attempt, victims, victim_seed, started_at, "
            "finished_at, outcome) VALUES (?, 0, 2, '[]', 's', 1.0, 2.0, 'recovered')",
            (REF.uid,),
        )
        other = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        conn.execute(
            "INSERT INTO trials (campaign_uid, trial_index, attempt_id) VALUES (?, 0, ?)", (REF.uid, other)
        )
        with pytest.raises(DuplicateTrialError) as info:
            await ledger.finish_attempt(
                attempt_id,
                Outcome.RECOVERED,
                milestones={"recovered": Milestone(5.0, 4.0)},
                final_state={},
                error=None,
                now=5.0,
            )
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
        assert (info.value.campaign_uid, info.value.trial_index) == (REF.uid, 0)
        # Rolled back: the attempt is still in flight, nothing of the finish was written.
        mine = next(a for a in await ledger.attempts(REF.uid) if a.attempt == 1)
        assert mine.outcome is None
        assert mine.finished_at is None
        assert "recovered" not in mine.milestones
        assert [t.attempt for t in await ledger.completed_trials(REF.uid)] == [2]


class TestFailures:
    async def test_locked_database_says_who_to_look_for(self, ledger: Ledger, db_path: Path) -> None:
        blocker = raw(db_path)
        blocker.execute("BEGIN IMMEDIATE")
        await ledger._conn().execute("PRAGMA busy_timeout = 100")  # keep the test fast
        try:
            with pytest.raises(LedgerError, match="locked by another process") as info:
                await run_trial(ledger, 0)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        finally:
            blocker.execute("ROLLBACK")
        assert await ledger.attempts(REF.uid) == []
        await run_trial(ledger, 0)  # usable again once the lock is gone

    async def test_full_disk_says_to_grow_the_volume(self, ledger: Ledger) -> None:
        # SQLite reports SQLITE_FULL when the file may not grow: the same error as a full PVC.
        conn = ledger._conn()
        (pages,) = next(iter(await conn.execute_fetchall("PRAGMA page_count")))
        await conn.execute(f"PRAGMA max_page_count = {pages}")
        big = {"blob": "x" * 200_000}
        with pytest.raises(LedgerError, match="disk is full: grow") as info:
            await ledger.ensure_campaign(
                CampaignRef("chaos", "big", "uid-big"), big, requested_trials=1, seed="1", now=1.0
            )
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert await ledger.get_campaign("uid-big") is None
        assert await ledger.integrity_check() == "ok"

    async def test_cancelled_writes_leave_no_transaction_open(self, ledger: Ledger) -> None:
        # Cancel a trial at every await point in turn; the ledger must stay usable and consistent.
        for steps in range(30):
            index = await ledger.next_trial_index(REF.uid)
            task = asyncio.create_task(run_trial(ledger, index))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await ledger.interrupt_inflight(REF.uid, "cancelled", now=1.0)
        assert await ledger.integrity_check() == "ok"
        record = await run_trial(ledger, await ledger.next_trial_index(REF.uid))
        assert record.outcome is Outcome.RECOVERED

    async def test_concurrent_writers_on_one_ledger_do_not_interleave(self, ledger: Ledger) -> None:
        refs = [CampaignRef("chaos", f"c{i}", f"uid-{i}") for i in range(20)]
        await asyncio.gather(
            *(
                ledger.ensure_campaign(r, SPEC, requested_trials=1, seed="1", now=float(i))
                for i, r in enumerate(refs)
            )
        )
        assert len(await ledger.list_campaigns()) == 21


async def test_ten_thousand_trials(db_path: Path) -> None:
    """A long campaign on a real file. Each trial is two durable commits (begin, finish): with
    synchronous=FULL the fsyncs dominate (about 1 ms each on a VM disk), not the code."""
    trials = 10_000
    started = time.monotonic()
    async with await Ledger.open(db_path) as ledger:
        await ledger.ensure_campaign(REF, SPEC, requested_trials=trials, seed="42", now=1000.0)
        for index in range(trials):
            if index % 1000 == 0:
                assert await ledger.next_trial_index(REF.uid) == index
            attempt_id = await ledger.begin_attempt(
                REF.uid,
                index,
                victims=[VICTIM],
                victim_seed=str(index),
                initial_state={"stores": 3},
                gate_passed=Milestone(wall=2000.0, offset=-10.0),
                now=2000.0,
            )
            await ledger.finish_attempt(
                attempt_id,
                Outcome.RECOVERED,
                milestones={
                    "kill_sent": Milestone(wall=2010.0, offset=0.0),
                    "recovered": Milestone(wall=2010.0 + index / 100, offset=index / 100),
                },
                final_state={"stores": 3},
                error=None,
                now=2030.0,
            )
        completed = await ledger.completed_trials(REF.uid)
        assert [t.trial_index for t in completed] == list(range(trials))
        assert completed[-1].recovery_seconds == (trials - 1) / 100
        assert await ledger.next_trial_index(REF.uid) == trials
        assert (await ledger.campaign_counts(REF.uid)).recovered == trials
        assert await ledger.integrity_check() == "ok"
    elapsed = time.monotonic() - started
    assert elapsed < 300, f"10,000 trials took {elapsed:.0f} s"


async def test_connection_pragmas(ledger: Ledger) -> None:
    """Per-connection settings the durability and locking promises rest on."""
    conn = ledger._conn()

    async def pragma(name: str) -> object:
        (value,) = next(iter(await conn.execute_fetchall(f"PRAGMA {name}")))
        return value

    assert await pragma("synchronous") == 2  # FULL
    assert await pragma("foreign_keys") == 1
    assert await pragma("busy_timeout") == store.BUSY_TIMEOUT_MS == 5000
    assert await pragma("journal_mode") == "wal"
