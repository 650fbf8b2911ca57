"""The operator in-cluster, as users run it: its own image (built from the Dockerfile here), the
manifests users apply (through the local overlay hack/dev/overlay), its ledger on a
PersistentVolumeClaim bound by the cluster's provisioner and mounted by the real kubelet."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import ledgerfile, realnode, testbed
from tests.e2e.operator import campaign, free_port, get_campaign, pod_uids, tikv_statefulset, wait_phase
from tests.e2e.test_realnode import RealSubject, milestone, start_real_subject
from tests.pdstub import FAITHFUL

pytestmark = pytest.mark.realnode

OVERLAY = testbed.REPO / "hack" / "dev" / "overlay"
#: `make dev`'s objects: never touched here, so the suite runs beside a dev deployment.
DEV_NAMESPACE = "aftershock-system"


@dataclass(frozen=True)
class InClusterOperator:
    namespace: str  # where its Deployment, ServiceAccount and ledger claim live (not the watched one)
    liveness_port: int
    metrics_port: int


def _rendered(cluster: testbed.Cluster) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(cluster.kubectl("kustomize", str(OVERLAY)).stdout) if o]


def operator_manifests(
    cluster: testbed.Cluster,
    watch_namespace: str,
    operator_namespace: str | None = None,
    *,
    liveness_port: int = 8080,
    metrics_port: int = 9090,
) -> list[dict[str, Any]]:
    """hack/dev/overlay as `make dev` applies it, moved to a namespace of the test's own (the
    operator protects the namespace it runs in, so never the watched one) and scoped to the
    test's namespace (--namespace instead of --all-namespaces: the flag users pass), on ports of
    its own (the pod is on the host's network, where `make dev`'s operator may hold 8080 and
    9090). Cluster-scoped objects are applied as they are, but the Namespace and the CRD (the
    test bed has them) and the ClusterRoleBindings (`own_bindings` makes the test's)."""
    home = operator_namespace or watch_namespace
    objs: list[dict[str, Any]] = []
    for obj in _rendered(cluster):
        if obj["kind"] in ("Namespace", "CustomResourceDefinition", "ClusterRoleBinding"):
            continue
        if obj["metadata"].get("namespace") == DEV_NAMESPACE:
            obj["metadata"]["namespace"] = home
        if obj["kind"] == "Deployment":
            spec = obj["spec"]["template"]["spec"]
            (container,) = spec["containers"]
            args = [a for a in container["args"] if a != "--all-namespaces"]
            if "--namespace" in args:
                i = args.index("--namespace")
                del args[i : i + 2]
            ports = {"--liveness-port": liveness_port, "--metrics-port": metrics_port}
            for flag, port in ports.items():
                args[args.index(flag) + 1] = str(port)
            container["args"] = [*args, "--namespace", watch_namespace]
            for port_spec in container["ports"]:
                port_spec["containerPort"] = liveness_port if port_spec["name"] == "health" else metrics_port
        objs.append(obj)
    return objs


def own_bindings(cluster: testbed.Cluster, operator_namespace: str) -> list[dict[str, Any]]:
    """The overlay's ClusterRoleBindings for the ServiceAccount in `operator_namespace`, under
    names of their own (never `make dev`'s)."""
    bindings = []
    for obj in _rendered(cluster):
        if obj["kind"] != "ClusterRoleBinding":
            continue
        obj["metadata"] = {"name": f"{obj['metadata']['name']}-{operator_namespace}"}
        for subject in obj["subjects"]:
            if subject.get("namespace") == DEV_NAMESPACE:
                subject["namespace"] = operator_namespace
        bindings.append(obj)
    return bindings


def api_server_config(cluster: testbed.Cluster, namespace: str) -> dict[str, Any]:
    server = cluster.kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    ).stdout
    host, _, port = server.removeprefix("https://").rpartition(":")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "aftershock-local-apiserver", "namespace": namespace},
        "data": {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port},
    }


@pytest.fixture
def operator_namespace(cluster: testbed.Cluster, namespace: str) -> Iterator[str]:
    """A namespace for the in-cluster operator beside the test's, removed with its bindings."""
    name = f"{namespace}-op"
    cluster.kubectl("create", "namespace", name)
    yield name
    for binding in own_bindings(cluster, name):
        cluster.kubectl("delete", "clusterrolebinding", binding["metadata"]["name"], check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def in_cluster_operator(
    cluster: testbed.Cluster, namespace: str, operator_namespace: str, real_node: None, operator_identity: str
) -> Iterator[InClusterOperator]:
    """The operator Deployment on the real node, in a namespace of its own, watching the test's."""
    op = InClusterOperator(operator_namespace, free_port(), free_port())
    objs = operator_manifests(
        cluster, namespace, operator_namespace, liveness_port=op.liveness_port, metrics_port=op.metrics_port
    )
    cluster.apply(api_server_config(cluster, operator_namespace))
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-",
        input_=yaml.safe_dump_all([*objs, *own_bindings(cluster, operator_namespace)]),
    )  # fmt: skip
    try:
        cluster.kubectl(
            "rollout", "status", "deployment/aftershock", "-n", operator_namespace, "--timeout=180s"
        )
        yield op
    finally:
        cluster.kubectl(
            "delete", "deployment", "aftershock", "-n", operator_namespace, "--wait=true", check=False
        )


