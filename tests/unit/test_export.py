"""`aftershock export`: the documented columns, one row per attempt of one or every campaign, CSV
that spreadsheets and csv readers take back unchanged (commas, quotes, newlines in errors)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import pytest
from tests.unit import etcd_trials
from tests.unit.test_report_ledgers import (
    REF,
    T0,
    Planned,
    expected_row,
    plan_campaign,
    run_cli,
    write_campaign,
)

from aftershock import export, report
from aftershock.engine.status import Conditions, build_status
from aftershock.engine.tally import Tally
from aftershock.ledger import Ledger, schema
from aftershock.ledger.store import CampaignRow
from aftershock.model import AttemptRecord, CampaignRef, Milestone, Outcome, Phase, Verdict, Victim

DOC = Path(__file__).resolve().parents[2] / "docs" / "results.md"


class TestColumns:
    def test_names_are_stable(self) -> None:
        assert export.COLUMN_NAMES[:12] == (
            "campaignNamespace",
            "campaignName",
            "campaignUid",
            "index",
            "attempt",
            "outcome",
            "victims",
            "startedAt",
            "finishedAt",
            "startedAtUnix",
            "finishedAtUnix",
            "recoverySeconds",
        )
        # New columns go at the end.
        assert export.COLUMN_NAMES[-13:] == (
            "error",
            "run",
            "timeToDetectSeconds",
            "timeToResolveSeconds",
            "remediatorActions",
            "timeToAlertSeconds",
            "timeToAlertResolvedSeconds",
            "detectSeconds",
            "detectSource",
            "firstActionSeconds",
            "actionsAfterRecovery",
            "recoveredNotBeforeSeconds",
            "recoveredBySeconds",
        )
        assert len(set(export.COLUMN_NAMES)) == len(export.COLUMN_NAMES)

    def test_one_offset_column_per_milestone_and_one_per_phase(self) -> None:
        assert [export.milestone_column(m) for m in schema.COLUMN_MILESTONES] == list(
            export.COLUMN_NAMES[12:23]
        )
        assert export.milestone_column("replacement_scheduled") == "replacementScheduledOffsetSeconds"
        assert [export.phase_column(p) for p in report.PHASES] == list(export.COLUMN_NAMES[23:29])

    def test_every_column_is_documented_in_order(self) -> None:
        """docs/results.md has a reference table whose first column lists every column, in order."""
        section = DOC.read_text().split("\n## Export columns\n", 1)[1].split("\n## ", 1)[0]
        documented = re.findall(r"^\| `([A-Za-z]+)` \|", section, flags=re.MULTILINE)
        assert documented == list(export.COLUMN_NAMES)


async def two_campaigns(path: Path) -> tuple[list[Planned], list[Planned]]:
    """Campaign chaos/tikv-kill (3 trials) and a second one, older name order first: a/z."""
    first = plan_campaign(3)
    second = [
        Planned(
            0,
            1,
            Outcome.INFRA_ERROR,
            T0,
            T0 + 2,
            error='refused, "quoted"\nsecond line',
            victims=(Victim("tikv-0", "u0"), Victim("tikv-1", "u1")),
        )
    ]
    await write_campaign(path, first)
    await write_campaign(path, second, CampaignRef("a-namespace", "z", "uid-z"))
    return first, second


class TestExport:
    def test_all_campaigns_ordered_by_namespace_and_name(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "ledger.db"
        first, second = asyncio.run(two_campaigns(path))
        code, out, _ = run_cli(capsys, "export", "--all", "--db", str(path), "--format", "json")
        assert code == 0
        rows = json.loads(out)
        assert [r["campaignUid"] for r in rows] == ["uid-z"] + ["uid-main"] * len(first)
        assert rows[0] == expected_row(second[0], CampaignRef("a-namespace", "z", "uid-z"))
        assert [list(r) for r in rows] == [list(export.COLUMN_NAMES)] * len(rows)

    def test_one_campaign(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "ledger.db"
        first, _ = asyncio.run(two_campaigns(path))
        code, out, _ = run_cli(
            capsys, "export", REF.name, "-n", REF.namespace, "--db", str(path), "--format", "json"
        )
        assert code == 0
        assert json.loads(out) == [expected_row(p) for p in first]

    def test_csv_survives_commas_quotes_and_newlines(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "ledger.db"
        asyncio.run(two_campaigns(path))
        code, out, _ = run_cli(capsys, "export", "z", "-n", "a-namespace", "--db", str(path))
        assert code == 0
        assert out.endswith("\r\n")
        (row,) = list(csv.DictReader(io.StringIO(out, newline="")))
        assert row["error"] == 'refused, "quoted"\nsecond line'
        assert row["victims"] == "tikv-0;tikv-1"
        assert row["outcome"] == "infra_error"
        assert row["recoverySeconds"] == row["killSentOffsetSeconds"] == ""

    def test_report_csv_is_the_export_of_that_campaign(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "ledger.db"
        asyncio.run(two_campaigns(path))
        argv = [REF.name, "-n", REF.namespace, "--db", str(path)]
        exported = run_cli(capsys, "export", *argv)[1]
        reported = run_cli(capsys, "report", *argv, "--format", "csv", "--resamples", "10")[1]
        assert reported == exported

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["export"], "give a campaign NAME or --all"),
            (["export", "x", "--all"], "give a campaign NAME or --all"),
            (["export", "nope", "-n", "chaos"], "no campaign chaos/nope"),
        ],
    )
    def test_usage_and_data_errors_exit_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        path = tmp_path / "ledger.db"
        asyncio.run(two_campaigns(path))
        code, out, err = run_cli(capsys, *argv, "--db", str(path))
        assert (code, out) == (2, "")
        assert message in err

    def test_missing_ledger_is_not_created(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run_cli(capsys, "export", "--all", "--db", str(tmp_path / "none.db"))
        assert code == 2
        assert "no ledger at" in err
        assert not (tmp_path / "none.db").exists()


ETCD = CampaignRef("db", "etcd-leader", "uid-etcd")


async def write_etcd_campaign(path: Path) -> list[AttemptRecord]:
    """The etcd-shaped attempts, written through the ledger as the engine writes them."""
    planned = etcd_trials.attempts(ETCD.uid)
    async with await Ledger.open(path) as ledger:
        await ledger.ensure_campaign(ETCD, {"subject": {"kind": "Etcd"}}, len(planned), "7", etcd_trials.T0)
        for a in planned:
            ms = dict(a.milestones)
            attempt_id = await ledger.begin_attempt(
                ETCD.uid, a.trial_index, victims=a.victims, victim_seed="s", initial_state={},
                gate_passed=ms.pop("gate_passed"), now=a.started_at,
            )  # fmt: skip
            await ledger.mark_kill_sent(attempt_id, ms.pop("kill_sent"), ms.pop("kill_acked"))
            assert a.outcome is not None
            assert a.finished_at is not None
            await ledger.finish_attempt(
                attempt_id, a.outcome, milestones=ms, final_state={}, error=None, now=a.finished_at
            )
    return planned


class TestSubjectColumns:
    def test_an_etcd_campaign_exports_its_milestones_and_phases_after_the_documented_columns(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "ledger.db"
        asyncio.run(two_campaigns(path))  # TiKV campaigns beside it
        planned = asyncio.run(write_etcd_campaign(path))
        code, out, _ = run_cli(capsys, "export", "--all", "--db", str(path))
        assert code == 0
        rows = list(csv.DictReader(io.StringIO(out, newline="")))
        own = ["writesFailed", "leaderLost", "leaderElected", "writesRestored", "memberHealthy"]
        chain = [
            "killSentToVictimGoneSeconds",
            "victimGoneToReplacementCreatedSeconds",
            "replacementCreatedToReplacementScheduledSeconds",
            "replacementScheduledToLeaderLostSeconds",
            "leaderLostToLeaderElectedSeconds",
            "leaderElectedToReplacementReadySeconds",
            "replacementReadyToMemberHealthySeconds",
            "memberHealthyToRecoveredSeconds",
        ]
        header = list(rows[0])
        assert header == [*export.COLUMN_NAMES, *(f"{n}OffsetSeconds" for n in own), *chain]
        etcd = [r for r in rows if r["campaignUid"] == ETCD.uid]
        tikv = [r for r in rows if r["campaignUid"] != ETCD.uid]
        assert len(etcd) == len(planned)
        assert tikv
        assert all(r[c] == "" for r in tikv for c in header[len(export.COLUMN_NAMES) :])
        leader, follower = etcd[0], etcd[1]
        assert float(leader["leaderElectedOffsetSeconds"]) == etcd_trials.LEADER["leader_elected"]
        assert float(leader["leaderLostToLeaderElectedSeconds"]) == (
            etcd_trials.LEADER["leader_elected"] - etcd_trials.LEADER["leader_lost"]
        )
        assert float(leader["memberHealthyToRecoveredSeconds"]) == pytest.approx(0.1)
        assert follower["leaderElectedOffsetSeconds"] == follower["leaderLostToLeaderElectedSeconds"] == ""
        # The documented columns keep their meaning: no store_up for etcd.
        assert leader["storeUpOffsetSeconds"] == leader["readyToStoreUpSeconds"] == ""
        # From the delete's answer, the first sign the kill took effect (ADR 0008).
        assert (
            float(leader["recoverySeconds"])
            == etcd_trials.LEADER["recovered"] - etcd_trials.LEADER["kill_acked"]
        )

    def test_json_rows_all_have_the_same_keys(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "ledger.db"
        asyncio.run(two_campaigns(path))
        asyncio.run(write_etcd_campaign(path))
        code, out, _ = run_cli(capsys, "export", "--all", "--db", str(path), "--format", "json")
        assert code == 0
        rows = json.loads(out)
        keys = [list(r) for r in rows]
        assert all(k == keys[0] for k in keys)
        assert keys[0][: len(export.COLUMN_NAMES)] == list(export.COLUMN_NAMES)
        assert "memberHealthyOffsetSeconds" in keys[0]

    def test_a_tikv_campaign_has_the_documented_columns_only(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        asyncio.run(two_campaigns(path))
        rows = asyncio.run(export_rows(path))
        assert export.column_names(rows) == export.COLUMN_NAMES


async def export_rows(path: Path) -> list[dict[str, object]]:
    async with await Ledger.open(path) as ledger:
        return await export.load_rows(ledger)


# --- one row per Campaign: the three clocks ------------------------------------------------

HELPED = CampaignRef("chaos", "assisted", "uid-assisted")


def _ms(kill: float, **offsets: float) -> dict[str, Milestone]:
    return {name: Milestone(kill + off, off) for name, off in offsets.items()}


async def write_helped_campaign(path: Path) -> list[AttemptRecord]:
    """A Campaign with alerts and a remediator, written through the ledger as the engine writes
    it: four recovered trials (alert at 1..4 s, first action at 0.5..2 s, recovered at 10..13 s),
    one unrecovered trial with none of them, and an infra-error attempt (retried: not a trial)
    whose alert must not count. Returns what the ledger reads back."""
    async with await Ledger.open(path) as ledger:
        await ledger.ensure_campaign(HELPED, {"remediator": {"kind": "Deployment", "name": "h"}}, 5, "7", T0)
        plan: list[tuple[int, Outcome, dict[str, float], list[float]]] = [
            (0, Outcome.INFRA_ERROR, {"alert_firing": 0.01}, [0.02]),
            *(
                (
                    i,
                    Outcome.RECOVERED,
                    {"alert_firing": 1.0 + i, "recovered": 10.0 + i},
                    [0.5 * (i + 1), 20.0],
                )
                for i in range(4)
            ),
            (4, Outcome.UNRECOVERED, {}, []),
        ]
        for n, (index, outcome, offsets, actions) in enumerate(plan):
            kill = T0 + 100.0 * n
            attempt_id = await ledger.begin_attempt(
                HELPED.uid, index, victims=(Victim("tikv-0", f"u{n}"),), victim_seed="s",
                initial_state={}, gate_passed=Milestone(kill - 1.0, -1.0), now=kill - 2.0,
            )  # fmt: skip
            await ledger.finish_attempt(
                attempt_id,
                outcome,
                milestones=_ms(kill, kill_sent=0.0, kill_acked=0.0, **offsets),
                final_state={
                    "remediatorActions": [
                        {
                            "reason": "Ungate",
                            "message": "",
                            "object": "Pod/tikv-0",
                            "wall": kill + a,
                            "offset": a,
                        }
                        for a in actions
                    ]
                },
                error=None if outcome is Outcome.RECOVERED else "no",
                now=kill + 30.0,
            )
        return await ledger.attempts(HELPED.uid)


class TestPerCampaign:
    def test_every_column_is_documented_in_order(self) -> None:
        section = DOC.read_text().split("\n## Export per Campaign\n", 1)[1].split("\n## ", 1)[0]
        documented = re.findall(r"^\| `([A-Za-z0-9]+)` \|", section, flags=re.MULTILINE)
        assert documented == list(export.CAMPAIGN_COLUMN_NAMES)

    def test_one_row_per_campaign_with_each_clocks_p50_p95_and_counts(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "ledger.db"
        first, _ = asyncio.run(two_campaigns(path))
        asyncio.run(write_helped_campaign(path))
        code, out, _ = run_cli(
            capsys, "export", "--all", "--per", "campaign", "--db", str(path), "--format", "json"
        )
        assert code == 0
        rows = json.loads(out)
        # The campaigns in the order the attempt rows come in, every row with every column.
        assert [r["campaignUid"] for r in rows] == ["uid-z", "uid-assisted", "uid-main"]
        assert [list(r) for r in rows] == [list(export.CAMPAIGN_COLUMN_NAMES)] * 3
        helped = rows[1]
        assert helped == {
            "campaignNamespace": "chaos",
            "campaignName": "assisted",
            "campaignUid": "uid-assisted",
            "run": 1,
            "attempts": 6,
            "trials": 5,
            "detectTrials": 4,
            "detectP50Seconds": 2.5,
            "detectP95Seconds": pytest.approx(3.85),
            "firstActionTrials": 4,
            "firstActionP50Seconds": 1.25,
            "firstActionP95Seconds": pytest.approx(1.925),
            "recoverTrials": 4,
            "recoverP50Seconds": 11.5,
            "recoverP95Seconds": pytest.approx(12.85),
        }
        # A Campaign without alerts or a remediator: its counts, no detect or action times.
        plain = rows[2]
        recovered = [p.recovery for p in first if p.recovery is not None]
        assert (plain["attempts"], plain["trials"]) == (len(first), 3)
        assert (plain["detectTrials"], plain["detectP50Seconds"], plain["firstActionP95Seconds"]) == (
            0,
            None,
            None,
        )
        assert plain["recoverTrials"] == len(recovered)
        # Nothing completed: zero trials, every time empty.
        assert rows[0]["trials"] == 0
        assert rows[0]["recoverP50Seconds"] is None

    def test_the_row_is_the_status_clocks_and_the_report_summary(self, tmp_path: Path) -> None:
        """One definition (aftershock.clocks): the row says what the Campaign's status and its
        report say, for the same attempts."""
        attempts = asyncio.run(write_helped_campaign(tmp_path / "ledger.db"))
        row = export.campaign_row(_campaign_row(), attempts)
        status = build_status(
            requested=5, tally=Tally.of(attempts), phase=Phase.SUCCEEDED, verdict=Verdict.PASS,
            conditions=Conditions(None, 1), generation=1, health_source="pods", started_at=T0,
            completed_at=T0 + 1, message="",
        )  # fmt: skip
        for key in ("detect", "firstAction"):
            for stat in ("Trials", "P50Seconds", "P95Seconds"):
                assert row[f"{key}{stat}"] == status["clocks"][f"{key}{stat}"], (key, stat)
        summary = report.build_report(_campaign_row(), attempts).summary
        assert (row["recoverP50Seconds"], row["recoverP95Seconds"]) == (summary.p50, summary.p95)

    def test_csv_one_campaign_and_its_runs(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "ledger.db"
        asyncio.run(write_helped_campaign(path))
        argv = ["export", HELPED.name, "-n", HELPED.namespace, "--per", "campaign", "--db", str(path)]
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0
        assert out.endswith("\r\n")
        reader = csv.DictReader(io.StringIO(out, newline=""))
        assert tuple(reader.fieldnames or ()) == export.CAMPAIGN_COLUMN_NAMES
        (row,) = list(reader)
        assert (row["trials"], row["detectTrials"], row["firstActionP50Seconds"]) == ("5", "4", "1.25")
        assert float(row["detectP95Seconds"]) == pytest.approx(3.85)
        # Errors as for attempt rows: an unknown Campaign exits 2 with nothing on stdout.
        code, out, err = run_cli(capsys, "export", "nope", "--per", "campaign", "--db", str(path))
        assert (code, out) == (2, "")
        assert "no campaign default/nope" in err


def _campaign_row() -> CampaignRow:
    return CampaignRow(
        HELPED, {"remediator": {"kind": "Deployment", "name": "h"}}, 5, "7", Phase.SUCCEEDED,
        Verdict.PASS, T0, T0, T0 + 1,
    )  # fmt: skip


def test_the_recovery_bracket_is_exported_and_a_malformed_one_is_not_trusted() -> None:
    """`recoveredNotBeforeSeconds`/`recoveredBySeconds` come from the ledger's
    ``final_state.recoveryBracket`` offsets; anything else there is an empty cell."""
    base = etcd_trials.attempt("uid-b", 0, Outcome.RECOVERED, etcd_trials.LEADER, "Leader")
    bracket = {"notBeforeOffset": 1.25, "byOffset": 1.72, "notBeforeWall": 0.0, "byWall": 0.0}
    row = export.attempt_row(
        _campaign_row(), dataclasses.replace(base, final_state={"recoveryBracket": bracket})
    )
    assert (row["recoveredNotBeforeSeconds"], row["recoveredBySeconds"]) == (1.25, 1.72)
    odd = {"recoveryBracket": {"notBeforeOffset": "1.2", "byOffset": True}}
    row = export.attempt_row(_campaign_row(), dataclasses.replace(base, final_state=odd))
    assert (row["recoveredNotBeforeSeconds"], row["recoveredBySeconds"]) == (None, None)
    row = export.attempt_row(
        _campaign_row(), dataclasses.replace(base, final_state={"recoveryBracket": None})
    )
    assert row["recoveredNotBeforeSeconds"] is None
