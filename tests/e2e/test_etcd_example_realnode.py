"""The etcd example (manifests/examples/etcd/) on the real node, through the cluster's DNS.

Its StatefulSet and headless Service are applied as written: the members find each other as
``etcd-N.etcd`` (their peer URLs), the kubelet probes each member's ``/readyz`` on its pod IP.
The Campaign is the example's, its endpoints as written (``http://etcd-0.etcd:2379``...): the
operator, in-cluster on the real node (its image, its manifests, ``dnsPolicy:
ClusterFirstWithHostNet``), qualifies them to ``etcd-0.etcd.<ns>.svc`` and resolves them
through the cluster DNS, as in any cluster.

The cluster DNS is the test bed's CoreDNS (hack/testbed/realnode.sh: built from its module,
in a network namespace of the node's own on the pod bridge, the kubelet's clusterDNS). What
differs from the example as a user applies it, none of it in the manifests:
- a MutatingAdmissionPolicy bound to this test's namespace places its pods on the real node
  (the node selector and toleration a cluster administrator's placement policy would add);
- the etcd image the StatefulSet names is this etcd release built here from its module, under
  that name in the node's containerd (hack/testbed/images.sh);
- the Campaign runs 2 trials with no pause between them (the example: 10, 30 s apart).

Witnesses of the test's own: CoreDNS asked directly for each member's name (the pods' IPs from
the API), etcd's own member list (peer URLs by name, read from a member on its pod IP), and the
pods' UIDs (the ledger's victims were replaced). About 90 s.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.e2e import realnode, testbed
from tests.e2e.operator import condition, get_campaign, pod_uids, wait_phase
from tests.e2e.test_realnode_operator import (  # noqa: F401  (fixtures)
    InClusterOperator,
    in_cluster_operator,
    ledger_on_host,
    operator_namespace,
)

pytestmark = pytest.mark.realnode

EXAMPLE = testbed.REPO / "manifests" / "examples" / "etcd"
#: The test bed's cluster DNS (hack/testbed/realnode.sh) and domain.
CLUSTER_DNS = "10.88.255.254"
DOMAIN = "cluster.local"


def _dnsquery() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dnsquery", testbed.TESTBED / "dnsquery.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolve(name: str) -> list[str]:
    """`name`'s A records as the cluster DNS answers them (asked directly, never the host's)."""
    found: list[str] = _dnsquery().query(CLUSTER_DNS, name)
    return found


@pytest.fixture
def placed_on_real_node(cluster: testbed.Cluster, namespace: str) -> Iterator[None]:
    """Pods created in `namespace` get the real node's selector and toleration (admission)."""
    name = f"real-node-{namespace}"
    label = realnode.NODE_LABEL
    toleration = f"Object.spec.tolerations{{key: '{label}', operator: 'Exists', effect: 'NoSchedule'}}"
    # JSON patches: a pod's nodeSelector and tolerations are atomic, which an apply
    # configuration may not change; these add to whatever the pod already has.
    mutation = (
        "(has(object.spec.nodeSelector) ? "
        "[JSONPatch{op: 'add', value: 'true', "
        f"path: '/spec/nodeSelector/' + jsonpatch.escapeKey('{label}')}}]"
        f" : [JSONPatch{{op: 'add', path: '/spec/nodeSelector', value: {{'{label}': 'true'}}}}]) + "
        "(has(object.spec.tolerations) ? "
        f"[JSONPatch{{op: 'add', path: '/spec/tolerations/-', value: {toleration}}}]"
        f" : [JSONPatch{{op: 'add', path: '/spec/tolerations', value: [{toleration}]}}])"
    )
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
            ]},
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": mutation}}],
        },
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }  # fmt: skip
    # A policy is enforced a moment after it is made (the API server's informer): wait until a
    # server-side dry run of a pod shows the mutation.
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": namespace},
             "spec": {"containers": [{"name": "c", "image": "registry.local/shell:local"}]}}  # fmt: skip

    def placed() -> bool:
        out = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                              input_=json.dumps(probe), check=False)  # fmt: skip
        return out.returncode == 0 and label in json.loads(out.stdout)["spec"].get("nodeSelector", {})

    try:
        cluster.apply(policy)
        cluster.apply(binding)
        testbed.wait_for(placed, 60, interval=0.5, what="the placement policy in effect")
        yield
    finally:
        cluster.kubectl("delete", "mutatingadmissionpolicybinding", name, "--wait=false", check=False)
        cluster.kubectl("delete", "mutatingadmissionpolicy", name, "--wait=false", check=False)


