"""spec.reset Recreate on the real API server: every trial starts from new volumes (the test
reads the claims' UIDs itself), and a Campaign without the data-loss acknowledgement is
refused and kills nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, Subject, campaign, pod_uids, wait_phase

StartOperator = Callable[..., OperatorProcess]
CLAIMS = {"data-tikv-0", "data-tikv-1", "data-tikv-2"}


def claim_uids(cluster: testbed.Cluster, namespace: str) -> dict[str, str]:
    items = cluster.get_json("persistentvolumeclaims", "-n", namespace)["items"]
    return {c["metadata"]["name"]: c["metadata"]["uid"] for c in items}


def test_recreate_reset_starts_every_trial_from_new_claims(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    before = claim_uids(cluster, namespace)
    assert set(before) == CLAIMS
    testbed.allow_recreate(cluster, namespace)
    op = start_operator()
    cluster.apply(
        campaign(
            "fresh",
            namespace,
            subject.pd_url,
            trials=2,
            reset={"mode": "Recreate", "acknowledgeDataLoss": True},
        )
    )
    obj = wait_phase(cluster, namespace, "fresh", {"Succeeded", "Failed"}, timeout=240, op=op)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    after = claim_uids(cluster, namespace)

    out = testbed.run(
        [str(testbed.REPO / ".venv" / "bin" / "aftershock"), "report", "fresh", "-n", namespace,
         "--format", "json", "--db", str(op.db)]
    ).stdout  # fmt: skip
    trials = [t for t in json.loads(out)["trials"] if t["outcome"] == "recovered"]
    assert [t["index"] for t in trials] == [0, 1]
    used: list[set[str]] = [set(before.values())]
    for t in trials:
        reset = t["finalState"]["reset"]
        assert reset["mode"] == "Recreate"
        assert {c["name"] for c in reset["claims"]} == CLAIMS
        olds = {c["oldUid"] for c in reset["claims"]}
        news = {c["newUid"] for c in reset["claims"]}
        # Each trial deleted the claims the one before it started on, and got new ones.
        assert olds == used[-1]
        assert not news & set().union(*used)
        used.append(news)
        assert t["recoverySeconds"] is not None
    # What the cluster holds now is what the last trial started on: the test's own read.
    assert set(after.values()) == used[-1]
    assert not set(after.values()) & set(before.values())
    print("claim UIDs per trial:", [sorted(u) for u in used])


def test_recreate_without_acknowledgement_is_refused_and_kills_nothing(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    pods, claims = pod_uids(cluster, namespace), claim_uids(cluster, namespace)
    op = start_operator()
    for reset in ({"mode": "Recreate"}, {"mode": "Recreate", "acknowledgeDataLoss": False}):
        proc = cluster.apply(campaign("wipe", namespace, subject.pd_url, reset=reset), check=False)
        assert proc.returncode != 0
        assert "spec.reset.acknowledgeDataLoss" in proc.stderr, proc.stderr
    missing = cluster.kubectl("get", "campaign", "wipe", "-n", namespace, check=False)
    assert missing.returncode != 0
    # A Campaign the operator does run afterwards (dry run) proves it was watching meanwhile.
    cluster.apply(campaign("look", namespace, subject.pd_url, trials=1, dryRun=True))
    obj: dict[str, Any] = wait_phase(cluster, namespace, "look", {"Succeeded", "Failed"}, timeout=120, op=op)
    assert obj["status"]["phase"] == "Succeeded"
    assert pod_uids(cluster, namespace) == pods
    assert claim_uids(cluster, namespace) == claims
