"""network_partition on the real node: etcd's leader cut off from the other members, and a TiKV
stand-in store cut off from everyone, each for a few seconds, then healed.

The subjects run on the node's pod bridge (a partition in a hostNetwork pod would cut the
node: the kind refuses it), and so does a client pod of the test's own, from whose network
namespace the test's witnesses and the operator's forwarders (`realnode.NetnsForwarder`) reach
them: the host has no route to the pod network. A partition only ever blocks traffic between
pods this test created: the rules name the other members' pod IPs, checked against this test's
pods.

Witnesses of the test's own, never the operator's word:
- etcd's members, polled every 10 ms from the client pod's namespace, a thread per member
  (`etcdwitness.EtcdWitness`): who led when, in which raft term, each member's own idea of its
  leader;
- PD (the stand-in), polled every 50 ms: the victim's store state;
- the rules in every member's network namespace (``iptables-save`` and ``nft list ruleset``,
  through nsenter from the host) and the processes in it (/proc), every 0.3 s and at the end.
After the last heal: no rule of ours anywhere, no process of ours, every ephemeral container
of ours terminated with exit 0, one leader and every member healthy.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import realnode, testbed
from tests.e2e.etcdwitness import EtcdWitness
from tests.e2e.operator import OperatorProcess, kind_campaign, percentiles, wait_phase
from tests.e2e.test_etcd_realnode import create_campaign, ledger_trials

# Each test waits on conditions; the bound is for a loaded machine whose first real-node test
# also builds the images (seen: 595 s of setup at load 34).
pytestmark = [pytest.mark.realnode, pytest.mark.timeout(1800)]

StartOperator = Callable[..., OperatorProcess]
#: Trials per Campaign: 2 in `make test`; AFTERSHOCK_NP_TRIALS=10 for the numbers in the note.
TRIALS = int(os.environ.get("AFTERSHOCK_NP_TRIALS", "2"))
DURATION_S = 3
LABELS = {"app.kubernetes.io/name": "etcd-np"}
CLIENT_PORT, PEER_PORT = 2379, 2380


# --- the pods -----------------------------------------------------------------------------------


def etcd_on_the_bridge(data_dir: str) -> list[dict[str, Any]]:
    """3 etcd members on the pod bridge. A member's peers are known by IP only once every pod
    has one (there is no cluster DNS here): each waits for the file the test writes then."""
    script = (
        'while [ ! -s /data/initial-cluster ]; do sleep 0.2; done; exec /bin/etcd --name "$POD_NAME" '
        f'--data-dir "/data/$POD_NAME" --listen-client-urls http://0.0.0.0:{CLIENT_PORT} '
        f"--advertise-client-urls http://$POD_IP:{CLIENT_PORT} --listen-peer-urls http://0.0.0.0:{PEER_PORT} "
        f"--initial-advertise-peer-urls http://$POD_IP:{PEER_PORT} "
        '--initial-cluster "$(cat /data/initial-cluster)" '
        "--initial-cluster-state new --initial-cluster-token e2e-np "
        "--heartbeat-interval 100 --election-timeout 1000"
    )
    health = f"wget -q -O - http://127.0.0.1:{CLIENT_PORT}/health | grep -q true"
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    pod = realnode.on_real_node(
        {
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": "etcd",
                    "image": "registry.local/etcd:local",
                    "imagePullPolicy": "Never",
                    "env": env,
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    # Ready when its own member answers healthy (it has a leader). Three misses
                    # in a row, each given 5 s: on a loaded machine one slow exec is not a member
                    # down (seen at load 46: a relapse 0.1 s after recovering).
                    "readinessProbe": {
                        "exec": {"command": ["sh", "-c", health]},
                        "periodSeconds": 1,
                        "timeoutSeconds": 5,
                        "failureThreshold": 3,
                    },
                }
            ],
            "volumes": [{"name": "data", "hostPath": {"path": data_dir, "type": "DirectoryOrCreate"}}],
        }
    )
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


def client_pod() -> dict[str, Any]:
    """A pod of the test's own on the bridge: the network namespace its witnesses work from."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "np-client", "labels": {"app.kubernetes.io/name": "np-client"}},
        "spec": realnode.on_real_node(
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
        ),
    }


