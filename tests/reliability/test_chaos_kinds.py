"""Every chaos kind of the registry, on the suite's own real node, with the operator SIGKILLed
mid-fault: resume heals what the ledger holds as injected and not healed, no trial is lost or
run twice, and nothing of any fault is left behind.

One case per kind (`CASES`): the Campaign's chaos spec and the kind's own witness of what a
fault could leave behind, read from outside the operator (the API server's pod and container
states, the node's process table; for a partition, the rules as the host sees them). The test
is parameterised over `aftershock.chaos.registry.KINDS`, so a kind added to the registry fails
here until its case is added.

Per kind: a TiKV stand-in (3 real store processes on the real node, reporting to a PD stand-in
on loopback), a Campaign of `KIND_TRIALS` trials, and `KIND_KILLS` SIGKILLs of the operator,
each a moment after a trial's fault went in (the ledger's ``kill_sent``), restarted 0.3-1.0 s
later. Knobs: RELIABILITY_KIND_TRIALS (3), RELIABILITY_KIND_KILLS (2).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from aftershock.chaos import registry
from aftershock.ledger.schema import milestone_columns
from tests.e2e import realnode, testbed
from tests.e2e.operator import TIKV_LABELS, get_campaign
from tests.pdstub import PdStandIn, Timing
from tests.reliability import bed, invariants
from tests.reliability.conftest import env_int
from tests.reliability.proc import Operator
from tests.reliability.tally import TALLY
from tests.reliability.watchers import OPERATOR_USER, AuditLog, PodWatch

pytestmark = [pytest.mark.reliability, pytest.mark.realnode]

KIND_TRIALS = env_int("RELIABILITY_KIND_TRIALS", 3)
KIND_KILLS = env_int("RELIABILITY_KIND_KILLS", 2)
SEED = env_int("RELIABILITY_SEED", 20_261_121)
REPLICAS = 3
NAME = "kind-under-fire"
#: A line only the container_kill exec script has: a process showing it is a kill left running.
KILL_MARK = "readlink /proc/self/ns/mnt"


# --- the witnesses ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodSeen:
    """One pod as the API server holds it: what a fault could leave broken."""

    name: str
    uid: str
    phase: str
    ready: bool
    #: container name -> (containerID, restartCount, running)
    containers: dict[str, tuple[str, int, bool]]


def pods_now(cluster: testbed.Cluster, namespace: str) -> dict[str, PodSeen]:
    """The subject's pods (PD and a client pod may share the namespace: `_tikv_on_the_bridge`)."""
    out = {}
    selector = ",".join(f"{k}={v}" for k, v in TIKV_LABELS.items())
    for p in cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]:
        status = p.get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        containers = {
            cs["name"]: (
                str(cs.get("containerID") or ""),
                int(cs.get("restartCount") or 0),
                "running" in (cs.get("state") or {}),
            )
            for cs in status.get("containerStatuses") or []
        }
        out[p["metadata"]["name"]] = PodSeen(
            p["metadata"]["name"], p["metadata"]["uid"], str(status.get("phase")), ready, containers
        )
    return out


def leftover_kill_processes(pod_uids: set[str]) -> list[str]:
    """Processes on this machine that run the container_kill script inside one of the pods
    (their cgroup names the pod's UID): a kill that never finished."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue
        if KILL_MARK not in cmdline:
            continue
        uids = {u for u in pod_uids if u in cgroup or u.replace("-", "_") in cgroup}
        if uids:
            found.append(f"pid {proc.name} (pod {sorted(uids)}) still runs the kill script")
    return found


@dataclass
class Run:
    """What one kind's run saw, for its witness."""

    namespace: str
    before: dict[str, PodSeen]
    after: dict[str, PodSeen]
    gone: list[str]  # pods the suite's watch saw deleted: "name uid"
    execs: int  # pods/exec creates by the operator (audit log)
    deletes: int  # effective pod DELETEs by the operator (audit log)
    kills_recorded: int  # attempts whose ledger row holds kill_sent
    victim_uids: set[str] = field(default_factory=set)
    #: node_failure: what the host witness saw during the run, and the suite's Node after it.
    host: HostWitness | None = None
    node: dict[str, Any] | None = None


