"""ADR 0004's table of the operator's rights, read as data: the e2e and reliability tests compare
what the API server grants (`kubectl auth can-i --list`) with it, so the table stays true."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.e2e import testbed

ADR = testbed.REPO / "docs" / "adr" / "0004-rbac-and-scoping.md"
#: Granted only where ClusterRole aftershock-reset-recreate is bound (spec.reset Recreate).
RECREATE_ONLY = "persistentvolumeclaims"


def adr_table() -> dict[str, set[str]]:
    """Resource (as `kubectl auth can-i --list` names it) -> verbs, from the ADR's table."""
    rows: dict[str, set[str]] = {}
    for line in ADR.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        verbs = {v.strip() for v in cells[1].split(",")}
        for resource in re.findall(r"`([^`]+)`", cells[0]):
            rows[resource] = verbs
    return rows


@dataclass
class ManifestIdentity:
    """A ServiceAccount of the test's own holding exactly what manifests/operator/rbac.yaml
    grants the operator (its ClusterRoles copied under names of the test's, bound as shipped).

    The shared test bed's ClusterRole `aftershock` is re-applied by every session, from whatever
    branch it runs: a test that compares rights, or needs a right to be missing, reads a copy of
    its own instead."""

    cluster: testbed.Cluster
    namespace: str
    user: str
    kubeconfig: str
    made: list[tuple[str, str]]

    def allow_recreate(self) -> None:
        """The shipped ClusterRole aftershock-reset-recreate's copy, bound in the namespace."""
        self.cluster.kubectl(
            "create", "rolebinding", "reset-recreate", "-n", self.namespace,
            f"--clusterrole=aftershock-reset-recreate-{self.namespace}",
            f"--serviceaccount={self.namespace}:operator",
        )  # fmt: skip

    def close(self) -> None:
        for kind, name in self.made:
            self.cluster.kubectl("delete", kind, name, "--wait=false", check=False)


def manifest_identity(cluster: testbed.Cluster, namespace: str, kubeconfig_path: Path) -> ManifestIdentity:
    cluster.kubectl("create", "serviceaccount", "operator", "-n", namespace)
    docs = [d for d in yaml.safe_load_all((testbed.REPO / "manifests/operator/rbac.yaml").read_text()) if d]
    made: list[tuple[str, str]] = []
    for doc in docs:
        doc["metadata"]["name"] = f"{doc['metadata']['name']}-{namespace}"
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{namespace}"
            doc["subjects"] = [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}]
        cluster.apply(doc)
        made.append((doc["kind"].lower(), doc["metadata"]["name"]))
    kubeconfig = cluster.service_account_kubeconfig(namespace, "operator", kubeconfig_path)
    return ManifestIdentity(
        cluster, namespace, f"system:serviceaccount:{namespace}:operator", kubeconfig, made
    )
