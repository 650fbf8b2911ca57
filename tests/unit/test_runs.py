"""Runs: which run a Campaign's annotation asks for, and a ledger from before runs existed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aftershock.engine import runs
from aftershock.ledger import Ledger, RunRow, schema
from aftershock.model import CampaignRef, Milestone, Outcome, Phase

REF = CampaignRef("db", "kill-tikv", "uid-1")


async def test_a_new_campaign_is_run_one_and_the_same_token_resumes_it(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        first = await runs.resolve(ledger, REF, "")
        assert (first.run, first.run_uid) == (1, "uid-1")
        assert await runs.resolve(ledger, REF, "") == first


async def test_a_changed_token_is_the_next_run_with_an_id_of_its_own(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        await runs.resolve(ledger, REF, "")
        second = await runs.resolve(ledger, REF, "2026-12-01")
        third = await runs.resolve(ledger, REF, "again")
        assert [(second.run, second.run_uid), (third.run, third.run_uid)] == [(2, "uid-1#2"), (3, "uid-1#3")]
        # Going back to an older token is a new run too: only a change matters.
        assert (await runs.resolve(ledger, REF, "")).run == 4


async def test_each_run_is_found_by_number_and_the_latest_by_default(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        for token, now in (("", 1000.0), ("b", 2000.0)):
            run = await runs.resolve(ledger, REF, token)
            await ledger.ensure_campaign(runs.run_ref(REF, run), {}, 3, "7", now)
        latest = await ledger.find_campaign("db", "kill-tikv")
        first = await ledger.find_campaign("db", "kill-tikv", 1)
        assert latest is not None
        assert first is not None
        assert (latest.run, latest.run_token, latest.object_uid) == (2, "b", "uid-1")
        assert (first.run, first.uid) == (1, "uid-1")
        assert await ledger.find_campaign("db", "kill-tikv", 3) is None


def test_the_status_says_which_run_and_a_changed_annotation_asks_for_another() -> None:
    run = RunRow("uid-1#2", "uid-1", 2, "b")
    status = runs.status_fields(run)
    assert status == {"run": {"number": 2, "id": "uid-1#2", "token": "b"}}
    assert not runs.asks_for_a_new_run(status, {runs.RUN_ANNOTATION: "b"})
    assert runs.asks_for_a_new_run(status, {runs.RUN_ANNOTATION: "c"})
    # A status from before runs existed, no annotation: the same run.
    assert not runs.asks_for_a_new_run({"phase": "Succeeded"}, {})


async def test_a_ledger_from_before_runs_reads_as_run_one_and_a_re_run_is_run_two(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in schema.MIGRATIONS[:3]:
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute(
        "INSERT INTO campaigns (uid, namespace, name, spec, requested_trials, seed, phase, created_at) "
        "VALUES ('uid-1', 'db', 'kill-tikv', '{}', 3, '7', 'Succeeded', 1000.0)"
    )
    conn.close()
    async with await Ledger.open(path) as ledger:
        row = await ledger.get_campaign("uid-1")
        assert row is not None
        assert (row.run, row.phase, row.object_uid) == (1, Phase.SUCCEEDED, "uid-1")
        assert (await runs.resolve(ledger, REF, "")).run == 1
        assert (await runs.resolve(ledger, REF, "x")).run == 2


async def test_a_released_ledger_with_runs_keeps_them_and_gains_subject_milestones(tmp_path: Path) -> None:
    # Version 4 is the runs table as released; subject milestones came after it as 5.
    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in schema.MIGRATIONS[:4]:
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    conn.execute(
        "INSERT INTO campaigns (uid, namespace, name, spec, requested_trials, seed, phase, created_at) "
        "VALUES ('uid-1#2', 'db', 'kill-tikv', '{}', 3, '7', 'Running', 1000.0)"
    )
    conn.execute("INSERT INTO runs (run_uid, campaign_uid, run, token) VALUES ('uid-1#2', 'uid-1', 2, 'b')")
    conn.close()
    async with await Ledger.open(path) as ledger:
        row = await ledger.find_campaign("db", "kill-tikv")
        assert row is not None
        assert (row.run, row.run_token, row.object_uid) == (2, "b", "uid-1")
        attempt_id = await ledger.begin_attempt(
            "uid-1#2", 0, victims=[], victim_seed="s", initial_state={}, gate_passed=None, now=1.0
        )
        record = await ledger.finish_attempt(
            attempt_id,
            Outcome.RECOVERED,
            milestones={"recovered": Milestone(5.0, 4.0), "leader_elected": Milestone(1.5, 0.5)},
            final_state={},
            error=None,
            now=6.0,
        )
        assert record.milestones["leader_elected"] == Milestone(1.5, 0.5)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
