"""node_failure's rights on nodes are opt-in in the kustomize installs: both installs render
without any right on nodes, and with the component `manifests/node-failure` (as the README
says to add it) with exactly node_failure's, bound to the operator (kubectl's own kustomize, no
cluster state touched; the rights as the API server grants them: tests/reliability/test_security.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from aftershock.chaos import registry
from tests.e2e import testbed

NODE_FAILURE = registry.KINDS["node_failure"]


def _render(
    cluster: testbed.Cluster, tmp_path: Path, install: str, components: list[str]
) -> list[dict[str, Any]]:
    # kustomize refuses paths outside the kustomization's root: render from a copy.
    root = tmp_path / "repo"
    if not root.exists():
        shutil.copytree(testbed.REPO / "manifests", root / "manifests")
    (root / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [install],
                **({"components": components} if components else {}),
            }
        )
    )
    out = cluster.kubectl("kustomize", str(root)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _node_rules(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Role or ClusterRole name -> verbs it grants on nodes."""
    found: dict[str, set[str]] = {}
    for d in docs:
        if d["kind"] in ("Role", "ClusterRole"):
            for rule in d.get("rules", []):
                if "nodes" in rule.get("resources", []):
                    found.setdefault(d["metadata"]["name"], set()).update(rule["verbs"])
    return found


@pytest.mark.parametrize("install", ["manifests", "manifests/operator-namespaced"])
def test_node_rights_come_only_with_the_component(
    cluster: testbed.Cluster, tmp_path: Path, install: str
) -> None:
    plain = _render(cluster, tmp_path, install, [])
    assert _node_rules(plain) == {}, "an install as shipped grants rights on nodes"
    assert NODE_FAILURE.component is not None
    with_it = _render(cluster, tmp_path, install, [NODE_FAILURE.component])
    assert _node_rules(with_it) == {"aftershock-chaos-node-failure": {"get", "patch"}}
    (binding,) = [
        d
        for d in with_it
        if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"] == "aftershock-chaos-node-failure"
    ]
    assert binding["roleRef"]["name"] == "aftershock-chaos-node-failure"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "aftershock", "namespace": "aftershock-system"}
    ]

    # Nothing else differs: the component adds exactly its role and binding.
    def key(d: dict[str, Any]) -> tuple[str, str, str]:
        return (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])

    added = {key(d) for d in with_it} - {key(d) for d in plain}
    assert added == {
        ("ClusterRole", "", "aftershock-chaos-node-failure"),
        ("ClusterRoleBinding", "", "aftershock-chaos-node-failure"),
    }
    assert [d for d in plain if key(d) not in added] == [d for d in with_it if key(d) not in added]