def all_back(run: Run) -> list[str]:
    """Every pod of the subject there, Running, Ready, each container running."""
    problems = []
    if len(run.after) != REPLICAS:
        problems.append(f"{len(run.after)} pods of {REPLICAS} after the run: {sorted(run.after)}")
    for p in run.after.values():
        if p.phase != "Running" or not p.ready:
            problems.append(f"pod {p.name} left {p.phase}, Ready={p.ready}")
        for c, (_, _, running) in p.containers.items():
            if not running:
                problems.append(f"pod {p.name}: container {c} left not running")
    return problems


def node_kill_left_behind(run: Run) -> list[str]:
    problems = all_back(run)
    # Every pod deleted was a victim the operator's DELETE went to (audit log), no more.
    extra = len(run.gone) - run.deletes
    if extra > 0:
        problems.append(f"{extra} pod(s) gone beyond the operator's {run.deletes} deletes: {run.gone}")
    if run.deletes == 0:
        problems.append("the audit log shows no pod DELETE by the operator: the witness saw nothing")
    return problems


def container_kill_left_behind(run: Run) -> list[str]:
    problems = all_back(run)
    if run.gone:
        problems.append(f"container_kill must delete no pod; the watch saw {run.gone} go")
    before = {p.uid for p in run.before.values()}
    after = {p.uid for p in run.after.values()}
    if before != after:
        problems.append(f"pod UIDs changed: {sorted(before)} -> {sorted(after)}")
    restarts = sum(
        n - run.before[p.name].containers[c][1]
        for p in run.after.values()
        if p.name in run.before
        for c, (_, n, _) in p.containers.items()
    )
    # Each kill the ledger recorded restarted one container; an exec cut off by the operator's
    # SIGKILL may have killed too (the audit log counts every exec): restarts lie in between.
    if not run.kills_recorded <= restarts <= run.execs:
        problems.append(
            f"{restarts} container restarts, but the ledger recorded {run.kills_recorded} kills and "
            f"the audit log {run.execs} execs"
        )
    problems += leftover_kill_processes(after | before)
    return problems


def partition_left_behind(run: Run) -> list[str]:
    """network_partition: every pod whole and the same pod, and in each pod's network namespace
    (read from the host, through nsenter and /proc) no rule and no process of ours."""
    problems = all_back(run)
    if run.gone:
        problems.append(f"network_partition must delete no pod; the watch saw {run.gone} go")
    before = {p.uid for p in run.before.values()}
    after = {p.uid for p in run.after.values()}
    if before != after:
        problems.append(f"pod UIDs changed: {sorted(before)} -> {sorted(after)}")
    for p in run.after.values():
        netns = realnode.pod_netns(p.uid)
        if netns is None:
            problems.append(f"pod {p.name}: no network namespace found to check")
            continue
        rules = [line for line in realnode.netns_rules(netns).splitlines() if "AFTERSHOCK" in line]
        if rules:
            problems.append(f"pod {p.name}: partition rules left: {rules}")
        ours = [
            f"{pid} {comm}"
            for pid, comm, cmd in realnode.netns_processes(netns)
            if "aftershock-partition" in cmd or comm in ("sleep", "iptables")
        ]
        if ours:
            problems.append(f"pod {p.name}: processes of ours left: {ours}")
    return problems


#: The suite's real node as realnode.sh knows it: the instance named after the suite's cluster.
SUITE_NODE = {"AFTERSHOCK_REAL_NODE_INSTANCE": bed.CLUSTER_NAME}
NODE_FAILURE_REQUEST = "aftershock.dev/node-failure"


@dataclass
class HostWitness:
    """node_failure's witness on the host, not the operator's: the suite's node's kubelet
    process state and its pods' freezer cgroups, sampled through the run (did the fault bite?),
    and read again after it (is anything left stopped or frozen?)."""

    kubelet: realnode.Process
    #: The node's kubelet cgroup root (its pods' cgroups are under it).
    cgroup_root: str
    stopped_seen: int = 0
    frozen_seen: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> HostWitness:
        self._thread = threading.Thread(target=self._run, daemon=True, name="host-witness")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            if realnode.process_state(self.kubelet.pid) == "T":
                self.stopped_seen += 1
            if realnode.frozen_cgroups(self.cgroup_root):
                self.frozen_seen += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def node_ready(node: dict[str, Any]) -> str | None:
    conds = (node.get("status") or {}).get("conditions") or []
    return next((c.get("status") for c in conds if c.get("type") == "Ready"), None)


