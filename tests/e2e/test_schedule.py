"""A scheduled Campaign end to end, on the real API server with the operator as its own
ServiceAccount, its schedule read against a faster clock (`--schedule-clock ORIGIN:12`: a
per-minute cron ticks every 5 s of wall time).

One Campaign, three runs:

1. nothing runs on apply; run 1 starts at the first tick, and is held at its steady-state gate
   (PD answers 500) until the next tick has come: Forbid skips that tick;
2. run 2 at the next tick; then the operator is SIGKILLed and stays down across two ticks;
3. started again, it makes one catch-up run (run 3), not one per missed tick, against a subject
   made slower on purpose (PD's heartbeat 15x longer): run 3 is Regressed against run 2 (the
   previous) and run 1 (the baseline), p-values in the condition, the gauge at 1.

The witness is the test's own pod watch: every pod deleted in the namespace is counted, and the
kills must be exactly 3 runs x 5 trials (a burst of catch-up runs, or a run for the skipped
tick, would add five each). `report --runs` holds three rows.
"""

from __future__ import annotations

import datetime
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aftershock import cron
from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, Subject, campaign, condition, get_campaign, wait_until
from tests.pdstub import Timing
from tests.reliability.watchers import AuditLog, PodWatch

StartOperator = Callable[..., OperatorProcess]

SPEED = 12.0  # one schedule minute = 5 s
TRIALS = 5
EVERY_MINUTE = cron.parse("* * * * *")
NEVER_SOON = "0 0 1 1 *"  # once a year: parks the schedule while the test needs no tick


def _deleted(pods: PodWatch) -> set[str]:
    """The UIDs of the pods the test's own watch saw go (not the operator's word)."""
    return {g.uid for g in pods.gone}


