"""The remediator's actions read from the API without its help (issue 20 item 3): a remediator
that emits no Event at all, running with its own ServiceAccount and narrow RBAC, taints the node
its lost member ran on (a kwok node this test makes, that only its subject tolerates) and labels
the member's replacement. The operator records both writes from the API server's audit webhook
(identity, verb, object, change, µs times) and the label from managedFields (its field
manager), with no `spec.remediator.signals`.

Independent witnesses: the API server's audit log file (its other backend: the same audit events,
written by the API server, not delivered to the operator) and the test's own pod watch, which saw
each label appear. The operator binds the test bed's fixed audit webhook port: the tests that do
are one xdist group (the audit webhook's). About 40 s on the test bed.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from kubernetes import client, watch

from tests.e2e import testbed
from tests.e2e.operator import (
    E2E_TIMING,
    TIKV_LABELS,
    OperatorProcess,
    Subject,
    campaign,
    tikv_statefulset,
    wait_phase,
)
from tests.pdstub import PdStandIn
from tests.pdstub.kube_source import KubePodSource

StartOperator = Callable[..., OperatorProcess]

#: The operator binds the test bed's audit webhook port: one xdist group with every other test
#: that does (tests/e2e/conftest.py: the audit webhook group).
pytestmark = [pytest.mark.audit_webhook]

SA = "healer"
FIELD_MANAGER = "aftershock-e2e-healer"
HEALED = "aftershock.dev/e2e-healed"
#: The taint the remediator puts on its lost member's node (PreferNoSchedule: the replacement,
#: pinned to that node, still goes there).
REMEDIATED = "aftershock.dev/e2e-remediated"
#: The taint that keeps every other test's pods off the node this test makes.
OWNER = "aftershock.dev/e2e-owner"
SELECTOR = ",".join(f"{k}={v}" for k, v in TIKV_LABELS.items())
TRIALS = 2


def _ts(raw: str) -> float:
    return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()


class PodWatchThread:
    """A thread that watches the namespace's subject pods and hands every event to `_on`."""

    name = "pod-watch"

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.v1 = client.CoreV1Api(api)
        self.namespace = namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(
                    self.v1.list_namespaced_pod, self.namespace, label_selector=SELECTOR, timeout_seconds=5
                ):
                    self._on(ev["type"], ev["object"])
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.2)
            finally:
                w.stop()

    def _on(self, kind: str, pod: Any) -> None:
        raise NotImplementedError


class LabellingRemediator(PodWatchThread):
    """Test code, plainly: a thread with the healer ServiceAccount's token that, when a subject
    pod is deleted, labels the pod that replaces it (same name, new UID). No Events."""

    name = "labelling-remediator"

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(api, namespace)
        self.lost: set[str] = set()
        self.labelled: list[tuple[str, str, float, float]] = []  # (pod, uid, before, after)
        self.tainted: list[tuple[str, str, float, float]] = []  # (node, pod, before, after)

    def _on(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        if kind == "DELETED" or pod.metadata.deletion_timestamp is not None:
            if name not in self.lost and pod.spec.node_name:
                self.lost.add(name)
                self._taint(pod.spec.node_name, name)
            return
        if name in self.lost and HEALED not in (pod.metadata.labels or {}):
            self.lost.discard(name)
            before = time.time()
            self.v1.patch_namespaced_pod(
                name,
                self.namespace,
                {"metadata": {"labels": {HEALED: pod.metadata.uid[:8]}}},
                field_manager=FIELD_MANAGER,
            )
            self.labelled.append((name, pod.metadata.uid, before, time.time()))

    def _taint(self, node: str, pod: str) -> None:
        """Mark the node with the member it lost (taints are a list: read, then replace it)."""
        before = time.time()
        taints = [
            {"key": t.key, "value": t.value, "effect": t.effect}
            for t in self.v1.read_node(node).spec.taints or []
            if t.key != REMEDIATED
        ]
        taints.append({"key": REMEDIATED, "value": pod, "effect": "PreferNoSchedule"})
        self.v1.patch_node(node, {"spec": {"taints": taints}}, field_manager=FIELD_MANAGER)
        self.tainted.append((node, pod, before, time.time()))


class LabelWatch(PodWatchThread):
    """The test's own witness: when a watch saw each subject pod get the healed label."""

    name = "label-watch"

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(api, namespace)
        self.seen: dict[str, float] = {}  # uid -> when the label was first seen

    def _on(self, kind: str, pod: Any) -> None:
        if HEALED in (pod.metadata.labels or {}):
            self.seen.setdefault(pod.metadata.uid, time.time())


def _healer(namespace: str, node: str) -> list[dict[str, Any]]:
    labels = {"app": "healer"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}},
        {
            # The test's own node only: get and patch it, nothing else of any node.
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": node},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["nodes"],
                    "resourceNames": [node],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": node},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": node},
            "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": namespace}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": SA},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": SA},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA},
            "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": namespace}],
        },
        {
            # The workload spec.remediator names (a kwok pod): its pod template's ServiceAccount is
            # the identity the operator reads. The process acting with that identity is the
            # thread above.
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": SA},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": SA,
                        "containers": [{"name": "agent", "image": "example.invalid/healer:1"}],
                        "nodeSelector": {"kubernetes.io/hostname": node},
                        "tolerations": [{"key": OWNER, "operator": "Equal", "value": namespace}],
                    },
                },
            },
        },
    ]


