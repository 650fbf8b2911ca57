"""etcd on the real node: a subject that really recovers, with leader-aware chaos.

A 3-member etcd StatefulSet (hostNetwork, client and peer ports chosen per test on 127.0.0.1,
data on a hostPath of the test's own) and two Campaigns against it: ``target: Leader`` and
``target: Follower``, 10 trials each. A witness of the test's own (`etcdwitness.EtcdWitness`:
every member's ``/v3/maintenance/status`` every 10 ms, a thread per member, independent of the
operator) confirms that each Leader trial killed the member that led at kill time, that a new
term began with another member leading, and that the election time the ledger recorded lies
within the witness's bracket for it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import realnode, testbed
from tests.e2e.etcdwitness import EtcdWitness
from tests.e2e.operator import OperatorProcess, free_port, wait_phase

pytestmark = pytest.mark.realnode

LABELS = {"app.kubernetes.io/name": "etcd-e2e"}
#: The ledger's election time lies within ELECTION_AGREEMENT_S of the witness's bracket (the
#: issue's bound) at the median, and every trial within ELECTION_BOUND_S. The 0.3-0.5 s gaps seen
#: before (issue 18) were the operator's: a look waited for every member's /health, which an
#: election holds up, so the next look, the one that saw the new term, began up to 0.3 s after
#: the members had it (the witness, a thread per member, had it within 10-30 ms). Since: all ten
#: within 100 ms in 4 runs at load 8-10 (max 97, 49, 43, 49 ms); at load 17 one trial of ten was
#: 280 ms late, the operator's event loop short of CPU, and in make test's busiest minutes (the
#: kind image build beside three workers) one trial of three 321 ms and, in CI, 413 ms late with
#: the other two at 0. So the accuracy is the median's bound here and the benchmarks' (bench/),
#: and a single trial's bound only tells this election from another event: the kill lies at
#: least the election timeout (1 s, --election-timeout above) before the election it causes.
ELECTION_AGREEMENT_S = 0.1
ELECTION_BOUND_S = 0.8


def etcd_statefulset(
    client_ports: list[int], peer_ports: list[int], data_dir: str, *, start_delay_s: float = 0
) -> list[dict[str, Any]]:
    """`start_delay_s`: each container waits this long before etcd starts (standing for an image
    pull or a volume attach: a replacement member that takes a while to come back)."""
    cluster = ",".join(f"etcd-{i}=http://127.0.0.1:{p}" for i, p in enumerate(peer_ports))
    case = " ".join(
        f"{i}) C={c}; P={p};;" for i, (c, p) in enumerate(zip(client_ports, peer_ports, strict=True))
    )
    script = (
        (f"sleep {start_delay_s}; " if start_delay_s else "")
        + f'i=${{POD_NAME##*-}}; case $i in {case} esac; exec /bin/etcd --name "$POD_NAME" '
        f'--data-dir "/data/$POD_NAME" --listen-client-urls http://127.0.0.1:$C '
        "--advertise-client-urls http://127.0.0.1:$C --listen-peer-urls http://127.0.0.1:$P "
        f"--initial-advertise-peer-urls http://127.0.0.1:$P --initial-cluster {cluster} "
        "--initial-cluster-state new --initial-cluster-token e2e-etcd "
        "--heartbeat-interval 100 --election-timeout 1000"
    )
    pod = realnode.on_real_node(
        {
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": "etcd",
                    "image": "registry.local/etcd:local",
                    "imagePullPolicy": "Never",
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "hostPath": {"path": data_dir, "type": "DirectoryOrCreate"}}],
        }
    )
    # Ready when its own member answers healthy (an httpGet probe cannot name a per-pod port).
    container = pod["containers"][0]
    container["readinessProbe"] = {
        "exec": {"command": ["sh", "-c", f'i=${{POD_NAME##*-}}; case $i in {case} esac; '
                             'wget -q -O - http://127.0.0.1:$C/health | grep -q true']},
        "periodSeconds": 1,
        "failureThreshold": 1,
    }  # fmt: skip
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "etcd", "labels": dict(LABELS)},
            "spec": {
                "serviceName": "etcd",
                "replicas": 3,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": dict(LABELS)},
                "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod},
            },
        }
    ]


@dataclass
class Etcd:
    endpoints: list[str]
    witness: EtcdWitness
    data_dir: Path


@pytest.fixture
def etcd(cluster: testbed.Cluster, namespace: str, real_node: None) -> Iterator[Etcd]:
    clients = [free_port() for _ in range(3)]
    peers = [free_port() for _ in range(3)]
    data_dir = Path(f"/tmp/aftershock-e2e-{namespace}")
    cluster.apply(yaml.safe_dump_all(etcd_statefulset(clients, peers, str(data_dir))), namespace=namespace)
    cluster.kubectl("rollout", "status", "statefulset/etcd", "-n", namespace, "--timeout=180s")
    endpoints = [f"http://127.0.0.1:{p}" for p in clients]
    witness = EtcdWitness(endpoints).start()
    yield Etcd(endpoints, witness, data_dir)
    witness.stop()
    cluster.kubectl(
        "delete", "statefulset", "etcd", "-n", namespace, "--wait=true", "--timeout=60s", check=False
    )
    shutil.rmtree(data_dir, ignore_errors=True)


def etcd_campaign(name: str, namespace: str, endpoints: list[str], target: str) -> dict[str, Any]:
    return {
        "apiVersion": "aftershock.dev/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "subject": {"kind": "Etcd", "selector": {"matchLabels": dict(LABELS)}, "endpoints": endpoints},
            # Graceful delete: etcd hands leadership over on SIGTERM, as a drained node does.
            "chaos": {"type": "node_kill", "mode": "one", "gracePeriodSeconds": 10, "target": target},
            "trials": 10,
            "intervalSeconds": 0,
            "steadyState": {"timeoutSeconds": 120, "stableSeconds": 1},
            "recovery": {"timeoutSeconds": 120, "settleSeconds": 1},
        },
    }


def ledger_trials(db: Path, namespace: str, name: str) -> list[dict[str, Any]]:
    """The completed trials, read with the test's own SQL: victims, outcome, every milestone."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT a.id, a.victims, a.outcome, a.final_state, a.kill_sent_wall, a.recovered_offset "
            "FROM attempts a JOIN trials t ON t.attempt_id = a.id JOIN campaigns c ON c.uid = a.campaign_uid "
            "WHERE c.namespace = ? AND c.name = ? ORDER BY a.trial_index",
            (namespace, name),
        ).fetchall()
        trials = []
        for attempt_id, victims, outcome, final_state, kill_wall, recovered in rows:
            own = {
                n: (w, o)
                for n, w, o in conn.execute(
                    'SELECT name, wall, "offset" FROM subject_milestones WHERE attempt_id = ?', (attempt_id,)
                )
            }
            trials.append(
                {
                    "victims": json.loads(victims),
                    "outcome": outcome,
                    "final": json.loads(final_state),
                    "kill_wall": kill_wall,
                    "recovered": recovered,
                    "own": own,
                }
            )
        return trials
    finally:
        conn.close()


