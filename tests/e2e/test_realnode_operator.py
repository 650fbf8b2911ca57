"""The operator in-cluster, as users run it: its own image (built from the Dockerfile here), the
manifests users apply (through the local overlay hack/dev/overlay), its ledger on a
PersistentVolumeClaim bound by the cluster's provisioner and mounted by the real kubelet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import ledgerfile, realnode, testbed
from tests.e2e.operator import campaign, get_campaign, wait_phase
from tests.e2e.test_realnode import RealSubject, milestone, start_real_subject
from tests.pdstub import FAITHFUL

pytestmark = pytest.mark.realnode

OPERATOR_NS = "aftershock-system"
OVERLAY = testbed.REPO / "hack" / "dev" / "overlay"


def operator_manifests(cluster: testbed.Cluster, watch_namespace: str) -> list[dict[str, Any]]:
    """hack/dev/overlay as `make dev` applies it, scoped to the test's namespace (--namespace
    instead of --all-namespaces: the same flag users pass)."""
    rendered = cluster.kubectl("kustomize", str(OVERLAY)).stdout
    objs = [o for o in yaml.safe_load_all(rendered) if o]
    for obj in objs:
        if obj["kind"] == "PersistentVolumeClaim":
            # A claim's access mode cannot change in place: one made before the manifests asked
            # for ReadWriteOncePod (ADR 0014) keeps its own, as `make dev` keeps it.
            live = cluster.kubectl(
                "get", "pvc", obj["metadata"]["name"], "-n", OPERATOR_NS, "-o", "json", check=False
            )
            if live.returncode == 0:
                obj["spec"]["accessModes"] = json.loads(live.stdout)["spec"]["accessModes"]
        if obj["kind"] == "Deployment":
            (container,) = obj["spec"]["template"]["spec"]["containers"]
            container["args"] = [a for a in container["args"] if a != "--all-namespaces"] + [
                "--namespace",
                watch_namespace,
            ]
    return objs


def api_server_config(cluster: testbed.Cluster) -> dict[str, Any]:
    server = cluster.kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    ).stdout
    host, _, port = server.removeprefix("https://").rpartition(":")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "aftershock-local-apiserver", "namespace": OPERATOR_NS},
        "data": {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port},
    }


@pytest.fixture
def in_cluster_operator(cluster: testbed.Cluster, namespace: str, real_node: None) -> Iterator[str]:
    """The operator Deployment on the real node, watching the test's namespace."""
    objs = operator_manifests(cluster, namespace)
    namespaces = [o for o in objs if o["kind"] == "Namespace"]
    cluster.apply(yaml.safe_dump_all(namespaces))
    cluster.apply(api_server_config(cluster))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input_=yaml.safe_dump_all(objs))
    cluster.kubectl("rollout", "status", "deployment/aftershock", "-n", OPERATOR_NS, "--timeout=180s")
    yield OPERATOR_NS
    cluster.kubectl("delete", "deployment", "aftershock", "-n", OPERATOR_NS, "--wait=true", check=False)


