"""The alert receiver's kustomize component renders onto the operator's manifests as the README
says: the flags the operator reads, the token from the Secret, one port named in the Service and
the NetworkPolicy (kubectl's own kustomize, no cluster state touched)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import testbed


def test_the_component_adds_port_token_service_and_policy(cluster: testbed.Cluster, tmp_path: Path) -> None:
    # kustomize refuses paths outside the kustomization's root: render from a copy.
    root = tmp_path / "repo"
    shutil.copytree(testbed.REPO / "manifests", root / "manifests")
    (root / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [manifests]\ncomponents: [manifests/alert-receiver]\n"
    )
    out = cluster.kubectl("kustomize", str(root)).stdout
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(out) if d]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "aftershock"]
    pod = deploy["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "operator"]
    assert "--alert-receiver-port=9095" in container["args"]
    assert "--alert-receiver-token-file=/etc/aftershock/alert-receiver/token" in container["args"]
    assert {"name": "alerts", "containerPort": 9095, "protocol": "TCP"} in container["ports"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "alert-receiver-token"]
    assert mount["mountPath"] == "/etc/aftershock/alert-receiver"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "alert-receiver-token"]
    assert volume["secret"]["secretName"] == "aftershock-alert-receiver"
    (service,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "aftershock-alerts"]
    assert service["spec"]["ports"][0]["targetPort"] == "alerts"
    (policy,) = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "aftershock-alert-receiver"
    ]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "alerts", "protocol": "TCP"}]
    assert rule["from"], "the receiver's port must not be open to every pod"
