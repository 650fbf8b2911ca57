"""The test bed is a real Kubernetes: CRD validation with CEL, controllers that recreate
pods, storage that binds, RBAC that refuses. Everything later stands on these facts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.e2e import testbed


def _widget_crd(plural: str, group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": "Widget", "shortNames": []},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["replicas", "maxReplicas"],
                                    "properties": {
                                        "replicas": {"type": "integer", "minimum": 0},
                                        "maxReplicas": {"type": "integer", "minimum": 0},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.replicas <= self.maxReplicas",
                                            "message": "replicas must not exceed maxReplicas",
                                        }
                                    ],
                                },
                                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                            },
                        }
                    },
                }
            ],
        },
    }


def test_nodes_are_simulated_in_three_zones(cluster: testbed.Cluster) -> None:
    # The simulated ones: the real nodes (real-0..4) may be failed meanwhile by other tests
    # (node_failure freezes real-1, real-3 and real-4; a test stops real-0's kubelet).
    nodes = [n for n in cluster.get_json("nodes")["items"] if not n["metadata"]["name"].startswith("real-")]
    zones = {n["metadata"]["labels"].get("topology.kubernetes.io/zone") for n in nodes}
    assert len(nodes) >= 3
    assert {"zone-a", "zone-b", "zone-c"} <= zones
    for n in nodes:
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert [c["status"] for c in ready] == ["True"], n["metadata"]["name"]


def test_kubectl_reports_the_pinned_version(cluster: testbed.Cluster) -> None:
    versions = (testbed.TESTBED / "versions.env").read_text()
    pinned = next(line.split("=", 1)[1] for line in versions.splitlines() if line.startswith("K8S_VERSION="))
    out = cluster.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{pinned}"' in out  # client and server both report it
    assert out.count(pinned) >= 2


def test_crd_with_cel_rule_accepts_valid_and_rejects_invalid(
    cluster: testbed.Cluster, namespace: str
) -> None:
    suffix = uuid.uuid4().hex[:6]
    group, plural = "testbed.aftershock.dev", f"widgets{suffix}"
    crd = _widget_crd(plural, group)
    cluster.apply(crd)
    try:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{plural}.{group}", "--timeout=60s")
        ok = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "ok"},
            "spec": {"replicas": 2, "maxReplicas": 3},
        }
        # The API server may need a moment to serve a just-established CRD's endpoint.
        testbed.wait_for(
            lambda: cluster.apply(ok, namespace=namespace, check=False).returncode == 0,
            30,
            what="valid widget accepted",
        )
        bad = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "bad"},
            "spec": {"replicas": 5, "maxReplicas": 3},
        }
        proc = cluster.apply(bad, namespace=namespace, check=False)
        assert proc.returncode != 0
        assert "replicas must not exceed maxReplicas" in proc.stderr
        # The status subresource and the printer columns are served.
        cluster.kubectl(
            "patch",
            f"{plural}/ok",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status":{"phase":"Happy"}}',
        )
        table = cluster.kubectl("get", plural, "-n", namespace).stdout
        assert table.splitlines()[0].split() == ["NAME", "REPLICAS", "PHASE"]
        assert "Happy" in table
    finally:
        cluster.kubectl("delete", "crd", f"{plural}.{group}", "--wait=false", check=False)


def _statefulset(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "registry.invalid/never-pulled:1"}]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }


def test_statefulset_recreates_a_killed_pod(cluster: testbed.Cluster, namespace: str) -> None:
    cluster.apply(_statefulset("web", 3), namespace=namespace)
    cluster.kubectl("rollout", "status", "statefulset/web", "-n", namespace, "--timeout=120s")
    pvcs = cluster.get_json("pvc", "-n", namespace)["items"]
    assert len(pvcs) == 3
    assert all(p["status"]["phase"] == "Bound" for p in pvcs)

    api = k8s.CoreV1Api(cluster.api_client())
    before = api.read_namespaced_pod("web-1", namespace)
    zones = {
        api.read_node(p.spec.node_name).metadata.labels["topology.kubernetes.io/zone"]
        for p in api.list_namespaced_pod(namespace).items
    }
    assert zones  # scheduled onto the simulated nodes

    start = time.monotonic()
    api.delete_namespaced_pod("web-1", namespace, grace_period_seconds=0)

    def replaced_and_ready() -> bool:
        try:
            pod = api.read_namespaced_pod("web-1", namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        return pod.metadata.uid != before.metadata.uid and ready

    testbed.wait_for(replaced_and_ready, 120, interval=0.05, what="web-1 replaced and Ready")
    elapsed = time.monotonic() - start
    after = api.read_namespaced_pod("web-1", namespace)
    assert after.metadata.uid != before.metadata.uid
    print(f"\nweb-1 replaced and Ready {elapsed:.3f}s after the delete")
    assert elapsed > 0


def test_rbac_is_enforced_for_service_account_tokens(
    cluster: testbed.Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.apply(_statefulset("victim", 1), namespace=namespace)
    cluster.kubectl("rollout", "status", "statefulset/victim", "-n", namespace, "--timeout=120s")
    cluster.kubectl("create", "serviceaccount", "killer", "-n", namespace)
    kubeconfig = cluster.service_account_kubeconfig(namespace, "killer", tmp_path / "killer.kubeconfig")
    sa_api = k8s.CoreV1Api(cluster.api_client(kubeconfig))

    with pytest.raises(ApiException) as denied:
        sa_api.delete_namespaced_pod("victim-0", namespace)
    assert denied.value.status == 403

    cluster.kubectl("create", "role", "pod-killer", "-n", namespace, "--verb=delete,get", "--resource=pods")
    cluster.kubectl(
        "create",
        "rolebinding",
        "pod-killer",
        "-n",
        namespace,
        "--role=pod-killer",
        f"--serviceaccount={namespace}:killer",
    )

    def deleted() -> bool:
        try:
            sa_api.delete_namespaced_pod("victim-0", namespace)
            return True
        except ApiException as exc:
            if exc.status == 403:
                return False  # the RBAC authorizer's cache may lag a moment behind the binding
            raise

    testbed.wait_for(deleted, 30, what="delete allowed by the new Role")
    # Still no rights anywhere else.
    with pytest.raises(ApiException) as other:
        sa_api.list_namespaced_pod("kube-system")
    assert other.value.status == 403
