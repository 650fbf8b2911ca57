"""Real pods on the real node: processes that start and die, an operator in its own image.

The subject is the TiKV stand-in: a StatefulSet whose every pod on node real-0 runs
tests/pdstub/store.py as a real process, registering its store with the PD stand-in and
heartbeating as tikv-server does; the stand-in's store states follow those processes only.
Every judgement is checked against witnesses of the test's own: the node's containerd and
/proc (processes), an independent pod watch (times), the ledger file read with its own SQL.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from bench.groundtruth import PodEvent, PodWatcher

from tests.e2e import ledgerfile, realnode, testbed
from tests.e2e.operator import TIKV_LABELS, OperatorProcess, campaign, wait_phase
from tests.pdstub import PdStandIn, Timing

pytestmark = pytest.mark.realnode

StartOperator = Callable[..., OperatorProcess]
#: Milestones from the ledger and from the independent watch agree to this (the issue's bound),
#: at the median; a single look may lag by up to OUTLIER_S on a loaded 2-core machine (seen:
#: 54 ms while parallel workers ran; the etcd tests' operator, in make test's busiest minutes, up
#: to 413 ms), which is the machine's scheduling, not a wrong milestone (a wrong event is off by
#: the kubelet's ~1 s). bench/ measures the accuracy itself.
AGREEMENT_S = 0.05
OUTLIER_S = 0.5
#: PD's and TiKV's intervals at 1/20: 0.5 s heartbeats, Disconnected after 1 s.
FAST = 0.05


@dataclass
class RealSubject:
    namespace: str
    pd: PdStandIn
    processes: realnode.ProcessTracker
    watch: PodWatcher

    @property
    def pd_url(self) -> str:
        return self.pd.base_url

    def close(self) -> None:
        self.watch.stop()
        self.processes.stop()
        self.pd.stop()


def start_real_subject(cluster: testbed.Cluster, namespace: str, timing: Timing) -> RealSubject:
    pd = PdStandIn(timing=timing, namespace=namespace, headless_service="tikv-peer")
    url = pd.start()
    processes = realnode.ProcessTracker(cluster.api_client(), namespace).start()
    watch = PodWatcher(cluster.api_client(), namespace).start()
    objs = realnode.store_standin(
        "tikv", url, heartbeat_interval=timing.heartbeat_interval, labels=dict(TIKV_LABELS)
    )
    cluster.apply(yaml.safe_dump_all(objs), namespace=namespace)
    cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", namespace, "--timeout=180s")
    return RealSubject(namespace, pd, processes, watch)


@pytest.fixture
def real_subject(cluster: testbed.Cluster, namespace: str, real_node: None) -> Iterator[RealSubject]:
    s = start_real_subject(cluster, namespace, Timing.fast(FAST))
    yield s
    s.close()


def report(db: Path, namespace: str, name: str) -> dict[str, Any]:
    proc = testbed.run(
        [str(testbed.REPO / ".venv" / "bin" / "aftershock"), "report", name, "-n", namespace,
         "--db", str(db), "--format", "json"]
    )  # fmt: skip
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def milestone(trial: dict[str, Any], name: str) -> float:
    """A milestone's wall time (unix seconds) from a report trial."""
    wall = trial["timings"][name]["wall"]
    return dt.datetime.fromisoformat(wall.replace("Z", "+00:00")).timestamp()


def victim_gone(victim: dict[str, Any]) -> Callable[[PodEvent], bool]:
    """The victim pod deleted (or marked for deletion)."""
    return lambda e: e.uid == victim["uid"] and (e.type == "DELETED" or e.deleting)


def replacement_ready(victim: dict[str, Any], after: float) -> Callable[[PodEvent], bool]:
    """A pod of the victim's name, another UID, Ready after the kill was sent."""
    return lambda e: e.name == victim["name"] and e.uid != victim["uid"] and e.ready and e.wall > after


def first(events: list[PodEvent], pred: Callable[[PodEvent], bool]) -> PodEvent:
    found = next((e for e in events if pred(e)), None)
    assert found is not None, "the independent watch never saw it"
    return found


