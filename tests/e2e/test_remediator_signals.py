"""The remediator's signals end to end (issue 11): a subject whose replacements wait behind a
scheduling gate, a slow gatekeeper (self-healing alone) and a test remediator that ungates at
once and says so with Events. A baseline Campaign (remediator scaled to zero) and an assisted one
on the same subject: `compare` says Improved, and the report shows when the remediator detected
and resolved each incident."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import remediator_double as double
from tests.e2e import testbed
from tests.e2e.operator import (
    E2E_TIMING,
    TIKV_LABELS,
    OperatorProcess,
    Subject,
    campaign,
    tikv_statefulset,
    wait_phase,
)
from tests.pdstub import PdStandIn
from tests.pdstub.kube_source import KubePodSource

StartOperator = Callable[..., OperatorProcess]

#: How long the gatekeeper holds a replacement: what the subject loses without its remediator.
GATEKEEPER_DELAY = 4.0
TRIALS = 6
SELECTOR = ",".join(f"{k}={v}" for k, v in TIKV_LABELS.items())
REMEDIATOR = {
    "kind": "Deployment",
    "name": "healer",
    "signals": {
        "controller": double.CONTROLLER,
        "detectedReason": double.DETECTED,
        "resolvedReason": double.RESOLVED,
    },
}


def _healer() -> dict[str, Any]:
    labels = {"app": "healer"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "healer"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "agent", "image": "example.invalid/healer:1"}]},
            },
        },
    }


@pytest.fixture
def gated_subject(cluster: testbed.Cluster, namespace: str) -> Iterator[Subject]:
    """The TiKV stand-in whose pods wait behind the gate, with its gatekeeper and remediator."""
    cluster.apply(_healer(), namespace=namespace)
    cluster.kubectl("rollout", "status", "deployment/healer", "-n", namespace, "--timeout=60s")
    api = cluster.api_client()
    gatekeeper = double.Gatekeeper(api, namespace, SELECTOR, GATEKEEPER_DELAY).start()
    remediator = double.TestRemediator(api, namespace, SELECTOR, "healer").start()
    assert remediator.wait_synced(30)
    sts = tikv_statefulset()
    template = sts["spec"]["template"]
    template["spec"] = double.gated(template["spec"])
    cluster.apply(sts, namespace=namespace)
    cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", namespace, "--timeout=120s")
    source = KubePodSource(cluster.api_client(), namespace, SELECTOR).start()
    assert source.wait_synced(30)
    pd = PdStandIn(source, timing=E2E_TIMING, headless_service="tikv-peer", namespace=namespace)
    pd.start()
    subject = Subject(namespace, pd, source)
    yield subject
    subject.close()
    remediator.stop()
    gatekeeper.stop()


def _cli(op: OperatorProcess, *args: str) -> tuple[int, str]:
    proc = testbed.run(
        [str(testbed.REPO / ".venv" / "bin" / "aftershock"), *args, "--db", str(op.db)], check=False
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, proc.stdout


def test_compare_says_the_remediator_helped_and_the_report_shows_when_it_detected_and_resolved(
    cluster: testbed.Cluster,
    namespace: str,
    gated_subject: Subject,
    start_operator: StartOperator,
) -> None:
    subject = gated_subject
    op = start_operator()
    for name, baseline in (("baseline", True), ("assisted", False)):
        cluster.apply(
            campaign(name, namespace, subject.pd_url, trials=TRIALS, baseline=baseline, remediator=REMEDIATOR)
        )
        obj = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=300, op=op)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]

    code, out = _cli(
        op, "compare", "baseline", "assisted", "-n", namespace, "--format", "json", "--resamples", "2000"
    )
    result = json.loads(out)
    print(json.dumps({k: result[k] for k in ("verdict", "remediator", "remediatorSignals")}, indent=1))
    assert code == 0
    assert result["verdict"] == "Improved", result
    assert result["remediator"] == "the remediator helped"

    reports = {}
    for name in ("baseline", "assisted"):
        _, text = _cli(op, "report", name, "-n", namespace)
        print(text)
        _, out = _cli(op, "report", name, "-n", namespace, "--format", "json")
        reports[name] = json.loads(out)

    # Switched off for the baseline: it neither said nor did anything in its trials.
    base = reports["baseline"]
    assert base["summary"]["remediator"]["detected"] == 0
    assert all(t["remediatorActions"] == [] for t in base["trials"] if t["outcome"] == "recovered")
    # Assisted: every trial has its incident detected, the replacement ungated, then resolved,
    # before the subject as a whole was healthy again.
    helped = [t for t in reports["assisted"]["trials"] if t["outcome"] == "recovered"]
    assert len(helped) == TRIALS
    for t in helped:
        detect, resolve = t["timeToDetectSeconds"], t["timeToResolveSeconds"]
        assert detect is not None, t
        assert resolve is not None, t
        assert 0 <= detect <= resolve <= t["recoverySeconds"], t
        reasons = [a["reason"] for a in t["remediatorActions"]]
        assert reasons[0] == double.DETECTED, t
        assert double.ACTION in reasons, t
        assert double.RESOLVED in reasons, t
    summary = reports["assisted"]["summary"]["remediator"]
    assert (summary["detected"], summary["resolved"]) == (TRIALS, TRIALS)
