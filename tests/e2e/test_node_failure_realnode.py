"""node_failure on two real nodes: etcd's 3 members spread over real-0 and real-1, real-1 failed.

The node agent (manifests/node-agent, the operator's own image) runs on real-1. The Campaign
fails the node of a member there (``chaos.nodes: [real-1]``) for longer than the control
plane's node grace period, so the node really goes NotReady. Witnesses of the test's own:

- a watch of Node real-1 (its Ready condition: not True during the fault, True after);
- a watch of the namespace's pods: no pod is replaced while the node is away (a StatefulSet
  waits for the node, or for someone to act);
- the process table and the cgroup tree: real-1's kubelet stopped (state T) and its pods'
  freezer cgroups FROZEN during the fault, nothing stopped or frozen after the heal;
- etcd itself: every member healthy after the heal.

The guards are refused with a condition and nothing written on any node: the operator's own
node (the operator is started with ``--node-name real-0``), a control-plane node (real-1
labelled so for the moment), and, at the API server, a Campaign without
``acknowledgeNodeFailure``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from tests.e2e import realnode, testbed
from tests.e2e.operator import OperatorProcess, free_port, wait_phase
from tests.e2e.test_etcd_realnode import LABELS, create_campaign, etcd_statefulset

pytestmark = pytest.mark.realnode

REQUEST = "aftershock.dev/node-failure"
STATE = "aftershock.dev/node-failure-state"
#: Beyond the control plane's grace period and its check period: time enough to be seen NotReady.
MARGIN_S = 20.0


def _go_duration(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", text))


def node_monitor_seconds() -> tuple[float, float]:
    """The controller manager's --node-monitor-grace-period and --node-monitor-period, read from
    its process (the test bed's own; kwokctl sets them). Upstream defaults when absent.

    Only this cluster's (kwokctl's binary sits under clusters/<name>/bin): other clusters on the
    machine (the reliability suite's, a helper's own) may run with other timings, and a shorter
    grace period read from them would make the fault too short to be seen NotReady."""
    grace, period = 50.0, 5.0
    name = os.environ.get("AFTERSHOCK_CLUSTER_NAME") or "aftershock"
    own = f"/clusters/{name}/bin/kube-controller-manager".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if not args or not args[0].endswith(own):
            continue
        for a in (x.decode() for x in args):
            if a.startswith("--node-monitor-grace-period="):
                grace = _go_duration(a.split("=", 1)[1])
            elif a.startswith("--node-monitor-period="):
                period = _go_duration(a.split("=", 1)[1])
    return grace, period


@dataclass
class NodeWatch:
    """Node real-1's Ready condition as a watch of the test's own saw it: (time, status)."""

    api: k8s.ApiClient
    seen: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> NodeWatch:
        threading.Thread(target=self._run, daemon=True, name="node-watch").start()
        return self

    def _run(self) -> None:
        v1 = k8s.CoreV1Api(self.api)
        while not self._stop.is_set():
            w = k8s_watch.Watch()
            try:
                for ev in w.stream(
                    v1.list_node, field_selector=f"metadata.name={realnode.NODE_1}", timeout_seconds=30
                ):
                    conds = ev["object"].status.conditions or []
                    ready = next((c.status for c in conds if c.type == "Ready"), "None")
                    if not self.seen or self.seen[-1][1] != ready:
                        self.seen.append((time.time(), ready))
                    if self._stop.is_set():
                        break
            except Exception:  # a broken watch is watched again
                time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()

    def first(self, status: str, after: float) -> float | None:
        return next((t for t, s in self.seen if s == status and t >= after), None)

    def not_ready_at(self, after: float) -> float | None:
        return next((t for t, s in self.seen if s != "True" and t >= after), None)


@dataclass
class PodWatch:
    """Every pod UID the namespace had, with when it was first seen."""

    api: k8s.ApiClient
    namespace: str
    first_seen: dict[str, tuple[float, str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> PodWatch:
        threading.Thread(target=self._run, daemon=True, name="pod-watch").start()
        return self

    def _run(self) -> None:
        v1 = k8s.CoreV1Api(self.api)
        while not self._stop.is_set():
            w = k8s_watch.Watch()
            try:
                for ev in w.stream(v1.list_namespaced_pod, self.namespace, timeout_seconds=30):
                    meta = ev["object"].metadata
                    self.first_seen.setdefault(meta.uid, (time.time(), meta.name))
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Bed:
    endpoints: list[str]
    nodes: NodeWatch
    pods: PodWatch
    #: real-1's kubelet cgroup root.
    cgroup_root: str


@pytest.fixture
def bed(cluster: testbed.Cluster, namespace: str, real_node_1: None, tmp_path: Path) -> Iterator[Bed]:
    server = cluster.kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    ).stdout
    agent = realnode.node_agent_objects(namespace, server, realnode.NODE_1)
    cluster.apply(yaml.safe_dump_all(agent))
    cluster.kubectl("rollout", "status", "daemonset/aftershock-node-agent", "-n", namespace, "--timeout=120s")
    clients = [free_port() for _ in range(3)]
    peers = [free_port() for _ in range(3)]
    data_dir = Path(f"/tmp/aftershock-e2e-{namespace}")
    sts = etcd_statefulset(clients, peers, str(data_dir))
    pod = sts[0]["spec"]["template"]["spec"]
    pod.pop("nodeSelector", None)
    sts[0]["spec"]["template"]["spec"] = realnode.on_real_nodes(pod)
    # Spread over both nodes (2 + 1, whichever way the scheduler picks).
    sts[0]["spec"]["template"]["spec"]["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": dict(LABELS)},
        }
    ]
    api = cluster.api_client()
    pods = PodWatch(api, namespace).start()
    nodes = NodeWatch(api).start()
    cluster.apply(yaml.safe_dump_all(sts), namespace=namespace)
    cluster.kubectl("rollout", "status", "statefulset/etcd", "-n", namespace, "--timeout=180s")
    yield Bed([f"http://127.0.0.1:{p}" for p in clients], nodes, pods, realnode.cgroup_root(realnode.SECOND))
    nodes.stop()
    pods.stop()
    # The members' own logs, kept beside the test's ledger: what etcd said when a trial went wrong.
    for i in range(3):
        logs = cluster.kubectl("logs", f"etcd-{i}", "-n", namespace, "--tail=3000", check=False)
        (tmp_path / f"etcd-{i}.log").write_text(logs.stdout + logs.stderr)
    # Whatever happened, real-1 is not left failed for the next test (the agent's own thaw).
    cluster.kubectl("annotate", "node", realnode.NODE_1, f"{REQUEST}-", check=False)
    cluster.kubectl("label", "node", realnode.NODE_1, "node-role.kubernetes.io/control-plane-", check=False)
    cluster.kubectl(
        "delete", "statefulset", "etcd", "-n", namespace, "--wait=true", "--timeout=90s", check=False
    )
    for obj in agent:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], check=False)
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(realnode.node_agent_state_dir(namespace), ignore_errors=True)


def campaign(
    name: str, namespace: str, endpoints: list[str], duration: float, **chaos: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "aftershock.dev/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "subject": {"kind": "Etcd", "selector": {"matchLabels": dict(LABELS)}, "endpoints": endpoints},
            "chaos": {
                "type": "node_failure",
                "durationSeconds": duration,
                "acknowledgeNodeFailure": True,
                "nodes": [realnode.NODE_1],
                **chaos,
            },
            "trials": 1,
            "intervalSeconds": 0,
            "steadyState": {"timeoutSeconds": 120, "stableSeconds": 1},
            # From the fault's start: the node is away for `duration` first.
            "recovery": {"timeoutSeconds": duration + 180, "settleSeconds": 1},
        },
    }


def healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/health", timeout=1) as resp:  # loopback only
            return bool(json.loads(resp.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def ledger(db: Path, namespace: str, name: str) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """The attempts (victims, outcome, final state, every milestone's wall time) and faults, read
    with the test's own SQL."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT a.* FROM attempts a JOIN campaigns c ON c.uid = a.campaign_uid "
            "WHERE c.namespace = ? AND c.name = ?",
            (namespace, name),
        ).fetchall()
        attempts = []
        for row in rows:
            data = dict(row)
            milestones = {
                k[: -len("_wall")]: v for k, v in data.items() if k.endswith("_wall") and v is not None
            }
            own = conn.execute(
                "SELECT name, wall FROM subject_milestones WHERE attempt_id = ?", (data["id"],)
            )
            milestones.update({str(n): float(w) for n, w in own.fetchall()})
            attempts.append(
                {
                    "victims": json.loads(data["victims"]),
                    "outcome": data["outcome"],
                    "final": json.loads(data["final_state"] or "{}"),
                    "milestones": milestones,
                }
            )
        faults = [
            tuple(f)
            for f in conn.execute(
                "SELECT f.attempt_id, f.injected_at, f.healed_at, f.heal_note FROM faults f "
                "JOIN campaigns c ON c.uid = f.campaign_uid WHERE c.namespace = ? AND c.name = ?",
                (namespace, name),
            ).fetchall()
        ]
        return attempts, faults
    finally:
        conn.close()


