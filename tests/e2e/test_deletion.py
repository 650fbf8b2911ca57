"""Deletion is prompt in every case: a Campaign deleted mid-recovery, and its namespace deleted
with finished, refused and running Campaigns in it, by an admin as a user would.

The operator runs as a process with its own ServiceAccount (the cluster-wide RBAC of
manifests/operator, which lets kopf list and watch namespaces) and watches named namespaces.
The trial is held mid-recovery honestly: the StatefulSet's pod template is changed (updateStrategy
OnDelete, so no running pod is touched) to a node selector no node has, so the victim's
replacement stays Pending and only the deletion can end the attempt.

Witnesses besides the ledger: the API server's audit log (who deleted which pod when; the
operator's patch that took its finalizer off) and a `kubectl get` poll until the object is gone.

Each test takes about 40-60 s on the shared 2-core bed (most of it the Campaigns before the
deletion).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import realnode, testbed
from tests.e2e.operator import (
    OperatorProcess,
    campaign,
    get_campaign,
    tikv_statefulset,
    wait_phase,
    wait_until,
)

StartOperator = Callable[..., OperatorProcess]

#: busybox, built by hack/testbed/images.sh and imported into the real node.
SHELL_IMAGE = "registry.local/shell:local"

OPERATOR_USER = "system:serviceaccount:aftershock-system:aftershock"
#: `lifecycle.DELETED_MID_ATTEMPT`, as the ledger holds it: read from the report, not imported,
#: so the test checks what a user of `aftershock report` sees.
DELETED_REASON = "the Campaign was deleted during this attempt"


def audit_log() -> Any:
    from tests.reliability.watchers import AuditLog

    path = testbed.run([str(testbed.TESTBED / "cluster.sh"), "audit-log"]).stdout.strip()
    return AuditLog(Path(path))


def parse_ts(text: str) -> float:
    from tests.reliability.watchers import parse_ts as parse

    return parse(text)


def subject_statefulset(name: str = "tikv") -> dict[str, Any]:
    """The stand-in TiKV StatefulSet (kwok pods), replaced only when a pod is deleted."""
    sts = tikv_statefulset(name)
    sts["spec"]["updateStrategy"] = {"type": "OnDelete"}
    return sts


def bystander_statefulset() -> dict[str, Any]:
    """Another app in the namespace: a real process on the real node that ignores SIGTERM (a
    `sleep` as PID 1), so its pod takes its whole grace period (10 s) to stop, as many real
    apps do. Kubernetes' ordered namespace deletion waits for it before it deletes anything
    else, the Campaigns included: the window in which the bug lived."""
    labels = {"app": "bystander"}
    pod_spec = {
        "terminationGracePeriodSeconds": 10,
        "containers": [{"name": "app", "image": SHELL_IMAGE, "command": ["sleep", "3600"]}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "bystander", "labels": labels},
        "spec": {
            "serviceName": "bystander",
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": realnode.on_real_node(pod_spec)},
        },
    }


def wait_ready(cluster: testbed.Cluster, namespace: str, name: str, replicas: int) -> None:
    """Every replica Ready (`rollout status` knows no OnDelete StatefulSet)."""
    cluster.kubectl(
        "wait",
        f"statefulset/{name}",
        "-n",
        namespace,
        f"--for=jsonpath={{.status.readyReplicas}}={replicas}",
        "--timeout=120s",
    )


def hold_replacements(cluster: testbed.Cluster, namespace: str, name: str = "tikv") -> None:
    """From now on a deleted subject pod is replaced by one no node can take: the trial that
    kills it stays mid-recovery until something else ends it."""
    patch = {"spec": {"template": {"spec": {"nodeSelector": {"aftershock.dev/e2e-nowhere": "true"}}}}}
    cluster.kubectl("patch", "statefulset", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def pods_only(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A Campaign judged on the pods alone (no pdURL), as in the report."""
    return campaign(name, namespace, None, **spec)


def wait_observing(cluster: testbed.Cluster, namespace: str, name: str, op: OperatorProcess) -> None:
    def observing() -> bool:
        if not op.alive():
            raise AssertionError(f"operator exited:\n{op.log_text()[-4000:]}")
        status = get_campaign(cluster, namespace, name).get("status") or {}
        return "observing recovery" in str(status.get("message"))

    wait_until(observing, 120, f"{name} to kill and observe")