def node_failure_left_behind(run: Run) -> list[str]:
    """node_failure: every pod whole and the same pod; on the host, the kubelet not stopped and
    no pod cgroup frozen (having seen both while the faults held); the Node Ready, with no
    request of ours left on it."""
    problems = all_back(run)
    if run.gone:
        problems.append(f"node_failure must delete no pod; the watch saw {run.gone} go")
    before = {p.uid for p in run.before.values()}
    after = {p.uid for p in run.after.values()}
    if before != after:
        problems.append(f"pod UIDs changed: {sorted(before)} -> {sorted(after)}")
    host = run.host
    if host is None:
        return [*problems, "no host witness ran"]
    if not host.stopped_seen or not host.frozen_seen:
        problems.append(
            f"the host witness never saw the fault (kubelet stopped {host.stopped_seen}x, "
            f"pods frozen {host.frozen_seen}x): it would see nothing left either"
        )
    if realnode.process_state(host.kubelet.pid) == "T":
        problems.append(f"the kubelet (pid {host.kubelet.pid}) is left stopped")
    frozen = realnode.frozen_cgroups(host.cgroup_root)
    if frozen:
        problems.append(f"pod cgroups left frozen: {frozen}")
    node = run.node or {}
    if node_ready(node) != "True":
        problems.append(f"node {realnode.NODE} is left Ready={node_ready(node)}")
    if NODE_FAILURE_REQUEST in ((node.get("metadata") or {}).get("annotations") or {}):
        problems.append(f"our request is left on node {realnode.NODE}")
    return problems


@dataclass(frozen=True)
class KindCase:
    #: The Campaign's spec.chaos.
    chaos: dict[str, Any]
    #: What the kind left behind, read from outside the operator; empty when nothing.
    left_behind: Callable[[Run], list[str]]
    #: The node agent runs on the suite's node, and the host witness watches it (node_failure).
    node_agent: bool = False


CASES: dict[str, KindCase] = {
    "node_kill": KindCase(
        {"type": "node_kill", "mode": "one", "gracePeriodSeconds": 0}, node_kill_left_behind
    ),
    "container_kill": KindCase(
        {"type": "container_kill", "mode": "one", "container": "tikv"}, container_kill_left_behind
    ),
    # Its subject on the pod bridge (a partition refuses hostNetwork pods): `tikv_on_real_node`.
    "network_partition": KindCase(
        {"type": "network_partition", "mode": "one", "durationSeconds": 3, "direction": "all"},
        partition_left_behind,
    ),
    # The suite's one real node fails: every store with it (one victim, two bystanders named in
    # the status). Far shorter than the control plane's grace period: the node stops and comes
    # back without being marked NotReady, which is all the healing needs.
    "node_failure": KindCase(
        {"type": "node_failure", "mode": "one", "durationSeconds": 4, "acknowledgeNodeFailure": True},
        node_failure_left_behind,
        node_agent=True,
    ),
}
#: Kinds whose subject must be on the pod network (not hostNetwork), with PD there too.
ON_THE_BRIDGE = {"network_partition"}
PD_PORT = 2379


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Subject:
    pd: PdStandIn | None
    url: str


def _client_pod() -> dict[str, Any]:
    """A pod of the suite's own on the bridge, whose namespace reaches the others."""
    spec = realnode.on_real_node(
        {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.local/shell:local",
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                }
            ],
        }
    )
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"}, "spec": spec}


