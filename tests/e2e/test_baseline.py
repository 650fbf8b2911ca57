"""Baseline mode: the remediator is scaled to zero for each trial and restored after, even when
the operator is killed in the middle of a trial."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, Subject, campaign, get_campaign, wait_phase
from tests.pdstub import Timing

StartOperator = Callable[..., OperatorProcess]


def _healer() -> dict[str, Any]:
    labels = {"app": "healer"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "healer"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "agent", "image": "example.invalid/healer:1"}]},
            },
        },
    }


def _replicas(cluster: testbed.Cluster, namespace: str) -> int:
    return int(cluster.get_json("deployment", "healer", "-n", namespace)["spec"]["replicas"])


def test_remediator_scaled_to_zero_during_trials_and_restored_after_a_crash(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    cluster.apply(_healer(), namespace=namespace)
    cluster.kubectl("rollout", "status", "deployment/healer", "-n", namespace, "--timeout=60s")
    subject.pd.set_timing(Timing.fast(0.4))  # first heartbeat 4 s after a restart: trials stay observing
    op = start_operator()
    cluster.apply(
        campaign(
            "baseline",
            namespace,
            subject.pd_url,
            trials=2,
            baseline=True,
            remediator={"kind": "Deployment", "name": "healer"},
        )
    )

    def observing() -> bool:
        status = get_campaign(cluster, namespace, "baseline").get("status") or {}
        return "observing recovery" in (status.get("message") or "")

    testbed.wait_for(observing, 60, interval=0.05, what="the first trial observing recovery")
    assert _replicas(cluster, namespace) == 0  # scaled down for the trial
    op.kill()
    assert _replicas(cluster, namespace) == 0  # the crash left it scaled down...

    subject.pd.set_timing(Timing.fast(0.05))
    op2 = start_operator()
    obj = wait_phase(cluster, namespace, "baseline", {"Succeeded", "Failed"}, timeout=120, op=op2)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["status"]["trials"]["interrupted"] == 1
    assert _replicas(cluster, namespace) == 2  # ...and the restarted operator restored it
    cluster.kubectl("rollout", "status", "deployment/healer", "-n", namespace, "--timeout=60s")


def test_assisted_mode_leaves_the_remediator_alone(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    cluster.apply(_healer(), namespace=namespace)
    op = start_operator()
    cluster.apply(
        campaign(
            "assisted",
            namespace,
            subject.pd_url,
            trials=2,
            baseline=False,
            remediator={"kind": "Deployment", "name": "healer"},
        )
    )
    seen: set[int] = set()

    def done() -> bool:
        seen.add(_replicas(cluster, namespace))
        phase = (get_campaign(cluster, namespace, "assisted").get("status") or {}).get("phase")
        return phase in ("Succeeded", "Failed")

    testbed.wait_for(done, 120, interval=0.05, what="assisted campaign finished")
    assert op.alive()
    assert seen == {2}