def test_the_real_node_runs_real_processes_and_kwok_leaves_it_alone(
    cluster: testbed.Cluster, real_node: None, real_subject: RealSubject
) -> None:
    node = cluster.get_json("node", realnode.NODE)
    assert "kwok.x-k8s.io/node" not in (node["metadata"].get("annotations") or {})
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    pods = cluster.get_json("pods", "-n", real_subject.namespace)["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {realnode.NODE}
    for pod in pods:
        process = realnode.container_process(pod)
        assert process is not None, pod["metadata"]["name"]
        assert process.alive(), pod["metadata"]["name"]
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"/standin/store.py" in cmdline

    # The stores PD reports are those processes: three, each Up once its first heartbeat came
    # (PD shows a registered store that never heartbeated as Down).
    def all_up() -> bool:
        stores = real_subject.pd.stores_payload()["stores"]
        return len(stores) == 3 and {s["store"]["state_name"] for s in stores} == {"Up"}

    testbed.wait_for(all_up, 30, what="three stores Up")


def test_campaign_kills_real_processes_and_its_milestones_agree_with_an_independent_watch(
    cluster: testbed.Cluster, namespace: str, real_subject: RealSubject, start_operator: StartOperator
) -> None:
    op = start_operator()
    # stableSeconds 1: every replacement is Ready (and its process seen) well before it can
    # be chosen as the next victim.
    cluster.apply(
        campaign("real", namespace, real_subject.pd_url, trials=3, intervalSeconds=1,
                 steadyState={"timeoutSeconds": 120, "stableSeconds": 1},
                 recovery={"timeoutSeconds": 120, "settleSeconds": 1})
    )  # fmt: skip
    obj = wait_phase(cluster, namespace, "real", {"Succeeded", "Failed"}, timeout=300, op=op)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    trials = [t for t in report(op.db, namespace, "real")["trials"] if t["outcome"] == "recovered"]
    assert len(trials) == 3
    events = real_subject.watch.snapshot()
    gaps: list[tuple[float, Any]] = []
    for trial in trials:
        (victim,) = trial["victims"]
        killed = real_subject.processes.get(victim["uid"])
        assert killed is not None, f"the victim {victim['name']}'s process was never seen"
        # The victim's process dies (kubelet stops the container of a deleted pod).
        testbed.wait_for(killed.ended, 60, what=f"{victim['name']}'s process to end")
        kill_sent = milestone(trial, "kill_sent")
        gone = first(events, victim_gone(victim))
        ready = first(events, replacement_ready(victim, kill_sent))
        replacement = real_subject.processes.get(ready.uid)
        assert replacement is not None
        assert replacement != killed
        # A real container start: the replacement's process began after the kill and before
        # the pod was Ready (to a clock tick).
        started = realnode.started_wall(replacement)
        assert kill_sent - 0.02 <= started <= milestone(trial, "replacement_ready") + 0.02
        gaps.append((abs(milestone(trial, "victim_gone") - gone.wall), (trial, gone)))
        gaps.append((abs(milestone(trial, "replacement_ready") - ready.wall), (trial, ready)))
    assert statistics.median(g for g, _ in gaps) <= AGREEMENT_S, gaps
    assert all(g <= OUTLIER_S for g, _ in gaps), gaps


def test_kubelet_and_containerd_killed_mid_trial_give_no_false_recovery_and_no_stray_kill(
    cluster: testbed.Cluster, namespace: str, real_subject: RealSubject, start_operator: StartOperator
) -> None:
    audit = audit_log()
    audit.mark()
    op = start_operator()
    cluster.apply(
        campaign("faults", namespace, real_subject.pd_url, trials=3, intervalSeconds=1,
                 steadyState={"timeoutSeconds": 180, "stableSeconds": 1},
                 recovery={"timeoutSeconds": 180, "settleSeconds": 1})
    )  # fmt: skip
    try:
        for part in ("kubelet", "containerd"):
            seen = {a.id for a in ledgerfile.attempts(op.db) if a.outcome is not None}
            flying = testbed.wait_for(
                # Called at once, in this iteration: the loop variable is the one meant.
                lambda: [a for a in ledgerfile.in_flight(op.db) if a.id not in seen],  # noqa: B023
                120,
                interval=0.05,
                what="a trial mid-recovery",
            )
            testbed.run([str(realnode.REALNODE_SH), "kill", part])
            # Down long enough that the replacement cannot have started without it.
            testbed.wait_for(
                lambda: all(
                    a.outcome is None
                    for a in ledgerfile.attempts(op.db)
                    if a.id == flying[0].id  # noqa: B023 (called at once)
                ),
                5,
            )
            time.sleep(3)  # the outage itself: this is the fault, not a synchronisation
            testbed.run([str(realnode.REALNODE_SH), "revive"])
    finally:
        testbed.run([str(realnode.REALNODE_SH), "revive"], check=False)
    cluster.kubectl("wait", "--for=condition=Ready", f"node/{realnode.NODE}", "--timeout=120s")
    obj = wait_phase(cluster, namespace, "faults", {"Succeeded", "Failed"}, timeout=400, op=op)
    rep = report(op.db, namespace, "faults")
    # No false recovery: every recovered trial's replacement is a process that really started
    # after the kill and before the recorded Ready.
    events = real_subject.watch.snapshot()
    for trial in (t for t in rep["trials"] if t["outcome"] == "recovered"):
        (victim,) = trial["victims"]
        kill_sent = milestone(trial, "kill_sent")
        ready = first(events, replacement_ready(victim, kill_sent))
        process = real_subject.processes.get(ready.uid)
        assert process is not None
        assert kill_sent - 0.02 <= realnode.started_wall(process) <= milestone(trial, "recovered") + 0.02
    # No stray kill: every pod the operator deleted was a recorded victim, in this namespace.
    victims = {v["name"] for t in rep["trials"] for v in t["victims"] if "kill_sent" in t["timings"]}
    # (Other operators of the same ServiceAccount may run beside this one, in their own
    # namespaces: the subject's namespace is where this one acts.)
    deletes = [d for d in audit.pod_deletes(namespace) if d.by_operator]
    assert deletes, "the operator deleted nothing"
    assert {d.name for d in deletes} <= victims, [
        (t["index"], t["outcome"], t["error"]) for t in rep["trials"]
    ]
    assert obj["status"]["phase"] in ("Succeeded", "Failed"), obj["status"]


def audit_log() -> Any:
    from tests.reliability.watchers import AuditLog

    path = testbed.run([str(testbed.TESTBED / "cluster.sh"), "audit-log"]).stdout.strip()
    return AuditLog(Path(path))