@pytest.fixture
def audit_webhook() -> list[str]:
    """The operator's arguments for the test bed's audit webhook (its port, token, certificate)."""
    port, token, cert, key = testbed.run(
        [str(testbed.TESTBED / "cluster.sh"), "audit-webhook"]
    ).stdout.split()
    return [
        "--audit-receiver-port", port,
        "--audit-receiver-host", "127.0.0.1",
        "--audit-receiver-token-file", token,
        "--audit-receiver-tls-cert-file", cert,
        "--audit-receiver-tls-key-file", key,
    ]  # fmt: skip


def _node(name: str, namespace: str) -> dict[str, Any]:
    """A kwok node of this test's own (kwok's controller keeps it Ready), tainted so that only
    this test's pods go there."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {"taints": [{"key": OWNER, "value": namespace, "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
        },
    }


@pytest.fixture
def node(cluster: testbed.Cluster, namespace: str) -> Iterator[str]:
    name = f"{namespace}-node"
    cluster.apply(_node(name, namespace))
    cluster.kubectl("wait", "--for=condition=Ready", f"node/{name}", "--timeout=60s")
    yield name
    for kind in ("clusterrolebinding", "clusterrole", "node"):
        cluster.kubectl("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def pinned_subject(cluster: testbed.Cluster, namespace: str, node: str) -> Iterator[Subject]:
    """The TiKV stand-in with every member on the test's node (`start_subject`, pinned)."""
    sts = tikv_statefulset()
    pod_spec = sts["spec"]["template"]["spec"]
    pod_spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    pod_spec["tolerations"] = [{"key": OWNER, "operator": "Equal", "value": namespace}]
    cluster.apply(sts, namespace=namespace)
    cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", namespace, "--timeout=120s")
    source = KubePodSource(cluster.api_client(), namespace, SELECTOR).start()
    assert source.wait_synced(30)
    pd = PdStandIn(source, timing=E2E_TIMING, headless_service="tikv-peer", namespace=namespace)
    pd.start()
    subject = Subject(namespace, pd, source)
    yield subject
    subject.close()


@pytest.fixture
def remediator(
    cluster: testbed.Cluster, namespace: str, node: str, tmp_path: Path
) -> Iterator[LabellingRemediator]:
    for obj in _healer(namespace, node):
        cluster.apply(obj, namespace=namespace)
    kubeconfig = cluster.service_account_kubeconfig(namespace, SA, tmp_path / "healer.kubeconfig")
    healer = LabellingRemediator(cluster.api_client(kubeconfig), namespace).start()
    yield healer
    healer.stop()


def _audit_log(cluster: testbed.Cluster) -> Path:
    return Path(testbed.run([str(testbed.TESTBED / "cluster.sh"), "audit-log"]).stdout.strip())


