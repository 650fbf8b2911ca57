"""ADR 0004's table of the operator's rights is what the API server grants it: `kubectl auth
can-i --list` as the operator's ServiceAccount (cluster-wide install, manifests/operator/rbac.yaml)
in a fresh namespace, compared row by row, without and with the RoleBinding that allows
spec.reset Recreate there (issue 21 item 2). About 5 s."""

from __future__ import annotations

import re

from tests.e2e import testbed
from tests.e2e.rights import RECREATE_ONLY, adr_table

OPERATOR_USER = "system:serviceaccount:aftershock-system:aftershock"
#: What every authenticated user may do (system:basic-user and discovery): not the operator's.
EVERYONE = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}


def can_i(cluster: testbed.Cluster, namespace: str) -> dict[str, set[str]]:
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={OPERATOR_USER}", "-n", namespace).stdout
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
    cluster: testbed.Cluster, namespace: str, operator_identity: str
) -> None:
    table = adr_table()
    assert RECREATE_ONLY in table
    without = {r: v for r, v in table.items() if r != RECREATE_ONLY}
    assert can_i(cluster, namespace) == without
    testbed.allow_recreate(cluster, namespace)
    assert testbed.wait_for(lambda: can_i(cluster, namespace) == table, 30, interval=0.5, what="the binding")
