"""Report and export on real ledger files of 0, 1, 2 and 10,000 trials: what they print is exactly
what was written through the Ledger API (not what the reading code thinks it read).

The expected values come from the plan the ledger was written from, computed here independently:
offsets, timestamps, outcomes, errors, phase durations, percentiles (numpy).

The 10,000-trial file is written once per module with one Ledger session, on /dev/shm when there
is one: the file is a real SQLite ledger in WAL mode, only its fsyncs are free.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aftershock import cli, export
from aftershock.ledger import Ledger, schema
from aftershock.model import CampaignRef, Milestone, Outcome, Victim

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
PHASE_CHAIN = (
    ("killToGone", "kill_sent", "victim_gone"),
    ("goneToCreated", "victim_gone", "replacement_created"),
    ("createdToScheduled", "replacement_created", "replacement_scheduled"),
    ("scheduledToReady", "replacement_scheduled", "replacement_ready"),
    ("readyToStoreUp", "replacement_ready", "store_up"),
    ("storeUpToHealthy", "store_up", "recovered"),
)
MILESTONE_COLUMNS = {
    "gate_passed": "gatePassedOffsetSeconds",
    "kill_sent": "killSentOffsetSeconds",
    "kill_acked": "killAckedOffsetSeconds",
    "first_unhealthy": "firstUnhealthyOffsetSeconds",
    "victim_gone": "victimGoneOffsetSeconds",
    "replacement_created": "replacementCreatedOffsetSeconds",
    "replacement_scheduled": "replacementScheduledOffsetSeconds",
    "replacement_ready": "replacementReadyOffsetSeconds",
    "store_up": "storeUpOffsetSeconds",
    "recovered": "recoveredOffsetSeconds",
    "relapsed": "relapsedOffsetSeconds",
}


def iso(unix: float | None) -> str | None:
    """An independent ISO formatter (microseconds, rounded like datetime)."""
    if unix is None:
        return None
    frac, whole = math.modf(unix)
    micros = round(frac * 1_000_000)
    whole, micros = int(whole) + micros // 1_000_000, micros % 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


@dataclass
class Planned:
    """One attempt as written through the Ledger API."""

    index: int
    attempt: int
    outcome: Outcome
    started_at: float
    finished_at: float
    milestones: dict[str, Milestone] = field(default_factory=dict)
    error: str | None = None
    victims: tuple[Victim, ...] = ()

    @property
    def recovery(self) -> float | None:
        # From the first sign the kill took effect (ADR 0008).
        m = self.milestones.get("recovered")
        if m is None or self.outcome is not Outcome.RECOVERED:
            return None
        start = min(self.milestones[n].offset for n in ("kill_acked", "first_unhealthy"))
        return m.offset - start


def recovered_milestones(kill_wall: float, recovery: float, rng: random.Random) -> dict[str, Milestone]:
    """Every milestone, at random but increasing offsets that end at ``recovery``."""
    cuts = sorted(rng.uniform(0, recovery) for _ in range(6))
    offsets = [-rng.uniform(0.5, 5.0), 0.0, cuts[0] / 2, cuts[0], *cuts[1:], recovery]
    return {
        name: Milestone(wall=kill_wall + off, offset=off)
        for name, off in zip([m for m in schema.COLUMN_MILESTONES if m != "relapsed"], offsets, strict=True)
    }


UID_TAIL = "0000-4000-8000-000000000000"


def plan_campaign(trials: int, seed: int = 7) -> list[Planned]:
    """Attempts for ``trials`` trials: mostly recovered, with infra errors retried, unrecovered
    trials, and (when there are enough trials) an interrupted attempt."""
    rng = random.Random(seed)
    planned: list[Planned] = []
    clock = T0
    for index in range(trials):
        attempt = 1
        victims = (
            Victim(
                name=f"tikv-{index % 3}", uid=f"pod-{index}", node=f"n{index % 5}", member_id=index % 3 + 1
            ),
        )
        if index % 500 == 3:
            planned.append(
                Planned(
                    index, attempt, Outcome.INFRA_ERROR, clock, clock + 0.75,
                    error=f"apiserver: 503 deleting tikv-{index % 3} (uid {index:08x}-{UID_TAIL})",
                    victims=victims,
                )
            )  # fmt: skip
            clock += 1.0
            attempt += 1
        kill_wall = clock + 2.0
        if index % 2500 == 1:
            milestones = {
                "gate_passed": Milestone(clock + 1.0, -1.0),
                "kill_sent": Milestone(kill_wall, 0.0),
                "victim_gone": Milestone(kill_wall + 0.5, 0.5),
            }
            planned.append(
                Planned(
                    index, attempt, Outcome.UNRECOVERED, clock, kill_wall + 60.0, milestones,
                    error=f"not recovered within 60s: tikv-{index % 3}: replacement not Ready",
                    victims=victims,
                )
            )  # fmt: skip
            clock += 63.0
            continue
        recovery = rng.lognormvariate(math.log(12.0), 0.4)
        milestones = recovered_milestones(kill_wall, recovery, rng)
        planned.append(
            Planned(
                index,
                attempt,
                Outcome.RECOVERED,
                clock,
                kill_wall + recovery + 0.25,
                milestones,
                None,
                victims,
            )
        )
        clock += recovery + 3.0
    return planned


REF = CampaignRef(namespace="chaos", name="tikv-kill", uid="uid-main")
SPEC = {"subject": {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}}, "seed": 7}


async def write_campaign(path: Path, planned: list[Planned], ref: CampaignRef = REF, **spec: Any) -> None:
    """Write ``planned`` through the Ledger API: one session, two commits per attempt."""
    async with await Ledger.open(path) as ledger:
        await ledger.ensure_campaign(
            ref, SPEC | spec, requested_trials=len({p.index for p in planned}), seed="7", now=T0
        )
        for p in planned:
            attempt_id = await ledger.begin_attempt(
                ref.uid,
                p.index,
                victims=p.victims,
                victim_seed=f"vs-{p.index}",
                initial_state={"index": p.index},
                gate_passed=p.milestones.get("gate_passed"),
                now=p.started_at,
            )
            rest = {k: v for k, v in p.milestones.items() if k != "gate_passed"}
            await ledger.finish_attempt(
                attempt_id,
                p.outcome,
                milestones=rest,
                final_state={"ok": True},
                error=p.error,
                now=p.finished_at,
            )


def expected_row(p: Planned, ref: CampaignRef = REF) -> dict[str, Any]:
    """The export row of one planned attempt, from the plan alone."""
    row: dict[str, Any] = {
        "campaignNamespace": ref.namespace,
        "campaignName": ref.name,
        "campaignUid": ref.uid,
        "index": p.index,
        "attempt": p.attempt,
        "outcome": p.outcome.value,
        "victims": [v.name for v in p.victims],
        "startedAt": iso(p.started_at),
        "finishedAt": iso(p.finished_at),
        "startedAtUnix": p.started_at,
        "finishedAtUnix": p.finished_at,
        "recoverySeconds": p.recovery,
    }
    for name, column in MILESTONE_COLUMNS.items():
        m = p.milestones.get(name)
        row[column] = None if m is None else m.offset
    for key, start, end in PHASE_CHAIN:
        a, b = p.milestones.get(start), p.milestones.get(end)
        row[f"{key}Seconds"] = None if a is None or b is None else b.offset - a.offset
    row["error"] = p.error
    row["run"] = 1
    # No remediator signals in these plans: empty, not zero.
    row["timeToDetectSeconds"] = row["timeToResolveSeconds"] = row["remediatorActions"] = None
    # No spec.detection either.
    row["timeToAlertSeconds"] = row["timeToAlertResolvedSeconds"] = None
    # Neither, so no clock but the recovery (recoverySeconds); actions not watched.
    row["detectSeconds"] = row["detectSource"] = row["firstActionSeconds"] = None
    row["actionsAfterRecovery"] = None
    # Plans carry no recovery bracket (a ledger from before it): empty.
    row["recoveredNotBeforeSeconds"] = row["recoveredBySeconds"] = None
    return row


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def csv_value(expected: Any) -> str:
    """How a value must read in the CSV: empty for null, repr for floats (exact round trip)."""
    if expected is None:
        return ""
    if isinstance(expected, float):
        return repr(expected)
    if isinstance(expected, list):
        return ";".join(expected)
    return str(expected)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_export_csv(text: str, planned: list[Planned]) -> None:
    rows = parse_csv(text)
    assert len(rows) == len(planned)
    for got, p in zip(rows, planned, strict=True):
        want = expected_row(p)
        assert list(got) == list(want)
        assert got == {k: csv_value(v) for k, v in want.items()}
        for key, value in want.items():  # the text reads back as the very same float
            if isinstance(value, float):
                assert float(got[key]) == value


# --- 0, 1 and 2 trials -------------------------------------------------------------------------


@pytest.mark.parametrize("trials", [0, 1, 2])
def test_small_ledgers_export_exactly_what_was_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trials: int
) -> None:
    planned = plan_campaign(trials)
    path = tmp_path / "ledger.db"
    asyncio.run(write_campaign(path, planned))
    code, out, _ = run_cli(capsys, "export", REF.name, "-n", REF.namespace, "--db", str(path))
    assert code == 0
    assert out.splitlines()[0].split(",") == list(export.COLUMN_NAMES)
    check_export_csv(out, planned)
    code, out, _ = run_cli(capsys, "export", "--all", "--db", str(path), "--format", "json")
    assert code == 0
    assert json.loads(out) == [expected_row(p) for p in planned]


@pytest.mark.parametrize("trials", [0, 1, 2])
def test_small_ledgers_report_exactly_what_was_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trials: int
) -> None:
    planned = plan_campaign(trials)
    path = tmp_path / "ledger.db"
    asyncio.run(write_campaign(path, planned))
    code, out, _ = run_cli(
        capsys,
        "report",
        REF.name,
        "-n",
        REF.namespace,
        "--db",
        str(path),
        "--format",
        "json",
        "--resamples",
        "200",
    )
    assert code == 0
    check_report_json(json.loads(out), planned)


def check_report_json(value: dict[str, Any], planned: list[Planned]) -> None:
    trials = value["trials"]
    assert len(trials) == len(planned)
    for got, p in zip(trials, planned, strict=True):
        assert (got["index"], got["attempt"], got["outcome"], got["error"]) == (
            p.index,
            p.attempt,
            p.outcome.value,
            p.error,
        )
        assert (got["startedAt"], got["finishedAt"]) == (iso(p.started_at), iso(p.finished_at))
        assert got["recoverySeconds"] == p.recovery
        assert got["timings"] == {
            name: {"wall": iso(m.wall), "offsetSeconds": m.offset}
            for name in schema.COLUMN_MILESTONES
            if (m := p.milestones.get(name)) is not None
        }
        want = expected_row(p)
        assert got["phaseSeconds"] == {key: want[f"{key}Seconds"] for key, _, _ in PHASE_CHAIN}
    times = [t for p in planned if (t := p.recovery) is not None]
    summary = value["summary"]
    assert summary["n"] == len(times)
    if times:
        assert summary["p50Seconds"] == pytest.approx(float(np.percentile(times, 50)), rel=1e-12)
        assert summary["p95Seconds"] == pytest.approx(float(np.percentile(times, 95)), rel=1e-12)
        assert summary["maxSeconds"] == max(times)
        assert summary["meanSeconds"] == pytest.approx(float(np.mean(times)), rel=1e-12)
        ci = summary["confidence"]
        assert ci["p50Seconds"]["low"] <= summary["p50Seconds"] <= ci["p50Seconds"]["high"]
        assert ci["p95Seconds"]["low"] <= summary["p95Seconds"] <= ci["p95Seconds"]["high"]
    else:
        assert summary["p50Seconds"] is None
        assert summary["confidence"] is None
    failed = [p for p in planned if p.outcome is not Outcome.RECOVERED]
    assert sum(r["count"] for r in value["failureReasons"]) == len(failed)
    assert math.isclose(
        sum(r["secondsLost"] for r in value["failureReasons"]),
        math.fsum(p.finished_at - p.started_at for p in failed),
        rel_tol=1e-9,
        abs_tol=1e-9,
    )


# --- 10,000 trials -----------------------------------------------------------------------------

BIG = 10_000


@dataclass
class BigLedger:
    path: Path
    planned: list[Planned]


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigLedger]:
    shm = Path("/dev/shm")
    directory = Path(tempfile.mkdtemp(prefix="aftershock-test-", dir=shm)) if shm.is_dir() else None
    directory = directory or tmp_path_factory.mktemp("big")
    planned = plan_campaign(BIG)
    path = directory / "ledger.db"
    asyncio.run(write_campaign(path, planned))
    try:
        yield BigLedger(path, planned)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_ten_thousand_trials_plan_has_every_kind_of_attempt(big_ledger: BigLedger) -> None:
    outcomes = {p.outcome for p in big_ledger.planned}
    assert outcomes == {Outcome.RECOVERED, Outcome.UNRECOVERED, Outcome.INFRA_ERROR}
    assert len({p.index for p in big_ledger.planned}) == BIG


def test_ten_thousand_trials_export_csv_is_exact(
    big_ledger: BigLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "export", "--all", "--db", str(big_ledger.path))
    assert code == 0
    check_export_csv(out, big_ledger.planned)


def test_ten_thousand_trials_export_json_is_exact(
    big_ledger: BigLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "export", REF.name, "-n", REF.namespace, "--db", str(big_ledger.path), "--format", "json"
    )
    assert code == 0
    assert json.loads(out) == [expected_row(p) for p in big_ledger.planned]


def test_ten_thousand_trials_report_is_exact(
    big_ledger: BigLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys, "report", REF.name, "-n", REF.namespace, "--db", str(big_ledger.path), "--format", "json",
        "--resamples", "2000",
    )  # fmt: skip
    assert code == 0
    value = json.loads(out)
    check_report_json(value, big_ledger.planned)
    assert value["summary"]["confidence"]["resamples"] == 2000
    reasons = value["failureReasons"]
    # count x time lost: 4 unrecovered x 248 s beat 20 infra errors x 15 s.
    assert [(r["outcome"], r["reason"]) for r in reasons] == [
        ("unrecovered", "not recovered within Ns: tikv-N: replacement not Ready"),
        ("infra_error", "apiserver: 503 deleting tikv-N (uid <uid>)"),
    ]
    assert [r["count"] for r in reasons] == [4, 20]
    assert [round(r["secondsLost"], 3) for r in reasons] == [248.0, 15.0]


def test_ten_thousand_trials_html_has_one_mark_per_trial(
    big_ledger: BigLedger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "report.html"
    code, _, _ = run_cli(
        capsys, "report", REF.name, "-n", REF.namespace, "--db", str(big_ledger.path), "--resamples", "100",
        "--html", str(page),
    )  # fmt: skip
    assert code == 0
    assert page.read_text().count("data-trial=") == BIG
