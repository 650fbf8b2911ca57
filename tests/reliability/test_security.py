"""Security: what the operator's ServiceAccount may do (asked of the real API server, in both
installs), and what its metrics/report endpoint serves (read-only, results only).

The Deployment's and the chart's pod security is checked offline by
tests/unit/test_manifests.py and by the real API server's PodSecurity admission (restricted) in
tests/e2e/test_pod_security.py; not repeated here.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aftershock.chaos import registry
from tests.e2e import rights, testbed
from tests.e2e.operator import campaign, start_subject, wait_phase
from tests.reliability.conftest import drop_namespace, make_namespace
from tests.reliability.proc import Operator
from tests.reliability.tally import TALLY

pytestmark = pytest.mark.reliability

OPERATOR = "system:serviceaccount:aftershock-system:aftershock"

#: What the operator may hold beyond any authenticated user: docs/adr/0004-rbac-and-scoping.md.
#: (resource, verbs). A right not in here, granted by the shipped RBAC, fails the test.
#: ADR 0004's table, read from the ADR: a right the API server grants that is not there fails.
ALLOWED = rights.adr_table()
#: Each chaos kind's rights beyond ADR 0004's table, a role of its own (generated from the
#: registry: manifests/operator/chaos-rbac.yaml): `container_kill`'s pods/exec create and get.
KIND_RIGHTS: dict[str, set[str]] = {}
for _kind_rights in registry.rights().values():
    for _r in _kind_rights:
        _name = _r["resource"] + (f"/{_r['subresource']}" if _r["subresource"] else "")
        _name += f".{_r['apiGroup']}" if _r["apiGroup"] else ""
        KIND_RIGHTS.setdefault(_name, set()).add(_r["verb"])


#: Chaos kinds' rights on cluster-scoped resources (node_failure's nodes get and patch): RBAC has
#: no namespaced form of them, so they are off by default in every install: the kustomize installs
#: grant them only with the kind's component (manifests/node-failure), the chart only with the
#: kind in chaosKinds (README "Security model").
CLUSTER_KIND_RIGHTS: dict[str, set[str]] = {}
for _info in registry.KINDS.values():
    for _right in _info.rights:
        if _right.cluster:
            _r = _right.as_json()
            _name = _r["resource"] + (f".{_r['apiGroup']}" if _r["apiGroup"] else "")
            CLUSTER_KIND_RIGHTS.setdefault(_name, set()).add(_r["verb"])
#: The opt-in kinds' components' RBAC (generated, make crd). The suite's operator identity has
#: them, as the test bed's does (`testbed.install_operator_identity`): its tests fail nodes.
COMPONENT_RBAC = [
    testbed.REPO / str(i.component) / "chaos-rbac.yaml" for i in registry.KINDS.values() if i.opt_in
]


def _any_cluster_kind_right(cluster: testbed.Cluster) -> bool:
    return any(
        can_i(cluster, verb, resource, None)
        for resource, verbs in CLUSTER_KIND_RIGHTS.items()
        for verb in verbs
    )


@contextlib.contextmanager
def default_install(cluster: testbed.Cluster) -> Iterator[None]:
    """The install as shipped, no component added: the opt-in kinds' roles removed for the
    block, put back after."""
    for path in COMPONENT_RBAC:
        cluster.kubectl("delete", "-f", str(path), "--ignore-not-found")
    testbed.wait_for(lambda: not _any_cluster_kind_right(cluster), 30, what="the components' rights gone")
    try:
        yield
    finally:
        for path in COMPONENT_RBAC:
            cluster.kubectl("apply", "-f", str(path))
        testbed.wait_for(
            lambda: all(
                can_i(cluster, v, r, None) for r, verbs in CLUSTER_KIND_RIGHTS.items() for v in verbs
            ),
            30,
            what="the components' rights back",
        )


def _cluster_kind_part(extra: dict[str, set[str]]) -> dict[str, set[str]]:
    return {r: v for r, v in extra.items() if r in CLUSTER_KIND_RIGHTS}


def can_i_list(cluster: testbed.Cluster, user: str, namespace: str) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` as `user` in `namespace`: resource -> verbs (resource rules only)."""
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout
    rights: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        cols = re.split(r"\s{2,}", line.strip())
        if len(cols) < 4 or not cols[0]:
            continue  # a non-resource URL rule (/api, /healthz, ...): discovery, granted to everyone
        resource, _urls, names, verbs = cols[0], cols[1], cols[2], cols[3]
        if names not in ("[]", ""):
            resource = f"{resource} {names}"
        rights.setdefault(resource, set()).update(verbs.strip("[]").split())
    return rights