def member_list(pod_ip: str) -> list[dict[str, Any]]:
    """etcd's member list as a member answers it on its pod IP (a test bed address)."""
    req = urllib.request.Request(f"http://{pod_ip}:2379/v3/cluster/member/list", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:  # a pod IP on the node's bridge
        members: list[dict[str, Any]] = json.loads(resp.read())["members"]
        return members


def recovered_victims(db: Path, campaign_uid: str) -> list[str]:
    """The victims of the Campaign's recovered trials, read with the test's own SQL."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT victims FROM attempts WHERE campaign_uid = ? AND outcome = 'recovered' "
            "ORDER BY trial_index",
            (campaign_uid,),
        ).fetchall()
    finally:
        conn.close()
    return [v["name"] for (raw,) in rows for v in json.loads(raw)]


def etcd_pods(cluster: testbed.Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/name=etcd")["items"]
    return {p["metadata"]["name"]: p for p in pods if not p["metadata"].get("deletionTimestamp")}


def test_the_etcd_example_runs_on_the_real_node_by_its_cluster_dns_names(
    cluster: testbed.Cluster,
    namespace: str,
    real_node: None,
    placed_on_real_node: None,
    in_cluster_operator: InClusterOperator,  # noqa: F811  (the fixture imported above)
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE / "etcd.yaml"))
    cluster.kubectl("rollout", "status", "statefulset/etcd", "-n", namespace, "--timeout=300s")
    pods = etcd_pods(cluster, namespace)
    assert sorted(pods) == ["etcd-0", "etcd-1", "etcd-2"]
    for name, pod in pods.items():
        assert pod["spec"]["nodeName"] == realnode.NODE
        assert not pod["spec"].get("hostNetwork")
        # The cluster DNS answers each member's name as written with its pod's IP.
        assert resolve(f"{name}.etcd.{namespace}.svc.{DOMAIN}") == [pod["status"]["podIP"]], name
    # etcd's own word: the members found each other by those names.
    members = member_list(pods["etcd-0"]["status"]["podIP"])
    assert sorted(p for m in members for p in m["peerURLs"]) == [
        f"http://etcd-{i}.etcd:2380" for i in range(3)
    ], members

    (example,) = [d for d in yaml.safe_load_all((EXAMPLE / "campaign.yaml").read_text()) if d]
    example["spec"].update(trials=2, intervalSeconds=0)
    before = pod_uids(cluster, namespace)
    cluster.apply(example, namespace=namespace)
    name = example["metadata"]["name"]
    done = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=600)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    api = condition(done, "SubjectAPIConfigured")
    assert api is not None
    for i in range(3):
        assert f"http://etcd-{i}.etcd.{namespace}.svc:2379" in api["message"], api["message"]

    # The ledger (on the operator's volume) names the victims; each was replaced (a new UID),
    # and the cluster DNS now answers the replacement's IP.
    uid = get_campaign(cluster, namespace, name)["metadata"]["uid"]
    victims = recovered_victims(ledger_on_host(cluster, in_cluster_operator.namespace), uid)
    assert len(victims) == 2, victims
    after = pod_uids(cluster, namespace)
    pods = etcd_pods(cluster, namespace)
    for victim in victims:
        assert after[victim] != before[victim], victim
        ip = pods[victim]["status"]["podIP"]
        assert resolve(f"{victim}.etcd.{namespace}.svc.{DOMAIN}") == [ip], victim
