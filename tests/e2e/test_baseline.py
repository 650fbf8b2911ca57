"""Baseline mode: the remediator is scaled to zero for each trial and restored after, even when
the operator is killed in the middle of a trial."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e import realnode, testbed
from tests.e2e.operator import OperatorProcess, Subject, campaign, get_campaign, wait_phase
from tests.pdstub import Timing
from tests.reliability.watchers import PodWatch

StartOperator = Callable[..., OperatorProcess]


def _deployment(name: str, replicas: int, pod: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def _healer() -> dict[str, Any]:
    return _deployment("healer", 2, {"containers": [{"name": "agent", "image": "example.invalid/healer:1"}]})


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


#: The stubborn healer's grace period: what a baseline trial must wait out before its fault.
STUBBORN_GRACE_S = 6


def _stubborn_healer() -> dict[str, Any]:
    """A remediator that ignores SIGTERM (as a PID 1 that never installed a handler does, or one
    killed before it had): each of its pods runs its whole grace period after a scale to zero.
    On the real node, where a pod is deleted only once its containers have exited."""
    ignore = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(10**6)"
    pod = realnode.on_real_node(
        {
            "terminationGracePeriodSeconds": STUBBORN_GRACE_S,
            "containers": [
                {
                    "name": "agent",
                    "image": realnode.PYTHON_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", ignore],
                }
            ],
        }
    )
    return _deployment("stubborn-healer", 1, pod)


@pytest.mark.realnode
def test_a_baseline_fault_waits_until_the_remediators_terminating_pods_are_gone(
    cluster: testbed.Cluster, namespace: str, subject: Subject, real_node: None, start_operator: StartOperator
) -> None:
    """The scale subresource says 0 as soon as the pod is marked for deletion, but its process
    runs (and could act) until it exits: each trial's kill comes only after the remediator's
    pod is deleted, as the test's own pod watch sees it."""
    cluster.apply(_stubborn_healer(), namespace=namespace)
    cluster.kubectl("rollout", "status", "deployment/stubborn-healer", "-n", namespace, "--timeout=120s")
    pods = PodWatch(cluster.api_client(), namespace).start()
    try:
        op = start_operator()
        cluster.apply(
            campaign(
                "stubborn",
                namespace,
                subject.pd_url,
                trials=2,
                baseline=True,
                remediator={"kind": "Deployment", "name": "stubborn-healer"},
            )
        )
        obj = wait_phase(cluster, namespace, "stubborn", {"Succeeded", "Failed"}, timeout=300, op=op)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        cluster.kubectl("rollout", "status", "deployment/stubborn-healer", "-n", namespace, "--timeout=120s")
    finally:
        pods.stop()
    healers = sorted(
        (g for g in pods.gone if ("app", "stubborn-healer") in g.labels), key=lambda g: g.seen
    )  # fmt: skip
    victims = sorted(
        (g for g in pods.gone if ("app", "stubborn-healer") not in g.labels), key=lambda g: g.seen
    )  # fmt: skip
    # One healer pod stopped per trial (the one before the first, the restored one before the
    # second), each seen deleted by the watch, none vanished between two watches.
    assert len(healers) == 2, healers
    assert len(victims) >= 2, victims
    assert all(g.how == "DELETED" for g in healers), healers
    for healer in healers:
        # It really lingered: terminating for most of its grace period (the wait is exercised).
        marked = pods.terminating[healer.uid]
        assert healer.seen - marked >= STUBBORN_GRACE_S - 2, (healer, marked)
    # Each trial's kill after its healer was gone: the first victim after the first healer, and
    # no victim between a healer marked for deletion and its being gone.
    assert victims[0].seen > healers[0].seen, (victims, healers)
    for healer in healers:
        marked = pods.terminating[healer.uid]
        during = [v for v in victims if marked <= v.seen <= healer.seen]
        assert during == [], (healer, during)
    second_kill = [v for v in victims if v.seen > healers[1].seen]
    assert second_kill, (victims, healers)
