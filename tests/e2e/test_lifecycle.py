"""A Campaign's whole life as GitOps tools and a person deleting things see it, on the real API
server with the operator running as its own ServiceAccount.

- kstatus (sigs.k8s.io/cli-utils, what Flux uses; built from pinned Go modules by
  hack/tools/kstatus/build.sh) and the README's Argo CD health check (its Lua, run by a real
  Lua interpreter) read real Campaigns: created, running, suspended, resumed, succeeded,
  failed, spec invalid; and a scheduled Campaign before its first run, during a run, between
  runs, suspended. Both must say what the README's GitOps section says.
- Deleting a Campaign, or its namespace, mid-trial: the finalizer goes at once, the attempt in
  flight is recorded interrupted (never unrecovered) and the ledger says Deleted.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lupa
import pytest

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, Subject, campaign, get_campaign, wait_phase, wait_until

StartOperator = Callable[..., OperatorProcess]


# --- the two readers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kstatus() -> str:
    out = testbed.run([str(testbed.REPO / "hack" / "tools" / "kstatus" / "build.sh")], timeout=900)
    return out.stdout.strip().splitlines()[-1]


def read_kstatus(binary: str, obj: dict[str, Any]) -> str:
    out = testbed.run([binary], input_=json.dumps(obj))
    status: str = json.loads(out.stdout)["status"]
    return status


def readme_argo_health_check() -> str:
    """The Lua exactly as the README gives it to `argocd-cm` (indented under the YAML key)."""
    readme = (testbed.REPO / "README.md").read_text()
    found = re.search(
        r"resource\.customizations\.health\.aftershock\.dev_Campaign: \|\n(.*?)\n```", readme, re.DOTALL
    )
    assert found is not None, "the README has no Argo CD health check for Campaigns"
    return textwrap.dedent(found.group(1))


def read_argo(obj: dict[str, Any]) -> str:
    """What Argo CD would show: its health scripts get the object as the global-free `obj`."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    check = lua.eval(f"function(obj)\n{readme_argo_health_check()}\nend")
    result = check(lua.table_from(obj, recursive=True))
    status: str = result["status"]
    return status


def both(kstatus_bin: str, obj: dict[str, Any]) -> tuple[str, str]:
    return read_kstatus(kstatus_bin, obj), read_argo(obj)


def patch_suspend(cluster: testbed.Cluster, namespace: str, name: str, value: bool) -> int:
    patch = json.dumps({"spec": {"suspend": value}})
    cluster.kubectl("patch", "campaign", name, "-n", namespace, "--type=merge", "-p", patch)
    generation: int = get_campaign(cluster, namespace, name)["metadata"]["generation"]
    return generation


def observed(cluster: testbed.Cluster, namespace: str, name: str, generation: int, phase: str) -> Any:
    def check() -> dict[str, Any] | None:
        obj = get_campaign(cluster, namespace, name)
        status = obj.get("status") or {}
        return obj if (status.get("observedGeneration"), status.get("phase")) == (generation, phase) else None

    return wait_until(check, 120, f"{name}: {phase} at generation {generation}")


