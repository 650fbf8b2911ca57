"""`aftershock validate` and the real API server agree on what a Campaign may be."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aftershock import validate
from tests.e2e import testbed
from tests.unit.test_validate import VALID

VARIANTS: list[tuple[str, Any]] = [
    ("spec.trials", 0),
    ("spec.trials", 100_001),
    ("spec.trials", 5),
    ("spec.intervalSeconds", -1),
    ("spec.chaos.type", "network_partition"),
    ("spec.chaos.mode", "fixed"),
    ("spec.chaos", {"type": "node_kill", "mode": "fixed", "value": 2}),
    ("spec.chaos", {"type": "node_kill", "mode": "fixed-percent", "value": 150}),
    ("spec.chaos", {"type": "node_kill", "mode": "one", "value": 2}),
    ("spec.subject.selector", {"matchLabels": {}}),
    ("spec.subject.selector", {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}),
    ("spec.subject.selector", {"matchExpressions": [{"key": "a", "operator": "Exists"}]}),
    ("spec.subject.selector", {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
    ("spec.subject.pdURL", "ftp://pd:2379"),
    ("spec.subject.kind", "Cassandra"),
    ("spec.slo", {"p95RecoverySeconds": 0}),
    ("spec.slo", {"p95RecoverySeconds": 0.5}),
    ("spec.remediator", {"kind": "DaemonSet", "name": "x"}),
    ("spec.remediator", {"kind": "Deployment", "name": "healer"}),
    ("spec.steadyState", {"stableSeconds": 4000}),
]


def _variant(path: str, value: Any, i: int) -> dict[str, Any]:
    obj = copy.deepcopy(VALID)
    obj["metadata"]["name"] = f"v{i}"
    node = obj
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return obj


@pytest.mark.parametrize(("i", "path", "value"), [(i, p, v) for i, (p, v) in enumerate(VARIANTS)])
def test_offline_verdict_matches_the_api_server(
    cluster: testbed.Cluster, namespace: str, operator_identity: str, i: int, path: str, value: Any
) -> None:
    obj = _variant(path, value, i)
    obj["metadata"]["namespace"] = namespace
    server = cluster.apply(obj, check=False)
    offline = [p for p in validate.validate_object(obj) if p.source in ("schema", "cel")]
    assert (server.returncode == 0) == (not offline), (server.stderr, offline)
