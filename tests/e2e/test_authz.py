"""Who may make the operator do what, on the real API server (ADR 0012, issue 21 items 1 and 2).

- The admission policies as shipped in manifests/admission/, asked as ServiceAccounts through
  impersonation (``kubectl --as``): a Campaign whose author may not do what it makes the operator
  do is refused with a message naming the missing right, and accepted once they may; namespaces
  opt in; the operator's own namespace is protected; the author annotation cannot be forged.
- The operator's own check, where the validating policy is not bound: it refuses the run with
  a condition naming the right, kills nothing (the pods' UIDs, read by the test), and runs the
  same Campaign of an author who holds the right.
- The policy on the operator's own ServiceAccount: Leases only named aftershock-*, workload
  patches only of its own metadata keys.

The validating policies are bound here to this test's namespaces only (a binding of the shipped
policy with a namespaceSelector): bound cluster-wide on the shared test bed they would refuse
other tests' Campaigns (protected namespaces, unlabelled ones). The shipped bindings cover every
namespace (tests/unit/test_authz.py). About 60 s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import rights, testbed
from tests.e2e.operator import OperatorProcess, Subject, campaign, condition, pod_uids, wait_phase

ADMISSION = testbed.REPO / "manifests" / "admission"
OPERATOR_USER = "system:serviceaccount:aftershock-system:aftershock"
TEST_LABEL = "aftershock.dev/authz-test"
OPT_IN = "aftershock.dev/campaigns=enabled"


def _policy(path: Path) -> dict[str, Any]:
    (policy,) = [
        d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "ValidatingAdmissionPolicy"
    ]
    return dict(policy)


@pytest.fixture
def bound(cluster: testbed.Cluster, namespace: str) -> Iterator[Callable[..., None]]:
    """Bind the shipped validating policies to namespaces this test labels `TEST_LABEL`."""
    made: list[str] = []

    def bind(*files: str, extra_namespaces: tuple[str, ...] = ()) -> None:
        for f in files:
            policy = _policy(ADMISSION / f)
            cluster.apply(policy)
            name = f"{policy['metadata']['name']}-{namespace}"
            selector: dict[str, Any] = {"matchLabels": {TEST_LABEL: namespace}}
            if extra_namespaces:
                selector = {"matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(extra_namespaces)}
                ]}  # fmt: skip
            cluster.apply(
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicyBinding",
                    "metadata": {"name": name},
                    "spec": {
                        "policyName": policy["metadata"]["name"],
                        "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": selector},
                    },
                }
            )
            made.append(name)

    cluster.kubectl("label", "namespace", namespace, f"{TEST_LABEL}={namespace}")
    yield bind
    for name in made:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", name, "--wait=false", check=False)


def service_account(cluster: testbed.Cluster, namespace: str, name: str, rules: list[dict[str, Any]]) -> str:
    """A ServiceAccount holding `rules` in `namespace` (and create on Campaigns); its user name."""
    cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
    rules = [
        {"apiGroups": ["aftershock.dev"], "resources": ["campaigns"], "verbs": ["create", "get"]},
        *rules,
    ]
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": name, "namespace": namespace}, "rules": rules})  # fmt: skip
    cluster.kubectl(
        "create",
        "rolebinding",
        name,
        "-n",
        namespace,
        f"--role={name}",
        f"--serviceaccount={namespace}:{name}",
    )
    return f"system:serviceaccount:{namespace}:{name}"


DELETE_PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}
DELETE_CLAIMS = {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["delete"]}
SCALE = {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]}


def create_as(
    cluster: testbed.Cluster, user: str | None, obj: dict[str, Any], *, dry_run: bool = True
) -> tuple[int, str, dict[str, Any] | None]:
    """Create `obj` as `user` (impersonated; None: the admin): exit code, stderr, the object the
    API server would store (after the mutating policy)."""
    args = ["create", "-f", "-", "-o", "json"] + (["--dry-run=server"] if dry_run else [])
    if user is not None:
        args.append(f"--as={user}")
    proc = cluster.kubectl(*args, input_=yaml.safe_dump(obj), check=False)
    return proc.returncode, proc.stderr, json.loads(proc.stdout) if proc.returncode == 0 else None


def wait_refused(cluster: testbed.Cluster, user: str | None, obj: dict[str, Any], words: str) -> str:
    """A policy is enforced a moment after it is bound (the API server's informer): wait for it."""

    def refused() -> str | None:
        code, err, _ = create_as(cluster, user, obj)
        return err if code != 0 and words in err else None

    return str(testbed.wait_for(refused, 30, interval=0.5, what=f"refusal naming {words!r}"))


def author_of(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(obj["metadata"]["annotations"]["aftershock.dev/author"]))


def test_admission_refuses_an_author_without_the_rights_naming_them(
    cluster: testbed.Cluster, namespace: str, operator_identity: str, bound: Callable[..., None]
) -> None:
    cluster.kubectl("label", "namespace", namespace, OPT_IN)
    bound("campaigns.yaml", "opt-in.yaml")
    alice = service_account(cluster, namespace, "alice", [])
    carol = service_account(cluster, namespace, "carol", [DELETE_PODS])
    bob = service_account(cluster, namespace, "bob", [DELETE_PODS, DELETE_CLAIMS, SCALE])
    kill = campaign("kill", namespace, None)
    recreate = campaign("recreate", namespace, None, reset={"mode": "Recreate", "acknowledgeDataLoss": True})
    baseline = campaign(
        "base", namespace, None, baseline=True, remediator={"kind": "Deployment", "name": "healer"}
    )

    err = wait_refused(cluster, alice, kill, "may not delete pods in namespace")
    assert f"{alice} may not delete pods in namespace {namespace}" in err, err
    # carol may delete pods, not claims, not scale: each refusal names what she lacks.
    assert create_as(cluster, carol, kill)[0] == 0
    code, err, _ = create_as(cluster, carol, recreate)
    assert code != 0
    assert "may not delete persistentvolumeclaims" in err, err
    code, err, _ = create_as(cluster, carol, baseline)
    assert code != 0
    assert "may not patch deployments/scale healer" in err, err
    # bob holds all three: accepted. A dry run needs nothing: alice's is accepted.
    for obj in (kill, recreate, baseline):
        code, err, _ = create_as(cluster, bob, obj)
        assert code == 0, err
    assert create_as(cluster, alice, campaign("look", namespace, None, dryRun=True))[0] == 0

    # The author annotation is the API server's: what bob writes is replaced by who he is...
    forged = campaign("forged", namespace, None)
    forged["metadata"]["annotations"] = {
        "aftershock.dev/author": json.dumps({"username": "kubernetes-admin", "groups": ["system:masters"]})
    }
    code, err, stored = create_as(cluster, bob, forged, dry_run=False)
    assert code == 0, err
    assert stored is not None
    assert author_of(stored)["username"] == bob
    assert f"system:serviceaccounts:{namespace}" in author_of(stored)["groups"]
    # ... and nobody changes it afterwards, not even an administrator: the mutating policy puts
    # it back, the validating one would refuse a change that got through.
    cluster.kubectl(
        "annotate", "campaign", "forged", "-n", namespace, "--overwrite",
        'aftershock.dev/author={"username":"kubernetes-admin","groups":["system:masters"]}', check=False,
    )  # fmt: skip
    kept = cluster.get_json("campaign", "forged", "-n", namespace)
    assert author_of(kept)["username"] == bob
    # A client that writes the whole object back without the annotation (a PUT: `kubectl
    # replace`, a GitOps tool replacing) keeps the author: the mutating policy puts it back, and
    # the write goes through instead of being refused for changing it.
    whole = cluster.get_json("campaign", "forged", "-n", namespace)
    del whole["metadata"]["annotations"]["aftershock.dev/author"]
    replaced = cluster.kubectl("replace", "-f", "-", input_=json.dumps(whole), check=False)
    assert replaced.returncode == 0, replaced.stderr
    assert author_of(cluster.get_json("campaign", "forged", "-n", namespace))["username"] == bob


def test_namespaces_opt_in_and_the_operators_own_is_protected(
    cluster: testbed.Cluster, namespace: str, operator_identity: str, bound: Callable[..., None]
) -> None:
    bound("opt-in.yaml")
    obj = campaign("kill", namespace, None)
    err = wait_refused(cluster, None, obj, "has not opted in")
    assert f"kubectl label namespace {namespace} {OPT_IN}" in err, err
    cluster.kubectl("label", "namespace", namespace, OPT_IN)
    testbed.wait_for(
        lambda: create_as(cluster, None, obj)[0] == 0, 30, interval=0.5, what="accepted once labelled"
    )

    bound("campaigns.yaml", extra_namespaces=("aftershock-system",))
    err = wait_refused(cluster, None, campaign("kill", "aftershock-system", None), "is protected")
    assert "namespace aftershock-system is protected" in err, err


@pytest.fixture
def own_operator(
    cluster: testbed.Cluster, namespace: str, operator_identity: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator with exactly manifests/operator/rbac.yaml's rights, as a ServiceAccount of
    this test's (see `rights.ManifestIdentity`: the shared ClusterRole may be another branch's)."""
    identity = rights.manifest_identity(cluster, namespace, tmp_path / "operator.kubeconfig")
    op = OperatorProcess(
        kubeconfig=identity.kubeconfig, db=tmp_path / "ledger.db", namespaces=[namespace],
        log_path=tmp_path / "operator.log",
    )  # fmt: skip
    op.start()
    yield op
    op.stop()
    identity.close()


def test_the_operator_refuses_a_run_its_author_may_not_make_and_kills_nothing(
    cluster: testbed.Cluster, namespace: str, subject: Subject, own_operator: OperatorProcess
) -> None:
    """No validating policy in this namespace: only the operator stands between alice and the
    pods. Its SubjectAccessReview uses the author the mutating policy recorded, whatever alice
    wrote in the manifest."""
    alice = service_account(cluster, namespace, "alice", [])
    bob = service_account(cluster, namespace, "bob", [DELETE_PODS])
    before = pod_uids(cluster, namespace)
    forged = campaign("by-alice", namespace, subject.pd_url, trials=1)
    forged["metadata"]["annotations"] = {
        "aftershock.dev/author": json.dumps({"username": "kubernetes-admin", "groups": ["system:masters"]})
    }
    code, err, _ = create_as(cluster, alice, forged, dry_run=False)
    assert code == 0, err
    recreate = campaign("recreate", namespace, subject.pd_url, trials=1,
                        reset={"mode": "Recreate", "acknowledgeDataLoss": True})  # fmt: skip
    assert create_as(cluster, None, recreate, dry_run=False)[0] == 0
    op = own_operator

    obj = wait_phase(cluster, namespace, "by-alice", {"Failed", "Succeeded"}, timeout=90, op=op)
    valid = condition(obj, "SpecValid")
    assert valid is not None
    assert (valid["status"], valid["reason"]) == ("False", "Unauthorized"), valid
    assert f"{alice} may not delete pods in namespace {namespace}" in valid["message"], valid
    assert (condition(obj, "Stalled") or {}).get("status") == "True"
    # The administrator may, but the operator may not delete claims here (no RoleBinding of
    # aftershock-reset-recreate): refused up front, saying how to allow it.
    obj = wait_phase(cluster, namespace, "recreate", {"Failed", "Succeeded"}, timeout=90, op=op)
    valid = condition(obj, "SpecValid")
    assert valid is not None
    assert valid["reason"] == "OperatorNotPermitted", valid
    assert "create rolebinding aftershock-reset-recreate" in valid["message"], valid
    assert pod_uids(cluster, namespace) == before, "a refused Campaign killed a pod"

    # The same Campaign by bob, who may delete pods here: it runs and kills.
    code, err, _ = create_as(
        cluster, bob, campaign("by-bob", namespace, subject.pd_url, trials=1), dry_run=False
    )
    assert code == 0, err
    obj = wait_phase(cluster, namespace, "by-bob", {"Failed", "Succeeded"}, timeout=180, op=op)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    after = pod_uids(cluster, namespace)
    assert set(after.values()) != set(before.values()), "bob's trial killed nothing"


def test_the_operators_own_writes_are_narrowed(
    cluster: testbed.Cluster, namespace: str, operator_identity: str, bound: Callable[..., None]
) -> None:
    """As the operator's ServiceAccount (RBAC allows all of these): Leases only aftershock-*,
    workload patches only of its own metadata keys, scale only to 0 and back up from 0."""
    bound("operator.yaml")

    def lease(name: str) -> dict[str, Any]:
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace}, "spec": {}}  # fmt: skip

    err = wait_refused(cluster, OPERATOR_USER, lease("kube-scheduler"), "only Leases named aftershock-*")
    assert "not kube-scheduler" in err, err
    assert create_as(cluster, OPERATOR_USER, lease("aftershock-subject-x"))[0] == 0

    cluster.kubectl("create", "deployment", "healer", "-n", namespace, "--image=pause", "--replicas=2")
    cluster.kubectl("create", "deployment", "idle", "-n", namespace, "--image=pause", "--replicas=0")

    def scale(name: str, replicas: int) -> tuple[int, str]:
        proc = cluster.kubectl(
            "scale", "deployment", name, "-n", namespace, f"--replicas={replicas}",
            "--dry-run=server", f"--as={OPERATOR_USER}", check=False,
        )  # fmt: skip
        return proc.returncode, proc.stderr

    code, err = scale("healer", 5)
    assert code != 0
    assert "scales a workload only to 0 or back up from 0, not deployments healer from 2 to 5" in err, err
    assert scale("healer", 1)[0] != 0
    assert scale("healer", 0) == (0, "")  # a baseline trial's scale-down
    assert scale("idle", 3) == (0, "")  # its restore

    def patch(body: dict[str, Any]) -> tuple[int, str]:
        proc = cluster.kubectl(
            "patch", "deployment", "healer", "-n", namespace, "--type=merge", "-p", json.dumps(body),
            "--dry-run=server", f"--as={OPERATOR_USER}", check=False,
        )  # fmt: skip
        return proc.returncode, proc.stderr

    own = {"metadata": {"labels": {"aftershock.dev/scaled-down": "true"},
                        "annotations": {"aftershock.dev/original-replicas": "2"}}}  # fmt: skip
    assert patch(own) == (0, "")
    for hostile in (
        {"spec": {"template": {"spec": {"serviceAccountName": "admin"}}}},
        {"metadata": {"labels": {"app": "other"}}},
        {"metadata": {"annotations": {"deployment.kubernetes.io/revision": "9"}}},
    ):
        code, err = patch(hostile)
        assert code != 0, hostile
        assert "may change only its own labels and annotations" in err, err
