"""Bad input gets a clear error and loses nothing: the API server rejects what the schema can
judge, the operator marks the rest with a condition naming the field, and nothing is killed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.e2e import testbed
from tests.e2e.operator import (
    OperatorProcess,
    Subject,
    campaign,
    condition,
    pod_uids,
    wait_phase,
)

StartOperator = Callable[..., OperatorProcess]


def test_api_server_rejects_invalid_specs_with_the_field_named(
    cluster: testbed.Cluster, namespace: str, operator_identity: str
) -> None:
    fixed_without_value = campaign("bad1", namespace, None, chaos={"type": "node_kill", "mode": "fixed"})
    proc = cluster.apply(fixed_without_value, check=False)
    assert proc.returncode != 0
    assert "chaos.value" in proc.stderr

    empty_selector = campaign("bad2", namespace, None)
    empty_selector["spec"]["subject"]["selector"] = {"matchLabels": {}}
    proc = cluster.apply(empty_selector, check=False)
    assert proc.returncode != 0
    assert "selector" in proc.stderr

    unknown_chaos = campaign("bad3", namespace, None, chaos={"type": "disk_fill"})
    proc = cluster.apply(unknown_chaos, check=False)
    assert proc.returncode != 0
    assert "chaos.type" in proc.stderr

    too_many = campaign("bad4", namespace, None, trials=0)
    proc = cluster.apply(too_many, check=False)
    assert proc.returncode != 0
    assert "trials" in proc.stderr


def test_spec_is_immutable_except_suspend(
    cluster: testbed.Cluster, namespace: str, operator_identity: str
) -> None:
    # No operator runs here: this is the API server's CEL transition rule alone.
    cluster.apply(campaign("frozen", namespace, None, suspend=True))
    proc = cluster.kubectl(
        "patch",
        "campaign",
        "frozen",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"trials":7}}',
        check=False,
    )
    assert proc.returncode != 0
    assert "immutable" in proc.stderr
    cluster.kubectl(
        "patch", "campaign", "frozen", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )


def test_operator_marks_what_the_schema_cannot_judge(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    before = pod_uids(cluster, namespace)
    op = start_operator()
    cluster.apply(campaign("metadata", namespace, "http://169.254.169.254/latest"))
    cluster.apply(campaign("ip-literal", namespace, "http://10.0.0.7:2379"))
    cluster.apply(campaign("other-ns", namespace, "http://pd.kube-system.svc:2379"))
    for name in ("metadata", "ip-literal", "other-ns"):
        obj = wait_phase(cluster, namespace, name, {"Failed"}, timeout=60, op=op)
        valid = condition(obj, "SpecValid")
        assert valid is not None
        assert valid["status"] == "False"
        assert "spec.subject.pdURL" in valid["message"], valid
        assert (condition(obj, "Stalled") or {}).get("status") == "True"
    assert pod_uids(cluster, namespace) == before  # nothing killed
    assert op.alive()


def test_subject_urls_are_judged_by_the_services_they_name(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    """What the API server says of the Service a URL names (issue 21): an ExternalName Service
    is an alias for any host at all and is refused; a member name under a Service that is not
    headless has no DNS record. Refused before any connection, nothing killed."""
    before = pod_uids(cluster, namespace)
    services: list[dict[str, Any]] = [
        {"metadata": {"name": "pd-alias"}, "spec": {"type": "ExternalName", "externalName": "example.com"}},
        {
            "metadata": {"name": "etcd"},
            "spec": {"selector": {"app": "etcd"}, "ports": [{"port": 2379}]},  # a ClusterIP, not headless
        },
    ]
    for svc in services:
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                **svc,
                "metadata": {**svc["metadata"], "namespace": namespace},
            }
        )
    op = start_operator()
    cluster.apply(campaign("alias", namespace, "http://pd-alias:2379"))
    member = campaign("member", namespace, None)
    member["spec"]["subject"] = {
        "kind": "Etcd",
        "selector": {"matchLabels": {"app": "etcd"}},
        "endpoints": ["http://etcd-0.etcd:2379"],
    }
    cluster.apply(member)
    cluster.apply(campaign("missing", namespace, "http://no-such-service:2379"))
    expected = {
        "alias": f"spec.subject.pdURL: Service 'pd-alias' in namespace '{namespace}' is of type ExternalName",
        "member": "spec.subject.endpoints[0]: pod 'etcd-0' of headless Service 'etcd' in namespace "
        f"'{namespace}': Service 'etcd' is not headless",
        "missing": "spec.subject.pdURL: no Service for it: looked for Service 'no-such-service'",
    }
    for name, words in expected.items():
        obj = wait_phase(cluster, namespace, name, {"Failed"}, timeout=60, op=op)
        valid = condition(obj, "SpecValid")
        assert valid is not None
        assert (valid["status"], valid["reason"]) == ("False", "InvalidSpec")
        assert valid["message"].startswith(words), valid
    assert pod_uids(cluster, namespace) == before
    assert op.alive()


def test_selector_matching_nothing_and_missing_pd_never_kill(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    before = pod_uids(cluster, namespace)
    op = start_operator()
    nothing = campaign(
        "nothing", namespace, subject.pd_url, steadyState={"timeoutSeconds": 3, "stableSeconds": 0}
    )
    nothing["spec"]["subject"]["selector"] = {"matchLabels": {"app.kubernetes.io/component": "no-such-thing"}}
    cluster.apply(nothing)
    no_pd = campaign(
        "no-pd", namespace, "http://127.0.0.1:9", steadyState={"timeoutSeconds": 3, "stableSeconds": 0}
    )
    cluster.apply(no_pd)

    obj = wait_phase(cluster, namespace, "nothing", {"Failed"}, timeout=60, op=op)
    # The user's mistake, named, with the selector quoted: not the cluster's (InfraError).
    message = obj["status"]["message"]
    assert message.startswith(
        f"spec.subject.selector 'app.kubernetes.io/component=no-such-thing' matches no pods in "
        f"namespace '{namespace}'"
    ), message
    assert obj["status"]["verdict"] == ""
    for type_, value in (("Stalled", "True"), ("Ready", "False")):
        found = condition(obj, type_)
        assert found is not None
        assert (found["status"], found["reason"]) == (value, "SelectorMatchesNothing")
    steady = condition(obj, "SteadyState")
    assert steady is not None
    assert steady["status"] == "False"
    # What `kubectl describe campaign nothing` lists under Events.
    about_it = "involvedObject.kind=Campaign,involvedObject.name=nothing"
    events = cluster.get_json("events", "-n", namespace, "--field-selector", about_it)["items"]
    assert [(e["type"], e["reason"], e["message"]) for e in events] == [
        ("Warning", "SelectorMatchesNothing", message)
    ]

    obj = wait_phase(cluster, namespace, "no-pd", {"Failed"}, timeout=60, op=op)
    assert "PD unavailable" in obj["status"]["message"]
    assert obj["status"]["verdict"] == "InfraError"

    assert pod_uids(cluster, namespace) == before
    assert op.alive()


def test_protected_namespace_is_refused(
    cluster: testbed.Cluster, namespace: str, start_operator: StartOperator
) -> None:
    op = start_operator(namespaces=[namespace, "kube-system"])
    pods_before = cluster.get_json("pods", "-n", "kube-system")["items"]
    name = testbed.unique("protected")
    try:
        cluster.apply(campaign(name, "kube-system", None))
        obj = wait_phase(cluster, "kube-system", name, {"Failed"}, timeout=60, op=op)
        stalled = condition(obj, "Stalled")
        assert stalled is not None
        assert stalled["reason"] == "ProtectedNamespace"
        assert "protected" in obj["status"]["message"]
        pods_after = cluster.get_json("pods", "-n", "kube-system")["items"]
        assert [p["metadata"]["uid"] for p in pods_after] == [p["metadata"]["uid"] for p in pods_before]
    finally:
        cluster.kubectl(
            "patch",
            "campaign",
            name,
            "-n",
            "kube-system",
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        cluster.kubectl("delete", "campaign", name, "-n", "kube-system", "--wait=false", check=False)
    assert op.alive()
