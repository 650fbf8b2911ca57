"""ADR 0004's table of the operator's rights is what the API server grants: `kubectl auth can-i
--list` as a ServiceAccount holding exactly manifests/operator/rbac.yaml's cluster-wide grants
(copied under the test's names: see `rights.ManifestIdentity`), compared row by row, in a
namespace without and with the RoleBinding that allows spec.reset Recreate there (issue 21 item
2). About 5 s."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import rights, testbed

#: What every authenticated user may do (system:basic-user and discovery): not the operator's.
EVERYONE = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}


@pytest.fixture
def identity(cluster: testbed.Cluster, namespace: str, tmp_path: Path) -> Iterator[rights.ManifestIdentity]:
    made = rights.manifest_identity(cluster, namespace, tmp_path / "operator.kubeconfig")
    yield made
    made.close()


def can_i(cluster: testbed.Cluster, user: str, namespace: str) -> dict[str, set[str]]:
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout
    granted: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[\]\s+\[(.*?)\]\s+\[(.*)\]\s*$", line)
        if match is None:  # non-resource URLs
            continue
        resource, names, verbs = match.groups()
        assert not names, f"{resource}: the operator's rights are never per name: {line}"
        if resource not in EVERYONE:
            granted.setdefault(resource, set()).update(verbs.split())
    return granted


def test_the_adr_table_is_what_the_api_server_grants(
    cluster: testbed.Cluster, namespace: str, identity: rights.ManifestIdentity
) -> None:
    table = rights.adr_table()
    assert rights.RECREATE_ONLY in table
    without = {r: v for r, v in table.items() if r != rights.RECREATE_ONLY}
    testbed.wait_for(lambda: can_i(cluster, identity.user, namespace) == without, 30, interval=0.5,
                     what="the copied ClusterRoles in effect")  # fmt: skip
    assert can_i(cluster, identity.user, namespace) == without
    identity.allow_recreate()
    testbed.wait_for(
        lambda: can_i(cluster, identity.user, namespace) == table, 30, interval=0.5, what="the binding"
    )