def _members_say(endpoints: list[str]) -> dict[str, str]:
    """Each member's own /health answer (its reason when false), for a failure's message."""
    said: dict[str, str] = {}
    for e in endpoints:
        try:
            with urllib.request.urlopen(f"{e}/health", timeout=5) as r:
                said[e] = r.read().decode()
        except urllib.error.HTTPError as exc:  # unhealthy: 503 with the reason in the body
            said[e] = f"{exc.code} {exc.read().decode(errors='replace')}"
        except Exception as exc:  # a member that does not answer says so by failing
            said[e] = repr(exc)
    return said


def refused(cluster: testbed.Cluster, namespace: str, name: str, op: OperatorProcess, why: str) -> None:
    done = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=180, op=op)
    assert done["status"]["phase"] == "Failed", done["status"]
    message = json.dumps(done["status"])
    assert "ChaosRefused" in message, done["status"]
    assert why in message, message
    for node in (realnode.NODE, realnode.NODE_1):
        annotations = json.loads(cluster.kubectl("get", "node", node, "-o", "json").stdout)["metadata"].get(
            "annotations", {}
        )
        assert REQUEST not in annotations, (node, annotations)
    _attempts, faults = ledger(op.db, namespace, name)
    assert [f for f in faults if f[1] is not None] == [], faults  # nothing injected
    cluster.kubectl("delete", "campaign", name, "-n", namespace, "--wait=true", "--timeout=60s")


