"""The operator's read-only endpoint: Prometheus metrics that match the ledger, and reports."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, Subject, campaign, get_campaign, wait_phase

StartOperator = Callable[..., OperatorProcess]


def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.status, resp.read().decode()


def test_metrics_parse_and_match_the_ledger(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    op = start_operator()
    cluster.apply(campaign("measured", namespace, subject.pd_url, trials=3))
    wait_phase(cluster, namespace, "measured", {"Succeeded"}, timeout=120, op=op)

    status, text = _get(op.metrics_port, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    recovery = families["aftershock_recovery_seconds"]
    counts = {
        s.labels["milestone"]: s.value
        for s in recovery.samples
        if s.name.endswith("_count") and s.labels.get("campaign") == "measured"
    }
    attempts = families["aftershock_trial_attempts"]
    by_outcome = {
        s.labels["outcome"]: s.value
        for s in attempts.samples
        if s.name.endswith("_total") and s.labels.get("campaign") == "measured"
    }

    _, body = _get(op.metrics_port, f"/campaigns/{namespace}/measured")
    report = json.loads(body)
    recovered = [t for t in report["trials"] if t["outcome"] == "recovered"]
    assert counts["recovered"] == len(recovered) == 3
    assert counts["replacement_ready"] == 3
    # The label values are the milestones the trials recorded on the way (TiKV's store_up, a
    # milestone of its subject, included), each counted once per recovered trial that had it.
    before_or_beside = {"gate_passed", "kill_sent", "kill_acked", "first_unhealthy", "relapsed"}
    recorded = [set(t["timings"]) - before_or_beside for t in recovered]
    assert counts == {n: sum(n in r for r in recorded) for n in set().union(*recorded)}
    assert counts["store_up"] == 3
    assert by_outcome["recovered"] == 3
    sums = {
        s.labels["milestone"]: s.value
        for s in recovery.samples
        if s.name.endswith("_sum") and s.labels.get("campaign") == "measured"
    }
    # Every label counts from the kill taking effect (ADR 0008), so `recovered` is the recovery
    # time the status and the report give.
    assert abs(sums["recovered"] - sum(t["recoverySeconds"] for t in recovered)) < 1e-6
    phase = {
        s.labels["phase"]: s.value
        for s in families["aftershock_campaign_phase"].samples
        if s.labels.get("campaign") == "measured"
    }
    assert phase["Succeeded"] == 1

    # After a restart the metrics are rebuilt from the ledger, not reset to zero.
    op.kill()
    op2 = start_operator()
    _, text = testbed.wait_for(
        lambda: _try_get(op2.metrics_port, "/metrics"), 30, what="metrics after restart"
    )
    families = {f.name: f for f in text_string_to_metric_families(text)}
    again = {
        s.labels["milestone"]: s.value
        for s in families["aftershock_recovery_seconds"].samples
        if s.name.endswith("_count") and s.labels.get("campaign") == "measured"
    }
    assert again == counts

    # Deleted: its series go (a Prometheus scrape no longer carries them).
    first_uid = get_campaign(cluster, namespace, "measured")["metadata"]["uid"]
    cluster.kubectl("delete", "campaign", "measured", "-n", namespace, "--wait=true", "--timeout=60s")

    def dropped() -> bool:
        return 'campaign="measured"' not in _get(op2.metrics_port, "/metrics")[1]

    testbed.wait_for(dropped, 30, what="the deleted Campaign's series dropped")
    # Created again under the same name: a new object, its own series from zero (uid label).
    cluster.apply(campaign("measured", namespace, subject.pd_url, trials=1))
    wait_phase(cluster, namespace, "measured", {"Succeeded"}, timeout=120, op=op2)
    second_uid = get_campaign(cluster, namespace, "measured")["metadata"]["uid"]
    _, text = _get(op2.metrics_port, "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    attempts_now = {
        (s.labels["uid"], s.labels["outcome"]): s.value
        for s in families["aftershock_trial_attempts"].samples
        if s.name.endswith("_total") and s.labels.get("campaign") == "measured"
    }
    assert attempts_now == {(second_uid, "recovered"): 1}, (first_uid, attempts_now)


def _try_get(port: int, path: str) -> tuple[int, str] | None:
    try:
        return _get(port, path)
    except OSError:
        return None


def test_liveness_endpoint_answers(
    cluster: testbed.Cluster, namespace: str, start_operator: StartOperator
) -> None:
    from tests.e2e.operator import free_port

    port = free_port()
    op = start_operator("--liveness-port", str(port))
    status, body = testbed.wait_for(lambda: _try_get(port, "/healthz"), 30, what="/healthz")
    assert status == 200
    assert op.alive()
    assert body  # kopf's probe results (JSON)