CRD = testbed.REPO / "manifests" / "crd" / "campaigns.aftershock.dev.yaml"


def create_campaign(cluster: testbed.Cluster, namespace: str, body: dict[str, Any]) -> None:
    """Create the Campaign against this branch's CRD. The test bed's cluster is shared: another
    checkout's tests may have installed an older CRD (without subject.endpoints) since this
    session's, so install ours again first, and once more if the create raced with theirs."""
    for _ in range(3):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        cluster.kubectl("wait", "--for=condition=Established", "crd/campaigns.aftershock.dev")
        if cluster.apply(body, namespace=namespace, check=False).returncode == 0:
            return
    cluster.apply(body, namespace=namespace)  # the error, if it still fails


def aftershock(*args: str) -> str:
    return testbed.run([str(testbed.REPO / ".venv" / "bin" / "aftershock"), *args], check=False).stdout


def test_leader_and_follower_kills_recover_and_the_leader_kills_hit_the_leader(
    cluster: testbed.Cluster,
    namespace: str,
    etcd: Etcd,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    op = start_operator("--probe-interval", "0.1")
    for target in ("Leader", "Follower"):
        name = f"etcd-{target.lower()}"
        create_campaign(cluster, namespace, etcd_campaign(name, namespace, etcd.endpoints, target))
        done = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=900, op=op)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert done["status"]["verdict"] == "Pass", done["status"]

    ids = etcd.witness.member_ids()
    leader_trials = ledger_trials(op.db, namespace, "etcd-leader")
    follower_trials = ledger_trials(op.db, namespace, "etcd-follower")
    assert len(leader_trials) == len(follower_trials) == 10
    elections: list[tuple[float, float, float]] = []
    gaps: list[float] = []
    for trial in leader_trials:
        (victim,) = trial["victims"]
        assert victim["role"] == "Leader"
        kill = trial["kill_wall"]
        old = etcd.witness.leader_before(kill)
        assert old is not None, "the witness saw no leader before the kill"
        # The member that led at kill time is the victim's: its client URL is the victim's port.
        victim_endpoint = etcd.endpoints[int(victim["name"].rsplit("-", 1)[1])]
        assert ids[old.leader] == victim_endpoint, (victim, ids[old.leader])
        election = etcd.witness.election_after(kill, old)
        assert election is not None, f"the witness saw no raft term above {old.term} after the kill"
        # A graceful delete hands leadership over to another member before the process ends.
        assert election.leader != old.leader, (old, election)
        recorded = trial["own"]["leader_elected"][0]
        elections.append((recorded - kill, election.earliest - kill, election.latest - kill))
        gaps.append(election.gap(recorded))
    assert statistics.median(gaps) <= ELECTION_AGREEMENT_S, (gaps, elections)
    assert max(gaps) <= ELECTION_BOUND_S, (gaps, elections)
    for trial in follower_trials:
        (victim,) = trial["victims"]
        assert victim["role"] == "Follower"
        old = etcd.witness.leader_before(trial["kill_wall"])
        assert old is not None
        assert ids[old.leader] != etcd.endpoints[int(victim["name"].rsplit("-", 1)[1])]
        assert "leader_elected" not in trial["own"]
    for trial in leader_trials + follower_trials:
        assert trial["outcome"] == "recovered"
        assert "member_healthy" in trial["own"]
        assert trial["final"]["writes"]["ok"] > 0

    reports = {
        t: aftershock("report", f"etcd-{t}", "-n", namespace, "--db", str(op.db))
        for t in ("leader", "follower")
    }
    compared = aftershock("compare", "etcd-follower", "etcd-leader", "-n", namespace, "--db", str(op.db))
    (tmp_path / "etcd-results.txt").write_text(
        "\n".join(
            [
                *reports.values(),
                compared,
                f"elections (ledger, witness earliest, witness latest): {elections}",
                f"gaps: {gaps}",
            ]
        )
    )
    print("\n".join([*reports.values(), compared]))
    print("elections (ledger, witness earliest, witness latest) seconds after the kill:", elections)
    print("ledger outside the witness's bracket by (s):", [round(g, 4) for g in gaps])
    for t, trials in (("Leader", leader_trials), ("Follower", follower_trials)):
        rec = sorted(x["recovered"] for x in trials)
        # None: writes were still failing when the trial ended (a write that timed out in the
        # settle window on the loaded machine), the window's length unknown.
        windows = [x["final"]["writes"]["unavailableSeconds"] for x in trials]
        una = sorted(w for w in windows if w is not None)
        slow = sorted(x["final"]["writes"]["slowestSeconds"] for x in trials)
        print(f"{t}: slowest write p50 {slow[4]:.3f} max {slow[-1]:.3f}")
        print(
            f"{t}: recovery p50 {rec[4]:.3f} max {rec[-1]:.3f}; writes unavailable "
            f"p50 {statistics.median(una):.3f} max {una[-1]:.3f} over {len(una)} trials, "
            f"{windows.count(None)} still failing at the trial's end"
        )
