"""`aftershock compare` on real ledger files: seeded synthetic campaigns whose difference is known,
the verdict and its exit code (0 Improved/NoChange, 1 Regressed, 2 cannot compare), both ledgers
or one, and the mode each campaign ran in."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path

import pytest
from tests.unit.test_report_ledgers import T0, Planned, run_cli, write_campaign

from aftershock.model import CampaignRef, Milestone, Outcome

A = CampaignRef("chaos", "before", "uid-a")
B = CampaignRef("chaos", "after", "uid-b")


def campaign(n: int, seed: int, scale: float = 1.0, unrecovered: int = 0) -> list[Planned]:
    """``n`` recovered trials with lognormal recovery times (median 12 s x ``scale``, sigma 0.4:
    with 120 trials a side, a 30 % shift is found with a power above 0.999)."""
    rng = random.Random(seed)
    planned = []
    for i in range(n + unrecovered):
        start = T0 + 100 * i
        kill = Milestone(start + 1, 0.0)
        if i >= n:
            planned.append(
                Planned(i, 1, Outcome.UNRECOVERED, start, start + 61, {"kill_sent": kill}, error="timeout")
            )
            continue
        seconds = rng.lognormvariate(math.log(12.0 * scale), 0.4)
        done = {"kill_sent": kill, "recovered": Milestone(start + 1 + seconds, seconds)}
        planned.append(Planned(i, 1, Outcome.RECOVERED, start, start + 2 + seconds, done))
    return planned


def ledger(path: Path, *campaigns: tuple[CampaignRef, list[Planned], dict[str, object]]) -> Path:
    async def build() -> None:
        for ref, planned, spec in campaigns:
            await write_campaign(path, planned, ref, **spec)

    asyncio.run(build())
    return path


def compare(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return run_cli(capsys, "compare", *argv, "--resamples", "2000")


class TestVerdicts:
    def test_thirty_percent_slower_is_regressed_exit_1(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        db = ledger(tmp_path / "l.db", (A, campaign(120, 1), {}), (B, campaign(120, 2, scale=1.3), {}))
        code, out, _ = compare(capsys, "before", "after", "-n", "chaos", "--db", str(db), "--format", "json")
        value = json.loads(out)
        assert (code, value["verdict"], value["exitCode"]) == (1, "Regressed", 1)
        assert value["medianDifferenceSeconds"]["low"] > 0
        assert value["mannWhitney"]["pValue"] < 0.05
        assert (value["a"]["n"], value["b"]["n"]) == (120, 120)
        assert (value["a"]["uid"], value["b"]["uid"]) == ("uid-a", "uid-b")

    def test_thirty_percent_faster_is_improved_exit_0(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        db = ledger(tmp_path / "l.db", (A, campaign(120, 1, scale=1.3), {}), (B, campaign(120, 2), {}))
        code, out, _ = compare(capsys, "chaos/before", "chaos/after", "--db", str(db))
        assert code == 0
        assert "verdict    Improved" in out

    def test_same_distribution_is_no_change_exit_0(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        db = ledger(tmp_path / "l.db", (A, campaign(120, 1), {}), (B, campaign(120, 2), {}))
        code, out, _ = compare(capsys, "chaos/before", "chaos/after", "--db", str(db), "--format", "markdown")
        assert code == 0
        assert out.splitlines()[0] == "### aftershock compare: NoChange"

    def test_minimum_effect_and_alpha_are_applied(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        db = ledger(tmp_path / "l.db", (A, campaign(120, 1), {}), (B, campaign(120, 2, scale=1.3), {}))
        argv = ["chaos/before", "chaos/after", "--db", str(db), "--format", "json"]
        code, out, _ = compare(capsys, *argv, "--min-effect-seconds", "30")
        assert (code, json.loads(out)["verdict"]) == (0, "NoChange")
        code, out, _ = compare(capsys, *argv, "--alpha", "0.2")
        assert json.loads(out)["confidence"]["level"] == pytest.approx(0.8)


class TestInputs:
    def test_two_ledger_files_and_the_modes(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        first = ledger(tmp_path / "a.db", (A, campaign(20, 1), {}))
        second = ledger(tmp_path / "b.db", (B, campaign(20, 2), {"baseline": True}))
        code, out, _ = compare(
            capsys,
            "before",
            "after",
            "-n",
            "chaos",
            "--db",
            str(first),
            "--db-b",
            str(second),
            "--format",
            "json",
        )
        assert code in (0, 1)
        value = json.loads(out)
        assert (value["a"]["ledger"], value["b"]["ledger"]) == (str(first), str(second))
        assert (value["a"]["mode"], value["b"]["mode"]) == ("normal", "baseline")
        assert (value["a"]["baseline"], value["b"]["baseline"]) == (False, True)
        assert "the campaigns ran in different modes: A normal, B baseline" in value["notes"]

    def test_unrecovered_trials_are_named_in_the_notes(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        db = ledger(tmp_path / "l.db", (A, campaign(20, 1), {}), (B, campaign(20, 2, unrecovered=3), {}))
        _, out, _ = compare(capsys, "chaos/before", "chaos/after", "--db", str(db))
        assert "note       only recovered trials are compared; unrecovered trials: A 0, B 3" in out

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["chaos/before", "chaos/nope"], "no campaign chaos/nope"),
            (["chaos/before", "chaos/none-recovered"], "B has no recovered trials"),
            (["chaos/before", "chaos/after", "--alpha", "2"], "alpha must be between 0 and 1"),
        ],
    )
    def test_what_cannot_be_compared_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        none = CampaignRef("chaos", "none-recovered", "uid-n")
        db = ledger(
            tmp_path / "l.db",
            (A, campaign(5, 1), {}),
            (B, campaign(5, 2), {}),
            (none, campaign(0, 3, unrecovered=2), {}),
        )
        code, out, err = compare(capsys, *argv, "--db", str(db))
        assert (code, out) == (2, "")
        assert message in err

    def test_missing_second_ledger_exits_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        db = ledger(tmp_path / "l.db", (A, campaign(5, 1), {}))
        code, _, err = compare(capsys, "a", "b", "--db", str(db), "--db-b", str(tmp_path / "none.db"))
        assert code == 2
        assert "no ledger at" in err

    def test_bad_arguments_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as info:
            run_cli(capsys, "compare", "only-one")
        assert info.value.code == 2

    def test_without_numpy_says_what_to_install(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        db = ledger(tmp_path / "l.db", (A, campaign(5, 1), {}), (B, campaign(5, 2), {}))
        monkeypatch.setitem(__import__("sys").modules, "numpy", None)
        code, _, err = compare(capsys, "chaos/before", "chaos/after", "--db", str(db))
        assert code == 2
        assert "pip install 'aftershock[analysis]'" in err
