"""Detection of a TiKV fault from a real alerting chain: TiKV stand-ins on the real node, their
PD stand-in, a pod-delete Campaign with ``spec.detection``, and Prometheus -> Alertmanager ->
the operator's receiver, with the rules of ``manifests/monitoring/tikv-rules.yaml``.

Prometheus (built from its Go module) scrapes, at loopback addresses only: PD's ``/metrics``
(the stand-in, in this process: ``pd_cluster_status`` as real PD exports it), each store
process's own status port (``tikv_store_size_bytes``; a real process in a hostNetwork pod),
and the real node's kubelet. The Campaign is detected by ``PD_cluster_down_store_nums``, PD's
count of Down stores: the page an SRE team running TiKV gets.

PD's clocks run at 1/20 (the stand-in's fast mode, ``Timing.fast``): TiKV heartbeats every
0.5 s, PD says Disconnected after 1 s (20 s in real PD, fixed), Down after
``max-store-down-time`` (configured to 1m as in the captured real PD, so 3 s), and refreshes
``pd_cluster_status`` every 0.5 s (10 s). A replacement store process waits 8 s before it
registers (tikv-server's own start, opening its engines): a killed store stays silent for
~10 s, past Down and past the rule's ``for: 2s``.

Witnesses of the test's own, never the operator's word: PD's ``/pd/api/v1/stores`` polled every
50 ms (the victim's state and its last heartbeat's stamp), the stand-in's record of each
metrics collection, Prometheus's and Alertmanager's own records (``alertclock``), and the ledger
read with the test's own SQL. Time to detect is split into PD's judgement (kill -> the
collection that counted the store Down, checked against PD's rule: last heartbeat +
max-store-down-time), the scrape, evaluation, ``for:``, Prometheus -> Alertmanager and
Alertmanager -> receiver, each bounded by the settings the components report.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import alertclock, monitoring, realnode, testbed
from tests.e2e.operator import OperatorProcess, free_port, wait_phase
from tests.e2e.test_alerts_realnode import notices
from tests.e2e.test_etcd_realnode import create_campaign, ledger_trials
from tests.pdstub import PdStandIn, Timing

pytestmark = pytest.mark.realnode

TRIALS = 2
SCALE = 0.05
#: Real PD's max-store-down-time as the captured PD had it configured (1m): 3 s at 1/20.
MAX_STORE_DOWN_TIME_S = 60.0
START_DELAY_S = 8.0
TOKEN = "e2e-tikv-alert-receiver-token-0123456789abcdef"
ALERT = "PD_cluster_down_store_nums"
LABELS = {"app.kubernetes.io/component": "tikv", "app.kubernetes.io/instance": "tikv-alerts"}
STAMP_TOLERANCE_S = alertclock.STAMP_TOLERANCE_S
SLACK_S = alertclock.SLACK_S
#: A Python thread's wake-up (the stand-in's collection ticker) on a loaded 2-core machine.
THREAD_SLACK_S = 0.3


def consecutive_free_ports(n: int) -> int:
    """A base port with base .. base+n-1 all free on 127.0.0.1 (the store pods share the
    host's network: each needs a status port of its own)."""
    for _ in range(100):
        base = free_port()
        socks: list[socket.socket] = []
        try:
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


@dataclass
class PdWitness:
    """PD's store list every 50 ms (the test's own HTTP GETs): per poll, when it was asked and
    when the answer was in (PD judged the states between the two), and each store address's
    state_name and last_heartbeat (ns, PD's clock)."""

    url: str
    samples: list[tuple[float, float, dict[str, tuple[str, int]]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> PdWitness:
        self._thread = threading.Thread(target=self._run, daemon=True, name="pd-witness")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.time()
            try:
                with urllib.request.urlopen(self.url + "/pd/api/v1/stores", timeout=1) as resp:  # loopback
                    stores = json.loads(resp.read()).get("stores") or []
                answered = time.time()
                self.samples.append(
                    (
                        at,
                        answered,
                        {
                            s["store"]["address"]: (
                                s["store"]["state_name"],
                                s["store"].get("last_heartbeat", 0),
                            )
                            for s in stores
                        },
                    )
                )
            except (OSError, ValueError, KeyError) as exc:
                self.errors.append(repr(exc))
            self._stop.wait(0.05)

    def of(self, address: str, start: float, end: float) -> list[tuple[float, float, str, int]]:
        """(asked, answered, state_name, last_heartbeat) of `address`, asked in [start, end]."""
        return [
            (t, answered, *seen[address])
            for t, answered, seen in self.samples
            if start <= t <= end and address in seen
        ]


@dataclass
class TiKV:
    pd: PdStandIn
    metrics_base: int
    #: (PD's clock, pd_cluster_status) at every collection.
    collections: list[tuple[float, dict[str, float]]]
    rollout_s: float

    def status_port(self, pod: str) -> str:
        return f"127.0.0.1:{self.metrics_base + int(pod.rsplit('-', 1)[1])}"


@pytest.fixture
def tikv(cluster: testbed.Cluster, namespace: str, real_node: None) -> Iterator[TiKV]:
    timing = Timing.fast(SCALE, max_store_down_time=MAX_STORE_DOWN_TIME_S)
    pd = PdStandIn(timing=timing, namespace=namespace, headless_service="tikv-peer")
    collections: list[tuple[float, dict[str, float]]] = []
    pd.on_collect = lambda at, counts: collections.append((at, counts))
    url = pd.start()
    base = consecutive_free_ports(3)
    objs = realnode.store_standin(
        "tikv",
        url,
        heartbeat_interval=timing.heartbeat_interval,
        labels=dict(LABELS),
        start_delay=START_DELAY_S,
        metrics_port_base=base,
    )
    try:
        began = time.monotonic()
        cluster.apply(yaml.safe_dump_all(objs), namespace=namespace)
        cluster.kubectl(
            "rollout", "status", "statefulset/tikv", "-n", namespace, "--timeout=180s", timeout=200
        )
        yield TiKV(pd, base, collections, time.monotonic() - began)
        cluster.kubectl(
            "delete", "statefulset", "tikv", "-n", namespace, "--wait=true", "--timeout=60s", check=False
        )
    finally:
        pd.stop()


def campaign(name: str, namespace: str, pd_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "aftershock.dev/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "subject": {"kind": "TiKV", "selector": {"matchLabels": dict(LABELS)}, "pdURL": pd_url},
            "chaos": {"type": "node_kill", "mode": "one", "gracePeriodSeconds": 0},
            "trials": TRIALS,
            "intervalSeconds": 0,
            "steadyState": {"timeoutSeconds": 120, "stableSeconds": 1},
            # Settled long enough for the resolved notice (a collection, a scrape, an evaluation
            # and a group_interval after the store is Up again) to arrive inside the trial.
            "recovery": {"timeoutSeconds": 120, "settleSeconds": 5, "stopOnUnrecovered": False},
            "detection": {
                "alertMatchers": [
                    {"name": "alertname", "value": ALERT},
                    {"name": "severity", "value": "critical"},
                ]
            },
        },
    }


def test_a_killed_tikv_store_pages_through_pd_prometheus_and_alertmanager(
    cluster: testbed.Cluster,
    namespace: str,
    tikv: TiKV,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "receiver-token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    receiver_port = free_port()
    op = start_operator(
        "--probe-interval",
        "0.1",
        "--alert-receiver-port",
        str(receiver_port),
        "--alert-receiver-token-file",
        str(token_file),
    )
    pd_instance = tikv.pd.base_url.removeprefix("http://")
    stores = [tikv.status_port(f"tikv-{i}") for i in range(3)]
    chain = monitoring.start(
        tmp_path / "chain",
        targets={"pd": [pd_instance], "tikv": stores},
        labels={"namespace": namespace},
        receiver_url=f"http://127.0.0.1:{receiver_port}/api/v1/alerts",
        token_file=token_file,
    )
    witness = PdWitness(tikv.pd.base_url)
    receipts = alertclock.AlertmanagerWatch(chain.alertmanager, ALERT).start()
    name = "tikv-alerts"
    began = time.monotonic()
    try:
        # Prometheus sees every store process up and PD counting three stores Up before the
        # first fault (the stores register START_DELAY_S after their pods start).
        def all_up() -> bool:
            up = chain.samples('up{job="tikv"}')
            counted = chain.samples('pd_cluster_status{job="pd",type="store_up_count"}')
            return (
                len(up) == 3
                and all(s["value"][1] == "1" for s in up)
                and [s["value"][1] for s in counted] == ["3"]
            )

        testbed.wait_for(all_up, 90, interval=0.5, what="Prometheus seeing 3 stores up")
        witness.start()  # PD is bootstrapped now (before, it answers ErrNotBootstrapped)
        all_up_s = time.monotonic() - began
        create_campaign(cluster, namespace, campaign(name, namespace, tikv.pd.base_url))
        done = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=300, op=op)
        campaign_s = time.monotonic() - began - all_up_s
        assert done["status"]["phase"] == "Succeeded", done["status"]
        time.sleep(1)  # the witnesses' last look
        witness.stop()
        receipts.stop()
        trials = ledger_trials(op.db, namespace, name)
        sent = notices(op.db, namespace, name)
        assert len(trials) == TRIALS
        checked = [
            check_trial(chain, tikv, namespace, pd_instance, index, trial, sent, witness, receipts.receipts())
            for index, trial in enumerate(trials)
        ]
    finally:
        witness.stop()
        receipts.stop()
        chain.stop()
    assert len(witness.errors) < 10, witness.errors[:5]
    assert len(receipts.errors) < 10, receipts.errors[:5]

    lines = [
        f"setup: StatefulSet rolled out in {tikv.rollout_s:.1f} s, Prometheus saw every store up "
        f"{all_up_s:.1f} s after the chain started; the Campaign ran {campaign_s:.1f} s",
        "PD_cluster_down_store_nums: time to detect, split by the chain's own records (seconds):",
    ]
    for i, (b, extra) in enumerate(checked):
        lines.append(f"trial {i}: {b.describe()}")
        lines.append("  " + "  ".join(f"{k}={v:.3f}" for k, v in extra.items()))
    for part in ("pd_judgement", "scrape_after_pd"):
        lines.append(f"median {part}: {statistics.median(e[part] for _, e in checked):.3f}")
    for part in (*alertclock.Breakdown.PARTS, "total"):
        values = [v for b, _ in checked if (v := getattr(b, part)) is not None]
        lines.append(f"median {part}: {statistics.median(values):.3f} ({len(values)} measured)")
    lines.append(f"settings (as Prometheus and Alertmanager report them): {checked[0][0].settings}")
    text = "\n".join(lines)
    (tmp_path / "tikv-alerts-results.txt").write_text(text)
    print(text)


def check_trial(
    chain: monitoring.Chain,
    tikv: TiKV,
    namespace: str,
    pd_instance: str,
    index: int,
    trial: dict[str, Any],
    sent: list[dict[str, Any]],
    witness: PdWitness,
    receipts: list[alertclock.Receipt],
) -> tuple[alertclock.Breakdown, dict[str, float]]:
    """One trial: PD's own view, the notices, and the time to detect split and bounded."""
    assert trial["outcome"] in ("recovered", "unrecovered"), trial
    (victim,) = trial["victims"]
    kill = trial["kill_wall"]
    timing = tikv.pd.timing
    address = f"{victim['name']}.tikv-peer.{namespace}.svc:20160"

    # PD, asked by the test: the victim's store went Down, and PD's rule says when it had to.
    seen = witness.of(address, kill, kill + 60)
    down = [(t, answered, hb) for t, answered, state, hb in seen if state == "Down"]
    assert down, (address, seen[:5])
    first_down_seen, first_down_answered, last_heartbeat_ns = down[0]
    last_heartbeat = last_heartbeat_ns / 1e9
    must_be_down = last_heartbeat + timing.max_store_down_time
    # The killed process heartbeated until the kill took effect (every 0.5 s before it).
    assert kill - timing.heartbeat_interval - SLACK_S <= last_heartbeat <= kill + 5, (kill, last_heartbeat)
    # Not too early: PD judged it Down before its answer was in (the look's start can precede
    # the judgement by the request's own time: 10 ms once, in CI's busiest minutes).
    assert first_down_answered >= must_be_down - STAMP_TOLERANCE_S, (first_down_answered, must_be_down)
    # PD's metrics collection that first counted it Down: the next collection tick after the rule.
    counted = [at for at, counts in tikv.collections if at >= kill and counts["store_down_count"] >= 1]
    assert counted, tikv.collections[-5:]
    pd_counted = counted[0]
    assert must_be_down - STAMP_TOLERANCE_S <= pd_counted, (must_be_down, pd_counted)
    assert pd_counted <= must_be_down + timing.metrics_collection_interval + THREAD_SLACK_S, (
        must_be_down,
        pd_counted,
    )
    back_up = [t for t, _, state, _ in seen if state == "Up" and t > first_down_seen]
    assert back_up, "the store never came back Up"

    # The notices: the PD alert fired and resolved, and the ledger's milestones are their receipts.
    mine = [n for n in sent if n["trial"] == index]
    firing = [n for n in mine if n["status"] == "firing"]
    assert firing, (index, mine, chain.tail())
    first = firing[0]
    assert first["labels"]["alertname"] == ALERT
    assert first["labels"]["namespace"] == namespace
    assert first["labels"]["instance"] == pd_instance
    back = [n for n in mine if n["status"] == "resolved" and n["fingerprint"] == first["fingerprint"]]
    assert back, (index, mine, chain.tail())
    fired_wall, fired_offset = trial["own"]["alert_firing"]
    assert fired_wall == pytest.approx(first["received_at"])
    assert fired_offset == pytest.approx(first["offset"])
    assert "alert_resolved" in trial["own"], trial["own"]
    assert trial["own"]["alert_resolved"][0] >= back[-1]["received_at"] - 0.001
    # Delivered after PD itself said Down (the test's own look), and resolved after it was Up.
    assert first["received_at"] > first_down_seen

    # The time to detect, split by the chain's records; the signal is PD's Down count.
    signal = alertclock.Signal(
        "pd_cluster_status",
        {"job": "pd", "instance": pd_instance, "type": "store_down_count"},
        lambda v: v > 0,
    )
    b = alertclock.breakdown(
        chain.prometheus,
        chain.alertmanager,
        ALERT,
        first["labels"],
        kill,
        first["received_at"],
        receipts=receipts,
        signal=signal,
    )
    assert b.unmeasured == {}, b.describe()
    assert b.alertmanager_received is not None
    assert b.fired_at == pytest.approx(first["starts_at"], abs=0.001)
    st = b.settings
    assert st.scrape_interval is not None
    assert st.scrape_timeout is not None
    assert st.group_wait is not None
    assert st.group_interval is not None
    assert b.scrape_wait is not None
    assert b.evaluation_wait is not None
    assert b.send_wait is not None
    assert b.alertmanager_wait is not None
    assert b.failed_scrape_duration is not None
    assert b.first_failed_scrape is not None
    # PD's judgement (kill -> PD's collection counted it Down), then the scrape that read it:
    # within an interval and a timeout of the collection (it cannot have read it before).
    pd_judgement = pd_counted - kill
    scrape_after_pd = b.scrape_wait - pd_judgement
    assert -STAMP_TOLERANCE_S <= scrape_after_pd <= st.scrape_interval + st.scrape_timeout + SLACK_S, (
        b.describe(),
        pd_judgement,
    )
    alertclock.assert_parts_after_the_scrape_bounded(b, st, fired_offset)

    # The store process's own target went down too: TiKV_server_is_down fired for the victim's
    # status port (its /metrics gone from the kill until the replacement registered).
    victim_port = tikv.status_port(victim["name"])
    tikv_down = alertclock.raw_samples(
        chain.prometheus,
        "ALERTS",
        {"alertname": "TiKV_server_is_down", "alertstate": "firing", "instance": victim_port},
        kill,
        kill + 60,
    )
    assert tikv_down, f"TiKV_server_is_down never fired for {victim_port}"
    tikv_down_fired = min(t for _, samples in tikv_down for t, _ in samples)
    extra = {
        "last_heartbeat": last_heartbeat - kill,
        "pd_judgement": pd_judgement,
        "scrape_after_pd": scrape_after_pd,
        "tikv_server_is_down_fired": tikv_down_fired - kill,
        "resolved_notice": back[-1]["received_at"] - kill,
        "recovered": trial["recovered"] if trial["recovered"] is not None else float("nan"),
        "ledger_time_to_detect": fired_offset,
    }
    return b, extra
