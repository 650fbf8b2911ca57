"""The etcd example (manifests/examples/etcd/) with its own manifests, as written, against the real
API server and a real operator process: the StatefulSet and its headless Service applied to the
test's namespace, the Campaign naming the members as the cluster's DNS does (`etcd-0.etcd`).
The operator reads the Service, accepts the names and qualifies them to the Campaign's namespace
(`etcd-0.etcd.<ns>.svc`); the same Campaign under an ExternalName Service is refused.

What it does not do: connect. The pods here run on kwok nodes, whose pod IPs are fake, and this
operator is a host process (a cluster name looked up on this host would go to the host's
resolver, off the machine); so the Campaign is created suspended (the one field added to the
manifest), which makes the operator judge and qualify the names, publish them, and wait without
a single connection. tests/e2e/test_etcd_example_realnode.py runs the example on the real node
through the cluster DNS, with the operator in-cluster.
About 20 s."""

from __future__ import annotations

from collections.abc import Callable

import yaml

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, condition, pod_uids, wait_phase

EXAMPLE = testbed.REPO / "manifests" / "examples" / "etcd"

StartOperator = Callable[..., OperatorProcess]


def test_the_etcd_example_s_member_names_are_taken_as_written_and_qualified(
    cluster: testbed.Cluster, namespace: str, start_operator: StartOperator
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE / "etcd.yaml"))
    (example,) = [d for d in yaml.safe_load_all((EXAMPLE / "campaign.yaml").read_text()) if d]
    example["spec"]["suspend"] = True
    op = start_operator()
    cluster.apply(example, namespace=namespace)
    name = example["metadata"]["name"]
    obj = wait_phase(cluster, namespace, name, {"Suspended", "Failed"}, timeout=60, op=op)
    assert obj["status"]["phase"] == "Suspended", obj["status"]
    api = condition(obj, "SubjectAPIConfigured")
    assert api is not None
    assert api["status"] == "True", api
    for member in ("etcd-0", "etcd-1", "etcd-2"):
        assert f"http://{member}.etcd.{namespace}.svc:2379" in api["message"], api["message"]

    # The same Campaign, its members' Service now an alias for any host: refused, by the field.
    before = pod_uids(cluster, namespace)
    cluster.kubectl("delete", "service", "etcd", "-n", namespace)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "etcd", "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "etcd.example.com"},
        }
    )
    example["metadata"]["name"] = "aliased"
    example["spec"]["suspend"] = False
    cluster.apply(example, namespace=namespace)
    obj = wait_phase(cluster, namespace, "aliased", {"Failed"}, timeout=60, op=op)
    valid = condition(obj, "SpecValid")
    assert valid is not None
    assert valid["message"].startswith(
        f"spec.subject.endpoints[0]: Service 'etcd' in namespace '{namespace}' is of type ExternalName"
    ), valid
    assert pod_uids(cluster, namespace) == before
    assert op.alive()
