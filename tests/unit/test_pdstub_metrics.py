"""The PD stand-in's and the store stand-in's /metrics: real PD and TiKV metric names, values that
follow the store states (the same judgement as ``/pd/api/v1/stores``), refreshed on PD's
metrics collection tick. Parsed with prometheus_client's own text parser, not ours."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.pdstub import PdStandIn, PodRecord, Timing
from tests.unit.test_pdstub import T0, World, get, stores
from tests.unit.test_store_process import free_port, spawn, wait_for

__all__ = ["spawn"]  # the fixture, imported for the store process tests below

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[Series, dict[str, str]]:
    """Every sample by (name, labels), and every family's type, as Prometheus's parser reads them."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:  # loopback only
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    series: Series = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series, types


def cluster_status(url: str) -> dict[str, float]:
    series, _ = scrape(url)
    return {dict(labels)["type"]: v for (name, labels), v in series.items() if name == "pd_cluster_status"}


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def pd(world: World) -> Iterator[PdStandIn]:
    with PdStandIn(world.source, headless_service="tikv-peer", namespace="db", clock=world.clock) as s:
        yield s


def test_before_bootstrap_only_the_etcd_member_is_reported(world: World) -> None:
    with PdStandIn(clock=world.clock) as s:
        s.collect_metrics()
        series, types = scrape(s.base_url)
    assert series == {
        ("etcd_server_has_leader", frozenset()): 1.0,
        ("etcd_server_is_leader", frozenset()): 1.0,
    }
    assert types == {"etcd_server_has_leader": "gauge", "etcd_server_is_leader": "gauge"}


def test_pd_names_types_and_labels(pd: PdStandIn, world: World) -> None:
    stores(pd)
    world.now += 10  # the first heartbeats
    pd.collect_metrics()
    series, types = scrape(pd.base_url)

    assert types == {
        "etcd_server_has_leader": "gauge",
        "etcd_server_is_leader": "gauge",
        "pd_cluster_status": "gauge",
        "pd_scheduler_store_status": "gauge",
    }
    # v8.5's pd_cluster_status has one label, type (store and engine came after: tikv/pd#9898).
    status = {labels: v for (name, labels), v in series.items() if name == "pd_cluster_status"}
    assert {k for labels in status for k, _ in labels} == {"type"}
    by_type = {dict(labels)["type"]: v for labels, v in status.items()}
    assert by_type["store_up_count"] == 3
    assert by_type["store_serving_count"] == 3
    assert by_type["region_count"] == 3 * 24  # 24 regions, 3 replicas each
    assert by_type["leader_count"] == 24
    assert by_type["storage_capacity"] == 3 * 10 * (1 << 30)
    for zero in (
        "store_disconnected_count",
        "store_down_count",
        "store_offline_count",
        "store_tombstone_count",
    ):
        assert by_type[zero] == 0
    per_store = [dict(labels) for (name, labels) in series if name == "pd_scheduler_store_status"]
    addresses = {s["store"]["address"]: str(s["store"]["id"]) for s in stores(pd).values()}
    assert {(s["address"], s["store"]) for s in per_store} == set(addresses.items())
    assert {s["type"] for s in per_store} >= {"region_count", "leader_count", "store_capacity"}


def test_counts_follow_the_store_states_disconnected_then_down_then_up(pd: PdStandIn, world: World) -> None:
    stores(pd)
    world.now += 10
    stores(pd)
    world.pods["tikv-1"]["ready"] = False  # its process stops: no more heartbeats

    seen: list[tuple[dict[str, float], Counter[str]]] = []

    def look() -> None:
        pd.collect_metrics()
        states = Counter(s["store"]["state_name"] for s in stores(pd).values())
        counts = cluster_status(pd.base_url)
        seen.append((counts, states))

    world.now += 19  # 19 s without a heartbeat: still Up
    look()
    world.now += 1.5  # 20.5 s: Disconnected
    look()
    world.now += 1800  # past max-store-down-time (30m): Down
    look()
    world.pods["tikv-1"] = {"name": "tikv-1", "uid": "u1-b", "ready": True, "ready_since": world.now}
    stores(pd)  # a new process registers ...
    world.now += 10  # ... and heartbeats an interval later
    look()

    wanted = [(3, 0, 0), (2, 1, 0), (2, 0, 1), (3, 0, 0)]
    got = [(c["store_up_count"], c["store_disconnected_count"], c["store_down_count"]) for c, _ in seen]
    assert got == wanted
    # The same judgement as /stores gives, at every look.
    for counts, states in seen:
        assert counts["store_up_count"] == states["Up"]
        assert counts["store_disconnected_count"] == states["Disconnected"]
        assert counts["store_down_count"] == states["Down"]