def beyond_baseline(op: dict[str, set[str]], base: dict[str, set[str]]) -> dict[str, set[str]]:
    extra = {r: v - base.get(r, set()) for r, v in op.items()}
    return {r: v for r, v in extra.items() if v}


def can_i(
    cluster: testbed.Cluster, verb: str, resource: str, namespace: str | None, user: str = OPERATOR
) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    return cluster.kubectl(*args, check=False).stdout.strip() == "yes"


@pytest.fixture
def baseline_user(cluster: testbed.Cluster) -> Iterator[tuple[str, str]]:
    """An unprivileged ServiceAccount: what every authenticated user may do anyway."""
    ns = make_namespace(cluster, "sec")
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    yield ns, f"system:serviceaccount:{ns}:nobody"
    drop_namespace(cluster, ns)


def _assert_least_privilege(extra: dict[str, set[str]]) -> None:
    assert not [r for r in extra if "secrets" in r], extra
    assert not [r for r in extra if r.startswith("*")], extra
    assert not [r for r, v in extra.items() if "*" in v], extra
    # No attach, portforward, log; exec only as a chaos kind's own right (container_kill).
    pods_sub = {r: v for r, v in extra.items() if r.startswith("pods/")}
    assert all(r in KIND_RIGHTS and v <= KIND_RIGHTS[r] for r, v in pods_sub.items()), (pods_sub, KIND_RIGHTS)
    for resource, verbs in extra.items():
        allowed = ALLOWED.get(resource, set()) | KIND_RIGHTS.get(resource, set())
        assert allowed, f"unexpected right: {resource} {sorted(verbs)}"
        assert verbs <= allowed, f"{resource}: {sorted(verbs - allowed)} beyond ADR 0004 and the chaos kinds"


def test_cluster_wide_install_holds_only_the_listed_rights(
    cluster: testbed.Cluster, operator_identity: str, baseline_user: tuple[str, str]
) -> None:
    ns, nobody = baseline_user
    base = can_i_list(cluster, nobody, ns)
    # With the opt-in components (as the suite's identity has them): exactly their rights on
    # cluster-scoped resources come with them, nothing else.
    with_components = beyond_baseline(can_i_list(cluster, OPERATOR, ns), base)
    with default_install(cluster):
        extra = beyond_baseline(can_i_list(cluster, OPERATOR, ns), base)
        # As shipped: no right on a cluster-scoped resource of any chaos kind (node_failure's
        # nodes get and patch come only with manifests/node-failure).
        assert _cluster_kind_part(extra) == {}, extra
        assert not can_i(cluster, "get", "nodes", None)
        assert not can_i(cluster, "patch", "nodes", None)
    assert _cluster_kind_part(with_components) == CLUSTER_KIND_RIGHTS, with_components
    assert {r: v for r, v in with_components.items() if r not in CLUSTER_KIND_RIGHTS} == extra
    print("\noperator rights beyond an authenticated user's, cluster-wide install:")
    for resource, verbs in sorted(extra.items()):
        print(f"  {resource:<50} {sorted(verbs)}")
    _assert_least_privilege(extra)
    assert extra.get("pods") == {"get", "list", "watch", "delete"}
    assert not can_i(cluster, "*", "*", None), "the operator is cluster-admin"
    assert not can_i(cluster, "get", "secrets", None)
    # pods/exec is container_kill's right, exactly (its own ClusterRole; leave the kind out and
    # it is gone), never attach or portforward. (`kubectl auth can-i create pods/exec` would ask
    # about a pod named "exec": the subresources are read from the list above.)
    assert extra.get("pods/exec", set()) == KIND_RIGHTS.get("pods/exec", set())
    assert "pods/attach" not in extra
    assert "pods/portforward" not in extra
    assert not can_i(cluster, "create", "pods", ns)
    assert not can_i(cluster, "delete", "nodes", None)
    assert not can_i(cluster, "update", "statefulsets.apps", ns)
    TALLY.note(f"RBAC (cluster-wide install): {len(extra)} resources beyond baseline, none outside ADR 0004")


