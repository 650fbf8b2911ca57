"""Queueing: the subject Lease is per subject instance (two TiKV clusters in one namespace run
in parallel), and ``--max-concurrent-campaigns`` bounds how many Campaigns run at once."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, campaign, condition, get_campaign, tikv_statefulset

StartOperator = Callable[..., OperatorProcess]


def _subject(cluster: testbed.Cluster, namespace: str, instance: str, replicas: int = 2) -> dict[str, str]:
    """A StatefulSet of its own (pods only, no PD): its labels are the subject's selector."""
    sts = tikv_statefulset(name=f"tikv-{instance}", replicas=replicas)
    labels = {"app.kubernetes.io/component": "tikv", "app.kubernetes.io/instance": instance}
    sts["metadata"]["labels"] = labels
    sts["spec"]["selector"]["matchLabels"] = labels
    sts["spec"]["template"]["metadata"]["labels"] = labels
    cluster.apply(sts, namespace=namespace)
    cluster.kubectl("rollout", "status", f"statefulset/tikv-{instance}", "-n", namespace, "--timeout=120s")
    return labels


def _campaign_on(name: str, namespace: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    body = campaign(name, namespace, None, **spec)
    body["spec"]["subject"]["selector"] = {"matchLabels": labels}
    return body


def _spans(op: OperatorProcess) -> dict[str, tuple[float, float]]:
    """Each Campaign's run as the ledger has it: its first attempt's start to its last's end."""
    rows = json.loads(
        testbed.run(
            [
                str(testbed.REPO / ".venv" / "bin" / "aftershock"),
                "export",
                "--all",
                "--db",
                str(op.db),
                "--format",
                "json",
            ]
        ).stdout
    )
    spans: dict[str, tuple[float, float]] = {}
    for row in rows:
        start, end = row["startedAtUnix"], row["finishedAtUnix"]
        lo, hi = spans.get(row["campaignName"], (start, end))
        spans[row["campaignName"]] = (min(lo, start), max(hi, end))
    return spans


def _most_at_once(spans: dict[str, tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    return max(itertools.accumulate(delta for _, delta in edges))


def _all_finished(cluster: testbed.Cluster, namespace: str, names: list[str], op: OperatorProcess) -> bool:
    assert op.alive(), op.log_text()[-4000:]
    return all(
        (get_campaign(cluster, namespace, n).get("status") or {}).get("phase") in ("Succeeded", "Failed")
        for n in names
    )


def test_two_subjects_in_one_namespace_are_measured_at_the_same_time(
    cluster: testbed.Cluster, namespace: str, start_operator: StartOperator
) -> None:
    op = start_operator("--lock-retry-interval", "0.5")
    a, b = _subject(cluster, namespace, "a"), _subject(cluster, namespace, "b")
    cluster.apply(_campaign_on("on-a", namespace, a, trials=4, intervalSeconds=1))
    cluster.apply(_campaign_on("on-b", namespace, b, trials=4, intervalSeconds=1))

    testbed.wait_for(
        lambda: _all_finished(cluster, namespace, ["on-a", "on-b"], op), 180, what="both finished"
    )

    for name in ("on-a", "on-b"):
        status = get_campaign(cluster, namespace, name)["status"]
        assert (status["phase"], status["progress"]) == ("Succeeded", "4/4")
    spans = _spans(op)
    (a0, a1), (b0, b1) = spans["on-a"], spans["on-b"]
    overlap = min(a1, b1) - max(a0, b0)
    assert overlap > 0, f"two distinct subjects were not measured in parallel: {spans}"
    leases = cluster.get_json("leases", "-n", namespace, "-l", "app.kubernetes.io/managed-by=aftershock")
    assert len(leases["items"]) == 2


def test_with_a_bound_of_two_five_campaigns_run_two_at_a_time_and_all_finish(
    cluster: testbed.Cluster, namespace: str, start_operator: StartOperator
) -> None:
    op = start_operator("--max-concurrent-campaigns", "2", "--lock-retry-interval", "0.5")
    names = [f"c{i}" for i in range(5)]
    subjects = {n: _subject(cluster, namespace, n) for n in names}
    for n in names:
        cluster.apply(_campaign_on(n, namespace, subjects[n], trials=2, intervalSeconds=1))

    queued: dict[str, str] = {}

    def finished() -> bool:
        for n in names:
            locked = condition(get_campaign(cluster, namespace, n), "SubjectLocked")
            if locked is not None and locked["reason"] == "Queued":
                queued[n] = locked["message"]
        return _all_finished(cluster, namespace, names, op)

    testbed.wait_for(finished, 300, interval=0.2, what="five campaigns finished")

    for n in names:
        status = get_campaign(cluster, namespace, n)["status"]
        assert (status["phase"], status["progress"]) == ("Succeeded", "2/2"), status
    assert queued, "no Campaign ever said it waits in the queue"
    assert all("waiting for one of 2 campaign slots" in m for m in queued.values()), queued
    spans = _spans(op)
    assert len(spans) == 5
    assert _most_at_once(spans) == 2, f"not two at a time: {spans}"
