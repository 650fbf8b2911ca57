"""Detection from a real alerting chain: etcd on the real node, a pod-delete Campaign with
``spec.detection``, and the real Prometheus -> Alertmanager -> operator receiver chain.

Prometheus (built from its Go module) scrapes every etcd member's own ``/metrics`` and the real
node's kubelet at loopback addresses, and evaluates the repository's rules
(``manifests/monitoring/etcd-rules.yaml``); Alertmanager delivers to the operator's receiver
with the bearer token from a file. The ledger's ``alert_firing``/``alert_resolved`` milestones
are checked against what Alertmanager (``/api/v2/alerts``) and Prometheus
(``/api/v1/alerts``, the ``up`` samples) said themselves, polled by a witness thread of the
test's own, and time to detect is split into the chain's stages by ``tests/e2e/alertclock.py``,
each read from the components' own records (``up`` and ``scrape_duration_seconds`` samples,
``ALERTS``/``ALERTS_FOR_STATE``, Alertmanager's ``updatedAt``, the ledger's receive stamp): scrape
wait, evaluation wait, ``for:``, Prometheus -> Alertmanager, group_wait plus delivery. Each part is
bounded by the settings Prometheus and Alertmanager report, and they add up to the ledger's time
to detect.

The etcd pods wait 3 s before etcd starts (standing for an image pull or a volume attach): a
member is back 2-2.7 s after a plain pod delete here, too short for a rule with a ``for:`` to
fire reliably at the test bed's 0.5 s scrape interval.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import alertclock, monitoring, testbed
from tests.e2e.operator import OperatorProcess, free_port, wait_phase
from tests.e2e.test_etcd_realnode import LABELS, create_campaign, etcd_statefulset, ledger_trials

pytestmark = pytest.mark.realnode

TRIALS = 3
START_DELAY_S = 5
TOKEN = "e2e-alert-receiver-token-0123456789abcdef"
ALERT = "EtcdMemberDown"


def _rfc3339(text: str) -> float:
    from aftershock.alerting import parse_time

    parsed = parse_time(text, "witness")
    assert parsed is not None
    return parsed


@dataclass
class PrometheusWitness:
    """Prometheus's own live view of the alerts (``/api/v1/alerts``), every 100 ms, in a thread:
    the exact activeAt of each episode while it is active, against which the breakdown's
    activeAt (read after the fact from the ALERTS series) is checked."""

    chain: monitoring.Chain
    #: (instance, activeAt) -> Prometheus's states seen, in order.
    prom_active: dict[tuple[str, float], list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> PrometheusWitness:
        self._thread = threading.Thread(target=self._run, daemon=True, name="prometheus-witness")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for a in self.chain.prometheus_alerts():
                    if a["labels"].get("alertname") != ALERT:
                        continue
                    states = self.prom_active.setdefault(
                        (a["labels"]["instance"], _rfc3339(a["activeAt"])), []
                    )
                    if not states or states[-1] != a["state"]:
                        states.append(a["state"])
            except (OSError, ValueError, KeyError) as exc:
                self.errors.append(repr(exc))
            self._stop.wait(0.1)


def notices(db: Path, namespace: str, name: str) -> list[dict[str, Any]]:
    """The ledger's alert notifications, read with the test's own SQL, in the order received."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT n.seq, a.trial_index, n.fingerprint, n.status, n.labels, n.starts_at, n.ends_at, "
            'n.received_at, n."offset" FROM alert_notifications n JOIN attempts a ON a.id = n.attempt_id '
            "JOIN trials t ON t.attempt_id = a.id JOIN campaigns c ON c.uid = a.campaign_uid "
            "WHERE c.namespace = ? AND c.name = ? ORDER BY n.seq",
            (namespace, name),
        ).fetchall()
    finally:
        conn.close()
    keys = (
        "seq",
        "trial",
        "fingerprint",
        "status",
        "labels",
        "starts_at",
        "ends_at",
        "received_at",
        "offset",
    )
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for n in out:
        n["labels"] = json.loads(n["labels"])
    return out


