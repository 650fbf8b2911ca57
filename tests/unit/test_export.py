"""`aftershock export`: the documented columns, one row per attempt of one or every campaign, CSV
that spreadsheets and csv readers take back unchanged (commas, quotes, newlines in errors)."""

from __future__ import annotations

import asyncio
import csv
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
from aftershock.ledger import Ledger, schema
from aftershock.model import AttemptRecord, CampaignRef, Outcome, Victim

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
        assert export.COLUMN_NAMES[-11:] == (
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