def test_namespaced_install_grants_nothing_outside_watched_namespaces(
    cluster: testbed.Cluster, operator_identity: str, baseline_user: tuple[str, str]
) -> None:
    """manifests/operator-namespaced: rights in `tikv` only; with the cluster-wide binding
    removed for the test and restored after."""
    other, nobody = baseline_user
    manifests = testbed.REPO / "manifests"
    namespaced = manifests / "operator-namespaced" / "rbac.yaml"
    watched = [
        d["metadata"]["namespace"]
        for d in yaml.safe_load_all(namespaced.read_text())
        if d and d.get("kind") == "Role"
    ]
    namespaced_chaos = manifests / "operator-namespaced" / "chaos-rbac.yaml"
    cluster_chaos = manifests / "operator" / "chaos-rbac.yaml"
    for ns in watched:
        cluster.kubectl("create", "namespace", ns, check=False)
    cluster.kubectl("delete", "clusterrolebinding", "aftershock", check=False)
    cluster.kubectl("delete", "clusterrole", "aftershock", check=False)
    # The chaos kinds' cluster-wide roles too (node_kill's pods delete, container_kill's exec):
    # the namespaced install has them as Roles of the watched namespaces.
    cluster.kubectl("delete", "-f", str(cluster_chaos), "--ignore-not-found", check=False)
    try:
        cluster.kubectl("apply", "-f", str(namespaced))
        cluster.kubectl("apply", "-f", str(namespaced_chaos))

        def settled() -> bool:
            return can_i(cluster, "delete", "pods", watched[0]) and not can_i(
                cluster, "delete", "pods", other
            )

        testbed.wait_for(settled, 30, what="namespaced RBAC in effect")
        base = can_i_list(cluster, nobody, other)
        for ns in watched:
            extra = beyond_baseline(can_i_list(cluster, OPERATOR, ns), base)
            _assert_least_privilege(extra)
            assert extra.get("pods") == {"get", "list", "watch", "delete"}

        def outside_watched(components: bool) -> None:
            for ns in (other, "kube-system", "default", "aftershock-system"):
                extra = beyond_baseline(can_i_list(cluster, OPERATOR, ns), base)
                # Cluster-scoped reads of CRDs (and asking whether a Campaign's author may do what
                # it uses, ADR 0012) are all that reaches beyond the watched namespaces; with the
                # opt-in components, their rights on cluster-scoped resources too, exactly those.
                beyond = {r: v for r, v in extra.items() if r not in CLUSTER_KIND_RIGHTS}
                assert set(beyond) <= {
                    "customresourcedefinitions.apiextensions.k8s.io",
                    "subjectaccessreviews.authorization.k8s.io",
                }, (ns, extra)
                assert _cluster_kind_part(extra) == (CLUSTER_KIND_RIGHTS if components else {}), (ns, extra)
                assert not can_i(cluster, "list", "pods", ns)
                assert not can_i(cluster, "delete", "pods", ns)

        with default_install(cluster):
            outside_watched(components=False)
        outside_watched(components=True)
        assert not can_i(cluster, "delete", "pods", None)
        assert not can_i(cluster, "list", "namespaces", None)
    finally:
        for path in (namespaced, namespaced_chaos):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    ns_args = ["-n", doc["metadata"]["namespace"]] if doc["metadata"].get("namespace") else []
                    cluster.kubectl(
                        "delete", doc["kind"].lower(), doc["metadata"]["name"], *ns_args, check=False
                    )
        cluster.kubectl("apply", "-f", str(manifests / "operator" / "rbac.yaml"))
        cluster.kubectl("apply", "-f", str(cluster_chaos))
        testbed.wait_for(
            lambda: can_i(cluster, "delete", "pods", other), 30, what="cluster-wide RBAC restored"
        )


def test_node_failure_without_its_component_is_refused_naming_it_and_fails_no_node(
    cluster: testbed.Cluster, operator_identity: str, tmp_path: Path
) -> None:
    """The operator installed as shipped (no manifests/node-failure): a node_failure Campaign
    stops with a condition saying which component to add; the operator lives on and no node
    was asked to fail (the Nodes' own annotations, read by the test)."""
    ns = make_namespace(cluster, "nfrights")
    subject = start_subject(cluster, ns)
    op = Operator(kubeconfig=operator_identity, db=tmp_path / "ledger.db", workdir=tmp_path, namespaces=[ns])
    try:
        with default_install(cluster):
            op.start()
            chaos = {"type": "node_failure", "durationSeconds": 5, "acknowledgeNodeFailure": True}
            cluster.apply(campaign("nf", ns, subject.pd_url, trials=1, chaos=chaos))
            obj = wait_phase(cluster, ns, "nf", {"Failed", "Succeeded"}, timeout=120)
            assert obj["status"]["phase"] == "Failed"
            (valid,) = [c for c in obj["status"]["conditions"] if c["type"] == "SpecValid"]
            assert (valid["status"], valid["reason"]) == ("False", "OperatorNotPermitted"), valid
            assert "add the kustomize component manifests/node-failure" in valid["message"], valid
            assert "nothing was done" in valid["message"]
            assert op.check_alive()
            nodes = yaml.safe_load(cluster.kubectl("get", "nodes", "-o", "yaml").stdout)["items"]
            asked = [
                n["metadata"]["name"]
                for n in nodes
                if "aftershock.dev/node-failure" in (n["metadata"].get("annotations") or {})
            ]
            assert asked == []
    finally:
        op.stop()
        subject.close()
        drop_namespace(cluster, ns)