# The fault is held past the control plane's grace period (200 s on kwokctl's test bed), and the
# first run of a session builds and imports real-1's images.
@pytest.mark.timeout(1800)
def test_node_failure_of_real_1_nothing_replaced_node_back_and_the_guards(
    cluster: testbed.Cluster,
    namespace: str,
    bed: Bed,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    started = time.time()
    op = start_operator("--probe-interval", "0.2", "--node-name", realnode.NODE)
    grace, period = node_monitor_seconds()
    duration = round(grace + period + MARGIN_S)

    # --- the guards: a condition, and nothing written on any node --------------------------------
    no_ack = campaign("no-ack", namespace, bed.endpoints, duration)
    del no_ack["spec"]["chaos"]["acknowledgeNodeFailure"]
    got = cluster.apply(no_ack, namespace=namespace, check=False)
    assert got.returncode != 0
    assert "acknowledgeNodeFailure must be true" in got.stderr, got.stderr

    create_campaign(
        cluster, namespace, campaign("own-node", namespace, bed.endpoints, duration, nodes=[realnode.NODE])
    )
    refused(cluster, namespace, "own-node", op, "runs the aftershock operator itself")

    cluster.kubectl("label", "node", realnode.NODE_1, "node-role.kubernetes.io/control-plane=")
    try:
        create_campaign(cluster, namespace, campaign("control-plane", namespace, bed.endpoints, duration))
        refused(cluster, namespace, "control-plane", op, "is a control-plane node")
    finally:
        cluster.kubectl("label", "node", realnode.NODE_1, "node-role.kubernetes.io/control-plane-")
    guards_s = time.time() - started

    # --- the failure -------------------------------------------------------------------------------
    kubelet = realnode.kubelet_of(realnode.SECOND)
    assert realnode.process_state(kubelet.pid) != "T"
    before = dict(bed.pods.first_seen)
    create_campaign(cluster, namespace, campaign("fail", namespace, bed.endpoints, duration))
    # While the node is away: the kubelet stopped and real-1's pods frozen, as the process table
    # and the cgroup tree say (not the operator).
    stopped_seen = testbed.wait_for(
        lambda: realnode.process_state(kubelet.pid) == "T", 120, what="real-1's kubelet stopped"
    )
    assert stopped_seen
    assert realnode.frozen_cgroups(bed.cgroup_root), "no pod cgroup of real-1 frozen"
    done = wait_phase(cluster, namespace, "fail", {"Succeeded", "Failed"}, timeout=duration + 400, op=op)
    assert done["status"]["phase"] == "Succeeded", (done["status"], _members_say(bed.endpoints))

    attempts, faults = ledger(op.db, namespace, "fail")
    (attempt,) = attempts
    assert attempt["outcome"] == "recovered", attempt
    (victim,) = attempt["victims"]
    assert victim["node"] == realnode.NODE_1
    (fault,) = faults
    assert fault[1] is not None, fault  # injected
    assert fault[2] is not None, fault  # healed
    m = attempt["milestones"]
    injected, healed = m["kill_acked"], m["fault_healed"]
    assert healed - injected >= duration - 1
    chaos = attempt["final"]["chaos"][victim["name"]]
    # What else ran on the node is named (here: the other members there, if any; never the agent).
    assert all("aftershock-node-agent" not in p for p in chaos["alsoStopped"]), chaos

    # The independent watch saw real-1 go NotReady during the fault, and Ready after the heal.
    not_ready = bed.nodes.not_ready_at(injected)
    assert not_ready is not None, bed.nodes.seen
    assert not_ready < healed, bed.nodes.seen
    # The resumed kubelet first reports Ready=False (seen: for a few seconds), then True.
    back = testbed.wait_for(lambda: bed.nodes.first("True", not_ready), 120, what="real-1 Ready again")
    assert back >= healed - 1, bed.nodes.seen
    assert "victim_unready" in m  # the operator saw the victim marked not Ready too
    # No pod was replaced while the node was away (none after it either: nothing was deleted).
    # (The subject's pods: the agent's DaemonSet pod is re-created after the control-plane guard.)
    new = {uid: v for uid, v in bed.pods.first_seen.items() if uid not in before and v[1].startswith("etcd-")}
    assert new == {}, new
    # Back: every member healthy; nothing of real-1 left stopped or frozen.
    assert all(healthy(e) for e in bed.endpoints)
    assert realnode.process_state(kubelet.pid) != "T"
    assert realnode.frozen_cgroups(bed.cgroup_root) == []
    node = json.loads(cluster.kubectl("get", "node", realnode.NODE_1, "-o", "json").stdout)
    assert REQUEST not in node["metadata"].get("annotations", {})
    assert json.loads(node["metadata"]["annotations"][STATE])["state"] == "thawed"
    print(
        f"node_failure e2e: guards {guards_s:.0f}s; grace {grace:.0f}s + period {period:.0f}s; "
        f"NotReady {not_ready - injected:.1f}s after the freeze; Ready {back - healed:.1f}s after the heal; "
        f"recovered {m['recovered'] - healed:.1f}s after the heal; total {time.time() - started:.0f}s"
    )