def pods_of(cluster: testbed.Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    return list(json.loads(out)["items"])


def netns_of(pod: dict[str, Any]) -> Path:
    found = realnode.pod_netns(pod["metadata"]["uid"])
    assert found is not None, f"no network namespace found for {pod['metadata']['name']}"
    return found


# --- witnesses ----------------------------------------------------------------------------------


def healthy_members(netns: Path, urls: list[str]) -> dict[str, bool]:
    def look() -> dict[str, bool]:
        seen = {}
        for url in urls:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:  # a pod IP on the bridge
                    seen[url] = json.loads(resp.read()).get("health") == "true"
            except (OSError, ValueError):
                seen[url] = False
        return seen

    return realnode.in_netns(netns, look)


@dataclass
class Traces:
    """What of ours is in each member's network namespace, every 0.3 s: rules and processes."""

    netns: dict[str, Path]
    #: (time, pod name, rules of ours, processes of ours)
    samples: list[tuple[float, str, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Traces:
        threading.Thread(target=self._run, daemon=True, name="np-traces").start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @staticmethod
    def ours(netns: Path) -> tuple[int, list[str]]:
        rules = realnode.netns_rules(netns)
        procs = [
            f"{pid} {comm} {cmd[:80]}"
            for pid, comm, cmd in realnode.netns_processes(netns)
            if "aftershock-partition" in cmd or comm in ("sleep", "iptables", "xtables-nft-mul")
        ]
        return rules.count("AFTERSHOCK"), procs

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, netns in self.netns.items():
                try:
                    rules, procs = self.ours(netns)
                except OSError:
                    continue
                self.samples.append((time.time(), name, rules, len(procs)))
            self._stop.wait(0.3)

    def wait_sampled_after(self, name: str, after: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(n == name and t > after for t, n, _, _ in list(self.samples)):
                return
            time.sleep(0.1)

    def during(self, name: str, start: float, end: float) -> list[tuple[int, int]]:
        return [(r, p) for t, n, r, p in self.samples if n == name and start <= t <= end]

    def healed_promptly(self, name: str, heal_wall: float, next_kill: float | None) -> None:
        """Our rules and processes gone from the victim within a second or so of the ledger's
        fault_healed: the operator's heal did it, not the container's dead-man (15 s later).
        Up to the next trial's fault, which may be in the same pod."""
        end = heal_wall + 6 if next_kill is None else min(heal_wall + 6, next_kill - 0.05)
        # The last trial is checked as soon as the Campaign ends, which may be within 1.5 s of its
        # heal: wait for the sampler to pass the window's start rather than read what it has so far.
        self.wait_sampled_after(name, heal_wall + 1.5, timeout=15)
        after = self.during(name, heal_wall + 1.5, end)
        assert after, f"no trace sample of {name} after the heal"
        assert all(r == 0 for r, _ in after), ("rules still in place after the heal", after)
        assert all(p == 0 for _, p in after), ("our processes still there after the heal", after)


def next_kill(trials: list[dict[str, Any]], trial: dict[str, Any]) -> float | None:
    """When the trial after `trial` injected its fault (None for the last)."""
    later = [t["kill_wall"] for t in trials if t["kill_wall"] > trial["kill_wall"]]
    return min(later) if later else None


def assert_no_trace(
    cluster: testbed.Cluster, namespace: str, netns: dict[str, Path], labels: dict[str, str] = LABELS
) -> None:
    """No rule, no process of ours in any member's namespace; every container of ours ended
    cleanly (the pods are whole: Ready, never restarted)."""
    for name, ns in netns.items():
        rules, procs = Traces.ours(ns)
        assert rules == 0, (name, realnode.netns_rules(ns))
        assert procs == [], (name, procs)
    for pod in pods_of(cluster, namespace, ",".join(f"{k}={v}" for k, v in labels.items())):
        statuses = pod["status"].get("ephemeralContainerStatuses") or []
        for s in statuses:
            assert s["name"].startswith("aftershock-"), s
            term = (s.get("state") or {}).get("terminated")
            assert term is not None, s
            assert term["exitCode"] == 0, s
        assert all(c["restartCount"] == 0 for c in pod["status"]["containerStatuses"]), pod["status"]


# --- etcd ---------------------------------------------------------------------------------------


@dataclass
class BridgeEtcd:
    urls: list[str]  # the members' client URLs on the bridge (pod IPs)
    ips: dict[str, str]  # pod name -> IP
    endpoints: list[str]  # the same members through the forwarders, for the operator
    client: Path
    netns: dict[str, Path]
    witness: EtcdWitness
    traces: Traces


@pytest.fixture
def bridge_etcd(cluster: testbed.Cluster, namespace: str, real_node: None) -> Iterator[BridgeEtcd]:
    data_dir = Path(f"/tmp/aftershock-e2e-{namespace}")
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster.apply(yaml.safe_dump_all([*etcd_on_the_bridge(str(data_dir)), client_pod()]), namespace=namespace)
    selector = ",".join(f"{k}={v}" for k, v in LABELS.items())

    def ips() -> dict[str, str] | None:
        pods = pods_of(cluster, namespace, selector)
        got = {p["metadata"]["name"]: p["status"].get("podIP") for p in pods}
        return got if len(got) == 3 and all(got.values()) else None

    testbed.wait_for(lambda: ips() is not None, 120, what="3 etcd pods with IPs")
    member_ips = ips()
    assert member_ips is not None
    (data_dir / "initial-cluster").write_text(
        ",".join(f"{n}=http://{ip}:{PEER_PORT}" for n, ip in sorted(member_ips.items()))
    )
    cluster.kubectl("rollout", "status", "statefulset/etcd", "-n", namespace, "--timeout=180s")
    cluster.kubectl("wait", "--for=condition=Ready", "pod/np-client", "-n", namespace, "--timeout=120s")
    (client,) = pods_of(cluster, namespace, "app.kubernetes.io/name=np-client")
    client_netns = netns_of(client)
    netns = {p["metadata"]["name"]: netns_of(p) for p in pods_of(cluster, namespace, selector)}
    names = sorted(member_ips)
    urls = [f"http://{member_ips[n]}:{CLIENT_PORT}" for n in names]
    forwarders = [realnode.NetnsForwarder(client_netns, member_ips[n], CLIENT_PORT).start() for n in names]
    witness = EtcdWitness(urls, netns=client_netns).start()
    traces = Traces(netns).start()
    yield BridgeEtcd(urls, member_ips, [f.url for f in forwarders], client_netns, netns, witness, traces)
    traces.stop()
    witness.stop()
    for f in forwarders:
        f.stop()
    cluster.kubectl(
        "delete", "statefulset", "etcd", "-n", namespace, "--wait=true", "--timeout=60s", check=False
    )
    shutil.rmtree(data_dir, ignore_errors=True)


def np_campaign(name: str, namespace: str, subject: dict[str, Any], **chaos: Any) -> dict[str, Any]:
    body = {"type": "network_partition", "durationSeconds": DURATION_S, **chaos}
    return kind_campaign(name, namespace, subject, body, trials=TRIALS, recovery_s=90)


def test_an_etcd_leader_cut_off_steps_down_a_new_one_is_elected_and_it_rejoins_as_follower(
    cluster: testbed.Cluster, namespace: str, bridge_etcd: BridgeEtcd, start_operator: StartOperator
) -> None:
    etcd = bridge_etcd
    op = start_operator("--probe-interval", "0.1")
    subject = {"kind": "Etcd", "selector": {"matchLabels": dict(LABELS)}, "endpoints": etcd.endpoints}
    create_campaign(cluster, namespace, np_campaign("etcd-np", namespace, subject, target="Leader"))
    done = wait_phase(cluster, namespace, "etcd-np", {"Succeeded", "Failed"}, timeout=240 * TRIALS, op=op)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    trials = ledger_trials(op.db, namespace, "etcd-np")
    assert len(trials) == TRIALS
    ids = etcd.witness.member_ids()  # member id -> URL
    url_of = {n: f"http://{ip}:{CLIENT_PORT}" for n, ip in etcd.ips.items()}
    recoveries, unavailable, elections = [], [], []
    for trial in trials:
        assert trial["outcome"] == "recovered", trial
        (victim,) = trial["victims"]
        kill, own, final = trial["kill_wall"], trial["own"], trial["final"]
        healed = final["chaos"][victim["name"]]
        # Only pods this test made are cut off: the other members' IPs, nothing else.
        others = sorted(ip for n, ip in etcd.ips.items() if n != victim["name"])
        assert healed["cutOff"] == others, healed
        # The member that led when the partition began is the victim's.
        old = etcd.witness.leader_before(kill)
        assert old is not None
        assert ids[old.leader] == url_of[victim["name"]], (ids[old.leader], victim)
        heal_wall = own["fault_healed"][0]
        assert heal_wall - kill >= DURATION_S - 0.05, (heal_wall, kill)
        victim_said = [a for a in etcd.witness.answers[url_of[victim["name"]]] if kill <= a.sent <= heal_wall]
        # Cut off, the old leader loses leadership in its own eyes (CheckQuorum), ...
        assert any(a.member_id and a.leader != old.leader for a in victim_said), (
            "the old leader never stepped down"
        )
        # ... and the majority elects another member in a later term while the partition holds.
        election = etcd.witness.election_after(kill, old)
        assert election is not None, "the witness saw no election"
        assert election.leader != old.leader, (old, election)
        assert election.latest < heal_wall, (election, heal_wall)
        elections.append(election.latest - kill)
        # After the heal: one leader, every member following it, the old leader a follower.
        last = etcd.witness.first_said_after(kill + float(trial["recovered"]))
        assert all(a is not None for a in last.values()), last
        leaders = {a.leader for a in last.values() if a is not None}
        assert len(leaders) == 1, last
        assert "0" not in leaders, last
        rejoined = last[url_of[victim["name"]]]
        assert rejoined is not None, last
        assert rejoined.leader != old.leader, last  # it follows the new leader, not itself
        for name in ("leader_lost", "leader_elected", "rejoined_as_follower", "member_healthy"):
            assert name in own, (name, own)
        assert own["leader_elected"][1] <= own["rejoined_as_follower"][1]
        # The recovery once healed: what the partition left to recover from.
        recoveries.append(float(trial["recovered"]) - own["fault_healed"][1])
        writes = final["writes"]
        assert writes["ok"] > 0
        unavailable.append(float(writes["unavailableSeconds"] or 0.0))
        # The rules were there while the fault held (the witness sees them), gone after.
        held = etcd.traces.during(victim["name"], kill + 0.5, heal_wall - 0.3)
        assert any(r > 0 for r, _ in held), ("the rule witness never saw the partition", held)
        assert any(p > 0 for _, p in held), ("the process witness never saw our container", held)
        etcd.traces.healed_promptly(victim["name"], heal_wall, next_kill(trials, trial))
    assert all(healthy_members(etcd.client, etcd.urls).values())
    assert_no_trace(cluster, namespace, etcd.netns)
    report = testbed.run(
        [
            str(testbed.REPO / ".venv/bin/aftershock"),
            "report",
            "etcd-np",
            "-n",
            namespace,
            "--db",
            str(op.db),
        ],
        check=False,
    ).stdout
    print(report)
    print(
        f"etcd network_partition (Leader, {DURATION_S}s) recovered after the heal: {percentiles(recoveries)}"
    )
    print(f"etcd network_partition writes unavailable: {percentiles(unavailable)}")
    print(f"etcd network_partition new leader after (witness): {percentiles(elections)}")


# --- the TiKV stand-in --------------------------------------------------------------------------

PD_PORT = 2379
TIKV_LABELS = {"app.kubernetes.io/name": "tikv-np"}
PD_SCALE = 0.05  # heartbeats every 0.5 s, Disconnected after 1 s without one


@dataclass
class PdPoller:
    """PD's store states every 50 ms, asked from the client pod's namespace: the test's own."""

    netns: Path
    url: str
    #: (time, store address -> state_name)
    samples: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> PdPoller:
        threading.Thread(target=self._run, daemon=True, name="pd-poller").start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        realnode.enter_netns(self.netns)
        while not self._stop.is_set():
            at = time.time()
            try:
                with urllib.request.urlopen(self.url + "/pd/api/v1/stores", timeout=1) as resp:
                    stores = json.loads(resp.read()).get("stores") or []
                self.samples.append((at, {s["store"]["address"]: s["store"]["state_name"] for s in stores}))
            except (OSError, ValueError, KeyError):
                pass
            self._stop.wait(0.05)

    def states(self, pod: str, start: float, end: float) -> list[tuple[float, str]]:
        return [
            (t, state)
            for t, seen in self.samples
            if start <= t <= end
            for address, state in seen.items()
            if address.startswith(pod + ".")
        ]


def test_a_tikv_standin_store_cut_off_goes_disconnected_in_pd_and_comes_back_up(
    cluster: testbed.Cluster, namespace: str, real_node: None, start_operator: StartOperator
) -> None:
    cluster.apply(
        yaml.safe_dump_all(
            [
                *realnode.pd_standin("pd", PD_PORT, mode="fast", scale=PD_SCALE, host_network=False),
                client_pod(),
            ]
        ),
        namespace=namespace,
    )
    cluster.kubectl("rollout", "status", "deployment/pd", "-n", namespace, "--timeout=180s")
    cluster.kubectl("wait", "--for=condition=Ready", "pod/np-client", "-n", namespace, "--timeout=120s")
    (pd_pod,) = pods_of(cluster, namespace, "app.kubernetes.io/name=pd-standin")
    pd_ip = pd_pod["status"]["podIP"]
    (client,) = pods_of(cluster, namespace, "app.kubernetes.io/name=np-client")
    client_netns = netns_of(client)
    objs = realnode.store_standin(
        "tikv",
        f"http://{pd_ip}:{PD_PORT}",
        heartbeat_interval=10 * PD_SCALE,
        labels=dict(TIKV_LABELS),
        host_network=False,
    )
    cluster.apply(yaml.safe_dump_all(objs), namespace=namespace)
    cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", namespace, "--timeout=180s")
    selector = ",".join(f"{k}={v}" for k, v in TIKV_LABELS.items())
    stores = {p["metadata"]["name"]: p for p in pods_of(cluster, namespace, selector)}
    netns = {n: netns_of(p) for n, p in stores.items()}
    forwarder = realnode.NetnsForwarder(client_netns, pd_ip, PD_PORT).start()
    poller = PdPoller(client_netns, f"http://{pd_ip}:{PD_PORT}").start()
    traces = Traces(netns).start()
    try:
        op = start_operator("--probe-interval", "0.1")
        subject = {"kind": "TiKV", "selector": {"matchLabels": dict(TIKV_LABELS)}, "pdURL": forwarder.url}
        create_campaign(cluster, namespace, np_campaign("tikv-np", namespace, subject, direction="all"))
        done = wait_phase(cluster, namespace, "tikv-np", {"Succeeded", "Failed"}, timeout=240 * TRIALS, op=op)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        trials = ledger_trials(op.db, namespace, "tikv-np")
        assert len(trials) == TRIALS
        recoveries = []
        for trial in trials:
            assert trial["outcome"] == "recovered", trial
            (victim,) = trial["victims"]
            kill, own = trial["kill_wall"], trial["own"]
            assert trial["final"]["chaos"][victim["name"]]["direction"] == "all"
            heal_wall = own["fault_healed"][0]
            # PD, asked by the test itself: the victim's store Disconnected while cut off, ...
            held = [s for _, s in poller.states(victim["name"], kill, heal_wall)]
            assert "Disconnected" in held, held
            # ... Up again after the heal, and never a new start (its process was untouched).
            after = poller.states(victim["name"], heal_wall, time.time())
            assert any(s == "Up" for _, s in after), after
            # The ledger's own milestones, in the order PD showed them. store_up is the heartbeat's
            # own time (on PD's clock), which may precede the operator's fault_healed stamp: that
            # is when the heal's exec answered, a moment after the rules were gone.
            assert own["store_disconnected"][1] < own["store_up"][1]
            assert own["store_disconnected"][1] < own["fault_healed"][1]
            assert own["store_up"][1] >= DURATION_S
            first_up = min(t for t, s in after if s == "Up")
            assert abs(own["store_up"][0] - first_up) < 1.0, (own["store_up"], first_up)
            seen = traces.during(victim["name"], kill + 0.5, heal_wall - 0.3)
            assert any(r > 0 for r, _ in seen), ("the rule witness never saw the partition", seen)
            traces.healed_promptly(victim["name"], heal_wall, next_kill(trials, trial))
            recoveries.append(float(trial["recovered"]) - own["fault_healed"][1])
        now = {p["metadata"]["name"]: p for p in pods_of(cluster, namespace, selector)}
        assert {n: p["metadata"]["uid"] for n, p in now.items()} == {
            n: p["metadata"]["uid"] for n, p in stores.items()
        }
        traces.stop()
        assert_no_trace(cluster, namespace, netns, TIKV_LABELS)
        print(
            f"TiKV stand-in network_partition (all, {DURATION_S}s) recovered after the heal: "
            f"{percentiles(recoveries)}"
        )
    finally:
        traces.stop()
        poller.stop()
        forwarder.stop()