def operator_pod(cluster: testbed.Cluster, namespace: str) -> dict[str, Any]:
    pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = live[0]
    return pod


def ledger_on_host(cluster: testbed.Cluster, namespace: str) -> Path:
    """The ledger file on the PersistentVolume (a HostPath volume of the test bed)."""
    volume = cluster.kubectl(
        "get", "pvc", "aftershock-ledger", "-n", namespace, "-o", "jsonpath={.spec.volumeName}"
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
    cluster: testbed.Cluster,
    namespace: str,
    faithful_subject: RealSubject,
    in_cluster_operator: InClusterOperator,
) -> None:
    home = in_cluster_operator.namespace
    first = operator_pod(cluster, home)
    claim = first["spec"]["volumes"][0]
    assert claim["persistentVolumeClaim"]["claimName"] == "aftershock-ledger"
    pvc = cluster.get_json("pvc", "aftershock-ledger", "-n", home)
    assert pvc["status"]["phase"] == "Bound"
    cluster.apply(
        campaign("inpod", namespace, faithful_subject.pd_url, trials=3,
                 steadyState={"timeoutSeconds": 120, "stableSeconds": 0.5},
                 recovery={"timeoutSeconds": 120, "settleSeconds": 2})
    )  # fmt: skip
    db = ledger_on_host(cluster, home)
    uid = get_campaign(cluster, namespace, "inpod")["metadata"]["uid"]
    # A trial mid-recovery: with 10 s heartbeats it stays there for seconds.
    flying = testbed.wait_for(
        lambda: ledgerfile.in_flight(db, uid), 180, interval=0.1, what="a trial mid-recovery"
    )
    cluster.kubectl("delete", "pod", first["metadata"]["name"], "-n", home, "--wait=true")
    obj = wait_phase(cluster, namespace, "inpod", {"Succeeded", "Failed"}, timeout=600)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    second = operator_pod(cluster, home)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert second["spec"]["nodeName"] == realnode.NODE
    # The interrupted attempt is recorded; exactly N completed trials, none twice.
    attempts = {a.id: a for a in ledgerfile.attempts(db, uid)}
    assert attempts[flying[0].id].outcome == "interrupted", attempts[flying[0].id]
    completed = [a.trial_index for a in attempts.values() if a.outcome == "recovered"]
    assert sorted(completed) == [0, 1, 2]
    # `aftershock report` inside the new pod reads the same ledger from the volume.
    out = cluster.kubectl(
        "exec", "-n", home, second["metadata"]["name"], "--",
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
    # `aftershock backup` inside the pod, whose image has no sqlite3 and whose root filesystem
    # is read-only: the copy lands on the ledger's volume and, read on the host, holds every
    # attempt the ledger does. Onto the root filesystem it is refused, and says so.
    (container,) = second["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    pod_name = second["metadata"]["name"]
    refused = cluster.kubectl(
        "exec", "-n", home, pod_name, "--", "aftershock", "backup", "/ledger-copy.db", check=False
    )
    assert refused.returncode != 0, refused.stdout
    assert refused.stderr.strip(), "refused without saying why"
    cluster.kubectl("exec", "-n", home, pod_name, "--", "aftershock", "backup", "/var/lib/aftershock/copy.db")
    copy = db.parent / "copy.db"
    assert {(a.id, a.outcome) for a in ledgerfile.attempts(copy, uid)} == {
        (a.id, a.outcome) for a in ledgerfile.attempts(db, uid)
    }


def test_operator_pod_under_the_restricted_pod_security_standard_is_ready_and_acts(
    cluster: testbed.Cluster,
    namespace: str,
    operator_namespace: str,
    real_node: None,
    operator_identity: str,
) -> None:
    """manifests/operator's pod, every field the standard looks at unchanged, admitted where
    `restricted` is enforced, Ready on the real node, and killing a pod for a Campaign.

    What changes, none of it judged by the standard: the namespace (one of the test's, beside
    the one its Campaign is in: the operator protects its own), the node (the real one),
    --namespace instead of --all-namespaces, the image never pulled, and the API server's
    address (127.0.0.1 inside the pod, forwarded to the host's loopback by the test, as the
    `kubernetes` Service's route would elsewhere). The ledger's HostPath volume is handed to
    uid 65532 from the host, as a provisioner that honours fsGroup would."""
    home = operator_namespace
    cluster.kubectl(
        "label", "namespace", home, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    manifests = testbed.REPO / "manifests" / "operator"
    deployment = yaml.safe_load((manifests / "deployment.yaml").read_text())
    pvc = yaml.safe_load((manifests / "pvc.yaml").read_text())
    sa = yaml.safe_load((manifests / "serviceaccount.yaml").read_text())
    for obj in (deployment, pvc, sa):
        obj["metadata"]["namespace"] = home
    spec = deployment["spec"]["template"]["spec"]
    security = json.dumps([spec.get("securityContext"), [c["securityContext"] for c in spec["containers"]]])
    deployment["spec"]["template"]["spec"] = spec = realnode.on_real_node(spec)
    (container,) = spec["containers"]
    container["imagePullPolicy"] = "Never"
    container["args"] = [a for a in container["args"] if a != "--all-namespaces"] + ["--namespace", namespace]
    # The kubelet probes a pod's IP from the host, and the host has no address on the test
    # bed's bridge (the network rule): no HTTP probe of a bridge pod can answer here. The
    # standard does not judge probes; the operator acting below is the proof it runs.
    for http_probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        container.pop(http_probe, None)
    api_port = int(api_server_config(cluster, home)["data"]["KUBERNETES_SERVICE_PORT"])
    container["env"] = [
        *container.get("env", []),
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(api_port)},
    ]
    assert "hostNetwork" not in spec
    # Nothing the standard judges was changed on the way.
    assert (
        json.dumps([spec.get("securityContext"), [c["securityContext"] for c in spec["containers"]]])
        == security
    )
    cluster.apply(yaml.safe_dump_all([sa, pvc, *own_bindings(cluster, home)]))
    forwarder: realnode.LoopbackForwarder | None = None
    try:
        cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Bound", "pvc/aftershock-ledger", "-n", home)
        ledger_dir = ledger_on_host(cluster, home).parent
        os.chown(ledger_dir, 65532, 65532)
        cluster.apply(deployment)

        def sandbox() -> tuple[dict[str, Any], Path] | None:
            pods = cluster.get_json("pods", "-n", home, "-l", "app.kubernetes.io/component=operator")
            for pod in pods["items"]:
                netns = realnode.pod_netns(pod["metadata"]["uid"])
                if netns is not None:
                    return pod, netns
            return None

        pod, netns = testbed.wait_for(sandbox, 120, what="the operator pod's sandbox on the real node")
        forwarder = realnode.LoopbackForwarder(netns, api_port, api_port).start()
        cluster.kubectl("rollout", "status", "deployment/aftershock", "-n", home, "--timeout=180s")
        pod = operator_pod(cluster, home)
        assert pod["spec"]["nodeName"] == realnode.NODE
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", pod["status"]
        events = cluster.kubectl("get", "events", "-n", home, "-o", "json").stdout
        assert "violates PodSecurity" not in events

        # It acts: a Campaign's kill, seen by the API server (the pod's UID changes).
        cluster.apply(tikv_statefulset(), namespace=namespace)
        cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", namespace, "--timeout=120s")
        before = pod_uids(cluster, namespace)
        tikv_before = {n: u for n, u in before.items() if n.startswith("tikv-")}
        cluster.apply(campaign("restricted", namespace, None, trials=1))
        obj = wait_phase(cluster, namespace, "restricted", {"Succeeded", "Failed"}, timeout=180)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        assert obj["status"]["trials"]["completed"] == 1
        after = pod_uids(cluster, namespace)
        replaced = [n for n, u in tikv_before.items() if after.get(n) != u]
        assert len(replaced) == 1, (tikv_before, after)
        assert forwarder.connections > 0  # the operator reached the API server through the pod's loopback
    finally:
        if forwarder is not None:
            forwarder.stop()
        cluster.kubectl("delete", "deployment", "aftershock", "-n", home, "--wait=true", check=False)

    # The enforcement is real: the local overlay's pod (hostNetwork) is refused here.
    dev_spec = next(o for o in operator_manifests(cluster, namespace, home) if o["kind"] == "Deployment")
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "overlay-probe", "namespace": home},
        "spec": dev_spec["spec"]["template"]["spec"],
    }
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input_=yaml.safe_dump(probe), check=False
    )
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
    assert "hostNetwork" in refused.stderr
