"""A remediator evaluated on real nodes (issue 20): etcd, ``node_failure``, a baseline arm (the
reference remediator scaled to zero by ``spec.baseline``) and an assisted arm (the reference
remediator, ``remediators/out-of-service/``, running as the identity the Campaign names), 5
trials each, on one operator; ``aftershock compare`` must say Improved for time to recover.

The subject: 3 etcd members of one cluster, all with the subject's labels. Two (StatefulSet
``etcd``) are pinned to real-2, the node the operator is told it runs on (``--node-name``), which
the guard keeps safe; the remediator runs there too. One (StatefulSet ``etcd-float``) may run on
real-3 or real-4: each trial fails its node (``chaos.nodes: [real-3, real-4]``). In the baseline
arm it stays there and is back when its node is; in the assisted arm the remediator taints the
NotReady node out-of-service, the control plane force-deletes the pod, the StatefulSet makes it
again on the other node, and the member moves: real-3 -> real-4 -> real-3 ... trial after trial.
These three nodes are the test's alone (real-0 and real-1 are the real-node group's, which kills
real-0's kubelet and freezes real-1), so it runs on a worker of its own beside that group.

What the test bed adds, and why (a real cluster's nodes have their own addresses and disks):
- Every real node is a kubelet of this one host, sharing its loopback and filesystem. The frozen
  old process still holds its ports and its data dir's lock, so each node listens on its own
  loopback address (real-3 127.0.4.1, real-4 127.0.5.1: all of 127/8 is on lo) and each pod has
  a data dir of its own UID.
- A moved member starts with no data: it takes the old member's place as a real etcd
  StatefulSet chart does (an init container removes the member by name, adds itself with its new
  peer URL, and etcd starts with ``--initial-cluster-state existing``). The template says
  ``new`` only for the bootstrap, then ``existing`` (``updateStrategy: OnDelete``: the running
  pods are not restarted by that change).
- The floating member's client endpoint for the Campaign and for Prometheus is a TCP forwarder
  of the test's own (a process, ``memberforward.py``) on 127.0.0.1, to the member's current node
  address (from the test's pod watch): what a per-member Service or DNS name is in a real
  cluster.

Alerts come from the real chain (Prometheus scraping the members' own ``/metrics`` ->
Alertmanager -> the operator's receiver); the remediator emits no Event: its writes (the taint
added, the taint removed) are recorded from the API server's audit webhook. Witnesses of the
test's own: a watch of the nodes (the taint appearing and going, Ready), a watch of the pods (the
member's new pod on the other node), and a poller of every member's ``/health`` (the recovery).
Time to alert is split by the chain's own records (``tests/e2e/alertclock.py``).

The operator binds the audit webhook's fixed port: the audit webhook's xdist group.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from tests.e2e import alertclock, monitoring, realnode, testbed
from tests.e2e.operator import OperatorProcess, free_port, wait_phase
from tests.e2e.test_etcd_realnode import LABELS, create_campaign
from tests.e2e.test_node_failure_realnode import node_monitor_seconds
from tests.e2e.test_remediator_actions import audit_webhook  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.realnode, pytest.mark.audit_webhook, pytest.mark.remediator_eval]

TRIALS = 5
ALERT = "EtcdMemberDown"
TOKEN = "e2e-remeval-receiver-token-0123456789abcdef"
TAINT = "node.kubernetes.io/out-of-service"
FLOAT = "etcd-float-0"
REMEDIATOR = "out-of-service-remediator"
#: The remediator's --after: seconds NotReady before it taints (small: the test bed's grace is
#: already short, and what is measured is the harness, not a tuning).
AFTER_S = 2.0
#: PodGC's period (kube-controller-manager's gcCheckPeriod, 20 s, not a flag): it force-deletes
#: the terminating pods of an out-of-service node on its next pass.
PODGC_PERIOD_S = 20.0
#: Beyond that, for the moved member to start (scheduling, the init container, etcd joining) on
#: a loaded machine: the assisted arm must recover before the node comes back.
START_MARGIN_S = 20.0
#: A healed node is Ready again at its kubelet's next status update (nodeStatusUpdateFrequency,
#: 10 s) plus one remediator step (1 s): when the taint is removed.
NODE_BACK_S = 11.0
#: Each node's own loopback address (one host: see the module's docstring).
ADDRESS = {realnode.NODE_3: "127.0.4.1", realnode.NODE_4: "127.0.5.1"}
#: Where the fixed members and the remediator run, and the operator says it runs (the guard).
HOME_NODE = realnode.NODE_2
#: The test's times agree with the ledger's within this (issue 20).
AGREEMENT_S = 0.1
#: How late one stamp may be on the loaded 2-core machine, the spans notwithstanding (as
#: tests/e2e/test_realnode.py's OUTLIER_S): the machine's scheduling, not a wrong milestone.
SCHEDULING_S = 0.5
#: The widest span a recovery seen by a look may have: the look before it and this one, each at
#: most the client's bound (1.2 s), the probe interval between them, and the loaded machine's
#: scheduling (2.4 s seen in a rehearsal).
LOOK_SPAN_S = 4.0
PART = "aftershock.dev/e2e-part"


# --- the subject --------------------------------------------------------------------------------


def _etcd_command(client: str, peer: str) -> str:
    return (
        '. /work/env; exec /bin/etcd --name "$POD_NAME" --data-dir "/data/$POD_UID" '
        f"--listen-client-urls http://$ADDR:{client} --advertise-client-urls http://$ADDR:{client} "
        f"--listen-peer-urls http://$ADDR:{peer} --initial-advertise-peer-urls http://$ADDR:{peer} "
        '--initial-cluster "$CLUSTER" --initial-cluster-state "$STATE" '
        "--initial-cluster-token e2e-remeval --heartbeat-interval 100 --election-timeout 1000"
    )


#: The init container (Debian's Python): where this pod's member listens, and how it starts:
#: with data of its own (a container restart), or as in the template (the bootstrap), or in the
#: place of the member of its name (a new pod: remove that member, add this one).
PREPARE = r"""
import json, os, time, urllib.request
name, uid = os.environ["POD_NAME"], os.environ["POD_UID"]
addr = json.loads(os.environ["ADDRESSES"]).get(os.environ["NODE_NAME"], "127.0.0.1")
seeds, peer = json.loads(os.environ["SEEDS"]), f"http://{addr}:{os.environ['PEER_PORT']}"
def call(path, body):
    err = None
    for seed in seeds:
        req = urllib.request.Request(f"{seed}/v3/cluster/{path}", json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:
                return json.loads(resp.read())
        except OSError as exc:
            err = exc
    raise err
state, cluster = os.environ["STATE"], os.environ["CLUSTER"]
if state == "existing" and not os.path.isdir(f"/data/{uid}/member"):
    while True:
        try:
            port = ":" + os.environ["PEER_PORT"]
            old = [m for m in call("member/list", {})["members"]
                   if m.get("name") == name or any(u.endswith(port) for u in m.get("peerURLs", []))]
            for m in old:
                call("member/remove", {"ID": m["ID"]})
                print("removed member", m, flush=True)
            if old:
                continue  # listed again: a remove may time out and still be applied
            members = call("member/add", {"peerURLs": [peer]})["members"]
            break
        except OSError as exc:
            print("retrying:", exc, flush=True)
            time.sleep(1)
    cluster = ",".join(f"{m.get('name') or name}={m['peerURLs'][0]}" for m in members)
    print("added", peer, cluster, flush=True)
with open("/work/env", "w") as f:
    f.write(f"ADDR={addr}\nSTATE={state}\nCLUSTER={cluster}\n")
"""


@dataclass(frozen=True)
class Ports:
    clients: list[int]
    peers: list[int]

    def cluster(self) -> str:
        urls = [f"http://127.0.0.1:{self.peers[0]}", f"http://127.0.0.1:{self.peers[1]}"]
        urls.append(f"http://{ADDRESS[realnode.NODE_3]}:{self.peers[2]}")
        return ",".join(f"{n}={u}" for n, u in zip(("etcd-0", "etcd-1", FLOAT), urls, strict=True))


def on_hostnames(nodes: list[str]) -> dict[str, Any]:
    """A required node affinity to `nodes` by hostname."""
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def _statefulset(name: str, replicas: int, ports: Ports, floating: bool) -> dict[str, Any]:
    labels = {**LABELS, PART: name}
    index = "${POD_NAME##*-}" if not floating else "2"
    case = " ".join(
        f"{i}) C={c}; P={p};;" for i, (c, p) in enumerate(zip(ports.clients, ports.peers, strict=True))
    )
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "ADDRESSES", "value": json.dumps(ADDRESS)},
        {"name": "SEEDS", "value": json.dumps([f"http://127.0.0.1:{c}" for c in ports.clients[:2]])},
        {"name": "STATE", "value": "new"},
        {"name": "CLUSTER", "value": ports.cluster()},
    ]
    script = f"i={index}; case $i in {case} esac; " + _etcd_command("$C", "$P")
    spec: dict[str, Any] = {
        "hostNetwork": True,
        "terminationGracePeriodSeconds": 10,
        "initContainers": [
            {
                "name": "prepare",
                "image": realnode.PYTHON_IMAGE,
                "imagePullPolicy": "Never",
                "command": [
                    "sh",
                    "-c",
                    f'i={index}; case $i in {case} esac; export PEER_PORT=$P; exec python3 -c "$0"',
                    PREPARE,
                ],
                "env": env,
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            }
        ],
        "containers": [
            {
                "name": "etcd",
                "image": "registry.local/etcd:local",
                "imagePullPolicy": "Never",
                "env": env,
                "command": ["sh", "-c", script],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "work", "mountPath": "/work"},
                ],
                "readinessProbe": {
                    "exec": {
                        "command": [
                            "sh",
                            "-c",
                            f"i={index}; case $i in {case} esac; . /work/env; "
                            "wget -q -O - http://$ADDR:$C/health | grep -q true",
                        ]
                    },
                    # Not Ready until 3 probes in a row failed: a thawed node's first probes
                    # (or one slow exec on a loaded machine) must not read as a relapse.
                    "periodSeconds": 1,
                    "timeoutSeconds": 3,
                    "failureThreshold": 3,
                },
            }
        ],
        "volumes": [
            {"name": "data", "hostPath": {"path": "/tmp/aftershock-e2e-DATA", "type": "DirectoryOrCreate"}},
            {"name": "work", "emptyDir": {}},
        ],
    }
    if floating:
        # The bootstrap on real-3 (its address is in the initial cluster).
        spec["affinity"] = on_hostnames([realnode.NODE_3])
        spec["tolerations"] = [
            {"key": realnode.node_taint(node), "operator": "Exists", "effect": "NoSchedule"}
            for node in ADDRESS
        ]
    else:
        spec = realnode.on_node(spec, HOME_NODE)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceName": "etcd",
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def subject_objects(ports: Ports, data_dir: Path) -> list[dict[str, Any]]:
    objs = [_statefulset("etcd", 2, ports, False), _statefulset("etcd-float", 1, ports, True)]
    for obj in objs:
        obj["spec"]["template"]["spec"]["volumes"][0]["hostPath"]["path"] = str(data_dir)
    return objs


def after_bootstrap(cluster: testbed.Cluster, namespace: str) -> None:
    """New pods join the running cluster from now on; the floating one may go to real-3 or
    real-4 (OnDelete: the running pods keep the template they started with)."""
    patch: list[dict[str, Any]] = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/env/5/value", "value": "existing"},
        {"op": "replace", "path": "/spec/template/spec/initContainers/0/env/5/value", "value": "existing"},
    ]
    for name in ("etcd", "etcd-float"):
        cluster.kubectl("patch", "statefulset", name, "-n", namespace, "--type=json", "-p", json.dumps(patch))
    values = list(ADDRESS)
    path = "/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution"
    patch = [
        {"op": "replace", "path": f"{path}/nodeSelectorTerms/0/matchExpressions/0/values", "value": values}
    ]
    cluster.kubectl(
        "patch", "statefulset", "etcd-float", "-n", namespace, "--type=json", "-p", json.dumps(patch)
    )


# --- the test's own witnesses -------------------------------------------------------------------


class Forwarder:
    """127.0.0.1:`port` -> the floating member's current node address, same port (the test's
    pod watch sets `target`): a per-member Service's part in a real cluster. A process of its
    own (`tests/e2e/memberforward.py`), out of the pytest process's GIL."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._target: str | None = None
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.memberforward", str(port)],
            cwd=testbed.REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._stdin = self._proc.stdin
        assert self._proc.stdout.readline().strip() == "listening", "the member's forwarder did not start"

    @property
    def target(self) -> str | None:
        return self._target

    @target.setter
    def target(self, address: str) -> None:
        if address != self._target:
            self._target = address
            self._stdin.write(address + "\n")
            self._stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class Watches:
    """Watches of the test's own: the namespace's pods (each pod UID: name, node, first seen,
    Ready, gone) and the real nodes (Ready changes, the out-of-service taint appearing and
    going). The floating member's forwarder follows its pod."""

    def __init__(self, api: k8s.ApiClient, namespace: str, forwarder: Forwarder) -> None:
        self.v1 = k8s.CoreV1Api(api)
        self.namespace = namespace
        self.forwarder = forwarder
        self.pods: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, list[tuple[float, bool, bool]]] = {}  # name -> (time, ready, tainted)
        self._stop = threading.Event()
        for target in (self._pods, self._nodes):
            threading.Thread(target=self._loop, args=(target,), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, body: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                body()
            except Exception:  # a broken watch is watched again
                time.sleep(0.2)

    def _pods(self) -> None:
        for ev in k8s_watch.Watch().stream(self.v1.list_namespaced_pod, self.namespace, timeout_seconds=30):
            now = time.time()
            pod = ev["object"]
            seen = self.pods.setdefault(
                pod.metadata.uid,
                {"name": pod.metadata.name, "first": now, "node": None, "ready": None, "gone": None,
                 "deleted": None, "labels": dict(pod.metadata.labels or {})},
            )  # fmt: skip
            seen["node"] = seen["node"] or pod.spec.node_name
            conds = (pod.status.conditions or []) if pod.status else []
            ready = any(c.type == "Ready" and c.status == "True" for c in conds)
            if seen["ready"] is None and ready:
                seen["ready"] = now
            changes = seen.setdefault("readiness", [])
            if not changes or changes[-1][1] != ready:
                changes.append((now, ready))
            if ev["type"] == "DELETED" or pod.metadata.deletion_timestamp is not None:
                seen["gone"] = seen["gone"] or now
            if ev["type"] == "DELETED":
                seen["deleted"] = now  # its containers ended (or were forced away)
            elif pod.metadata.name == FLOAT and pod.spec.node_name in ADDRESS:
                self.forwarder.target = ADDRESS[pod.spec.node_name]
            if self._stop.is_set():
                return

    def _nodes(self) -> None:
        for ev in k8s_watch.Watch().stream(
            self.v1.list_node,
            label_selector=f"kubernetes.io/hostname in ({','.join(ADDRESS)})",
            timeout_seconds=30,
        ):
            node = ev["object"]
            if node.metadata.name not in ADDRESS:
                continue
            ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
            tainted = any(t.key == TAINT for t in node.spec.taints or [])
            seen = self.nodes.setdefault(node.metadata.name, [])
            if not seen or seen[-1][1:] != (ready, tainted):
                seen.append((time.time(), ready, tainted))
            if self._stop.is_set():
                return

    def taint_changes(
        self, node: str, after: float, before: float = float("inf")
    ) -> list[tuple[float, bool]]:
        """The out-of-service taint appearing (True) and going (False) on `node`, in order."""
        out, last = [], None
        for t, _ready, tainted in self.nodes.get(node, []):
            if last is not None and tainted != last and after <= t <= before:
                out.append((t, tainted))
            last = tainted
        return out


@dataclass
class HealthPoller:
    """Each endpoint's ``/health`` every 20 ms, a thread per endpoint: (sent, received, healthy).
    (etcd answers ``/health`` with a read through Raft: only the member the trials fail is
    polled, so that three members at 50 Hz do not load the 2-core machine the other tests share.)"""

    endpoints: list[str]
    answers: dict[str, list[tuple[float, float, bool]]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> HealthPoller:
        for url in self.endpoints:
            self.answers[url] = []
            threading.Thread(target=self._run, args=(url,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self, url: str) -> None:
        got = self.answers[url]
        while not self._stop.is_set():
            sent = time.time()
            try:
                with urllib.request.urlopen(url + "/health", timeout=0.3) as resp:  # loopback only
                    ok = json.loads(resp.read()).get("health") == "true"
            except (OSError, ValueError):
                ok = False
            got.append((sent, time.time(), ok))
            self._stop.wait(max(0.0, sent + 0.02 - time.time()))

    def back(self, url: str, after: float, before: float) -> tuple[float, float] | None:
        """When `url` first answered healthy again after it stopped answering healthy past
        `after` (polls sent before `before`): between the last failed poll's send and that
        healthy answer's receipt. A blip after it (a slow answer on a loaded machine) is not a
        second recovery: the ledger's is the first too."""
        got = [a for a in self.answers[url] if after <= a[0] <= before]
        down = next((i for i, a in enumerate(got) if not a[2]), None)
        if down is None:
            return None
        up = next((i for i in range(down, len(got)) if got[i][2]), None)
        return None if up is None else (got[up - 1][0], got[up][1])


# --- the ledger, with the test's own SQL ----------------------------------------------------------


def ledger(db: Path, namespace: str, name: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT a.* FROM attempts a JOIN campaigns c ON c.uid = a.campaign_uid "
            "JOIN trials t ON t.attempt_id = a.id WHERE c.namespace = ? AND c.name = ? "
            "ORDER BY a.trial_index",
            (namespace, name),
        ).fetchall()
        out = []
        for row in rows:
            data = dict(row)
            m = {k[: -len("_wall")]: v for k, v in data.items() if k.endswith("_wall") and v is not None}
            own = conn.execute(
                "SELECT name, wall FROM subject_milestones WHERE attempt_id = ?", (data["id"],)
            )
            m.update({str(n): float(w) for n, w in own.fetchall()})
            out.append(
                {
                    "outcome": data["outcome"],
                    "victims": json.loads(data["victims"]),
                    "final": json.loads(data["final_state"] or "{}"),
                    "milestones": m,
                }
            )
        return out
    finally:
        conn.close()


# --- the Campaigns --------------------------------------------------------------------------------


def campaign(
    name: str, namespace: str, endpoints: list[str], duration: float, baseline: bool, quiet: float
) -> dict[str, Any]:
    # The same identities in both arms (the baseline's writes, if any, would be recorded too);
    # the quiet wait only where the remediator runs (it is scaled to zero in the baseline).
    remediator: dict[str, Any] = {
        "kind": "Deployment",
        "name": REMEDIATOR,
        "identities": {"serviceAccounts": [REMEDIATOR]},
    }
    if not baseline:
        remediator["quietSeconds"] = quiet
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
                "nodes": list(ADDRESS),
            },
            "trials": TRIALS,
            # A trial's node is Ready again before the next fault (the test checks it): the
            # baseline's trial restores its remediator, and ends, only once it is (the kind's
            # `settled`); the assisted arm's quiet wait lasts past it.
            "intervalSeconds": 0,
            "baseline": baseline,
            "remediator": remediator,
            "steadyState": {"timeoutSeconds": 180, "stableSeconds": 1},
            "recovery": {"timeoutSeconds": duration + quiet + 120, "settleSeconds": 1},
            "detection": {"alertMatchers": [{"name": "alertname", "value": ALERT}]},
        },
    }


