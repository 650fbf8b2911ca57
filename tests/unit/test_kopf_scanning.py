"""kopf scans namespaces and CRDs only where it must (a namespace glob): with named namespaces
its namespace observer would stop a namespace's Campaign watch while Kubernetes' ordered
namespace deletion waits for the pods, and the Campaigns' deletion that follows would never be
seen (issue 17; the end-to-end proof is tests/e2e/test_deletion.py)."""

from __future__ import annotations

import pytest

from aftershock.handlers import kopf_scans_namespaces


@pytest.mark.parametrize(
    ("namespaces", "scans"),
    [
        ((), False),  # every namespace: one cluster-wide watch
        (("acc",), False),
        (("acc", "kube-system"), False),
        (("team-*",), True),  # a glob needs the namespace list to know what matches
        (("acc", "!acc-pr-*"), True),
        (("a,b",), True),
    ],
)
def test_named_namespaces_are_watched_for_good_without_scanning(
    namespaces: tuple[str, ...], scans: bool
) -> None:
    assert kopf_scans_namespaces(namespaces) is scans
