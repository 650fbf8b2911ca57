"""Every example Campaign under manifests/examples/ (one per chaos kind and more), as written,
through the real API server's validation: ``kubectl create --dry-run=server`` against this
branch's CRD, so a field or an enum value the CRD does not take fails here. Each is created in
the test's namespace (the examples name their own, ``tikv``, or none). A Campaign whose
chaos.type is not a kind of the registry is refused the same way: the check can fail. ~3 s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aftershock.chaos import registry
from tests.e2e import testbed
from tests.e2e.test_etcd_realnode import CRD

EXAMPLES = testbed.REPO / "manifests" / "examples"


def campaigns() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Campaign":
                found.append((path, doc))
    return found


def _dry_run(cluster: testbed.Cluster, namespace: str, body: dict[str, Any]) -> tuple[int, str]:
    body = dict(body, metadata=dict(body["metadata"], namespace=namespace))
    proc = cluster.kubectl(
        "create", "--dry-run=server", "-o", "name", "-f", "-", input_=yaml.safe_dump(body), check=False
    )
    return proc.returncode, proc.stderr + proc.stdout


def test_every_example_campaign_passes_the_api_servers_validation(
    cluster: testbed.Cluster, namespace: str
) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/campaigns.aftershock.dev")
    examples = campaigns()
    kinds = {doc["spec"]["chaos"]["type"] for _, doc in examples}
    assert set(registry.KINDS) <= kinds, f"no example Campaign for {sorted(set(registry.KINDS) - kinds)}"
    refused = {}
    for path, doc in examples:
        code, out = _dry_run(cluster, namespace, doc)
        if code != 0:
            refused[str(path.relative_to(testbed.REPO))] = out
    assert not refused, refused
    # The same validation refuses a chaos kind the registry does not have.
    path, doc = examples[0]
    bogus = dict(doc, spec=dict(doc["spec"], chaos=dict(doc["spec"]["chaos"], type="disk_fill")))
    code, out = _dry_run(cluster, namespace, bogus)
    assert code != 0, f"{path.name} with chaos.type disk_fill was accepted"
    assert "chaos.type" in out, out