def report_json(db: Path, namespace: str, name: str) -> dict[str, Any]:
    aftershock = str(testbed.REPO / ".venv" / "bin" / "aftershock")
    out = testbed.run([aftershock, "report", name, "-n", namespace, "--db", str(db), "--format", "json"])
    value: dict[str, Any] = json.loads(out.stdout)
    return value


def assert_interrupted_by_deletion(op: OperatorProcess, namespace: str, name: str) -> dict[str, Any]:
    """The ledger: the Campaign Deleted, the attempt in flight interrupted with the deletion as
    its reason (never unrecovered: the subject did nothing wrong), nothing after it."""
    value = report_json(op.db, namespace, name)
    assert value["campaign"]["phase"] == "Deleted", value["campaign"]
    assert value["campaign"]["deletedAt"] is not None
    *before, last = value["trials"]
    assert last["outcome"] == "interrupted", last
    assert DELETED_REASON in str(last["error"]), last
    assert all(t["outcome"] == "recovered" for t in before), before
    return value


def campaign_requests(audit: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    """Audit records of requests on the Campaign (by name, or the namespace's collection)."""
    found = []
    for r in audit.records():
        ref = r.get("objectRef") or {}
        if r.get("stage") != "ResponseComplete" or ref.get("resource") != "campaigns":
            continue
        if ref.get("namespace") != namespace or ref.get("name") not in (name, None):
            continue
        found.append(r)
    return found


def assert_witnessed(audit: Any, namespace: str, name: str, *, within: float) -> float:
    """The audit log, not the operator, says: the Campaign was deleted (one delete, or the
    namespace controller's deletecollection), the operator patched it (its finalizer off) within
    `within` seconds after, and the operator deleted no pod after the deletion. Returns the
    seconds from the deletion to the operator's last patch."""
    requests = campaign_requests(audit, namespace, name)
    deletes = [
        parse_ts(r["requestReceivedTimestamp"])
        for r in requests
        if r["verb"] in ("delete", "deletecollection") and 200 <= int(r["responseStatus"]["code"]) < 300
    ]
    assert deletes, f"no delete of campaign {name} in the audit log"
    deleted_at = min(deletes)
    patches = [
        parse_ts(r["stageTimestamp"])
        for r in requests
        if r["verb"] == "patch"
        and r["objectRef"].get("name") == name
        and not r["objectRef"].get("subresource")
        and r["user"]["username"] == OPERATOR_USER
        and parse_ts(r["requestReceivedTimestamp"]) >= deleted_at
    ]
    assert patches, f"the operator never patched {name} after its deletion (finalizer left on)"
    released = max(patches) - deleted_at
    assert released < within, f"the finalizer went {released:.1f}s after the deletion"
    late_kills = [d for d in audit.pod_deletes(namespace) if d.by_operator and d.received >= deleted_at]
    assert late_kills == [], f"the operator deleted pods after the Campaign's deletion: {late_kills}"
    return released


def campaigns_deleted_at(audit: Any, namespace: str) -> float:
    """When the namespace controller deleted the namespace's Campaigns (deletecollection)."""
    return min(
        parse_ts(r["requestReceivedTimestamp"])
        for r in campaign_requests(audit, namespace, "")
        if r["verb"] == "deletecollection"
    )


def gone(cluster: testbed.Cluster, *args: str) -> bool:
    proc = cluster.kubectl("get", *args, check=False)
    return proc.returncode != 0 and "NotFound" in proc.stderr


def test_a_campaign_deleted_mid_recovery_is_interrupted_and_let_go_at_once(
    cluster: testbed.Cluster, namespace: str, start_operator: StartOperator
) -> None:
    cluster.apply(subject_statefulset(), namespace=namespace)
    wait_ready(cluster, namespace, "tikv", 3)
    hold_replacements(cluster, namespace)
    audit = audit_log()
    audit.mark()
    op = start_operator()
    cluster.apply(
        pods_only("doomed", namespace, trials=20, intervalSeconds=1, recovery={"timeoutSeconds": 60})
    )
    wait_observing(cluster, namespace, "doomed", op)

    started = time.monotonic()
    cluster.kubectl("delete", "campaign", "doomed", "-n", namespace, "--wait=true", "--timeout=60s")
    took = time.monotonic() - started
    print(f"\n[measured] kubectl delete campaign --wait (pods-only, mid-recovery): {took:.2f}s")

    assert gone(cluster, "campaign", "doomed", "-n", namespace)
    assert_interrupted_by_deletion(op, namespace, "doomed")
    released = assert_witnessed(audit, namespace, "doomed", within=10)
    print(f"[measured] audit: Campaign delete -> operator's finalizer patch {released:.2f}s")
    assert took < 10, f"deleting the Campaign took {took:.1f}s"
    assert "being deleted" in op.log_text()
    assert op.alive()


@pytest.mark.realnode
def test_deleting_a_namespace_with_finished_refused_and_running_campaigns_is_prompt(
    cluster: testbed.Cluster, real_node: None, namespace: str, start_operator: StartOperator
) -> None:
    """The reported case: `--namespace NS --namespace OTHER`; in NS a stand-in TiKV, a
    bystander app, two Succeeded Campaigns, a refused one and one mid-recovery (20 trials,
    interval 1 s, recovery timeout 60 s, no pdURL); `kubectl delete ns --wait` by an admin.
    OTHER stands for the report's kube-system: on this shared bed an operator watching
    kube-system judges other tests' Campaigns there."""
    cluster.apply(subject_statefulset(), namespace=namespace)
    cluster.apply(bystander_statefulset(), namespace=namespace)
    wait_ready(cluster, namespace, "tikv", 3)
    wait_ready(cluster, namespace, "bystander", 1)
    other = testbed.unique("e2e-other")
    cluster.kubectl("create", "namespace", other)
    try:
        _delete_the_namespace_as_reported(cluster, namespace, start_operator(namespaces=[namespace, other]))
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


def _delete_the_namespace_as_reported(cluster: testbed.Cluster, namespace: str, op: OperatorProcess) -> None:
    for name in ("done-a", "done-b"):
        cluster.apply(pods_only(name, namespace, trials=1))
    for name in ("done-a", "done-b"):
        done = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=120, op=op)
        assert done["status"]["phase"] == "Succeeded", done["status"]
    cluster.apply(campaign("refused", namespace, "http://169.254.169.254/latest"))
    refused = wait_phase(cluster, namespace, "refused", {"Failed"}, timeout=60, op=op)
    assert refused["status"]["verdict"] != "Pass"
    hold_replacements(cluster, namespace)
    cluster.apply(
        pods_only("running", namespace, trials=20, intervalSeconds=1, recovery={"timeoutSeconds": 60})
    )
    wait_observing(cluster, namespace, "running", op)
    audit = audit_log()
    audit.mark()

    started, started_wall = time.monotonic(), time.time()
    # As a user would: the admin kubeconfig, waiting for the namespace to be gone.
    deleted = cluster.kubectl(
        "delete", "namespace", namespace, "--wait=true", "--timeout=60s", check=False, timeout=90
    )
    took = time.monotonic() - started
    assert deleted.returncode == 0, (deleted.stdout, deleted.stderr, op.log_text()[-4000:])
    assert gone(cluster, "namespace", namespace)

    value = assert_interrupted_by_deletion(op, namespace, "running")
    assert len(value["trials"]) == 1  # nothing was started after the deletion began
    # Stopped at the namespace's deletion (its pods going first), not 20 s later at the
    # Campaigns' deletion: the attempt ended before the namespace controller reached them.
    [attempt] = value["trials"]
    assert "its namespace is being deleted" in attempt["error"], attempt["error"]
    interrupted_at = parse_ts(attempt["finishedAt"])
    assert interrupted_at < campaigns_deleted_at(audit, namespace), (attempt, started_wall)
    released = assert_witnessed(audit, namespace, "running", within=10)
    # Most of the wait is Kubernetes' own: ordered deletion deletes the Campaigns only once the
    # bystander's pod has used its grace period.
    reached = campaigns_deleted_at(audit, namespace) - started_wall
    print(
        f"\n[measured] kubectl delete namespace --wait: {took:.2f}s; the namespace controller "
        f"reached the Campaigns after {reached:.2f}s; the operator let the running one go "
        f"{released:.2f}s after that; its trial was stopped {interrupted_at - started_wall:.2f}s "
        "after the namespace's deletion began"
    )
    for name in ("done-a", "done-b"):
        # Recorded from the DELETED watch event (no daemon runs for a finished Campaign).
        finished = wait_until(
            lambda name=name: (c := report_json(op.db, namespace, name)["campaign"])["deletedAt"] and c,
            30,
            f"{name}'s deletion in the ledger",
        )
        assert finished["phase"] == "Succeeded"  # a finished Campaign keeps its phase
    assert "being deleted" in op.log_text()
    assert op.alive()
