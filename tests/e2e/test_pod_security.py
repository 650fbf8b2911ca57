"""The operator's pod, as the manifests and the chart give it, admitted by the real API server's
PodSecurity admission in a namespace that enforces the restricted standard (server-side dry run:
nothing is scheduled). The same pod with one setting loosened is refused, so the enforcement
is real. tests/e2e/test_realnode_operator.py runs that pod on the real node."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.e2e import testbed
from tests.e2e.test_chart import _render

MANIFESTS = testbed.REPO / "manifests" / "operator"


def _pod(template_spec: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": copy.deepcopy(template_spec),
    }


def _admitted(cluster: testbed.Cluster, pod: dict[str, Any]) -> tuple[bool, str]:
    # Admission needs the pod's ServiceAccount to exist (a dry run as well).
    account = pod["spec"].get("serviceAccountName", "default")
    namespace = pod["metadata"]["namespace"]
    if cluster.kubectl("get", "serviceaccount", account, "-n", namespace, check=False).returncode != 0:
        cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input_=yaml.safe_dump(pod), check=False)
    return out.returncode == 0 and "PodSecurity" not in out.stderr, out.stdout + out.stderr


@pytest.fixture
def restricted(cluster: testbed.Cluster, namespace: str) -> str:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    return namespace


def _deployment_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def test_the_manifests_operator_pod_is_admitted_under_restricted(
    cluster: testbed.Cluster, restricted: str
) -> None:
    spec = _deployment_spec([yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())])
    ok, said = _admitted(cluster, _pod(spec, restricted, "manifests-operator"))
    assert ok, said
    # One setting loosened and the same admission refuses it, naming the setting.
    loose = copy.deepcopy(spec)
    loose["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    ok, said = _admitted(cluster, _pod(loose, restricted, "loosened"))
    assert not ok
    assert "violates PodSecurity" in said
    assert "allowPrivilegeEscalation" in said


def test_the_charts_operator_pod_is_admitted_under_restricted(
    cluster: testbed.Cluster,
    restricted: str,
    helm: str,
) -> None:
    spec = _deployment_spec(_render(helm))
    ok, said = _admitted(cluster, _pod(spec, restricted, "chart-operator"))
    assert ok, said
    loose = copy.deepcopy(spec)
    loose["securityContext"].pop("seccompProfile", None)
    for container in loose["containers"]:
        container["securityContext"].pop("seccompProfile", None)
    ok, said = _admitted(cluster, _pod(loose, restricted, "loosened"))
    assert not ok
    assert "seccompProfile" in said
