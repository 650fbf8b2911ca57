"""The shared pod watch against the real API server: the operator matches selectors itself now,
so its matching must be the API server's, and Campaigns sharing one watch (per namespace or
cluster-wide) must each kill only their own pods."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from aftershock.model import LabelSelector, LabelSelectorRequirement
from tests.e2e import testbed
from tests.e2e.operator import (
    TIKV_LABELS,
    OperatorProcess,
    campaign,
    pod_uids,
    tikv_statefulset,
    wait_phase,
)
from tests.e2e.test_campaign import _report

StartOperator = Callable[..., OperatorProcess]

#: Label keys and values the pods and the selectors draw from: few, so that selectors hit and
#: miss often; the empty value and a prefixed key included (both legal, both easy to get wrong).
KEYS = ("app", "tier", "example.com/zone")
VALUES = ("a", "b", "")


def _pod(name: str, labels: dict[str, str], *, scheduled: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "none"}]}
    if not scheduled:
        # Pending for good (no node has the label): the API server only has to store it. Not
        # bound to a missing node instead: the pod garbage collector deletes those.
        spec["nodeSelector"] = {"aftershock.dev/no-such-node": "true"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def _label_sets() -> Iterator[dict[str, str]]:
    """Every assignment of KEYS to VALUES-or-absent: 4^3 = 64 label sets."""
    for choice in itertools.product((*VALUES, None), repeat=len(KEYS)):
        yield {k: v for k, v in zip(KEYS, choice, strict=True) if v is not None}


def _selectors(count: int, seed: int = 12) -> list[LabelSelector]:
    rng = random.Random(seed)
    values = (*VALUES, "c")  # "c" is on no pod
    found: list[LabelSelector] = []
    for _ in range(count):
        labels = tuple(sorted({k: rng.choice(values) for k in rng.sample(KEYS, rng.randint(0, 2))}.items()))
        exprs = []
        for key in rng.sample(KEYS, rng.randint(0, 3)):
            op = rng.choice(("In", "NotIn", "Exists", "DoesNotExist"))
            chosen = tuple(rng.sample(values, rng.randint(1, 3))) if op in ("In", "NotIn") else ()
            exprs.append(LabelSelectorRequirement(key, op, chosen))
        if labels or exprs:
            found.append(LabelSelector(labels, tuple(exprs)))
    return found


def test_local_selector_matching_is_the_api_servers_on_many_selectors(
    cluster: testbed.Cluster, namespace: str
) -> None:
    sets = list(_label_sets())
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [_pod(f"p{i}", s, scheduled=False) for i, s in enumerate(sets)],
        },
        namespace=namespace,
    )
    core = k8s.CoreV1Api(cluster.api_client())
    labels_of = {p.metadata.name: p.metadata.labels or {} for p in core.list_namespaced_pod(namespace).items}
    assert len(labels_of) == len(sets)
    selectors = _selectors(300)
    hits = 0
    for selector in selectors:
        served = core.list_namespaced_pod(namespace, label_selector=selector.to_query())
        by_server = {p.metadata.name for p in served.items}
        locally = {name for name, labels in labels_of.items() if selector.matches(labels)}
        assert locally == by_server, (selector.to_query(), sorted(locally ^ by_server))
        hits += bool(by_server) and by_server != set(labels_of)
    # The comparison means something only if many selectors pick some pods but not all.
    assert hits > len(selectors) // 3


def _second_statefulset() -> dict[str, Any]:
    """Same component label, another instance: a second subject beside the first."""
    body = tikv_statefulset("other")
    labels = {**TIKV_LABELS, "app.kubernetes.io/instance": "e2e-b"}
    body["metadata"]["labels"] = labels
    body["spec"]["selector"]["matchLabels"] = labels
    body["spec"]["template"]["metadata"]["labels"] = labels
    return body


@pytest.fixture
def second_namespace(cluster: testbed.Cluster) -> Iterator[str]:
    name = testbed.unique("e2e-b")
    cluster.kubectl("create", "namespace", name)
    testbed.wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        60,
        what=f"default ServiceAccount in {name}",
    )
    yield name
    for obj in cluster.kubectl("get", "campaigns", "-n", name, "-o", "name", check=False).stdout.split():
        cluster.kubectl(
            "patch", obj, "-n", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False
        )
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _victims(db: Path, namespace: str, name: str) -> list[str]:
    report = _report(db, namespace, name)
    return [v["name"] for t in report["trials"] if t["outcome"] == "recovered" for v in t["victims"]]


@pytest.mark.parametrize("scope", ["namespace", "cluster"])
def test_campaigns_sharing_a_pod_watch_kill_only_their_own_pods(
    cluster: testbed.Cluster,
    namespace: str,
    second_namespace: str,
    start_operator: StartOperator,
    scope: str,
) -> None:
    subjects = (
        (namespace, [tikv_statefulset(), _second_statefulset()]),
        (second_namespace, [tikv_statefulset()]),
    )
    for ns, bodies in subjects:
        for body in bodies:
            cluster.apply(body, namespace=ns)
    # Matches neither Campaign of the namespace, though it shares their component label; on a
    # kwok node, Running like the subjects' pods.
    cluster.apply(_pod("decoy", {**TIKV_LABELS, "app.kubernetes.io/instance": "e2e-c"}), namespace=namespace)
    for ns, sts in ((namespace, "tikv"), (namespace, "other"), (second_namespace, "tikv")):
        cluster.kubectl("rollout", "status", f"statefulset/{sts}", "-n", ns, "--timeout=120s")
    decoy_uid = pod_uids(cluster, namespace)["decoy"]
    op = start_operator("--pod-watch-scope", scope, namespaces=[namespace, second_namespace])
    in_b = {
        "kind": "TiKV",
        "selector": {
            "matchLabels": {"app.kubernetes.io/component": "tikv"},
            "matchExpressions": [
                {"key": "app.kubernetes.io/instance", "operator": "In", "values": ["e2e-b"]}
            ],
        },
    }
    cluster.apply(campaign("a", namespace, None, trials=3))
    cluster.apply(campaign("b", namespace, None, trials=3, subject=in_b))
    cluster.apply(campaign("c", second_namespace, None, trials=3))
    for ns, name in ((namespace, "a"), (namespace, "b"), (second_namespace, "c")):
        obj = wait_phase(cluster, ns, name, {"Succeeded", "Failed"}, timeout=240, op=op)
        assert obj["status"]["phase"] == "Succeeded", (name, obj["status"])
    a, b = _victims(op.db, namespace, "a"), _victims(op.db, namespace, "b")
    c = _victims(op.db, second_namespace, "c")
    assert len(a) == len(b) == len(c) == 3
    assert all(v.startswith("tikv-") for v in a + c), (a, c)
    assert all(v.startswith("other-") for v in b), b
    assert pod_uids(cluster, namespace)["decoy"] == decoy_uid