def remediator_objects(namespace: str, server: str) -> list[dict[str, Any]]:
    """remediators/out-of-service/manifests.yaml in `namespace`, on real-2 with the test bed's
    additions (the host's network: the API server is on 127.0.0.1), --after small."""
    objs = list(
        yaml.safe_load_all((testbed.REPO / "remediators" / "out-of-service" / "manifests.yaml").read_text())
    )
    host, port = server.removeprefix("https://").rsplit(":", 1)
    for obj in objs:
        meta = obj["metadata"]
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = f"{REMEDIATOR}-{namespace}"
        else:
            meta["namespace"] = namespace
        if obj["kind"] == "ClusterRoleBinding":
            obj["roleRef"]["name"] = f"{REMEDIATOR}-{namespace}"
            obj["subjects"][0]["namespace"] = namespace
        if obj["kind"] == "Deployment":
            pod = realnode.on_node(obj["spec"]["template"]["spec"], HOME_NODE)
            pod["hostNetwork"] = True
            c = pod["containers"][0]
            c["imagePullPolicy"] = "Never"
            selector = ",".join(f"{k}={v}" for k, v in LABELS.items())
            c["args"] = ["--namespace", namespace, "--selector", selector, "--after", f"{AFTER_S:g}"]
            c["env"] = [*c.get("env", []), {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                        {"name": "KUBERNETES_SERVICE_PORT", "value": port}]  # fmt: skip
            obj["spec"]["template"]["spec"] = pod
    return objs


def node_agent(namespace: str, server: str) -> list[dict[str, Any]]:
    """The node agent on real-3 and real-4 (one DaemonSet)."""
    objs = realnode.node_agent_objects(namespace, server, realnode.NODE_3)
    for obj in objs:
        if obj["kind"] == "DaemonSet":
            pod = obj["spec"]["template"]["spec"]
            pod.pop("nodeSelector")
            pod["affinity"] = on_hostnames(list(ADDRESS))
    return objs


def _breakdown(
    chain: monitoring.Chain, labels: dict[str, str], trial: dict[str, Any], receipts: list[alertclock.Receipt]
) -> str:
    """The trial's time to alert split by the chain's own records (a report: the split itself is
    tested by test_alerts_realnode; where the records do not allow it, why)."""
    m = trial["milestones"]
    try:
        b = alertclock.breakdown(
            chain.prometheus,
            chain.alertmanager,
            ALERT,
            labels,
            m["kill_sent"],
            m["alert_firing"],
            receipts=receipts,
        )
    except alertclock.ChainRecordError as exc:
        return f"not split: {exc}"
    parts = "  ".join(f"{k}={'-' if v is None else f'{v:.3f}'}" for k, v in b.parts().items())
    return f"{parts}  total={b.total:.3f}" + (f"  unmeasured: {dict(b.unmeasured)}" if b.unmeasured else "")


def _ready_replicas(cluster: testbed.Cluster, namespace: str, name: str, want: int) -> Callable[[], bool]:
    def ready() -> bool:
        got = cluster.kubectl(
            "get", "statefulset", name, "-n", namespace, "-o", "jsonpath={.status.readyReplicas}"
        )
        return got.stdout.strip() == str(want)

    return ready


def next_kill(arms: dict[str, list[dict[str, Any]]], arm: str, i: int) -> float:
    """When the trial after trial `i` of `arm` failed its node: the arm's next, or the next
    arm's first (the last arm's last: now). Never later: the next arm's remediator taints."""
    after = [t for name in list(arms)[list(arms).index(arm) :] for t in arms[name]][i + 1 :]
    return after[0]["milestones"]["kill_sent"] if after else time.time()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# 10 trials held past the control plane's grace period, and the first run builds real-2's images.
@pytest.mark.timeout(3600)
def test_the_reference_remediator_improves_recovery_from_a_node_failure(
    cluster: testbed.Cluster,
    namespace: str,
    real_node_2: None,
    real_node_3: None,
    real_node_4: None,
    start_operator: Callable[..., OperatorProcess],
    audit_webhook: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    started = time.time()
    grace, period = node_monitor_seconds()
    # The assisted arm recovers about NotReady + --after + PodGC's period + the start; the node
    # must still be away then, or the baseline's way (the node back) would be what is measured.
    duration = round(grace + period + AFTER_S + PODGC_PERIOD_S + START_MARGIN_S)
    # The remediator's last action, the taint removed, comes when the node is Ready again: at the
    # resumed kubelet's next status update, 10 s after the heal here (docs/remediator.md). The
    # quiet wait, counted from the recovery (no sooner than grace + --after after the freeze),
    # must last past it so that the trial records it.
    quiet = round(duration - grace + NODE_BACK_S + 5)
    server = cluster.kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    ).stdout
    # The members' disk: memory where the host has it. The host's one disk is shared with image
    # builds and the other tests' fsyncs, and an etcd member whose fsync stalls past its
    # election timeout loses its leader (a relapse the test bed made): a real node's etcd has
    # a disk of its own.
    shm = Path("/dev/shm")
    data_dir = (shm if shm.is_dir() else Path("/tmp")) / f"aftershock-e2e-{namespace}"
    ports = Ports([free_port() for _ in range(3)], [free_port() for _ in range(3)])
    forwarder = Forwarder(ports.clients[2])
    endpoints = [f"http://127.0.0.1:{c}" for c in ports.clients]
    api = cluster.api_client()
    watches = Watches(api, namespace, forwarder)
    poller = HealthPoller(endpoints[2:])  # the floating member, the one the trials fail
    agent = node_agent(namespace, server)
    remediator = remediator_objects(namespace, server)
    chain: monitoring.Chain | None = None
    try:
        cluster.apply(yaml.safe_dump_all(agent))
        cluster.kubectl(
            "rollout", "status", "daemonset/aftershock-node-agent", "-n", namespace, "--timeout=180s"
        )
        cluster.apply(yaml.safe_dump_all(subject_objects(ports, data_dir)), namespace=namespace)
        for sts, replicas in (("etcd", 2), ("etcd-float", 1)):
            # (rollout status knows no OnDelete StatefulSet)
            testbed.wait_for(
                _ready_replicas(cluster, namespace, sts, replicas), 300, what=f"statefulset {sts} Ready"
            )
        after_bootstrap(cluster, namespace)
        testbed.run(
            [str(testbed.REPO / "remediators" / "out-of-service" / "image.sh"), "import"],
            timeout=600,
            env={**cluster.env(), **realnode.THIRD},  # into real-2's containerd
        )
        # Running from the start: the baseline Campaign scales it to 0 for each trial and
        # restores it once the failed node is Ready again (restored sooner, it acted on the
        # NotReady node between trials: checked below).
        cluster.apply(yaml.safe_dump_all(remediator), namespace=namespace)
        cluster.kubectl("rollout", "status", f"deployment/{REMEDIATOR}", "-n", namespace, "--timeout=120s")
        poller.start()

        token_file = tmp_path / "receiver-token"
        token_file.write_text(TOKEN)
        token_file.chmod(0o600)
        receiver_port = free_port()
        op = start_operator(
            "--probe-interval", "0.1", "--node-name", HOME_NODE,
            "--alert-receiver-port", str(receiver_port), "--alert-receiver-token-file", str(token_file),
            *audit_webhook,
        )  # fmt: skip
        chain = monitoring.start(
            tmp_path / "chain",
            targets={"etcd": [e.removeprefix("http://") for e in endpoints]},
            labels={"namespace": namespace},
            receiver_url=f"http://127.0.0.1:{receiver_port}/api/v1/alerts",
            token_file=token_file,
        )
        receipts = alertclock.AlertmanagerWatch(chain.alertmanager, ALERT).start()
        testbed.wait_for(
            lambda: len(up := chain.samples('up{job="etcd"}')) == 3 and all(s["value"][1] == "1" for s in up),
            60,
            what="Prometheus sees the 3 members up",
        )
        setup_s = time.time() - started

        arms: dict[str, list[dict[str, Any]]] = {}
        spans: dict[str, tuple[float, float]] = {}
        for name, baseline in (("baseline", True), ("assisted", False)):
            for node in ADDRESS:  # the last trial's node back (its kubelet's next status update)
                cluster.kubectl("wait", "--for=condition=Ready", f"node/{node}", "--timeout=60s")
            # Restored by the baseline's last trial (and running all along before it).
            cluster.kubectl(
                "rollout", "status", f"deployment/{REMEDIATOR}", "-n", namespace, "--timeout=120s"
            )
            opened = time.time()
            create_campaign(
                cluster, namespace, campaign(name, namespace, endpoints, duration, baseline, quiet)
            )
            done = wait_phase(
                cluster,
                namespace,
                name,
                {"Succeeded", "Failed"},
                timeout=TRIALS * (duration + quiet + 200),
                op=op,
            )
            assert done["status"]["phase"] == "Succeeded", done["status"]
            arms[name] = ledger(op.db, namespace, name)
            spans[name] = (opened, time.time())
        receipts.stop()
        compare = testbed.run(
            [str(testbed.REPO / ".venv" / "bin" / "aftershock"), "compare", "baseline", "assisted",
             "-n", namespace, "--db", str(op.db), "--format", "json", "--resamples", "2000"],
            check=False,
        )  # fmt: skip
        # Each trial's alert: the floating member's (its forwarder's address is the target).
        instance = {"namespace": namespace, "instance": endpoints[2].removeprefix("http://")}
        breakdowns = {
            arm: [_breakdown(chain, instance, t, receipts.receipts()) for t in trials]
            for arm, trials in arms.items()
        }
    finally:
        poller.stop()
        watches.stop()
        forwarder.close()
        if chain is not None:
            chain.stop()
        # The namespace goes with the test; its cluster-scoped rights and host data do not.
        for obj in [*agent, *remediator]:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                cluster.kubectl(
                    "delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found", check=False
                )
        for sts in ("etcd", "etcd-float"):
            cluster.kubectl(
                "delete", "statefulset", sts, "-n", namespace, "--wait=true", "--timeout=90s", check=False
            )
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(realnode.node_agent_state_dir(namespace), ignore_errors=True)

    user = f"system:serviceaccount:{namespace}:{REMEDIATOR}"
    table: dict[str, dict[str, list[float]]] = {}
    taint_seen: list[float] = []  # the node watch's taint changes after their audited writes
    gaps: list[float] = []  # how far the ledger's recovery lay outside the witnesses' bracket
    spans_s: list[float] = []  # how wide the operator's own bracket was
    for arm, trials in arms.items():
        assert len(trials) == TRIALS, trials
        clocks: dict[str, list[float]] = {"alert": [], "first action": [], "recover": []}
        for i, t in enumerate(trials):
            assert t["outcome"] == "recovered", (arm, i, t)
            m = t["milestones"]
            (victim,) = t["victims"]
            assert victim["name"] == FLOAT
            node = victim["node"]
            injected = m["kill_acked"]
            # A clean fault: the node was Ready (the node watch) when it was failed.
            before = [ready for t, ready, _ in watches.nodes[node] if t <= m["kill_sent"]]
            assert before, (arm, i, watches.nodes[node])
            assert before[-1], (arm, i, watches.nodes[node])
            actions = t["final"].get("remediatorActions", [])
            assert [a for a in actions if a["source"] == "event"] == []  # it says nothing
            audited = [a for a in actions if a["source"] == "audit"]
            new = [
                p for p in watches.pods.values()
                if p["name"] == FLOAT and injected <= p["first"] <= m["recovered"] + 1
            ]  # fmt: skip
            recovered_at = m["recovered"]
            # The recovery as the test saw it: etcd's own /health of the failed member (its last
            # failed answer before the ledger's recovery, then its first healthy one) and the
            # pod watch (the member's pod Ready again: the operator counts the pods' readiness
            # too). The later of the two, within 100 ms of the ledger's.
            back = poller.back(endpoints[2], injected, recovered_at + 1.0)
            assert back is not None, (arm, i)
            member = [
                p for p in watches.pods.values()
                if p["name"] == FLOAT and p["first"] <= recovered_at
                and (p["deleted"] is None or p["deleted"] > recovered_at)
            ]  # fmt: skip
            assert len(member) == 1, member
            # Its Ready in the pod watch: the last change by then must be to Ready, unless it
            # stayed Ready in the API all along (a frozen node's pods are marked not Ready only
            # by the node controller, not always before the node is back).
            changes = member[0]["readiness"]
            during = [(t, r) for t, r in changes if injected < t <= recovered_at + 1.0]
            if during:
                assert during[-1][1], (arm, i, changes)
                ready_at = during[-1][0]
            else:
                assert [r for t, r in changes if t <= injected][-1], (arm, i, changes)
                ready_at = 0.0
            low, high = max(back[0], ready_at), max(back[1], ready_at)
            if arm == "baseline":
                # By definition the member is back no sooner than its node (the heal).
                high = max(high, m["fault_healed"])
            # The operator's own span for it (`recoveryBracket`): after its last look that did
            # not find the member back, by the answer of the one that did. Both spans hold the
            # moment the member was back, so they meet; and the ledger never says it before the
            # witnesses saw it. Later than their first healthy answer only as far as the
            # operator's own looks were apart (a look held up by the member's /health, a read
            # through Raft that a thawed member retries after half a second: 0.41 s once in CI).
            span = t["final"]["recoveryBracket"]
            assert span is not None, (arm, i)
            not_before, by = span["notBeforeWall"], span["byWall"]
            witnessed = (arm, i, back, changes, recovered_at, (not_before, by))
            assert not_before <= recovered_at <= by, witnessed
            assert by - not_before <= LOOK_SPAN_S, witnessed
            assert low - AGREEMENT_S <= recovered_at, witnessed
            # A single stamp may lag by the machine's scheduling (the operator's watch got a pod's
            # Ready 155-162 ms after the test's own in two rehearsals: the same event, delivered
            # late under make test's load): within SCHEDULING_S; the median below holds the 100 ms.
            assert not_before - SCHEDULING_S <= high, witnessed
            assert low <= by + AGREEMENT_S, witnessed
            gaps.append(max(0.0, low - recovered_at, recovered_at - high))
            spans_s.append(by - not_before)
            # The ledger's clocks (aftershock.clocks: what compare judges), read with our SQL.
            clocks["alert"].append(m["alert_firing"] - m["kill_sent"])
            # Recovery from the first sign the fault took effect (ADR 0008).
            began = min(m[k] for k in ("kill_acked", "first_unhealthy") if k in m)
            clocks["recover"].append(recovered_at - began)
            if arm == "baseline":
                # No remediator ran: no action, no taint, the member never moved, back with its node.
                assert audited == [], actions
                assert new == [], new
                later = next_kill(arms, arm, i)
                assert watches.taint_changes(node, injected - 1, later) == []
                assert recovered_at >= m["fault_healed"] - AGREEMENT_S, m
                # No remediator pod existed while its node was NotReady, from the moment the
                # control plane said so until it said Ready again after the heal (scaled to zero
                # by the baseline before the fault, restored only once the node was Ready).
                not_ready = next(t for t, ready, _ in watches.nodes[node] if t >= injected and not ready)
                ready_again = next(
                    t for t, ready, _ in watches.nodes[node] if t > not_ready and ready
                )  # fmt: skip
                assert ready_again < later, (arm, i, watches.nodes[node])
                running = [
                    p for p in watches.pods.values()
                    if p["labels"].get("app.kubernetes.io/name") == REMEDIATOR
                    and p["first"] <= ready_again and (p["deleted"] is None or p["deleted"] > not_ready)
                ]  # fmt: skip
                assert running == [], (arm, i, running, not_ready, ready_again)
                restored = [
                    p["first"] for p in watches.pods.values()
                    if p["labels"].get("app.kubernetes.io/name") == REMEDIATOR
                    and ready_again < p["first"] < later
                ]  # fmt: skip
                assert restored, (arm, i, "the remediator was not restored after the trial")
                continue
            # The remediator's writes, from the audit webhook: the taint added, then removed.
            assert {(a["verb"], a["object"], a["identity"]) for a in audited} == {
                ("patch", f"nodes {node}", user)
            }, actions
            # (a patch refused for a stale resourceVersion, 409, is retried: recorded, no change)
            applied = [a for a in audited if "HTTP 200" in a["change"]]
            assert len(applied) == 2, actions
            add, remove = applied
            assert TAINT in add["change"], add
            # The test's node watch saw the taint appear and go, each within 100 ms of the
            # audited write (its stageTimestamp: the API server's own).
            changes = watches.taint_changes(node, injected)
            assert [c[1] for c in changes[:2]] == [True, False], changes
            # Either way within 100 ms: the audit's stageTimestamp is stamped as the response
            # completes, and the watch event can leave the API server's watch cache first (seen
            # 18 ms before it under load, session 12).
            for action, (seen, _on) in zip((add, remove), changes, strict=False):
                assert -AGREEMENT_S <= seen - action["wall"] <= AGREEMENT_S, (action, changes)
                taint_seen.append(seen - action["wall"])
            assert add["wall"] < recovered_at < remove["wall"], (add, recovered_at, remove)
            assert remove["wall"] >= m["fault_healed"], (remove, m)
            clocks["first action"].append(add["offset"])  # the ledger's: from the fault
            # The pod watch: the member's new pod, on the other real node, created after the taint.
            (moved,) = new
            assert moved["node"] in ADDRESS, moved
            assert moved["node"] != node, moved
            assert moved["first"] >= add["wall"], (moved, add)
            assert moved["ready"] is not None, moved
            assert moved["ready"] <= recovered_at + 1.5, (moved, recovered_at)
        table[arm] = clocks

    # The member never moved while the baseline Campaign ran, between trials included.
    # Typically within 100 ms of the witnesses: a later one is the exception its own span
    # accounts for (a look held up by the member), not the rule. (Session 13: CI had 1 of 10
    # trials 0.41 s late; a rehearsal 3 of 10 over 100 ms, each inside its span.)
    assert statistics.median(gaps) <= AGREEMENT_S, (gaps, spans_s)
    moved_in_baseline = [
        p for p in watches.pods.values()
        if p["name"] == FLOAT and spans["baseline"][0] <= p["first"] <= spans["baseline"][1]
    ]  # fmt: skip
    assert moved_in_baseline == [], (moved_in_baseline, spans)
    assert compare.returncode in (0, 1), compare.stderr
    verdict = json.loads(compare.stdout)
    assert verdict["verdict"] == "Improved", verdict

    lines = [
        f"remediator evaluation: grace {grace:g}s, period {period:g}s, durationSeconds {duration}, "
        f"quietSeconds {quiet}; setup {setup_s:.0f}s, total {time.time() - started:.0f}s; "
        f"recovery outside the witnesses' bracket by {sorted(round(g * 1000) for g in gaps)} ms "
        f"(the operator's own span {min(spans_s) * 1000:.0f}-{max(spans_s) * 1000:.0f} ms), the taint's "
        f"watch after its audited write by {[round(d * 1000) for d in taint_seen]} ms",
        f"{'arm':9} {'clock':13} {'p50':>7} {'p95':>7}  values",
    ]
    for arm, clocks in table.items():
        for clock, values in clocks.items():
            if values:
                lines.append(
                    f"{arm:9} {clock:13} {statistics.median(values):7.2f} {_p(values, 95):7.2f}  "
                    + " ".join(f"{v:.2f}" for v in values)
                )
    lines.append("time to alert, split by Prometheus's and Alertmanager's own records (seconds):")
    for arm, found in breakdowns.items():
        for i, text in enumerate(found):
            lines.append(f"{arm} trial {i}: {text}")
    print("\n".join(lines))
    with contextlib.suppress(OSError):
        (tmp_path / "remeval-results.txt").write_text("\n".join(lines))
