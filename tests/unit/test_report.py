"""Reports built from real ledger files: the JSON export reproduces exactly what was written,
and the table shows each attempt's phase durations."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aftershock import analysis, cli, report
from aftershock.ledger import CampaignNotFoundError, Ledger, schema
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
        Victim(name="tikv-0", uid="pod-0", node="n1", restart_count=1, member_id=4),
    )
    milestones: dict[str, Milestone] = field(default_factory=dict)
    started_at: float = T0
    finished_at: float | None = None


def full_milestones(start: float, recovery: float) -> dict[str, Milestone]:
    """Every milestone, spaced so every phase has a distinct duration (quarters: exact floats);
    the delete is answered at 0.25 s, so "recovered" is at ``recovery + 0.25`` (ADR 0008)."""
    end = recovery + 0.25
    offsets = [-10.0, 0.0, 0.25, 0.5, 1.0, 1.75, 2.5, end - 1.5, end - 0.75, end]
    kill = start + 10.0
    return {
        name: Milestone(wall=kill + off, offset=off)
        for name, off in zip([m for m in schema.COLUMN_MILESTONES if m != "relapsed"], offsets, strict=True)
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


#: The recovery phases and their JSON keys, spelled out here rather than read from `report.PHASES`.
PHASE_CHAIN = (
    ("killToGone", "kill_sent", "victim_gone"),
    ("goneToCreated", "victim_gone", "replacement_created"),
    ("createdToScheduled", "replacement_created", "replacement_scheduled"),
    ("scheduledToReady", "replacement_scheduled", "replacement_ready"),
    ("readyToStoreUp", "replacement_ready", "store_up"),
    ("storeUpToHealthy", "store_up", "recovered"),
)


def phase(milestones: dict[str, Milestone], start: str, end: str) -> float | None:
    a, b = milestones.get(start), milestones.get(end)
    return None if a is None or b is None else b.offset - a.offset


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
                "memberId": v.member_id,
            }
            for v in planned.victims
        ],
        "victimSeed": f"vs-{planned.index}",
        "startedAt": iso(planned.started_at),
        "finishedAt": None if planned.finished_at is None else iso(planned.finished_at),
        "recoverySeconds": planned.recovery if planned.outcome is Outcome.RECOVERED else None,
        "timings": {
            name: {"wall": iso(m.wall), "offsetSeconds": m.offset}
            for name in schema.COLUMN_MILESTONES
            if (m := planned.milestones.get(name)) is not None
        },
        "phaseSeconds": {key: phase(planned.milestones, start, end) for key, start, end in PHASE_CHAIN},
        # No remediator signals in these campaigns: nothing said, nothing done.
        "timeToDetectSeconds": None,
        "timeToResolveSeconds": None,
        "remediatorActions": [],
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
            "run": 1,
            "runId": "uid-1",
            "runToken": "",
            "phase": "Pending",
            "verdict": "",
            "requestedTrials": 2,
            "seed": "7",
            "baseline": False,
            "mode": "normal",
            "createdAt": iso(T0 - 60),
            "startedAt": None,
            "finishedAt": None,
            "deletedAt": None,
            "spec": SPEC,
        }
        assert out["trials"] == []
        assert out["failureReasons"] == []
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
            "confidence": None,
            "phaseP50Seconds": dict.fromkeys((k for k, _, _ in PHASE_CHAIN), None),
            "writeUnavailableSeconds": None,  # TiKV has no write probe
            "slowestWriteSeconds": None,
            "remediator": None,  # spec.remediator.signals not set
            "detection": None,  # spec.detection not set
            "clocks": None,  # neither a remediator nor detection: no clocks beyond recovery
        }

    async def test_one_trial_every_milestone(self, ledger: Ledger) -> None:
        trial = recovered(0, 12.25)
        await write(ledger, trial)
        await ledger.set_campaign_state(REF.uid, Phase.RUNNING, Verdict.NONE, T0 - 30, started=True)
        await ledger.set_campaign_state(REF.uid, Phase.SUCCEEDED, Verdict.PASS, T0 + 90.5, finished=True)
        out = await exported(ledger)
        assert out["trials"] == [expected_trial(trial) | {"attempt": 1}]
        assert set(out["trials"][0]["timings"]) == set(schema.COLUMN_MILESTONES) - {
            "relapsed"
        }  # it recovered
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
            "confidence": None,
            "phaseP50Seconds": expected_trial(recovered(0, 8.5))["phaseSeconds"],
            "writeUnavailableSeconds": None,
            "slowestWriteSeconds": None,
            "remediator": None,  # spec.remediator.signals not set
            "detection": None,  # spec.detection not set
            "clocks": None,
        }
        # one of each: ranked by the time they cost
        assert out["failureReasons"] == [
            {
                "outcome": "unrecovered",
                "reason": "store N not Up after N s",
                "count": 1,
                "secondsLost": 610.0,
                "attempts": [{"index": 1, "attempt": 3}],
            },
            {
                "outcome": "interrupted",
                "reason": "operator restarted",
                "count": 1,
                "secondsLost": 100.5,
                "attempts": [{"index": 1, "attempt": 1}],
            },
            {
                "outcome": "infra_error",
                "reason": "apiserver: 503 retrying",
                "count": 1,
                "secondsLost": 1.0,
                "attempts": [{"index": 1, "attempt": 2}],
            },
        ]

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
        assert rows[0][4:11] == [
            "kill->gone",
            "gone->created",
            "created->scheduled",
            "scheduled->ready",
            "ready->storeUp",
            "storeUp->healthy",
            "recovery",
        ]
        # full_milestones: acked 0.25, gone 1.0, created 1.75, scheduled 2.5, ready 11.0, storeUp 11.75,
        # recovered 12.5: the recovery, from the answer, 12.25
        assert rows[1][:11] == [
            "0",
            "1",
            "recovered",
            "tikv-0",
            "1.000",
            "0.750",
            "0.750",
            "8.500",
            "0.750",
            "0.750",
            "12.250",
        ]
        assert rows[2][:11] == [
            "1",
            "1",
            "unrecovered",
            "tikv-1,tikv-2",
            "1.500",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
        ]
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
            assert float(row[10]) == trial["recoverySeconds"]


def test_iso_utc_matches_the_reference_formatter() -> None:
    for unix in (0.0, T0, T0 + 0.5, T0 + 86_399.75):
        assert report.iso_utc(unix) == iso(unix)
    assert report.iso_utc(None) is None


# --- failure reasons ---------------------------------------------------------------------------


class TestFailureReasons:
    @pytest.mark.parametrize(
        ("error", "reason"),
        [
            (
                "not recovered within 60s: tikv-2: replacement not Ready",
                "not recovered within Ns: tikv-N: replacement not Ready",
            ),
            (
                "tikv-0 was already gone or replaced before the kill (409)",
                "tikv-N was already gone or replaced before the kill (409)",
            ),
            (
                "PD unavailable: 10.0.3.7:2379 refused\n  after 3 tries",
                "PD unavailable: <ip> refused after N tries",
            ),
            ("pod 0b5e9c1a-1f2e-4d3c-8b7a-6f5e4d3c2b1a vanished", "pod <uid> vanished"),
            ("store 4 not Up after 600.5 s", "store N not Up after N s"),
            ("apiserver: 503", "apiserver: 503"),
            (None, report.NO_ERROR),
            ("   ", report.NO_ERROR),
        ],
    )
    def test_normalised_reason(self, error: str | None, reason: str) -> None:
        assert report.normalise_error(error) == reason

    def test_long_errors_are_cut(self) -> None:
        assert len(report.normalise_error("x" * 500)) == 160

    async def test_ranked_by_count_times_time_lost(self, tmp_path: Path) -> None:
        path = tmp_path / "ledger.db"
        plan = [
            # index 0: two infra errors (1 s each), then recovered
            Planned(
                0, Outcome.INFRA_ERROR, error="apiserver: 503 on tikv-0", started_at=T0, finished_at=T0 + 1
            ),
            Planned(
                0,
                Outcome.INFRA_ERROR,
                error="apiserver: 503 on tikv-1",
                started_at=T0 + 2,
                finished_at=T0 + 3,
            ),
            recovered(0, 5.0),
            # index 1: one unrecovered that cost 600 s
            Planned(1, Outcome.UNRECOVERED, error="timed out", started_at=T0 + 200, finished_at=T0 + 800),
        ]
        async with await Ledger.open(path) as ledger:
            await ledger.ensure_campaign(REF, SPEC, requested_trials=2, seed="7", now=T0 - 60)
            for p in plan:
                await write(ledger, p)
            loaded = await report.load_report(ledger, REF.namespace, REF.name)
        # Ranked by count x time lost: once for 600 s (600) before twice for 1 s each (2 x 2 = 4).
        assert [(r.outcome, r.reason, r.count, r.seconds_lost, r.attempts) for r in loaded.failures] == [
            (Outcome.UNRECOVERED, "timed out", 1, 600.0, ((1, 1),)),
            (Outcome.INFRA_ERROR, "apiserver: 503 on tikv-N", 2, 2.0, ((0, 1), (0, 2))),
        ]
        table = report.render_table(loaded)
        lines = table.splitlines()
        first = lines.index("failures   (by count x time lost)")
        assert "timed out" in lines[first + 1]
        assert "apiserver: 503 on tikv-N" in lines[first + 2]


# --- intervals, markdown, mode, the command ------------------------------------------------------


async def five_trials(ledger: Ledger) -> list[float]:
    times = [10.0, 12.5, 11.0, 30.25, 9.5]
    for i, t in enumerate(times):
        await write(ledger, recovered(i, t))
    return times


class TestIntervals:
    async def test_report_with_bootstrap_carries_the_analysis_intervals(self, ledger: Ledger) -> None:
        times = await five_trials(ledger)
        settings = analysis.Bootstrap(resamples=500, seed=3)
        loaded = await report.load_report(ledger, REF.namespace, REF.name, bootstrap=settings)
        assert loaded.intervals is not None
        p50, p95 = analysis.percentile_intervals(times, (50, 95), settings) or ()
        assert (loaded.intervals.p50, loaded.intervals.p95) == (p50, p95)
        value = json.loads(report.render_json(loaded))["summary"]["confidence"]
        assert value == {
            "level": 0.95,
            "method": "percentile bootstrap",
            "resamples": 500,
            "seed": 3,
            "p50Seconds": {"low": p50.low, "high": p50.high},
            "p95Seconds": {"low": p95.low, "high": p95.high},
        }
        assert f"p50 11.000 [{p50.low:.3f}, {p50.high:.3f}]" in report.render_table(loaded)

    async def test_no_recovered_trial_no_interval(self, ledger: Ledger) -> None:
        loaded = await report.load_report(ledger, REF.namespace, REF.name, bootstrap=analysis.Bootstrap())
        assert loaded.intervals is None

    async def test_the_operator_endpoint_default_computes_none(self, ledger: Ledger) -> None:
        await five_trials(ledger)
        assert (await report.load_report(ledger, REF.namespace, REF.name)).intervals is None


class TestMarkdown:
    async def test_summary_table_first_and_trials_folded(self, ledger: Ledger) -> None:
        await five_trials(ledger)
        await write(
            ledger,
            Planned(5, Outcome.UNRECOVERED, error="a|b <c>", started_at=T0 + 900, finished_at=T0 + 960),
        )
        loaded = await report.load_report(ledger, REF.namespace, REF.name, bootstrap=analysis.Bootstrap(200))
        md = report.render_markdown(loaded).splitlines()
        assert md[0] == "### aftershock: `chaos/tikv-kill` no verdict"
        header = md.index("| n | p50 (95% CI) | p95 (95% CI) | max | mean |")
        assert md[header + 2].startswith("| 5 | 11.000 [")
        assert "| 1 | 60.000 | unrecovered | a\\|b &lt;c&gt; |" in md
        details = md.index("<details><summary>Per-trial phases (6 attempts, seconds)</summary>")
        trial_rows = [line for line in md[details:] if line.startswith("| ") and line[2].isdigit()]
        assert len(trial_rows) == 6
        assert md[-1] == "</details>"

    async def test_long_campaigns_stay_short(self, ledger: Ledger) -> None:
        for i in range(report.MARKDOWN_TRIAL_ROWS + 7):
            await write(ledger, recovered(i, 5.0 + i / 4))
        md = report.render_markdown(await report.load_report(ledger, REF.namespace, REF.name))
        assert "... 7 more: `aftershock export` has every attempt." in md
        assert md.count("| recovered |") == report.MARKDOWN_TRIAL_ROWS


class TestMode:
    async def test_baseline_read_from_the_recorded_spec(self, ledger: Ledger) -> None:
        ref = CampaignRef(REF.namespace, "base", "uid-base")
        await ledger.ensure_campaign(ref, SPEC | {"baseline": True}, requested_trials=1, seed="1", now=T0)
        loaded = await report.load_report(ledger, ref.namespace, ref.name)
        assert loaded.baseline
        value = json.loads(report.render_json(loaded))["campaign"]
        assert (value["baseline"], value["mode"]) == (True, "baseline")
        assert "mode baseline" in report.render_table(loaded)

    async def test_spec_without_baseline_is_normal(self, ledger: Ledger) -> None:
        loaded = await report.load_report(ledger, REF.namespace, REF.name)
        assert (loaded.baseline, report.mode(loaded.campaign)) == (False, "normal")


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    """A ledger file with five recovered trials, for the command."""
    path = tmp_path / "ledger.db"

    async def build() -> None:
        async with await Ledger.open(path) as opened:
            await opened.ensure_campaign(REF, SPEC, requested_trials=5, seed="7", now=T0 - 60)
            await five_trials(opened)

    asyncio.run(build())
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class TestCommand:
    def test_each_format(self, ledger_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        base = ["report", REF.name, "-n", REF.namespace, "--db", str(ledger_file), "--resamples", "300"]
        code, table, _ = run(capsys, *base)
        assert code == 0
        assert table.splitlines()[0].split()[:3] == ["index", "attempt", "outcome"]
        assert "95% CI     p50 11.000 [" in table
        code, md, _ = run(capsys, *base, "--format", "markdown")
        assert (code, md.splitlines()[0]) == (0, "### aftershock: `chaos/tikv-kill` no verdict")
        code, text, _ = run(capsys, *base, "--format", "csv")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [float(r["recoverySeconds"]) for r in rows] == [10.0, 12.5, 11.0, 30.25, 9.5]
        code, text, _ = run(capsys, *base, "--format", "json")
        assert json.loads(text)["summary"]["confidence"]["resamples"] == 300

    def test_same_seed_same_numbers(self, ledger_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        base = ["report", REF.name, "-n", REF.namespace, "--db", str(ledger_file), "--format", "json"]
        first = run(capsys, *base, "--resamples", "300", "--seed", "5")[1]
        again = run(capsys, *base, "--resamples", "300", "--seed", "5")[1]
        other = run(capsys, *base, "--resamples", "300", "--seed", "6")[1]
        assert first == again
        assert json.loads(first)["summary"]["confidence"] != json.loads(other)["summary"]["confidence"]

    def test_unknown_campaign_and_missing_ledger(
        self, ledger_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, _, err = run(capsys, "report", "nope", "-n", "chaos", "--db", str(ledger_file))
        assert (code, "no campaign chaos/nope" in err) == (1, True)
        code, _, err = run(capsys, "report", "x", "--db", str(tmp_path / "absent.db"))
        assert (code, "no ledger at" in err) == (2, True)
        assert not (tmp_path / "absent.db").exists()

    def test_a_file_that_is_not_a_ledger_is_a_message_not_a_traceback(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("not a database " * 100)
        code, _, err = run(capsys, "report", "x", "--db", str(path))
        assert code == 2
        assert err.startswith(f"aftershock: {path}: ")
        assert "the file is not a SQLite database: check the ledger path" in err

    def test_without_numpy_the_report_says_what_to_install_and_still_reports(
        self, ledger_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` now raises ImportError
        code, out, err = run(capsys, "report", REF.name, "-n", REF.namespace, "--db", str(ledger_file))
        assert code == 0
        assert "pip install 'aftershock[analysis]'" in err
        assert "n=5  p50=11.000" in out
        assert "95% CI" not in out

    def test_without_matplotlib_png_fails_saying_what_to_install(
        self,
        ledger_file: Path,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        argv = ["report", REF.name, "-n", REF.namespace, "--db", str(ledger_file), "--resamples", "100"]
        code, _, err = run(capsys, *argv, "--png", str(tmp_path / "r.png"))
        assert code == 2
        assert "aftershock[analysis]" in err
        assert not (tmp_path / "r.png").exists()

    def test_html_png_and_svg_files(
        self, ledger_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        html, png, svg = tmp_path / "r.html", tmp_path / "r.png", tmp_path / "r.svg"
        argv = ["report", REF.name, "-n", REF.namespace, "--db", str(ledger_file), "--resamples", "100"]
        code, _, _ = run(capsys, *argv, "--html", str(html), "--png", str(png), "--svg", str(svg))
        assert code == 0
        assert html.read_text().count('data-trial="') == 5
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert svg.read_text().lstrip().startswith("<?xml")