@contextlib.contextmanager
def _tikv_on_the_bridge(cluster: testbed.Cluster, namespace: str) -> Iterator[Subject]:
    """The stores on the pod bridge, PD as a pod there too, and the operator's way in: a
    forwarder from the host's loopback, through a client pod's namespace (the host has no route
    to the bridge)."""
    objs = realnode.pd_standin("pd", PD_PORT, mode="fast", scale=0.05, host_network=False)
    cluster.apply(yaml.safe_dump_all([*objs, _client_pod()]), namespace=namespace)
    cluster.kubectl("rollout", "status", "deployment/pd", "-n", namespace, "--timeout=180s")
    cluster.kubectl("wait", "--for=condition=Ready", "pod/client", "-n", namespace, "--timeout=120s")
    pods = cluster.get_json("pods", "-n", namespace)["items"]
    by_name = {p["metadata"]["name"]: p for p in pods}
    (pd,) = [p for n, p in by_name.items() if n.startswith("pd-")]
    pd_ip = pd["status"]["podIP"]
    netns = realnode.pod_netns(by_name["client"]["metadata"]["uid"])
    assert netns is not None, "the client pod's network namespace"
    stores = realnode.store_standin(
        "tikv",
        f"http://{pd_ip}:{PD_PORT}",
        replicas=REPLICAS,
        heartbeat_interval=0.5,
        labels=dict(TIKV_LABELS),
        host_network=False,
    )
    forwarder = realnode.NetnsForwarder(netns, pd_ip, PD_PORT).start()
    try:
        cluster.apply(yaml.safe_dump_all(stores), namespace=namespace)
        cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", namespace, "--timeout=180s")
        yield Subject(None, forwarder.url)
    finally:
        forwarder.stop()
        cluster.kubectl(
            "delete", "statefulset", "tikv", "-n", namespace, "--wait=true", "--timeout=60s", check=False
        )


@pytest.fixture
def tikv_on_real_node(
    request: pytest.FixtureRequest, cluster: testbed.Cluster, namespace: str, real_node: None
) -> Iterator[Subject]:
    """3 TiKV store stand-ins on the suite's real node (shared PID namespace, which
    container_kill needs and node_kill does not mind), and their PD stand-in on loopback; for
    the kinds in `ON_THE_BRIDGE`, all of it on the pod bridge."""
    if request.node.callspec.params.get("kind") in ON_THE_BRIDGE:
        with _tikv_on_the_bridge(cluster, namespace) as subject:
            yield subject
        return
    timing = Timing.fast(0.05)
    pd = PdStandIn(timing=timing, namespace=namespace, headless_service="tikv-peer")
    url = pd.start()
    objs = realnode.store_standin(
        "tikv", url, replicas=REPLICAS, heartbeat_interval=timing.heartbeat_interval, labels=dict(TIKV_LABELS)
    )
    for obj in objs:
        if obj["kind"] == "StatefulSet":
            obj["spec"]["template"]["spec"]["shareProcessNamespace"] = True
            obj["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    try:
        cluster.apply(yaml.safe_dump_all(objs), namespace=namespace)
        cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", namespace, "--timeout=180s")
        yield Subject(pd, url)
    finally:
        cluster.kubectl(
            "delete", "statefulset", "tikv", "-n", namespace, "--wait=true", "--timeout=60s", check=False
        )
        pd.stop()


@contextlib.contextmanager
def _node_agent(cluster: testbed.Cluster, namespace: str) -> Iterator[None]:
    """manifests/node-agent on the suite's node (the operator's image imported into it), in
    the test's namespace; its cluster-scoped RBAC removed after."""
    testbed.run(
        [str(realnode.IMAGES_SH), "import-operator"], timeout=1800, env={**cluster.env(), **SUITE_NODE}
    )
    server = cluster.kubectl(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    ).stdout
    agent = realnode.node_agent_objects(namespace, server, realnode.NODE)
    cluster.apply(yaml.safe_dump_all(agent))
    try:
        cluster.kubectl(
            "rollout", "status", "daemonset/aftershock-node-agent", "-n", namespace, "--timeout=180s"
        )
        yield
    finally:
        cluster.kubectl("annotate", "node", realnode.NODE, f"{NODE_FAILURE_REQUEST}-", check=False)
        for obj in agent:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], check=False)
        shutil.rmtree(realnode.node_agent_state_dir(namespace), ignore_errors=True)


