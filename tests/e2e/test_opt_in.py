"""Cluster-wide mode: namespaces opt in (issue 21 item 1), as the operator enforces it alone.

One operator process started as the cluster-wide install runs it (``--all-namespaces
--namespace-label aftershock.dev/campaigns=enabled``: one Campaign watch for the whole cluster),
with no admission policy bound, and two namespaces of this test's, each with a subject and a
Campaign: one labelled ``aftershock.dev/campaigns=enabled``, one not. The labelled one runs (a pod
killed, Succeeded); the other is refused with a condition that says how to opt in, and the
test's own look at its pods (their UIDs, before and after) shows nothing was killed there.

The shared test bed runs other tests' Campaigns in other namespaces, which a cluster-wide
operator sees too. So this one is a ServiceAccount of the test's own that may read what the
shipped role reads everywhere, but write (patch Campaigns, take Leases, delete pods) only in
the test's two namespaces: the shipped ClusterRoles are copied and bound there by RoleBindings.
Elsewhere its writes are refused by the API server, so it cannot touch another test's
Campaign; and the unlabelled namespace is one where it could act, had it not checked the
label. About 40 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import testbed
from tests.e2e.operator import (
    OperatorProcess,
    campaign,
    condition,
    pod_uids,
    start_subject,
    wait_phase,
)

OPT_IN = ("aftershock.dev", "campaigns=enabled")
LABEL = "aftershock.dev/campaigns"
READ = {"get", "list", "watch"}


@pytest.fixture
def second_namespace(cluster: testbed.Cluster) -> Iterator[str]:
    name = testbed.unique("e2e")
    cluster.kubectl("create", "namespace", name)
    testbed.wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        60,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    for obj in cluster.kubectl("get", "campaigns", "-n", name, "-o", "name", check=False).stdout.split():
        cluster.kubectl("patch", obj, "-n", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                        check=False)  # fmt: skip
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _shipped_roles() -> list[dict[str, Any]]:
    files = ("rbac.yaml", "chaos-rbac.yaml")
    docs = [
        d
        for f in files
        for d in yaml.safe_load_all((testbed.REPO / "manifests/operator" / f).read_text())
        if d
    ]
    return [d for d in docs if d["kind"] == "ClusterRole"]


@pytest.fixture
def writes_only_here(
    cluster: testbed.Cluster, namespace: str, second_namespace: str, tmp_path: Path
) -> Iterator[str]:
    """A kubeconfig of ServiceAccount `<namespace>/cw-operator`: the shipped rights' reads
    everywhere, the shipped rights in full only in the two namespaces."""
    sa, made = "cw-operator", []
    cluster.kubectl("create", "serviceaccount", sa, "-n", namespace)
    subject = [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]
    reads: list[dict[str, Any]] = []
    for role in _shipped_roles():
        name = f"{role['metadata']['name']}-{namespace}"
        cluster.apply({**role, "metadata": {"name": name}})
        made.append(("clusterrole", name))
        if any(r["resources"] == ["subjectaccessreviews"] for r in role["rules"]):
            # The author check asks the API server, a cluster-scoped create that changes nothing.
            binding = f"{name}-everywhere"
            cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                           "metadata": {"name": binding}, "subjects": subject,
                           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                       "name": name}})  # fmt: skip
            made.append(("clusterrolebinding", binding))
            continue
        for rule in role["rules"]:
            if READ & set(rule["verbs"]):
                reads.append({**rule, "verbs": sorted(READ & set(rule["verbs"]))})
        for ns in (namespace, second_namespace):
            cluster.kubectl("create", "rolebinding", name, "-n", ns, f"--clusterrole={name}",
                            f"--serviceaccount={namespace}:{sa}")  # fmt: skip
    read = f"aftershock-reads-{namespace}"
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": read}, "rules": reads})  # fmt: skip
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": read}, "subjects": subject,
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": read}})  # fmt: skip
    made += [("clusterrole", read), ("clusterrolebinding", read)]
    yield cluster.service_account_kubeconfig(namespace, sa, tmp_path / "cw-operator.kubeconfig")
    for kind, name in made:
        cluster.kubectl("delete", kind, name, "--wait=false", check=False)


def test_a_cluster_wide_operator_runs_campaigns_only_in_namespaces_that_opted_in(
    cluster: testbed.Cluster,
    namespace: str,
    second_namespace: str,
    writes_only_here: str,
    operator_identity: str,  # the CRD and the author-recording policy, as installed
    tmp_path: Path,
) -> None:
    enabled, unlabelled = namespace, second_namespace
    cluster.kubectl("label", "namespace", enabled, f"{LABEL}=enabled")
    subjects = [start_subject(cluster, ns) for ns in (enabled, unlabelled)]
    try:
        before = pod_uids(cluster, unlabelled)
        op = OperatorProcess(
            kubeconfig=writes_only_here,
            db=tmp_path / "ledger.db",
            namespaces=[],
            log_path=tmp_path / "operator.log",
            # The cluster-wide install's arguments (manifests/operator/deployment.yaml).
            extra_args=["--all-namespaces", "--namespace-label", f"{LABEL}=enabled"],
        )
        op.start()
        try:
            for ns, subject in zip((enabled, unlabelled), subjects, strict=True):
                cluster.apply(
                    campaign("kill", ns, subject.pd_url, trials=1, recovery={"timeoutSeconds": 60,
                                                                              "settleSeconds": 0}),
                    namespace=ns,
                )  # fmt: skip
            refused = wait_phase(cluster, unlabelled, "kill", {"Failed", "Succeeded"}, timeout=120, op=op)
            ran = wait_phase(cluster, enabled, "kill", {"Failed", "Succeeded"}, timeout=180, op=op)
            assert op.alive()
        finally:
            op.stop()
    finally:
        for s in subjects:
            s.close()

    assert ran["status"]["phase"] == "Succeeded", ran["status"]
    assert ran["status"]["progress"].startswith("1/1"), ran["status"]
    assert refused["status"]["phase"] == "Failed", refused["status"]
    stalled = condition(refused, "Stalled")
    assert stalled is not None, refused["status"]
    assert stalled["reason"] == "NamespaceNotEnabled", stalled
    assert (
        f"namespace {unlabelled} has not opted in to aftershock: a cluster administrator labels it "
        f"(kubectl label namespace {unlabelled} {LABEL}=enabled)" in stalled["message"]
    ), stalled
    # The test's own look: every pod there is the one that was there before (the labelled
    # namespace's subject, by contrast, lost a pod to its trial).
    assert pod_uids(cluster, unlabelled) == before
