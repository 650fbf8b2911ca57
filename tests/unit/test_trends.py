"""Trends across runs and retention: compare's test in plain Python (checked against scipy), each
run judged against the previous and the baseline run (the Regressed condition, the metrics),
`report --runs`, `compare NAME@latest NAME@previous`, and pruning old runs to a summary row."""

from __future__ import annotations

import asyncio
import json
import math
import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from scipy.stats import mannwhitneyu  # type: ignore[import-untyped]

from aftershock import analysis, cli, significance, stats
from aftershock.engine import retention, runs, trend
from aftershock.ledger import Ledger, RunRow, schema
from aftershock.metrics import Metrics
from aftershock.model import CampaignRef, Milestone, Outcome, Phase, TrendSpec, Verdict, Victim

REF = CampaignRef("db", "nightly", "uid-t")

# --- the test itself --------------------------------------------------------------------------


def test_mann_whitney_u_is_scipys_exactly() -> None:
    """Exact distribution (no ties, a sample of at most 8) and the normal approximation (ties, or
    both samples above 8), on 2,000 random pairs of samples, some with many ties."""
    rng = random.Random(7)
    for _ in range(2000):
        n1, n2 = rng.randint(1, 14), rng.randint(1, 14)
        digits = rng.choice([0, 1, 3])
        b = [round(rng.gauss(2, 1), digits) for _ in range(n1)]
        a = [round(rng.gauss(2.4, 1), digits) for _ in range(n2)]
        u, p = significance.mann_whitney_u(b, a)
        expected = mannwhitneyu(b, a)
        assert u == pytest.approx(float(expected.statistic), abs=1e-9)
        if math.isnan(float(expected.pvalue)):  # all tied: ours says "no evidence", p = 1
            assert p == 1.0
        else:
            assert p == pytest.approx(float(expected.pvalue), rel=1e-9, abs=1e-12)


def test_the_verdict_agrees_with_aftershock_compare_on_clear_cases() -> None:
    rng = random.Random(11)
    for shift, want in ((0.0, "NoChange"), (1.5, "Regressed"), (-1.5, "Improved")):
        for _ in range(10):
            a = [rng.gauss(3.0, 0.2) for _ in range(8)]
            b = [rng.gauss(3.0 + shift, 0.2) for _ in range(8)]
            ours = significance.compare(a, b, resamples=2000)
            theirs = analysis.compare(a, b, resamples=2000)
            if shift:
                assert ours.verdict.value == theirs.verdict.value == want
            assert ours.p_value == pytest.approx(theirs.p_value)
            assert ours.median_difference.estimate == pytest.approx(theirs.median_difference.estimate)


def test_nothing_to_compare_is_an_error_not_a_verdict() -> None:
    with pytest.raises(ValueError, match="B has no recovered trials"):
        significance.compare([1.0], [])


# --- a ledger with runs -----------------------------------------------------------------------


async def add_run(ledger: Ledger, number: int, recoveries: Sequence[float], *, now: float) -> RunRow:
    token = "" if number == 1 else f"t{number}"
    run = await runs.resolve(ledger, REF, token)
    assert run.run == number
    ref = runs.run_ref(REF, run)
    await ledger.ensure_campaign(ref, {"trend": {"baselineRun": 1}}, len(recoveries), "1", now)
    await ledger.set_campaign_state(ref.uid, Phase.RUNNING, Verdict.NONE, now, started=True)
    for index, seconds in enumerate(recoveries):
        attempt = await ledger.begin_attempt(
            ref.uid,
            index,
            victims=[Victim("tikv-0", f"u{index}")],
            victim_seed="1",
            initial_state={},
            gate_passed=Milestone(now, -0.1),
            now=now,
        )
        await ledger.mark_kill_sent(attempt, Milestone(now, 0.0), Milestone(now, 0.0))
        await ledger.finish_attempt(
            attempt,
            Outcome.RECOVERED,
            milestones={"recovered": Milestone(now + seconds, seconds)},
            final_state={},
            error=None,
            now=now + seconds,
        )
    return run


async def finish(ledger: Ledger, run: RunRow, now: float) -> None:
    await ledger.set_campaign_state(run.run_uid, Phase.SUCCEEDED, Verdict.PASS, now, finished=True)


FAST = [1.0, 1.1, 0.9, 1.05, 0.95]
SLOW = [2.0, 2.1, 1.9, 2.05, 1.95]