def test_kstatus_and_argo_cd_read_a_campaign_through_its_life(
    cluster: testbed.Cluster,
    namespace: str,
    subject: Subject,
    start_operator: StartOperator,
    kstatus: str,
) -> None:
    # Created, before any operator has seen it: no status at all.
    cluster.apply(campaign("bad", namespace, "http://169.254.169.254/latest"))
    fresh = get_campaign(cluster, namespace, "bad")
    assert "status" not in fresh
    assert both(kstatus, fresh) == ("Current", "Progressing")  # the one disagreement (README)

    life = campaign("life", namespace, subject.pd_url, intervalSeconds=3, slo={"p95RecoverySeconds": 30})
    cluster.apply(life)
    op = start_operator()

    # Spec invalid: Failed for both.
    bad = wait_phase(cluster, namespace, "bad", {"Failed"}, timeout=60, op=op)
    assert both(kstatus, bad) == ("Failed", "Degraded")

    # Running.
    running = wait_phase(cluster, namespace, "life", {"Running"}, timeout=60, op=op)
    assert running["status"]["observedGeneration"] == running["metadata"]["generation"] == 1
    assert both(kstatus, running) == ("InProgress", "Progressing")

    # Suspended: a new generation, observed once acted on; conditions follow.
    with op.frozen():  # SIGSTOP: the change is certainly not acted on while the readers look
        generation = patch_suspend(cluster, namespace, "life", True)
        assert generation == 2
        not_yet = get_campaign(cluster, namespace, "life")
        assert not_yet["status"]["observedGeneration"] == 1
        assert both(kstatus, not_yet) == ("InProgress", "Progressing")
    suspended = observed(cluster, namespace, "life", generation, "Suspended")
    assert {c["observedGeneration"] for c in suspended["status"]["conditions"]} == {generation}
    # kstatus has no word for suspended: Ready is False, so it waits (InProgress).
    assert both(kstatus, suspended) == ("InProgress", "Suspended")

    # Resumed.
    generation = patch_suspend(cluster, namespace, "life", False)
    resumed = observed(cluster, namespace, "life", generation, "Running")
    assert both(kstatus, resumed) == ("InProgress", "Progressing")

    # Succeeded with a Pass.
    done = wait_phase(cluster, namespace, "life", {"Succeeded", "Failed"}, timeout=180, op=op)
    assert (done["status"]["phase"], done["status"]["verdict"]) == ("Succeeded", "Pass")
    assert done["status"]["observedGeneration"] == done["metadata"]["generation"] == generation
    assert {c["observedGeneration"] for c in done["status"]["conditions"]} == {generation}
    assert both(kstatus, done) == ("Current", "Healthy")

    # suspend changed on a finished Campaign. Not acted on yet, both readers wait although the
    # status still says Succeeded with Ready True: what they would say is of an older spec.
    with op.frozen():
        generation = patch_suspend(cluster, namespace, "life", True)
        not_yet = get_campaign(cluster, namespace, "life")
        assert (not_yet["status"]["phase"], not_yet["status"]["observedGeneration"]) == (
            "Succeeded",
            generation - 1,
        )
        assert both(kstatus, not_yet) == ("InProgress", "Progressing")
    # Then observed at once, and nothing else moves.
    after = observed(cluster, namespace, "life", generation, "Succeeded")
    assert {c["observedGeneration"] for c in after["status"]["conditions"]} == {generation}
    assert after["status"]["completedAt"] == done["status"]["completedAt"]
    assert both(kstatus, after) == ("Current", "Healthy")

    # Failed on its SLO (Stalled, verdict Fail).
    cluster.apply(campaign("slow", namespace, subject.pd_url, slo={"p95RecoverySeconds": 0.001}))
    failed = wait_phase(cluster, namespace, "slow", {"Succeeded", "Failed"}, timeout=180, op=op)
    assert (failed["status"]["phase"], failed["status"]["verdict"]) == ("Failed", "Fail")
    assert both(kstatus, failed) == ("Failed", "Degraded")
    assert op.alive()


# --- deletion ------------------------------------------------------------------------------------------


def report_json(db: Path, namespace: str, name: str) -> dict[str, Any]:
    aftershock = str(testbed.REPO / ".venv" / "bin" / "aftershock")
    out = testbed.run([aftershock, "report", name, "-n", namespace, "--db", str(db), "--format", "json"])
    value: dict[str, Any] = json.loads(out.stdout)
    return value


def start_a_trial_that_never_recovers(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator, name: str
) -> OperatorProcess:
    """A Campaign caught mid-trial: its victim's store never reports Up again in PD, so the
    attempt stays in flight until something else ends it."""
    op = start_operator()
    assert subject.pd.fleet is not None
    subject.pd.fleet.restart_delay_seconds = 24 * 3600
    cluster.apply(campaign(name, namespace, subject.pd_url, recovery={"timeoutSeconds": 3600}))

    def observing() -> bool:
        status = get_campaign(cluster, namespace, name).get("status") or {}
        return "observing recovery" in str(status.get("message"))

    wait_until(observing, 120, f"{name} to kill and observe")
    return op


def gone(cluster: testbed.Cluster, *args: str) -> bool:
    proc = cluster.kubectl("get", *args, check=False)
    return proc.returncode != 0 and "NotFound" in proc.stderr


def assert_recorded_as_deleted(op: OperatorProcess, namespace: str, name: str) -> None:
    value = report_json(op.db, namespace, name)
    assert value["campaign"]["phase"] == "Deleted"
    assert value["campaign"]["deletedAt"] is not None
    [attempt] = value["trials"]
    assert attempt["outcome"] == "interrupted"  # not unrecovered: the subject did nothing wrong
    assert "the Campaign was deleted during this attempt" in str(attempt["error"])
    assert value["summary"]["completed"] == 0