def test_a_remediator_that_says_nothing_has_its_writes_recorded_from_audit_and_managed_fields(
    cluster: testbed.Cluster,
    namespace: str,
    pinned_subject: Subject,
    node: str,
    remediator: LabellingRemediator,
    audit_webhook: list[str],
    start_operator: StartOperator,
) -> None:
    witness = LabelWatch(cluster.api_client(), namespace).start()
    audit_log = _audit_log(cluster)
    log_start = audit_log.stat().st_size
    op = start_operator(*audit_webhook)
    try:
        cluster.apply(
            campaign(
                "actions",
                namespace,
                pinned_subject.pd_url,
                trials=TRIALS,
                recovery={"timeoutSeconds": 60, "settleSeconds": 2},
                # No signals, no serviceAccounts: the Deployment's own ServiceAccount is one identity.
                remediator={
                    "kind": "Deployment",
                    "name": SA,
                    "identities": {"fieldManagers": [FIELD_MANAGER]},
                },
            )
        )
        obj = wait_phase(cluster, namespace, "actions", {"Succeeded", "Failed"}, timeout=180, op=op)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        # The last trial's label may be written a moment before the Campaign ends: the witness's
        # own watch is given the time to see every label the remediator wrote (its times are
        # what is compared below), not stopped the moment the Campaign ends.
        testbed.wait_for(
            lambda: {r[1] for r in list(remediator.labelled)} <= set(witness.seen.copy()),
            30,
            what="the test's own watch to see every label the remediator wrote",
        )
    finally:
        witness.stop()

    proc = testbed.run(
        [str(testbed.REPO / ".venv" / "bin" / "aftershock"), "report", "actions", "-n", namespace,
         "--format", "json", "--db", str(op.db)]
    )  # fmt: skip
    trials = [t for t in json.loads(proc.stdout)["trials"] if t["outcome"] == "recovered"]
    assert len(trials) == TRIALS

    user = f"system:serviceaccount:{namespace}:{SA}"
    # The audit log file: the same API server's record of every write by the healer's identity.
    logged = {}
    with audit_log.open("rb") as f:
        f.seek(log_start)
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            ref = r.get("objectRef") or {}
            if (
                r.get("stage") == "ResponseComplete"
                and (r.get("user") or {}).get("username") == user
                and r.get("verb") == "patch"
                and ref.get("namespace") in (namespace, None)
            ):
                logged[r["auditID"]] = (ref["name"], _ts(r["stageTimestamp"]), r.get("requestObject"))
    assert len(logged) >= 2 * TRIALS, logged
    delays: list[float] = []
    delivered: list[float] = []
    for t in trials:
        actions = t["remediatorActions"]
        print(json.dumps(actions))
        audited = [a for a in actions if a["source"] == "audit"]
        managed = [a for a in actions if a["source"] == "managedFields"]
        assert [a["reason"] for a in actions if a["source"] == "event"] == []  # it said nothing
        victim = t["victims"][0]["name"]
        assert t["victims"][0]["node"] == node
        # Per trial: the healer tainted the node the victim ran on, then labelled its replacement.
        assert [(a["verb"], a["object"]) for a in audited] == [
            ("patch", f"nodes {node}"),
            ("patch", f"pods {namespace}/{victim}"),
        ], actions
        taint, a = audited
        assert taint["identity"] == user
        assert REMEDIATED in taint["change"]
        assert victim in taint["change"]
        tainted = [
            r for r in remediator.tainted if r[1] == victim and r[2] - 0.05 <= taint["wall"] <= r[3] + 0.05
        ]
        assert tainted, (taint, remediator.tainted)
        assert (a["identity"], a["verb"]) == (user, "patch")
        assert HEALED in a["change"]
        assert "HTTP 200" in a["change"]
        # The audit log file holds the same writes, at the same µs.
        for name, action in ((node, taint), (victim, a)):
            match = [v for v in logged.values() if v[0] == name and abs(v[1] - action["wall"]) < 1e-6]
            assert match, (action, logged)
        # The remediator's own clock brackets it, and the test's watch saw the label after it.
        done = [r for r in remediator.labelled if r[0] == victim and r[2] - 0.05 <= a["wall"] <= r[3] + 0.05]
        assert done, (a, remediator.labelled)
        uid = done[0][1]
        assert uid in witness.seen
        assert a["wall"] <= witness.seen[uid] + 0.05, (a["wall"], witness.seen[uid])
        delays.append(witness.seen[uid] - a["wall"])
        delivered.append(float(re.search(r"delivered ([0-9.]+)s after", a["message"]).group(1)))  # type: ignore[union-attr]
        assert 0 < a["offset"] <= t["recoverySeconds"] + 2 + 5
        # managedFields: the operator's pod watch saw the healer's field manager take the label
        # (it watches no Node: the taint is the audit webhook's only).
        assert len(managed) == 1, actions
        m = managed[0]
        assert (m["identity"], m["object"]) == (FIELD_MANAGER, f"pods {namespace}/{victim}")
        assert m["change"] == f"metadata.labels.{HEALED}"
        assert m["wall"] >= a["wall"] - 0.05  # seen by the watch after the API server completed it
    print(
        f"test watch saw the label {[round(d, 4) for d in delays]} s after the audited stageTimestamp; "
        f"the audit webhook delivered it {delivered} s after"
    )