async def test_a_slower_run_is_regressed_against_the_previous_and_the_baseline(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        spec = TrendSpec(baseline_run=1)
        one = await add_run(ledger, 1, FAST, now=1000)
        await finish(ledger, one, 1010)
        two = await add_run(ledger, 2, FAST, now=2000)
        judged = await trend.judge_run(ledger=ledger, run=two, trend=spec, recoveries=FAST, now=2010)
        await finish(ledger, two, 2010)
        assert [(j.against, j.against_run, j.verdict) for j in judged] == [
            ("previous", 1, "NoChange"),
            ("baseline", 1, "NoChange"),
        ]
        assert trend.condition(judged) == (
            False,
            "NoRegression",
            judged[0].message + "; " + judged[1].message,
        )
        three = await add_run(ledger, 3, SLOW, now=3000)
        judged = await trend.judge_run(ledger=ledger, run=three, trend=spec, recoveries=SLOW, now=3010)
        status, reason, message = trend.condition(judged) or (None, "", "")
        assert (status, reason) == (True, "RegressedFromPreviousAndBaseline")
        assert "run 3 vs run 2 (previous): Regressed, p = 0.007937" in message
        assert "run 3 vs run 1 (baseline): Regressed" in message
        # Recorded: the trend reads them back.
        await finish(ledger, three, 3010)
        summaries = await ledger.run_summaries(REF.uid)
        assert [s.run for s in summaries] == [1, 2, 3]
        latest = summaries[-1].judged("previous")
        assert latest is not None
        assert (latest.verdict, latest.against_run) == ("Regressed", 2)
        assert latest.p_value == pytest.approx(2 / 252)


async def test_a_run_without_recovered_trials_is_not_compared(tmp_path: Path) -> None:
    async with await Ledger.open(tmp_path / "l.db") as ledger:
        one = await add_run(ledger, 1, FAST, now=1000)
        await finish(ledger, one, 1010)
        two = await add_run(ledger, 2, [], now=2000)
        judged = await trend.judge_run(ledger=ledger, run=two, trend=TrendSpec(), recoveries=[], now=2010)
        assert [j.verdict for j in judged] == ["NotCompared"]
        assert trend.condition(judged) == (
            False,
            "NotCompared",
            "not compared: no recovered trial on one side",
        )
        assert trend.condition([]) is None


# --- retention ------------------------------------------------------------------------------


async def test_pruning_keeps_a_summary_row_and_never_the_baseline_the_latest_or_an_unfinished_run(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.db"
    async with await Ledger.open(path) as ledger:
        for n in range(1, 6):
            run = await add_run(ledger, n, FAST if n != 2 else SLOW, now=1000 * n)
            if n != 3:
                await finish(ledger, run, 1000 * n + 10)
        before = {s.run: s for s in await ledger.run_summaries(REF.uid)}
        pruned = await ledger.prune_runs(REF.uid, keep=2, protect=(1,), now=9000)
        # Runs 4, 5 kept (the newest two), 1 the baseline, 3 unfinished: only 2 goes.
        assert pruned == [2]
        after = {s.run: s for s in await ledger.run_summaries(REF.uid)}
        assert after[2].pruned
        assert (after[2].summary, after[2].recovered, after[2].verdict) == (
            before[2].summary,
            5,
            Verdict.PASS,
        )
        assert await ledger.recovery_times_of(runs.run_uid(REF.uid, 2)) is None
        assert await ledger.prune_runs(REF.uid, keep=2, protect=(1,), now=9000) == []
        # Finished before a time: only runs finished before it.
        assert await ledger.prune_runs(REF.uid, keep=1, finished_before=1500, now=9000) == [1]
        assert await ledger.integrity_check() == "ok"
    conn = sqlite3.connect(path)
    counts = dict(
        conn.execute("SELECT campaign_uid, count(*) FROM attempts GROUP BY campaign_uid").fetchall()
    )
    assert set(counts) == {"uid-t#3", "uid-t#4", "uid-t#5"}
    assert conn.execute(
        "SELECT count(*) FROM trials WHERE campaign_uid IN ('uid-t', 'uid-t#2')"
    ).fetchone() == (0,)


async def test_a_ledger_at_schema_6_gains_ticks_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in schema.MIGRATIONS[:6]:
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 6")
    conn.execute("INSERT INTO runs (run_uid, campaign_uid, run, token) VALUES ('uid-t#2', 'uid-t', 2, 'b')")
    conn.close()
    async with await Ledger.open(path) as ledger:
        latest = await ledger.latest_run("uid-t")
        assert latest == RunRow("uid-t#2", "uid-t", 2, "b", None)
        assert await ledger.ticks("uid-t") == []


# --- what a person reads --------------------------------------------------------------------


async def three_runs(path: Path) -> None:
    async with await Ledger.open(path) as ledger:
        spec = TrendSpec(baseline_run=1)
        for n, times in ((1, FAST), (2, FAST), (3, SLOW)):
            run = await add_run(ledger, n, times, now=1000 * n)
            await trend.judge_run(ledger=ledger, run=run, trend=spec, recoveries=times, now=1000 * n + 5)
            await finish(ledger, run, 1000 * n + 10)


def test_report_runs_has_a_row_per_run_and_the_html_draws_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "l.db"
    asyncio.run(three_runs(db))
    assert cli.main(["report", "nightly", "-n", "db", "--db", str(db), "--runs"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "run",
        "started",
        "phase",
        "verdict",
        "n",
        "p50",
        "p95",
        "vs",
        "previous",
        "vs",
        "baseline",
    ]
    assert [line.split()[0] for line in table[1:4]] == ["1", "2", "3"]
    assert "Regressed (run 2, p=0.00794)" in table[3]
    assert cli.main(["report", "nightly", "-n", "db", "--db", str(db), "--runs", "--format", "json"]) == 0
    value = json.loads(capsys.readouterr().out)
    assert [r["p50Seconds"] for r in value["runs"]] == [1.0, 1.0, 2.0]
    html = tmp_path / "r.html"
    assert cli.main(["report", "nightly", "-n", "db", "--db", str(db), "--html", str(html)]) == 0
    page = html.read_text()
    assert 'class="chart trend"' in page
    assert page.count('class="regressed"') == 2  # run 3's p50 and p95


def test_compare_latest_with_previous(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "l.db"
    asyncio.run(three_runs(db))
    args = ["compare", "nightly@previous", "nightly@latest", "-n", "db", "--db", str(db), "--format", "json"]
    assert cli.main([*args, "--resamples", "500"]) == 1  # Regressed
    value = json.loads(capsys.readouterr().out)
    assert (value["a"]["run"], value["b"]["run"], value["verdict"]) == (2, 3, "Regressed")
    assert value["mannWhitney"]["pValue"] == pytest.approx(2 / 252)
    assert cli.main(["compare", "nightly@1", "nightly@previous", "-n", "db", "--db", str(db)]) == 0
    assert cli.main(["compare", "nightly@first", "nightly", "-n", "db", "--db", str(db)]) == 2


def test_prune_from_the_command_line_keeps_the_trend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "l.db"
    asyncio.run(three_runs(db))
    assert cli.main(["prune", "nightly", "-n", "db", "--db", str(db), "--keep", "1"]) == 0
    # Run 1 is the recorded spec's baselineRun: kept whole.
    assert capsys.readouterr().out.strip() == "db/nightly: pruned runs 2"
    assert cli.main(["report", "nightly", "-n", "db", "--db", str(db), "--runs", "--format", "json"]) == 0
    value = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["pruned"], r["p50Seconds"]) for r in value["runs"]] == [
        (1, False, 1.0),
        (2, True, 1.0),
        (3, False, 2.0),
    ]
    assert cli.main(["prune", "--db", str(db), "--all"]) == 2  # neither --keep nor --older-than-days


async def test_metrics_carry_the_last_run_and_a_regression_gauge(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    await three_runs(db)
    metrics = Metrics()
    async with await Ledger.open(db) as ledger:
        await metrics.replay_ledger(ledger)
    text = metrics.render().decode()
    labels = f'namespace="db",campaign="nightly",uid="{REF.uid}"'
    assert f"aftershock_last_run{{{labels}}} 3.0" in text
    assert f'aftershock_last_run_recovery_seconds{{{labels},quantile="0.5"}} 2.0' in text
    assert f'aftershock_run_regressed{{{labels},against="previous"}} 1.0' in text
    assert f'aftershock_run_regressed{{{labels},against="baseline"}} 1.0' in text
    p = [
        line
        for line in text.splitlines()
        if line.startswith("aftershock_run_regression_p_value") and "previous" in line
    ]
    assert float(p[0].split()[-1]) == pytest.approx(2 / 252)
    assert stats.summarize(SLOW).p50 == 2.0


async def test_keep_runs_days_prunes_runs_finished_that_long_ago(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    await three_runs(db)  # finished at 1010, 2010, 3010; the spec names run 1 as baseline
    async with await Ledger.open(db) as ledger:
        day = retention.DAY
        assert await retention.prune_older_than(ledger, 1, now=2010 + day - 1) == {}
        assert await retention.prune_older_than(ledger, 1, now=3010 + day + 1) == {REF.uid: [2]}
        summaries = await ledger.run_summaries(REF.uid)
        assert [(s.run, s.pruned) for s in summaries] == [(1, False), (2, True), (3, False)]


def test_the_operator_flags_parse() -> None:
    args = cli.build_parser().parse_args(["run", "--keep-runs-days", "30", "--schedule-clock", "1000:12"])
    assert (args.keep_runs_days, args.schedule_clock) == (30.0, "1000:12")