def victim_gone_walls(db: Path, namespace: str, name: str) -> list[float | None]:
    """Each trial's ``victim_gone`` (the victim pod's DELETED event), wall clock, in trial order."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT a.victim_gone_wall FROM attempts a JOIN trials t ON t.attempt_id = a.id "
            "JOIN campaigns c ON c.uid = a.campaign_uid WHERE c.namespace = ? AND c.name = ? "
            "ORDER BY a.trial_index",
            (namespace, name),
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


@dataclass
class Etcd:
    endpoints: list[str]
    data_dir: Path


@pytest.fixture
def slow_etcd(cluster: testbed.Cluster, namespace: str, real_node: None) -> Iterator[Etcd]:
    clients = [free_port() for _ in range(3)]
    peers = [free_port() for _ in range(3)]
    data_dir = Path(f"/tmp/aftershock-e2e-{namespace}")
    manifests = etcd_statefulset(clients, peers, str(data_dir), start_delay_s=START_DELAY_S)
    # A member is not Ready until 3 probes in a row failed: one slow exec on a loaded machine
    # must not read as a relapse of the recovered subject.
    probe = manifests[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe.update({"failureThreshold": 3, "timeoutSeconds": 3})
    cluster.apply(yaml.safe_dump_all(manifests), namespace=namespace)
    # Generous: on a machine loaded by parallel builds the real node's first starts were seen
    # to take over 2 minutes.
    cluster.kubectl("rollout", "status", "statefulset/etcd", "-n", namespace, "--timeout=300s", timeout=320)
    yield Etcd([f"http://127.0.0.1:{p}" for p in clients], data_dir)
    cluster.kubectl(
        "delete", "statefulset", "etcd", "-n", namespace, "--wait=true", "--timeout=60s", check=False
    )
    shutil.rmtree(data_dir, ignore_errors=True)


def campaign(name: str, namespace: str, endpoints: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "aftershock.dev/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "subject": {"kind": "Etcd", "selector": {"matchLabels": dict(LABELS)}, "endpoints": endpoints},
            "chaos": {"type": "node_kill", "mode": "one", "gracePeriodSeconds": 0},
            "trials": TRIALS,
            "intervalSeconds": 0,
            "steadyState": {"timeoutSeconds": 120, "stableSeconds": 1},
            # Long enough for the resolved notice (one scrape, one evaluation, one
            # group_interval after the member is back) to arrive inside the trial.
            # What is under test is the detection: a trial whose etcd relapsed on a loaded
            # machine (a member unreachable for a moment after its recovery) still had its
            # fault, its alert and its notices, so the Campaign goes on.
            "recovery": {"timeoutSeconds": 180, "settleSeconds": 5, "stopOnUnrecovered": False},
            "detection": {
                "alertMatchers": [
                    {"name": "alertname", "value": ALERT},
                    {"name": "severity", "value": "critical"},
                ]
            },
        },
    }


def test_alerts_from_prometheus_and_alertmanager_are_each_trials_detection(
    cluster: testbed.Cluster,
    namespace: str,
    slow_etcd: Etcd,
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
    instances = [e.removeprefix("http://") for e in slow_etcd.endpoints]
    chain = monitoring.start(
        tmp_path / "chain",
        targets={"etcd": instances},
        labels={"namespace": namespace},
        receiver_url=f"http://127.0.0.1:{receiver_port}/api/v1/alerts",
        token_file=token_file,
    )
    witness = PrometheusWitness(chain).start()
    receipts = alertclock.AlertmanagerWatch(chain.alertmanager, ALERT).start()
    try:
        # Every member up in Prometheus's eyes before the first fault: no alert left over.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            up = chain.samples('up{job="etcd"}')
            if len(up) == 3 and all(s["value"][1] == "1" for s in up):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"Prometheus never saw the 3 members up: {up}\n{chain.tail()}")
        name = "etcd-alerts"
        create_campaign(cluster, namespace, campaign(name, namespace, slow_etcd.endpoints))
        done = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=600, op=op)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        time.sleep(1)  # the witnesses' last look
        witness.stop()
        receipts.stop()
        trials = ledger_trials(op.db, namespace, name)
        sent = notices(op.db, namespace, name)
        assert len(trials) == TRIALS
        gone = victim_gone_walls(op.db, namespace, name)
        checked = [
            check_trial(
                chain, namespace, index, trial, gone[index], sent, instances, witness, receipts.receipts()
            )
            for index, trial in enumerate(trials)
        ]
    finally:
        witness.stop()
        receipts.stop()
        chain.stop()
    # The witnesses' polls answered (a few may time out on a loaded machine).
    assert len(witness.errors) < 10, witness.errors[:5]
    assert len(receipts.errors) < 10, receipts.errors[:5]

    report = testbed.run(
        [
            str(testbed.REPO / ".venv" / "bin" / "aftershock"),
            "report",
            name,
            "-n",
            namespace,
            "--db",
            str(op.db),
        ],
        check=False,
    ).stdout
    assert "time to detect p50=" in report, report
    lines = [report, "time to detect, split by the chain's own records (seconds):"]
    for i, (b, extra) in enumerate(checked):
        lines.append(f"trial {i}: {b.describe()}")
        lines.append("  " + "  ".join(f"{k}={v:.3f}" for k, v in extra.items()))
    for part in (*alertclock.Breakdown.PARTS, "total"):
        values = [v for b, _ in checked if (v := getattr(b, part)) is not None]
        lines.append(f"median {part}: {statistics.median(values):.3f} ({len(values)} measured)")
    lines.append(f"settings (as Prometheus and Alertmanager report them): {checked[0][0].settings}")
    text = "\n".join(lines)
    (tmp_path / "alerts-results.txt").write_text(text)
    print(text)


STAMP_TOLERANCE_S = alertclock.STAMP_TOLERANCE_S
SLACK_S = alertclock.SLACK_S


def check_trial(
    chain: monitoring.Chain,
    namespace: str,
    index: int,
    trial: dict[str, Any],
    victim_gone: float | None,
    sent: list[dict[str, Any]],
    instances: list[str],
    witness: PrometheusWitness,
    receipts: list[alertclock.Receipt],
) -> tuple[alertclock.Breakdown, dict[str, float]]:
    """One trial's notices against the chain's own records, and its time to detect split."""
    assert trial["outcome"] in ("recovered", "unrecovered"), trial
    (victim,) = trial["victims"]
    instance = instances[int(victim["name"].rsplit("-", 1)[1])]
    kill = trial["kill_wall"]
    mine = [n for n in sent if n["trial"] == index]
    firing = [n for n in mine if n["status"] == "firing"]
    resolved = [n for n in mine if n["status"] == "resolved"]
    assert firing, (index, mine, receipts, chain.tail())
    # The alert about the member this trial killed, in this namespace, fired and resolved
    # (on a loaded machine another member's scrape may fail for a while too: its alert
    # would count as well, by the Campaign's matchers, and may come first).
    victims = [n for n in firing if n["labels"]["instance"] == instance]
    assert victims, (instance, firing)
    first = victims[0]
    assert first["labels"]["namespace"] == namespace
    assert firing[0]["offset"] <= first["offset"]
    # Resolved once the member was back: always here, since every member comes back (an
    # unrecovered trial's relapse included) long before the next kill's gate passes.
    back = [n for n in resolved if n["fingerprint"] == first["fingerprint"]]
    assert back, (index, mine, chain.tail())
    last = back[-1]
    assert first["seq"] < last["seq"]
    # The ledger's milestones are the receive times of the first firing and the resolved notice.
    fired_wall, fired_offset = trial["own"]["alert_firing"]
    assert fired_wall == pytest.approx(firing[0]["received_at"])
    assert fired_offset == pytest.approx(firing[0]["offset"])
    if "alert_resolved" in trial["own"]:
        assert trial["own"]["alert_resolved"][0] >= last["received_at"] - 0.001
    ends = last["ends_at"]
    assert ends is not None
    assert ends >= first["starts_at"]

    # The victim's alert's time to detect, split by the chain's records.
    b = alertclock.breakdown(
        chain.prometheus,
        chain.alertmanager,
        ALERT,
        first["labels"],
        kill,
        first["received_at"],
        receipts=receipts,
    )
    assert b.unmeasured == {}, b.describe()
    assert b.labels == first["labels"]
    # Alertmanager itself had this alert (same fingerprint, same startsAt) before the receiver;
    # Prometheus had it pending from the activeAt that its live API said, after the kill.
    assert b.alertmanager_received is not None
    assert b.fired_at == pytest.approx(first["starts_at"], abs=0.001)
    assert any(r.fingerprint == first["fingerprint"] for r in receipts)
    live = [at for (inst, at), _ in witness.prom_active.items() if inst == instance and kill <= at]
    assert live, (instance, kill, witness.prom_active)
    assert min(live, key=lambda at: abs(at - b.active_at)) == pytest.approx(b.active_at, abs=0.001)

    # Each part is a real wait, bounded by what the settings (as the chain reports them) allow.
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
    # Scrape: the kill takes effect by the pod's DELETED event (victim_gone) at the latest; the
    # next scrape starts within an interval and fails within its timeout.
    assert victim_gone is not None, trial
    gone = victim_gone - kill
    assert -STAMP_TOLERANCE_S <= b.scrape_wait <= gone + st.scrape_interval + st.scrape_timeout + SLACK_S, (
        b.describe(),
        gone,
    )
    alertclock.assert_parts_after_the_scrape_bounded(b, st, first["offset"])
    if first is firing[0]:
        parts = sum(v for v in b.parts().values() if v is not None)
        assert parts == pytest.approx(fired_offset, abs=0.05)

    # A fault time after the alert was already active finds no episode this fault started.
    with pytest.raises(alertclock.ChainRecordError, match="already active"):
        alertclock.breakdown(
            chain.prometheus,
            chain.alertmanager,
            ALERT,
            first["labels"],
            b.active_at + 0.01,
            first["received_at"],
            receipts=receipts,
        )
    extra = {
        "victim_gone": gone,
        "failed_scrape_took": b.failed_scrape_duration,
        "recovered": trial["recovered"] if trial["recovered"] is not None else float("nan"),
        "resolved_notice": last["received_at"] - kill,
        "ledger_time_to_detect": first["offset"],
    }
    return b, extra