@pytest.fixture
def host_witness(
    request: pytest.FixtureRequest, cluster: testbed.Cluster, namespace: str, tikv_on_real_node: Subject
) -> Iterator[HostWitness | None]:
    """For a kind that fails the node (`KindCase.node_agent`): the node agent on the suite's
    node, and the host witness watching that node's kubelet and pod cgroups; else None."""
    case = CASES.get(str(request.node.callspec.params.get("kind")))
    if case is None or not case.node_agent:
        yield None
        return
    with _node_agent(cluster, namespace):
        witness = HostWitness(realnode.kubelet_of(SUITE_NODE), realnode.cgroup_root(SUITE_NODE)).start()
        try:
            yield witness
        finally:
            witness.stop()


def _in_flight(db: Path) -> tuple[int, bool] | None:
    """(attempt id, its fault went in) of the attempt in flight, from the ledger file itself."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            rows = conn.execute(
                f"SELECT id, {milestone_columns('kill_sent')[0]} FROM attempts WHERE outcome IS NULL"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return (int(rows[0][0]), rows[0][1] is not None) if rows else None


def _faults(db: Path) -> list[dict[str, Any]]:
    """The ledger's faults rows (the test's own SQL)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM faults ORDER BY attempt_id")]
    finally:
        conn.close()


def _audited(audit: AuditLog, namespace: str) -> tuple[int, int]:
    """(pods/exec creates, effective pod DELETEs) by the operator in the namespace."""
    execs: set[str] = set()
    for r in audit.requests_by(OPERATOR_USER):
        ref = r.get("objectRef") or {}
        if (
            ref.get("namespace") == namespace
            and ref.get("resource") == "pods"
            and ref.get("subresource") == "exec"
            and r.get("verb") in ("create", "get")
        ):
            # An exec is audited at ResponseStarted and again at ResponseComplete: one auditID.
            execs.add(str(r.get("auditID")))
    deletes = sum(1 for d in audit.pod_deletes(namespace) if d.by_operator and d.effective)
    return len(execs), deletes