def test_metrics_show_the_last_collection_not_the_present(pd: PdStandIn, world: World) -> None:
    stores(pd)
    world.now += 10
    pd.collect_metrics()
    world.pods["tikv-0"]["ready"] = False
    world.now += 25  # Disconnected by now in /stores ...
    states = {n: s["store"]["state_name"] for n, s in stores(pd).items()}
    before = cluster_status(pd.base_url)  # ... but PD's collection job has not run since
    pd.collect_metrics()
    after = cluster_status(pd.base_url)

    assert states["tikv-0"] == "Disconnected"
    assert before["store_disconnected_count"] == 0
    assert after["store_disconnected_count"] == 1


def test_the_collection_job_runs_by_itself_on_the_real_clock() -> None:
    pods: dict[str, PodRecord] = {
        f"tikv-{i}": {"name": f"tikv-{i}", "uid": f"u{i}", "ready": True, "ready_since": T0} for i in range(3)
    }
    timing = Timing.fast(0.01)  # heartbeats 0.1 s, Disconnected after 0.2 s, collection every 0.1 s
    with PdStandIn(lambda: [p.copy() for p in pods.values()], timing=timing) as s:
        wait_for(lambda: cluster_status(s.base_url).get("store_up_count") == 3, "three stores up")
        pods["tikv-2"]["ready"] = False
        wait_for(
            lambda: cluster_status(s.base_url).get("store_disconnected_count") == 1, "one store disconnected"
        )
        pods["tikv-2"] = {"name": "tikv-2", "uid": "u2-b", "ready": True, "ready_since": T0}
        wait_for(lambda: cluster_status(s.base_url).get("store_up_count") == 3, "three stores up again")


def test_max_store_down_time_is_configured_in_real_terms_and_scaled(world: World) -> None:
    assert Timing.faithful(max_store_down_time=60).max_store_down_time == 60
    fast = Timing.fast(0.05, max_store_down_time=60)
    assert (fast.heartbeat_interval, fast.disconnected_after, fast.max_store_down_time) == (0.5, 1.0, 3.0)
    assert fast.metrics_collection_interval == 0.5
    assert Timing.fast(0.05).max_store_down_time == 90.0
    with pytest.raises(ValueError, match="positive"):
        Timing.faithful(max_store_down_time=0)
    with PdStandIn(world.source, timing=Timing.faithful(max_store_down_time=60), clock=world.clock) as s:
        schedule = get(s, "/pd/api/v1/config/schedule")[2]
    assert b'"max-store-down-time": "1m0s"' in schedule


# --- the store stand-in (tests/pdstub/store.py) ---------------------------------------------------


def metrics_or_none(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:  # loopback
            text: str = resp.read().decode()
            return text
    except (urllib.error.URLError, OSError):
        return None


def test_store_serves_tikv_metrics_once_registered(spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    base = free_port()
    env = {
        "POD_NAME": "tikv-2",
        "POD_NAMESPACE": "tikv",
        "PDSTUB_HEARTBEAT_INTERVAL": "0.5",
        "PDSTUB_START_DELAY": "1.5",
        "PDSTUB_METRICS_PORT_BASE": str(base - 2),  # ordinal 2: base - 2 + 2
    }
    with PdStandIn(timing=Timing.fast(0.05)) as pd:
        started = time.time()
        proc = spawn(env=env | {"PDSTUB_PD_URL": pd.base_url})
        time.sleep(0.7)
        early = (pd.bootstrapped, metrics_or_none(base))
        wait_for(lambda: pd.bootstrapped, "PutStore")
        registered_after = time.time() - started
        text = metrics_or_none(base)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0

    assert early == (False, None)  # still "starting": not registered, no status server
    assert registered_after >= 1.5
    assert text is not None
    families = {f.name: f for f in text_string_to_metric_families(text)}
    sizes = {s.labels["type"]: s.value for s in families["tikv_store_size_bytes"].samples}
    assert sizes == {
        "capacity": 10 * (1 << 30),
        "available": int(7.5 * (1 << 30)),
        "used": int(1.2 * (1 << 30)),
    }
    assert families["tikv_store_size_bytes"].type == "gauge"
    (start,) = families["process_start_time_seconds"].samples
    assert abs(start.value - started) < 2