# --- the metrics / report endpoint ---------------------------------------------------------------

PATHS = ("/metrics", "/campaigns", "/campaigns/{ns}/ok", "/campaigns/{ns}/no-such", "/", "/campaigns/{ns}")


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=body)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.fixture
def served(
    cluster: testbed.Cluster, operator_identity: str, tmp_path: Path
) -> Iterator[tuple[Operator, str, str]]:
    """An operator with a finished campaign in its ledger and a canary in its environment."""
    ns = make_namespace(cluster, "metrics")
    subject = start_subject(cluster, ns)
    canary = "canary-" + secrets.token_hex(8)
    op = Operator(
        kubeconfig=operator_identity,
        db=tmp_path / "ledger.db",
        workdir=tmp_path,
        namespaces=[ns],
        extra_env={"AFTERSHOCK_TEST_CANARY": canary},
    )
    op.start()
    try:
        cluster.apply(campaign("ok", ns, subject.pd_url, trials=1))
        wait_phase(cluster, ns, "ok", {"Succeeded"}, timeout=120)
        yield op, ns, canary
    finally:
        op.stop()
        subject.close()
        drop_namespace(cluster, ns)


def test_endpoint_is_read_only(served: tuple[Operator, str, str]) -> None:
    op, ns, _ = served
    assert _request(op.metrics_port, "GET", f"/campaigns/{ns}/ok")[0] == 200
    tried = 0
    for path in PATHS:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, _ = _request(op.metrics_port, method, path.format(ns=ns), body=b'{"spec":{"trials":1}}')
            tried += 1
            assert status in (404, 405), (method, path, status)
            if path in ("/metrics", "/campaigns", "/campaigns/{ns}/ok"):
                assert status == 405, (method, path, status)
    # Nothing changed: the report is still the same finished campaign.
    status, body = _request(op.metrics_port, "GET", f"/campaigns/{ns}/ok")
    assert status == 200
    assert '"phase": "Succeeded"' in body
    assert _request(op.metrics_port, "GET", "/campaigns/../../etc/passwd")[0] == 404
    TALLY.bad_inputs_tried += tried


def test_endpoint_serves_results_only(served: tuple[Operator, str, str], operator_identity: str) -> None:
    op, ns, canary = served
    token = yaml.safe_load(Path(operator_identity).read_text())["users"][0]["user"]["token"]
    bodies = [_request(op.metrics_port, "GET", p.format(ns=ns))[1] for p in PATHS]
    text = "\n".join(bodies)
    for secret, what in (
        (canary, "an environment variable's value"),
        (token, "the ServiceAccount token"),
        (token[:40], "part of the ServiceAccount token"),
        (operator_identity, "the kubeconfig path"),
        ("BEGIN CERTIFICATE", "a certificate"),
        ("KUBECONFIG", "the environment"),
        (str(op.db), "the ledger path"),
    ):
        assert secret not in text, f"the endpoint exposes {what}"


def test_a_token_in_pd_url_is_refused_or_not_served(
    cluster: testbed.Cluster, operator_identity: str, tmp_path: Path
) -> None:
    ns = make_namespace(cluster, "pdtoken")
    secret = "tok-" + secrets.token_hex(8)
    op = Operator(kubeconfig=operator_identity, db=tmp_path / "ledger.db", workdir=tmp_path, namespaces=[ns])
    op.start()
    try:
        # Loopback (the suite's operator runs with --allow-loopback-pd) and a closed port: the
        # probe fails at once and nothing is looked up or contacted beyond 127.0.0.1.
        body = campaign(
            "leaky",
            ns,
            f"http://127.0.0.1:9/?access_token={secret}",
            trials=1,
            dryRun=True,
            steadyState={"timeoutSeconds": 2, "stableSeconds": 0},
        )
        cluster.apply(body)
        try:
            obj = wait_phase(cluster, ns, "leaky", {"Succeeded", "Failed"}, timeout=60)
        except AssertionError as exc:  # a setup timeout is not the bug
            raise RuntimeError(str(exc)) from exc
        valid: dict[str, Any] = next(
            (c for c in obj["status"].get("conditions", []) if c["type"] == "SpecValid"), {}
        )
        refused = valid.get("status") == "False" and "spec.subject.pdURL" in valid.get("message", "")
        _, served_text = _request(op.metrics_port, "GET", f"/campaigns/{ns}/leaky")
        assert refused or secret not in served_text
    finally:
        op.stop()
        drop_namespace(cluster, ns)