# The first test of a session pays the suite's cluster and real node start (~30 s on a quiet
# machine, 8 minutes seen at load 20), which pytest-timeout counts against it.
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kind", sorted(registry.KINDS))
def test_operator_sigkilled_mid_fault_leaves_nothing_behind(
    kind: str,
    cluster: testbed.Cluster,
    namespace: str,
    operator_identity: str,
    audit: AuditLog,
    tikv_on_real_node: Subject,
    host_witness: HostWitness | None,
    tmp_path: Path,
) -> None:
    case = CASES.get(kind)
    assert case is not None, (
        f"chaos kind {kind!r} has no reliability case: add one to CASES in {Path(__file__).name} "
        "(its chaos spec and a witness of what it could leave behind)"
    )
    info = registry.KINDS[kind]
    rng = random.Random(f"{SEED}-{kind}")
    before = pods_now(cluster, namespace)
    watch = PodWatch(cluster.api_client(), namespace).start()
    op = Operator(
        kubeconfig=operator_identity, db=tmp_path / "ledger.db", workdir=tmp_path, namespaces=[namespace]
    )
    audit.mark()
    op.start()
    kill_times: list[float] = []
    open_at_kill: list[list[int]] = []  # per SIGKILL: the ledger's injected, unhealed faults
    killed_attempts: set[int] = set()
    try:
        cluster.apply(
            {
                "apiVersion": "aftershock.dev/v1alpha1",
                "kind": "Campaign",
                "metadata": {"name": NAME, "namespace": namespace},
                "spec": {
                    "subject": {
                        "kind": "TiKV",
                        "selector": {"matchLabels": dict(TIKV_LABELS)},
                        "pdURL": tikv_on_real_node.url,
                    },
                    "chaos": case.chaos,
                    "trials": KIND_TRIALS,
                    "seed": SEED,
                    "intervalSeconds": 0,
                    "steadyState": {"timeoutSeconds": 180, "stableSeconds": 1},
                    # The kubelet backs a container killed twice in a row off for 10 s: in the window.
                    "recovery": {"timeoutSeconds": 180, "settleSeconds": 1},
                },
            }
        )
        deadline = time.monotonic() + 120 + 60 * KIND_TRIALS
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            op.check_alive()
            status = dict(get_campaign(cluster, namespace, NAME).get("status") or {})
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            flight = _in_flight(op.db)
            if (
                len(kill_times) < KIND_KILLS
                and flight is not None
                and flight[1]
                and flight[0] not in killed_attempts
            ):
                # Mid-fault: the fault went in (kill_sent is in the ledger), recovery not seen yet.
                time.sleep(rng.uniform(0.0, 0.3))
                kill_times.append(time.time())
                op.kill()
                killed_attempts.add(flight[0])
                open_at_kill.append(
                    [f["attempt_id"] for f in _faults(op.db) if f["injected_at"] and f["healed_at"] is None]
                )
                time.sleep(rng.uniform(0.3, 1.0))
                op.start()
                continue
            time.sleep(0.05)
        else:
            raise AssertionError(f"{kind}: the Campaign did not finish in time; last status {status}")
        time.sleep(1.0)  # the last watch events and audit lines
    finally:
        op.stop()
        watch.stop()

    # The cluster settles by itself (a kind that heals nothing relies on the kubelet or the
    # StatefulSet controller): wait for every pod to be back before reading the witness.
    def settled() -> bool:
        return not all_back(Run(namespace, before, pods_now(cluster, namespace), [], 0, 0, 0))

    with contextlib.suppress(AssertionError):  # the witness below says what is left
        testbed.wait_for(settled, 60, interval=0.5, what=f"{kind}: every pod back")
    node = None
    if host_witness is not None:
        host_witness.stop()
        with contextlib.suppress(AssertionError):
            testbed.wait_for(
                lambda: node_ready(cluster.get_json("node", realnode.NODE)) == "True",
                60,
                interval=0.5,
                what=f"{kind}: node {realnode.NODE} Ready",
            )
        node = cluster.get_json("node", realnode.NODE)
    views, integrity = invariants.read_ledger(op.db, namespace, [NAME])
    view = views[NAME]
    execs, deletes = _audited(audit, namespace)
    run = Run(
        namespace=namespace,
        before=before,
        after=pods_now(cluster, namespace),
        gone=[f"{g.name} {g.uid}" for g in watch.gone],
        execs=execs,
        deletes=deletes,
        kills_recorded=sum(1 for a in view.attempts if "kill_sent" in a.milestones),
        host=host_witness,
        node=node,
    )
    left = case.left_behind(run)
    faults = _faults(op.db)
    unhealed = [f for f in faults if f["healed_at"] is None]
    left += [f"ledger: fault of attempt {f['attempt_id']} never healed" for f in unhealed]
    lost, duplicates, problems = invariants.trial_accounting(view, KIND_TRIALS)
    for _ in kill_times:
        # Each SIGKILL found a fault in flight (it waited for kill_sent): it bit.
        TALLY.fault(f"operator_kill mid ({kind})", survived=status.get("phase") == "Succeeded", bit=True)
    TALLY.trials_lost += lost
    TALLY.duplicates += duplicates
    TALLY.crashes += len(op.crashes)
    TALLY.left_behind(kind, left)

    assert status.get("phase") == "Succeeded", status
    assert len(kill_times) == KIND_KILLS, (
        f"only {len(kill_times)} of {KIND_KILLS} SIGKILLs found a fault in flight"
    )
    assert integrity == "ok"
    assert (lost, duplicates) == (0, 0)
    assert not problems, problems
    assert not invariants.interrupted_recorded(view, kill_times, [])
    interrupted = [a for a in view.attempts if a.outcome is not None and a.outcome.value == "interrupted"]
    assert len(interrupted) >= KIND_KILLS, [(a.trial_index, a.attempt, a.outcome) for a in view.attempts]
    assert not left, left
    if info.heal is None:
        # The cluster undoes this kind by itself: the ledger keeps no fault to heal.
        assert not faults, faults
    else:
        # What each SIGKILL left injected and not healed was healed when the operator came back.
        for ids in open_at_kill:
            assert ids, "the operator was killed mid-fault but the ledger held no open fault"
            for f in faults:
                if f["attempt_id"] in ids:
                    assert "resume" in str(f["heal_note"]), f
        assert all(f["healed_at"] for f in faults)
    assert not op.crashes, op.crashes
    print(
        f"{kind}: {len(kill_times)} SIGKILLs mid-fault, {len(view.attempts)} attempts, "
        f"{execs} execs, {deletes} deletes; left behind: {left or 0}; ledger faults: {len(faults)}"
    )
