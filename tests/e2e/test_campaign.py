"""The Campaign operator end to end: a real API server, the operator as a real process
authenticated as its own ServiceAccount, a TiKV-shaped StatefulSet on simulated nodes and the
PD stand-in serving PD's JSON from the pods' states."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import ledgerfile, testbed
from tests.e2e.operator import (
    OperatorProcess,
    Subject,
    campaign,
    condition,
    get_campaign,
    pod_uids,
    wait_phase,
)
from tests.pdstub import Timing

StartOperator = Callable[..., OperatorProcess]


def _report(db: Path, namespace: str, name: str) -> dict[str, Any]:
    proc = testbed.run(
        [
            str(testbed.REPO / ".venv" / "bin" / "aftershock"),
            "report",
            name,
            "-n",
            namespace,
            "--db",
            str(db),
            "--format",
            "json",
        ]
    )
    value: dict[str, Any] = json.loads(proc.stdout)
    return value


def test_three_trials_succeed_and_are_in_the_ledger(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    before = pod_uids(cluster, namespace)
    op = start_operator()
    cluster.apply(campaign("three", namespace, subject.pd_url, slo={"p95RecoverySeconds": 30}))
    obj = wait_phase(cluster, namespace, "three", {"Succeeded", "Failed"}, timeout=180, op=op)
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "3/3"
    assert status["trials"]["completed"] == 3
    assert status["verdict"] == "Pass"
    assert status["healthSource"] == "pods+pd"
    assert status["recovery"]["p50Seconds"] > 0
    assert status["recovery"]["p95Seconds"] >= status["recovery"]["p50Seconds"]
    assert (condition(obj, "Ready") or {}).get("status") == "True"
    assert (condition(obj, "Stalled") or {}).get("status") == "False"
    api = condition(obj, "SubjectAPIConfigured")
    assert api is not None
    assert (api["status"], api["reason"]) == ("True", "Configured")
    assert subject.pd_url in api["message"]

    report = _report(op.db, namespace, "three")
    trials = [t for t in report["trials"] if t["outcome"] == "recovered"]
    assert len(trials) == 3
    assert sorted(t["index"] for t in trials) == [0, 1, 2]
    after = pod_uids(cluster, namespace)
    for t in trials:
        offsets = [
            t["timings"][m]["offsetSeconds"]
            for m in (
                "kill_sent",
                "victim_gone",
                "replacement_created",
                "replacement_scheduled",
                "replacement_ready",
                "store_up",
                "recovered",
            )
        ]
        assert offsets == sorted(offsets), t["timings"]
        assert t["timings"]["gate_passed"]["offsetSeconds"] <= 0
        # The recovery counts from the first sign the kill took effect (ADR 0008): the delete's
        # answer or the subject seen unhealthy, both after the request left.
        start = min(t["timings"][m]["offsetSeconds"] for m in ("kill_acked", "first_unhealthy"))
        assert 0 <= start <= t["timings"]["victim_gone"]["offsetSeconds"]
        assert t["recoverySeconds"] == pytest.approx(t["timings"]["recovered"]["offsetSeconds"] - start)
        (victim,) = t["victims"]
        assert victim["name"] in before
        assert isinstance(victim["memberId"], int)  # the store id PD gave the victim's store
        assert victim["uid"] == before[victim["name"]] or victim["uid"] not in after.values()
    # every victim was replaced by a pod with a new UID
    killed_uids = {t["victims"][0]["uid"] for t in trials}
    assert not killed_uids & set(after.values())

    table = cluster.kubectl("get", "campaigns", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "PROGRESS", "P50", "P95", "VERDICT", "AGE"]
    row = dict(zip(header, table.splitlines()[1].split(), strict=True))
    named = (row["NAME"], row["PHASE"], row["PROGRESS"], row["VERDICT"])
    assert named == ("three", "Succeeded", "3/3", "Pass")
    # The recovery columns are the status's numbers, as the API server's table gives them.
    assert float(row["P50"]) == pytest.approx(status["recovery"]["p50Seconds"], abs=1e-6), row
    assert float(row["P95"]) == pytest.approx(status["recovery"]["p95Seconds"], abs=1e-6), row
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=three"
    ).stdout
    assert "TrialRecovered" in events


def test_operator_killed_mid_trial_resumes_without_losing_or_repeating(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    # Stores heartbeat every 5 s, so a replaced store reports its first heartbeat 5 s after its
    # start, and the operator is certainly mid-trial (kill sent, not yet recovered) when SIGKILLed.
    subject.pd.set_timing(Timing.fast(0.5))
    op = start_operator()
    cluster.apply(campaign("crash", namespace, subject.pd_url, trials=3))

    uid = testbed.wait_for(lambda: get_campaign(cluster, namespace, "crash")["metadata"]["uid"], 30)
    # Triggered on the ledger, the operator's own record, not on a status message that may
    # lag it: a kill sent and no outcome yet is a trial mid-recovery.
    testbed.wait_for(lambda: ledgerfile.in_flight(op.db, uid), 60, interval=0.02, what="a trial mid-recovery")
    op.kill()
    # The process is dead: its ledger is frozen. Whatever was in flight now must end interrupted.
    flying = {a.id for a in ledgerfile.in_flight(op.db, uid)}
    assert flying, "the SIGKILL landed between trials"
    subject.pd.set_timing(Timing.fast(0.05))
    op2 = start_operator()
    obj = wait_phase(cluster, namespace, "crash", {"Succeeded", "Failed"}, timeout=240, op=op2)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    attempts = ledgerfile.attempts(op.db, uid)
    assert {a.outcome for a in attempts if a.id in flying} == {"interrupted"}, attempts
    recovered = [a.trial_index for a in attempts if a.outcome == "recovered"]
    assert sorted(recovered) == [0, 1, 2], attempts  # exactly N, no duplicates
    report = _report(op.db, namespace, "crash")
    assert sorted(t["index"] for t in report["trials"] if t["outcome"] == "recovered") == [0, 1, 2]
    assert obj["status"]["trials"]["interrupted"] >= 1
    assert obj["status"]["trials"]["completed"] == 3


def test_dry_run_kills_nothing_and_records_victims(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    before = pod_uids(cluster, namespace)
    op = start_operator()
    cluster.apply(campaign("dry", namespace, subject.pd_url, trials=2, dryRun=True))
    obj = wait_phase(cluster, namespace, "dry", {"Succeeded", "Failed"}, timeout=120, op=op)
    assert obj["status"]["phase"] == "Succeeded"
    assert pod_uids(cluster, namespace) == before  # nothing killed
    report = _report(op.db, namespace, "dry")
    assert [t["outcome"] for t in report["trials"]] == ["dry_run", "dry_run"]
    assert all(t["victims"] and t["victims"][0]["name"] in before for t in report["trials"])


def test_suspend_holds_and_resume_finishes(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    op = start_operator()
    cluster.apply(campaign("pause", namespace, subject.pd_url, trials=3, suspend=True))
    obj = wait_phase(cluster, namespace, "pause", {"Suspended"}, timeout=60, op=op)
    before = pod_uids(cluster, namespace)
    asyncio.run(asyncio.sleep(2))
    assert pod_uids(cluster, namespace) == before  # held: nothing killed
    assert get_campaign(cluster, namespace, "pause")["status"]["progress"] == "0/3"
    cluster.kubectl(
        "patch", "campaign", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    obj = wait_phase(cluster, namespace, "pause", {"Succeeded", "Failed"}, timeout=120, op=op)
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["status"]["progress"] == "3/3"