def _victims(trials: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """The UIDs a report's attempts name: (those of completed trials, whose kill took effect;
    those of the other attempts, e.g. an ``infra_error`` whose pod kwok replaced before the
    kill: the operator's delete then met a new UID and was refused, 409)."""
    done = {"recovered", "unrecovered"}
    completed = {v["uid"] for t in trials if t["outcome"] in done for v in t["victims"]}
    others = {v["uid"] for t in trials if t["outcome"] not in done for v in t["victims"]}
    return completed, others - completed


def _pods_gone_are_the_victims(
    kills: PodWatch, audit: AuditLog, namespace: str, completed: set[str], others: set[str]
) -> None:
    """The pods the test's own watch saw deleted are the ledger's victims (by UID), and the
    operator's effective DELETEs in the audit log number the completed trials' victims, plus at
    most one per other attempt's victim. A pod seen deleted beyond the completed trials' victims
    must match one of those extra deletes or a kwok-controller delete: kwok finalises a deleted
    pod by name and can catch the StatefulSet's replacement of the same name (ADR 0005), a
    simulator artifact a real kubelet does not make."""
    wait_until(lambda: _deleted(kills) >= completed, 30, "the watch to see every kill")
    deletes = [d for d in audit.pod_deletes(namespace) if d.effective]
    by_operator = len([d for d in deletes if d.by_operator])
    assert len(completed) <= by_operator <= len(completed) + len(others), (completed, others, deletes)
    extra = _deleted(kills) - completed
    assert len(extra) <= by_operator - len(completed) + len([d for d in deletes if d.by_kwok]), (
        extra,
        deletes,
    )


def _aftershock(op: OperatorProcess, *args: str) -> Any:
    cmd = [str(testbed.REPO / ".venv" / "bin" / "aftershock"), *args, "--db", str(op.db)]
    return json.loads(testbed.run(cmd).stdout)


def _status(cluster: testbed.Cluster, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = get_campaign(cluster, namespace, "nightly").get("status") or {}
    return status


def _run_is(cluster: testbed.Cluster, namespace: str, op: OperatorProcess, number: int, phase: str) -> Any:
    def check() -> dict[str, Any] | None:
        assert op.alive(), op.log_text()[-4000:]
        obj = get_campaign(cluster, namespace, "nightly")
        status = obj.get("status") or {}
        run = status.get("run") or {}
        return obj if run.get("number") == number and status.get("phase") == phase else None

    return wait_until(check, 180, f"run {number} {phase}")


def _set_cron(cluster: testbed.Cluster, namespace: str, expression: str) -> None:
    patch = json.dumps({"spec": {"schedule": {"cron": expression}}})
    cluster.kubectl("patch", "campaign", "nightly", "-n", namespace, "--type=merge", "-p", patch)


def _ticks(op: OperatorProcess, namespace: str) -> list[dict[str, Any]]:
    ticks: list[dict[str, Any]] = _aftershock(
        op, "report", "nightly", "-n", namespace, "--runs", "--format", "json"
    )["ticks"]
    return ticks


def test_a_scheduled_campaign_runs_at_its_ticks_skips_one_catches_up_once_and_flags_a_regression(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    began = time.monotonic()
    origin = time.time()

    def schedule_now() -> float:
        return origin + (time.time() - origin) * SPEED

    audit = AuditLog(Path(testbed.run([str(testbed.TESTBED / "cluster.sh"), "audit-log"]).stdout.strip()))
    audit.mark()
    kills = PodWatch(cluster.api_client(), namespace).start()
    subject.pd.set_timing(Timing.fast(0.02))  # a restarted store reports Up 0.2 s after Ready
    subject.pd.set_fault("error500")  # run 1 waits at its gate until the test lets it go
    op = start_operator("--schedule-clock", f"{origin}:{SPEED}")
    body = campaign(
        "nightly",
        namespace,
        subject.pd_url,
        trials=TRIALS,
        intervalSeconds=0,
        recovery={"timeoutSeconds": 60, "settleSeconds": 0.5},
        schedule={"cron": "* * * * *", "startingDeadlineSeconds": 600, "historyLimit": 5},
        trend={"baselineRun": 1},
    )
    cluster.apply(body)
    try:
        # Run 1 at the first tick, held at the gate across the next tick: Forbid skips it.
        running = _run_is(cluster, namespace, op, 1, "Running")
        first_tick = running["status"]["run"]["scheduledAt"]
        # Nothing on apply: run 1 is for a tick after the Campaign was created.
        assert first_tick > running["metadata"]["creationTimestamp"]
        skipped_by = EVERY_MINUTE.next_after(schedule_now()) + 1
        wait_until(lambda: schedule_now() > skipped_by, 30, "the next tick to pass")
        wait_until(
            lambda: any(t["action"] == "skipped" for t in _ticks(op, namespace)),
            30,
            "the skipped tick recorded",
        )
        assert _status(cluster, namespace)["run"]["number"] == 1
        assert _deleted(kills) == set()  # still at the gate: nothing killed
        subject.pd.set_fault("none")
        one = _run_is(cluster, namespace, op, 1, "Succeeded")
        assert one["status"]["lastScheduleTime"] == first_tick

        # Run 2 at a tick after run 1; the schedule parked while it runs, so no run 3 can start
        # before the operator is killed.
        _run_is(cluster, namespace, op, 2, "Running")
        _set_cron(cluster, namespace, NEVER_SOON)
        two = _run_is(cluster, namespace, op, 2, "Succeeded")
        assert two["status"]["verdict"] == "Pass"
        # Before the downtime, the pods deleted are runs 1 and 2's victims (by UID, from the
        # ledger), nothing more from the operator (a count of 2 x TRIALS pods seen deleted was
        # luck: kwok's by-name deletes can take a replacement too).
        trials = [
            t
            for number in (1, 2)
            for t in _aftershock(
                op, "report", "nightly", "-n", namespace, "--run", str(number), "--format", "json"
            )["trials"]
        ]
        completed, others = _victims(trials)
        assert len(completed) == 2 * TRIALS
        _pods_gone_are_the_victims(kills, audit, namespace, completed, others)

        # Down across two ticks; the subject slower meanwhile.
        op.kill()
        killed_at = schedule_now()
        _set_cron(cluster, namespace, "* * * * *")
        subject.pd.set_timing(Timing.fast(0.3))  # its first heartbeat 3 s after a restart
        missed = [EVERY_MINUTE.next_after(killed_at)]
        missed.append(EVERY_MINUTE.next_after(missed[0]))
        wait_until(lambda: schedule_now() > missed[1] + 1, 30, "two ticks to pass while down")
        op.start()

        # One catch-up run, for the latest missed tick.
        three = _run_is(cluster, namespace, op, 3, "Running")
        _set_cron(cluster, namespace, NEVER_SOON)
        caught_up = three["status"]["run"]["scheduledAt"]
        assert caught_up >= _iso(missed[1])
        three = _run_is(cluster, namespace, op, 3, "Succeeded")
        regressed = condition(three, "Regressed")
        assert regressed is not None, three["status"]
        assert regressed["status"] == "True", regressed
        assert regressed["reason"] == "RegressedFromPreviousAndBaseline", regressed
        assert "run 3 vs run 2 (previous): Regressed, p = " in regressed["message"]
        assert "run 3 vs run 1 (baseline): Regressed, p = " in regressed["message"]

        # The witness: every pod deleted in the namespace is a victim of one of the three runs'
        # attempts (one kill per completed trial; a kwok pod replaced before its kill shows as an
        # infra_error attempt naming its UID), and there are exactly three runs: a second
        # catch-up run would have killed five pods more.
        trials = []
        for number in (1, 2, 3):
            report = _aftershock(
                op, "report", "nightly", "-n", namespace, "--run", str(number), "--format", "json"
            )
            assert [t["outcome"] for t in report["trials"]].count("recovered") == TRIALS
            trials += report["trials"]
        completed, others = _victims(trials)
        assert len(completed) == 3 * TRIALS
        _pods_gone_are_the_victims(kills, audit, namespace, completed, others)
        assert (
            _aftershock(op, "report", "nightly", "-n", namespace, "--runs", "--format", "json")["runs"][-1][
                "run"
            ]
            == 3
        )

        # The ledger's ticks: started 1, skipped, started 2, then one start for the downtime.
        ticks = _ticks(op, namespace)
        started = [t for t in ticks if t["action"] == "started"]
        assert [t["run"] for t in started] == [1, 2, 3]
        assert _unix(started[2]["tick"]) == _unix(caught_up)
        assert [t["tick"] for t in ticks if t["action"] == "skipped"][:1] != []

        # The trend: three rows, run 3 regressed.
        trend = _aftershock(op, "report", "nightly", "-n", namespace, "--runs", "--format", "json")
        assert [r["run"] for r in trend["runs"]] == [1, 2, 3]
        assert [r["recovered"] for r in trend["runs"]] == [TRIALS] * 3
        verdicts = {j["against"]: j["verdict"] for j in trend["runs"][2]["judgements"]}
        assert verdicts == {"previous": "Regressed", "baseline": "Regressed"}
        assert trend["runs"][2]["p50Seconds"] > trend["runs"][1]["p50Seconds"] + 1

        # The gauge a Prometheus rule alerts on.
        with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        uid = three["metadata"]["uid"]
        labels = f'namespace="{namespace}",campaign="nightly",uid="{uid}"'
        assert f'aftershock_run_regressed{{{labels},against="previous"}} 1.0' in text
        assert f"aftershock_last_run{{{labels}}} 3.0" in text
        # compare's own test agrees.
        cmd = [
            str(testbed.REPO / ".venv" / "bin" / "aftershock"),
            "compare",
            "nightly@previous",
            "nightly@latest",
            "-n",
            namespace,
            "--db",
            str(op.db),
        ]
        assert testbed.run(cmd, check=False).returncode == 1
    finally:
        kills.stop()
    print(f"\n[measured] test_schedule: {time.monotonic() - began:.0f}s")


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def _unix(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