def operator_pod(cluster: testbed.Cluster) -> dict[str, Any]:
    pods = cluster.get_json("pods", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/component=operator")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in pods]
    return live[0]


def ledger_on_host(cluster: testbed.Cluster) -> Path:
    """The ledger file on the PersistentVolume (a HostPath volume of the test bed)."""
    volume = cluster.kubectl(
        "get", "pvc", "aftershock-ledger", "-n", OPERATOR_NS, "-o", "jsonpath={.spec.volumeName}"
    ).stdout
    path = cluster.kubectl("get", "pv", volume, "-o", "jsonpath={.spec.hostPath.path}").stdout
    return Path(path) / "ledger.db"


@pytest.fixture
def faithful_subject(cluster: testbed.Cluster, namespace: str, real_node: None) -> Iterator[RealSubject]:
    """PD's real intervals: 10 s store heartbeats, the first one 10 s after a store starts."""
    s = start_real_subject(cluster, namespace, FAITHFUL)
    yield s
    s.close()


def test_operator_pod_deleted_mid_trial_resumes_on_its_volume_with_faithful_pd(
    cluster: testbed.Cluster, namespace: str, faithful_subject: RealSubject, in_cluster_operator: str
) -> None:
    first = operator_pod(cluster)
    claim = first["spec"]["volumes"][0]
    assert claim["persistentVolumeClaim"]["claimName"] == "aftershock-ledger"
    pvc = cluster.get_json("pvc", "aftershock-ledger", "-n", OPERATOR_NS)
    assert pvc["status"]["phase"] == "Bound"
    cluster.apply(
        campaign("inpod", namespace, faithful_subject.pd_url, trials=3,
                 steadyState={"timeoutSeconds": 120, "stableSeconds": 0.5},
                 recovery={"timeoutSeconds": 120, "settleSeconds": 2})
    )  # fmt: skip
    db = ledger_on_host(cluster)
    uid = get_campaign(cluster, namespace, "inpod")["metadata"]["uid"]
    # A trial mid-recovery: with 10 s heartbeats it stays there for seconds.
    flying = testbed.wait_for(
        lambda: ledgerfile.in_flight(db, uid), 180, interval=0.1, what="a trial mid-recovery"
    )
    cluster.kubectl("delete", "pod", first["metadata"]["name"], "-n", OPERATOR_NS, "--wait=true")
    obj = wait_phase(cluster, namespace, "inpod", {"Succeeded", "Failed"}, timeout=600)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    second = operator_pod(cluster)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert second["spec"]["nodeName"] == realnode.NODE
    # The interrupted attempt is recorded; exactly N completed trials, none twice.
    attempts = {a.id: a for a in ledgerfile.attempts(db, uid)}
    assert attempts[flying[0].id].outcome == "interrupted", attempts[flying[0].id]
    completed = [a.trial_index for a in attempts.values() if a.outcome == "recovered"]
    assert sorted(completed) == [0, 1, 2]
    # `aftershock report` inside the new pod reads the same ledger from the volume.
    out = cluster.kubectl(
        "exec", "-n", OPERATOR_NS, second["metadata"]["name"], "--",
        "aftershock", "report", "inpod", "-n", namespace, "--format", "json",
    ).stdout  # fmt: skip
    rep = json.loads(out)
    recovered = [t for t in rep["trials"] if t["outcome"] == "recovered"]
    assert sorted(t["index"] for t in recovered) == [0, 1, 2]
    assert any(t["outcome"] == "interrupted" for t in rep["trials"])
    # On PD's real intervals a restarted store counts only from its first heartbeat, which
    # TiKV sends one full interval after it starts: recovery includes that wait.
    for trial in recovered:
        ready = milestone(trial, "replacement_ready")
        store_up = milestone(trial, "store_up")
        assert store_up - ready >= FAITHFUL.heartbeat_interval * 0.5, trial["timings"]
    status = get_campaign(cluster, namespace, "inpod")["status"]
    assert status["trials"]["completed"] == 3


def test_operator_pod_passes_the_restricted_pod_security_standard_when_enforced(
    cluster: testbed.Cluster, namespace: str, real_node: None
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    manifests = testbed.REPO / "manifests" / "operator"
    deployment = yaml.safe_load((manifests / "deployment.yaml").read_text())
    deployment["metadata"]["namespace"] = namespace
    spec = deployment["spec"]["template"]["spec"]
    # Placed on the real node (scheduling only: no field the standard looks at changes).
    deployment["spec"]["template"]["spec"] = realnode.on_real_node(spec)
    pvc = yaml.safe_load((manifests / "pvc.yaml").read_text())
    pvc["metadata"]["namespace"] = namespace
    sa = yaml.safe_load((manifests / "serviceaccount.yaml").read_text())
    sa["metadata"]["namespace"] = namespace
    cluster.apply(yaml.safe_dump_all([sa, pvc, deployment]))

    def started() -> dict[str, Any] | None:
        pods = cluster.get_json("pods", "-n", namespace)["items"]
        for pod in pods:
            for st in (pod.get("status") or {}).get("containerStatuses") or []:
                state = {**(st.get("state") or {}), **(st.get("lastState") or {})}
                if "running" in state or "terminated" in state:
                    return dict(pod)
        return None

    pod = testbed.wait_for(started, 180, what="the operator pod admitted and its container started")
    assert pod["spec"]["nodeName"] == realnode.NODE
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "violates PodSecurity" not in events
    # The enforcement is real: the local overlay's pod (hostNetwork) is refused here.
    dev_spec = next(o for o in operator_manifests(cluster, namespace) if o["kind"] == "Deployment")
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "overlay-probe", "namespace": namespace},
        "spec": dev_spec["spec"]["template"]["spec"],
    }
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input_=yaml.safe_dump(probe), check=False
    )
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
    assert "hostNetwork" in refused.stderr