def test_deleting_a_campaign_mid_trial_interrupts_it_and_lets_it_go(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    op = start_a_trial_that_never_recovers(cluster, namespace, subject, start_operator, "doomed")

    started = time.monotonic()
    cluster.kubectl("delete", "campaign", "doomed", "-n", namespace, "--wait=false")
    wait_until(lambda: gone(cluster, "campaign", "doomed", "-n", namespace), 120, "the Campaign to go")
    took = time.monotonic() - started
    print(f"\n[measured] kubectl delete campaign -> object gone (finalizer removed): {took:.2f}s")

    assert_recorded_as_deleted(op, namespace, "doomed")
    reasons = [e["reason"] for e in cluster.get_json("events", "-n", namespace)["items"]]
    assert "TrialInterrupted" in reasons
    assert "TrialUnrecovered" not in reasons
    # Generous: the old behaviour waited for kopf's cancellation backoff and more.
    assert took < 30
    assert op.alive()


def test_deleting_the_namespace_mid_trial_is_never_blocked_by_the_finalizer(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    op = start_a_trial_that_never_recovers(cluster, namespace, subject, start_operator, "doomed")

    started = time.monotonic()
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    wait_until(lambda: gone(cluster, "campaign", "doomed", "-n", namespace), 120, "the Campaign to go")
    campaign_gone = time.monotonic() - started
    wait_until(lambda: gone(cluster, "namespace", namespace), 180, f"namespace {namespace} to go")
    namespace_gone = time.monotonic() - started
    print(
        f"\n[measured] kubectl delete namespace -> Campaign gone {campaign_gone:.2f}s, "
        f"namespace gone {namespace_gone:.2f}s"
    )

    assert_recorded_as_deleted(op, namespace, "doomed")
    # The API refused its Events (the namespace was terminating), and that held nothing up.
    assert "being terminated" in op.log_text()
    assert campaign_gone < 30
    assert op.alive()


# --- a scheduled Campaign ----------------------------------------------------------------------


def test_kstatus_and_argo_cd_read_a_scheduled_campaign_before_during_and_between_runs(
    cluster: testbed.Cluster,
    namespace: str,
    subject: Subject,
    start_operator: StartOperator,
    kstatus: str,
) -> None:
    """Scheduled, a per-minute cron on a clock 30x faster (a tick every 2 s): waiting for its
    first tick it is synced and healthy; a run is in progress; between runs the last run's
    verdict stands; suspended, its schedule stops and its health does not change."""
    origin = time.time()
    subject.pd.set_fault("error500")  # holds run 1 at its gate, so it is seen running
    op = start_operator("--schedule-clock", f"{origin}:30")
    # Applied with its first tick next January: it waits, whatever the machine's speed.
    body = campaign("cron", namespace, subject.pd_url, trials=2, dryRun=True, schedule={"cron": "0 0 1 1 *"})
    cluster.apply(body)

    def status() -> dict[str, Any]:
        value: dict[str, Any] = get_campaign(cluster, namespace, "cron").get("status") or {}
        return value

    def patch_spec(spec: dict[str, Any]) -> int:
        cluster.kubectl(
            "patch", "campaign", "cron", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec})
        )
        generation: int = get_campaign(cluster, namespace, "cron")["metadata"]["generation"]
        return generation

    def run_in(number: int, phase: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            assert op.alive(), op.log_text()[-4000:]
            obj = get_campaign(cluster, namespace, "cron")
            s = obj.get("status") or {}
            return obj if (s.get("run") or {}).get("number") == number and s.get("phase") == phase else None

        found: dict[str, Any] = wait_until(check, 120, f"run {number} {phase}")
        return found

    waiting = wait_until(
        lambda: get_campaign(cluster, namespace, "cron") if status().get("nextScheduleTime") else None,
        60,
        "scheduled",
    )
    assert (waiting["status"]["phase"], "run" in waiting["status"]) == ("Pending", False)
    assert both(kstatus, waiting) == ("Current", "Healthy")

    patch_spec({"schedule": {"cron": "* * * * *"}})
    running = run_in(1, "Running")
    assert both(kstatus, running) == ("InProgress", "Progressing")
    patch_spec({"schedule": {"cron": "0 0 1 1 *"}})  # no second run until the test asks
    subject.pd.set_fault("none")
    done = run_in(1, "Succeeded")
    assert done["status"]["lastScheduleTime"] == done["status"]["run"]["scheduledAt"]
    between = observed(cluster, namespace, "cron", done["metadata"]["generation"], "Succeeded")
    assert between["status"]["nextScheduleTime"].endswith("-01-01T00:00:00Z")
    assert both(kstatus, between) == ("Current", "Healthy")

    # Suspended: no next tick, nothing runs, health unchanged.
    generation = patch_spec({"suspend": True, "schedule": {"cron": "* * * * *"}})
    suspended = observed(cluster, namespace, "cron", generation, "Succeeded")
    wait_until(
        lambda: "nextScheduleTime" not in status() or status()["nextScheduleTime"] is None, 30, "no next tick"
    )
    assert {c["observedGeneration"] for c in suspended["status"]["conditions"]} == {generation}
    assert both(kstatus, get_campaign(cluster, namespace, "cron")) == ("Current", "Healthy")
    time.sleep(5)  # two and a half ticks of the schedule
    assert status()["run"]["number"] == 1

    # Resumed: one run for the latest tick missed while suspended, then healthy between runs again.
    patch_spec({"suspend": False})
    again = run_in(2, "Succeeded")
    assert both(kstatus, again) == ("Current", "Healthy")
    assert op.alive()
