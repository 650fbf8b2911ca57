"""Reports built from real ledger files: the JSON export reproduces exactly what was written,
and the table shows each attempt's phase durations."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aftershock import model, report
from aftershock.ledger import CampaignNotFoundError, Ledger
from aftershock.model import CampaignRef, Milestone, Outcome, Phase, Verdict, Victim

REF = CampaignRef(namespace="chaos", name="tikv-kill", uid="uid-1")
SPEC = {"subject": {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}}, "trials": 2, "seed": 7}
T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z


def iso(unix: float) -> str:
    """An independent formatter for the expected values (binary fractions only, so exact)."""
    whole = int(unix)
    micros = round((unix - whole) * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


@dataclass
class Planned:
    """One attempt to write through the Ledger API, and what the JSON must then say about it."""

    index: int
    outcome: Outcome | None  # None: left in flight
    recovery: float | None = None
    error: str | None = None
    victims: tuple[Victim, ...] = (
        Victim(name="tikv-0", uid="pod-0", node="n1", restart_count=1, store_id=4),
    )
    milestones: dict[str, Milestone] = field(default_factory=dict)
    started_at: float = T0
    finished_at: float | None = None


def full_milestones(start: float, recovery: float) -> dict[str, Milestone]:
    """Every milestone, spaced so every phase has a distinct duration (quarters: exact floats)."""
    offsets = [-10.0, 0.0, 0.25, 0.5, 1.0, 1.75, 2.5, recovery - 1.5, recovery - 0.75, recovery]
    kill = start + 10.0
    return {
        name: Milestone(wall=kill + off, offset=off)
        for name, off in zip(model.MILESTONES, offsets, strict=True)
    }


async def write(ledger: Ledger, planned: Planned) -> None:
    attempt_id = await ledger.begin_attempt(
        REF.uid,
        planned.index,
        victims=planned.victims,
        victim_seed=f"vs-{planned.index}",
        initial_state={"stores": {"4": "Up"}, "index": planned.index},
        gate_passed=planned.milestones.get("gate_passed"),
        now=planned.started_at,
    )
    if "kill_sent" in planned.milestones:
        await ledger.mark_kill_sent(
            attempt_id, planned.milestones["kill_sent"], planned.milestones.get("kill_acked")
        )
    if planned.outcome is not None:
        assert planned.finished_at is not None
        rest = {
            k: v for k, v in planned.milestones.items() if k not in ("gate_passed", "kill_sent", "kill_acked")
        }
        await ledger.finish_attempt(
            attempt_id,
            planned.outcome,
            milestones=rest,
            final_state={"stores": {"4": "Up"}, "after": True},
            error=planned.error,
            now=planned.finished_at,
        )


def expected_trial(planned: Planned) -> dict[str, Any]:
    return {
        "index": planned.index,
        "attempt": None,  # filled by the caller, who knows the numbering
        "outcome": "in_flight" if planned.outcome is None else planned.outcome.value,
        "victims": [
            {
                "name": v.name,
                "uid": v.uid,
                "node": v.node,
                "restartCount": v.restart_count,
                "storeId": v.store_id,
            }
            for v in planned.victims
        ],
        "victimSeed": f"vs-{planned.index}",
        "startedAt": iso(planned.started_at),
        "finishedAt": None if planned.finished_at is None else iso(planned.finished_at),
        "recoverySeconds": planned.recovery if planned.outcome is Outcome.RECOVERED else None,
        "timings": {
            name: {"wall": iso(m.wall), "offsetSeconds": m.offset}
            for name in model.MILESTONES
            if (m := planned.milestones.get(name)) is not None
        },
        "initialState": {"stores": {"4": "Up"}, "index": planned.index},
        "finalState": {} if planned.outcome is None else {"stores": {"4": "Up"}, "after": True},
        "error": planned.error,
    }


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async with await Ledger.open(tmp_path / "ledger.db") as opened:
        await opened.ensure_campaign(REF, SPEC, requested_trials=2, seed="7", now=T0 - 60)
        yield opened


async def exported(ledger: Ledger) -> dict[str, Any]:
    loaded = await report.load_report(ledger, REF.namespace, REF.name)
    value: dict[str, Any] = json.loads(report.render_json(loaded))
    return value


def recovered(index: int, seconds: float) -> Planned:
    start = T0 + index * 100
    return Planned(
        index=index,
        outcome=Outcome.RECOVERED,
        recovery=seconds,
        milestones=full_milestones(start, seconds),
        started_at=start,
        finished_at=start + 60.5,
    )


class TestJson:
    async def test_no_trials(self, ledger: Ledger) -> None:
        out = await exported(ledger)
        assert out["campaign"] == {
            "namespace": "chaos",
            "name": "tikv-kill",
            "uid": "uid-1",
            "phase": "Pending",
            "verdict": "",
            "requestedTrials": 2,
            "seed": "7",
            "createdAt": iso(T0 - 60),
            "startedAt": None,
            "finishedAt": None,
            "spec": SPEC,
        }
        assert out["trials"] == []
        assert out["summary"] == {
            "n": 0,
            "p50Seconds": None,
            "p95Seconds": None,
            "maxSeconds": None,
            "meanSeconds": None,
            "completed": 0,
            "recovered": 0,
            "failed": 0,
            "dryRun": 0,
            "interrupted": 0,
            "infraErrors": 0,
            "inFlight": 0,
        }

    async def test_one_trial_every_milestone(self, ledger: Ledger) -> None:
        trial = recovered(0, 12.25)
        await write(ledger, trial)
        await ledger.set_campaign_state(REF.uid, Phase.RUNNING, Verdict.NONE, T0 - 30, started=True)
        await ledger.set_campaign_state(REF.uid, Phase.SUCCEEDED, Verdict.PASS, T0 + 90.5, finished=True)
        out = await exported(ledger)
        assert out["trials"] == [expected_trial(trial) | {"attempt": 1}]
        assert set(out["trials"][0]["timings"]) == set(model.MILESTONES)
        assert (out["campaign"]["phase"], out["campaign"]["verdict"]) == ("Succeeded", "Pass")
        assert (out["campaign"]["startedAt"], out["campaign"]["finishedAt"]) == (iso(T0 - 30), iso(T0 + 90.5))
        summary = out["summary"]
        assert (summary["n"], summary["completed"], summary["recovered"]) == (1, 1, 1)
        for key in ("p50Seconds", "p95Seconds", "maxSeconds", "meanSeconds"):
            assert summary[key] == 12.25

    async def test_two_trials_statistics(self, ledger: Ledger) -> None:
        trials = [recovered(0, 10.0), recovered(1, 20.0)]
        for t in trials:
            await write(ledger, t)
        out = await exported(ledger)
        assert out["trials"] == [expected_trial(t) | {"attempt": 1} for t in trials]
        summary = out["summary"]
        assert summary["n"] == 2
        assert summary["p50Seconds"] == pytest.approx(15.0)
        assert summary["p95Seconds"] == pytest.approx(19.5)
        assert summary["maxSeconds"] == 20.0
        assert summary["meanSeconds"] == pytest.approx(15.0)

    async def test_interrupted_retried_and_in_flight_attempts_are_all_exported(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        interrupted = Planned(
            index=1,
            outcome=None,
            milestones={"kill_sent": Milestone(T0 + 210.0, 0.0), "kill_acked": Milestone(T0 + 210.25, 0.25)},
            started_at=T0 + 200,
        )
        infra = Planned(
            index=1,
            outcome=Outcome.INFRA_ERROR,
            error="apiserver: 503\nretrying",
            started_at=T0 + 400,
            finished_at=T0 + 401,
        )
        unrecovered = Planned(
            index=1,
            outcome=Outcome.UNRECOVERED,
            error="store 4 not Up after 600 s",
            milestones={"kill_sent": Milestone(T0 + 510.0, 0.0), "victim_gone": Milestone(T0 + 511.5, 1.5)},
            started_at=T0 + 500,
            finished_at=T0 + 1110,
        )
        in_flight = Planned(index=2, outcome=None, started_at=T0 + 1200)
        async with await Ledger.open(path) as first:
            await first.ensure_campaign(REF, SPEC, requested_trials=3, seed="7", now=T0 - 60)
            await write(first, recovered(0, 8.5))
            await write(first, interrupted)  # the operator dies during trial 1
        async with await Ledger.open(path) as ledger:
            await ledger.interrupt_inflight(REF.uid, "operator restarted", now=T0 + 300.5)
            await write(ledger, infra)
            await write(ledger, unrecovered)
            await write(ledger, in_flight)
            out = await exported(ledger)
        interrupted_expected = expected_trial(interrupted) | {
            "attempt": 1,
            "outcome": "interrupted",
            "finishedAt": iso(T0 + 300.5),
            "error": "operator restarted",
        }
        assert out["trials"] == [
            expected_trial(recovered(0, 8.5)) | {"attempt": 1},
            interrupted_expected,
            expected_trial(infra) | {"attempt": 2},
            expected_trial(unrecovered) | {"attempt": 3},
            expected_trial(in_flight) | {"attempt": 1},
        ]
        assert {t["outcome"] for t in out["trials"]} <= set(report.OUTCOME_VALUES)
        assert out["summary"] == {
            "n": 1,
            "p50Seconds": 8.5,
            "p95Seconds": 8.5,
            "maxSeconds": 8.5,
            "meanSeconds": 8.5,
            "completed": 2,
            "recovered": 1,
            "failed": 1,
            "dryRun": 0,
            "interrupted": 1,
            "infraErrors": 1,
            "inFlight": 1,
        }

    async def test_reports_the_newest_campaign_of_that_name(self, ledger: Ledger) -> None:
        newer = CampaignRef(REF.namespace, REF.name, "uid-2")
        await ledger.ensure_campaign(newer, {"trials": 1}, requested_trials=1, seed="8", now=T0)
        out = await exported(ledger)
        assert (out["campaign"]["uid"], out["campaign"]["spec"]) == ("uid-2", {"trials": 1})

    async def test_unknown_campaign_names_itself_and_the_file(self, ledger: Ledger) -> None:
        with pytest.raises(CampaignNotFoundError, match=r"chaos/nope .*ledger\.db"):
            await report.load_report(ledger, "chaos", "nope")


def columns(table: str) -> list[list[str]]:
    return [line.split() for line in table.splitlines()]


class TestTable:
    async def test_no_attempts(self, ledger: Ledger) -> None:
        table = report.render_table(await report.load_report(ledger, REF.namespace, REF.name))
        assert "(no attempts yet)" in table
        assert "0/2 completed" in table

    async def test_phase_durations_and_summary(self, ledger: Ledger) -> None:
        await write(ledger, recovered(0, 12.25))
        partial = Planned(
            index=1,
            outcome=Outcome.UNRECOVERED,
            error="store 4 never came back " * 10,
            milestones={"kill_sent": Milestone(T0 + 110.0, 0.0), "victim_gone": Milestone(T0 + 111.5, 1.5)},
            victims=(Victim("tikv-1", "p1"), Victim("tikv-2", "p2")),
            started_at=T0 + 100,
            finished_at=T0 + 800,
        )
        await write(ledger, partial)
        table = report.render_table(await report.load_report(ledger, REF.namespace, REF.name))
        rows = columns(table)
        assert rows[0][:4] == ["index", "attempt", "outcome", "victims"]
        assert rows[0][4:10] == [
            "kill->gone",
            "gone->created",
            "created->scheduled",
            "scheduled->ready",
            "ready->storeUp",
            "recovery",
        ]
        # full_milestones: gone 1.0, created 1.75, scheduled 2.5, ready 10.75, storeUp 11.5, recovered 12.25
        assert rows[1][:10] == [
            "0",
            "1",
            "recovered",
            "tikv-0",
            "1.000",
            "0.750",
            "0.750",
            "8.250",
            "0.750",
            "12.250",
        ]
        assert rows[2][:10] == ["1", "1", "unrecovered", "tikv-1,tikv-2", "1.500", "-", "-", "-", "-", "-"]
        error_line = table.splitlines()[2]
        assert "store 4 never came back" in error_line
        assert error_line.endswith("...")
        assert "n=1  p50=12.250  p95=12.250  max=12.250  mean=12.250" in table
        assert "2/2 completed: 1 recovered, 1 unrecovered" in table

    async def test_json_and_table_agree_on_rows(self, ledger: Ledger) -> None:
        for t in (recovered(0, 3.0), recovered(1, 4.5)):
            await write(ledger, t)
        loaded = await report.load_report(ledger, REF.namespace, REF.name)
        table_rows = columns(report.render_table(loaded))[1:3]
        json_rows = json.loads(report.render_json(loaded))["trials"]
        for row, trial in zip(table_rows, json_rows, strict=True):
            assert (int(row[0]), int(row[1]), row[2]) == (trial["index"], trial["attempt"], trial["outcome"])
            assert float(row[9]) == trial["recoverySeconds"]


def test_iso_utc_matches_the_reference_formatter() -> None:
    for unix in (0.0, T0, T0 + 0.5, T0 + 86_399.75):
        assert report.iso_utc(unix) == iso(unix)
    assert report.iso_utc(None) is None
