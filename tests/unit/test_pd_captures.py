"""Contract tests against a real PD's answers (``tests/data/pd/``, see its README.md).

1. Every endpoint `PdClient` reads parses from the captures.
2. The stand-in answers with the same shapes (keys and JSON types) as real PD in the same scenario.
3. Replaying each captured time series through the TiKV probe and the recovery tracker gives the
   judgement over time a person would expect from what was done (``series_*.events``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.pdstub import PdStandIn

from aftershock.engine.observe import RecoveryTracker
from aftershock.model import PodState, ProbeResult, Victim
from aftershock.subjects.pd import PdClient, PdUnavailableError, parse_region_check, parse_store
from aftershock.subjects.tikv import StoreRecovery, TiKVProbe

DATA = Path(__file__).resolve().parents[1] / "data" / "pd"
SCENARIOS = [
    "3stores_faketikv",
    "faketikv_all_killed",
    "faketikv_down_maxdown1m",
    "sim_3stores",
    "sim_bootstrap_store_never_heartbeated",
]


def capture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return loaded


def answering(routes: dict[str, tuple[int, Any]]) -> httpx.MockTransport:
    """PD answering each path with a captured (status, body); a str body is sent as PD sends
    errors (a JSON string)."""

    def handler(request: httpx.Request) -> httpx.Response:
        status, body = routes[request.url.path]
        return httpx.Response(status, content=json.dumps(body).encode())

    return httpx.MockTransport(handler)


def client_for(scenario: str) -> PdClient:
    routes = {
        c["path"].split("?")[0]: (c["status"], c["body"])
        for c in (capture(f"{scenario}_{e}") for e in ("stores", "health", "pending_peer", "down_peer"))
    }
    return PdClient("http://pd.db:2379", transport=answering(routes))


# --- 1. the client reads real PD -------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_the_client_parses_every_endpoint_it_reads(scenario: str) -> None:
    async with client_for(scenario) as c:
        stores = await c.stores()
        members = await c.health()
        pending = await c.pending_peer_regions()
        down = await c.down_peer_regions()

    raw = capture(f"{scenario}_stores")["body"]
    assert len(stores) == raw["count"]
    assert {s.state_name for s in stores} <= {"Up", "Disconnected", "Down"}
    assert all(s.id > 0 for s in stores)
    assert [m.health for m in members] == [True]
    assert (pending, down) == (0, 0)


def test_captured_states_read_as_pd_meant_them() -> None:
    up = [parse_store(s) for s in capture("3stores_faketikv_stores")["body"]["stores"]]
    killed = [parse_store(s) for s in capture("faketikv_all_killed_stores")["body"]["stores"]]
    down = [parse_store(s) for s in capture("faketikv_down_maxdown1m_stores")["body"]["stores"]]
    (never,) = [
        parse_store(s) for s in capture("sim_bootstrap_store_never_heartbeated_stores")["body"]["stores"]
    ]

    assert all(s.state_name == "Up" and s.heartbeat_since_start for s in up)
    assert all(s.state_name == "Disconnected" for s in killed)
    assert all(s.state_name == "Down" for s in down)
    assert (never.state_name, never.last_heartbeat_ns, never.heartbeat_since_start) == ("Down", 0, False)


async def test_before_bootstrap_stores_are_unavailable_not_garbage() -> None:
    async with client_for("nostores_unbootstrapped") as c:
        with pytest.raises(PdUnavailableError, match="ErrNotBootstrapped") as info:
            await c.stores()
        assert info.value.status == 500
        assert [m.health for m in await c.health()] == [True]  # PD itself is up


def test_region_checks_count_listed_regions() -> None:
    assert parse_region_check({"count": 2, "regions": [{"id": 1}, {"id": 2}]}, "x") == 2
    assert parse_region_check({"count": 0, "regions": None}, "x") == 0


# --- 2. the stand-in has real PD's shapes ------------------------------------------------------------


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively (lists by their first element)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def get(stand_in: PdStandIn, path: str) -> tuple[int, Any]:
    response = httpx.get(stand_in.base_url + path)
    return response.status_code, response.json()


@pytest.fixture
def three_stores() -> Iterator[tuple[PdStandIn, list[float]]]:
    """Three stores reporting as the capture's did; PD's clock moved by hand."""
    clock = [1_796_082_010.0]
    with PdStandIn(clock=lambda: clock[0]) as s:
        for i, store_id in enumerate((1, 4, 5)):
            host = f"tikv-{i}.tikv-peer.default.svc"
            s.put_store(
                store_id,
                address=f"{host}:20160",
                status_address=f"{host}:20180",
                start_timestamp=int(clock[0]),
            )
        clock[0] += 10
        for store_id in (1, 4, 5):
            s.heartbeat(store_id)
        yield s, clock


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [
        ("stores", "/pd/api/v1/stores"),
        ("stores_state_up", "/pd/api/v1/stores?state=0"),
        ("store_1", "/pd/api/v1/store/1"),
        ("health", "/pd/api/v1/health"),
        ("members", "/pd/api/v1/members"),
        ("leader", "/pd/api/v1/leader"),
        ("pending_peer", "/pd/api/v1/regions/check/pending-peer"),
        ("down_peer", "/pd/api/v1/regions/check/down-peer"),
        ("config_schedule", "/pd/api/v1/config/schedule"),
    ],
)
def test_stand_in_answers_in_real_pds_shapes(
    three_stores: tuple[PdStandIn, list[float]], endpoint: str, path: str
) -> None:
    stand_in, _ = three_stores
    real = capture(f"3stores_faketikv_{endpoint}")

    status, body = get(stand_in, path)

    assert status == real["status"]
    assert shape(body) == shape(real["body"])


def test_stand_in_all_killed_matches_real_pd(three_stores: tuple[PdStandIn, list[float]]) -> None:
    stand_in, clock = three_stores
    clock[0] += 21  # no heartbeat for 21 s

    _, body = get(stand_in, "/pd/api/v1/stores")
    real = capture("faketikv_all_killed_stores")["body"]

    assert shape(body) == shape(real)
    assert sorted(s["store"]["state_name"] for s in body["stores"]) == sorted(
        s["store"]["state_name"] for s in real["stores"]
    )


def test_stand_in_never_heartbeated_store_matches_real_pd() -> None:
    with PdStandIn() as s:
        s.put_store(1, address="tikv-1:1", start_timestamp=0)
        _, body = get(s, "/pd/api/v1/stores")
    real = capture("sim_bootstrap_store_never_heartbeated_stores")["body"]

    assert body["stores"][0]["store"]["state_name"] == real["stores"][0]["store"]["state_name"] == "Down"
    for key in ("start_ts", "last_heartbeat_ts"):
        assert body["stores"][0]["status"][key] == real["stores"][0]["status"][key] == "1970-01-01T00:00:00Z"
    assert set(body["stores"][0]["store"]) - set(real["stores"][0]["store"]) <= {
        "status_address",
        "git_hash",
        "deploy_path",
        "node_state",
    }


def test_stand_in_before_bootstrap_matches_real_pd() -> None:
    with PdStandIn() as s:
        for endpoint, path in (
            ("stores", "/pd/api/v1/stores"),
            ("down_peer", "/pd/api/v1/regions/check/down-peer"),
        ):
            real = capture(f"nostores_unbootstrapped_{endpoint}")
            assert get(s, path) == (real["status"], real["body"])


# --- 3. replays of real PD over time ------------------------------------------------------------------


@dataclass(frozen=True)
class Poll:
    t: float
    status: int
    body: Any


def series(name: str) -> list[Poll]:
    lines = (DATA / f"series_{name}.jsonl").read_text().splitlines()
    return [Poll(d["t"], d["status"], d["body"]) for d in map(json.loads, lines)]


def events(name: str) -> list[tuple[float, str, str]]:
    """(unix s, what, pod) of ``series_<name>.events`` (SIGKILL / start lines)."""
    out = []
    for line in (DATA / f"series_{name}.events").read_text().splitlines():
        t, what, *rest = line.split()
        if what in ("SIGKILL", "start"):
            out.append((float(t), what, rest[0]))
    return out


def pod(name: str, uid: str, *, ready: bool = True) -> PodState:
    return PodState(name, uid, "default", {"app": "tikv"}, "n1", "Running", ready, 0, 0.0, False)


PODS = [pod(f"tikv-{i}", f"tikv-{i}-0") for i in range(3)]


def judge(poll: Poll) -> ProbeResult:
    """What TiKVProbe makes of one captured answer (all pods Ready, PD healthy otherwise)."""
    routes = {
        "/pd/api/v1/stores": (poll.status, poll.body),
        "/pd/api/v1/health": (200, capture("3stores_faketikv_health")["body"]),
        "/pd/api/v1/regions/check/pending-peer": (200, {"count": 0, "regions": []}),
        "/pd/api/v1/regions/check/down-peer": (200, {"count": 0, "regions": []}),
    }

    async def check() -> ProbeResult:
        probe = TiKVProbe(PdClient("http://pd.db:2379", transport=answering(routes)))
        try:
            return await probe.check(PODS, poll.t)
        finally:
            await probe.close()

    return asyncio.run(check())


def replay_trial(name: str, victim: str, *, settle: float, naive: bool = False) -> RecoveryTracker:
    """One trial over a captured series: the kill of `victim` and every later event drive the
    pods (SIGKILL: the pod is gone; start: a new pod, Ready), each poll drives the probe."""
    polls = series(name)
    kill_t = next(t for t, what, p in events(name) if what == "SIGKILL" and p == victim)
    before = next(p for p in polls if p.t < kill_t and p.t > kill_t - 1)
    starts = dict(judge(before).restarts)
    tracker = RecoveryTracker(
        victims=(chosen := [Victim(victim, f"{victim}-0")]),
        initial_pods=PODS,
        kill_sent_mono=kill_t,
        kill_sent_wall=kill_t,
        expected_pods=3,
        judge=StoreRecovery(chosen, starts),
    )
    pods = {p.name: p for p in PODS}
    todo = sorted(
        [(t, what, p) for t, what, p in events(name) if t >= kill_t]
        + [(p.t, "poll", "") for p in polls if p.t >= kill_t]
    )
    end: float | None = None
    for t, what, name_ in todo:
        if end is not None and t > end:
            break
        if what == "SIGKILL":
            gone = pods[name_]
            tracker.observe_pod("DELETED", gone, t, t)
        elif what == "start":
            new = pod(name_, f"{name_}-{t}")
            pods[name_] = new
            tracker.observe_pod("ADDED", new, t, t)
        else:
            poll = next(p for p in polls if p.t == t)
            result = judge(poll)
            if naive:  # the old predicate: Up with a new start, heartbeat or not
                up = {
                    s["store"]["address"].split(".")[0]: s["store"]["state_name"] == "Up"
                    for s in poll.body["stores"]
                }
                result = ProbeResult(
                    healthy=all(up.values()),
                    reasons=() if all(up.values()) else ("a store not Up",),
                    restarts=result.restarts,
                    up=up,
                )
            tracker.observe_probe(result, t, t)
        if tracker.recovered and end is None:
            end = (tracker.recovered_seen_mono or t) + settle
    return tracker


def first_heartbeat_after_restart(name: str, pod_name: str, start_after: float) -> float:
    for poll in series(name):
        for s in poll.body["stores"]:
            meta = s["store"]
            if (
                meta["address"].startswith(pod_name + ".")
                and meta["start_timestamp"] >= int(start_after)
                and meta.get("last_heartbeat", 0) / 1e9 >= meta["start_timestamp"]
            ):
                return float(meta["last_heartbeat"]) / 1e9
    raise AssertionError("no heartbeat after the restart")


def test_tikvlike_restart_is_not_recovered_before_the_first_heartbeat_of_the_new_process() -> None:
    start_t = events("tikvlike_restart")[1][0]
    first_beat = first_heartbeat_after_restart("tikvlike_restart", "tikv-1", start_t)

    tracker = replay_trial("tikvlike_restart", "tikv-1", settle=15)

    assert first_beat - start_t > 9  # TiKV's first heartbeat: an interval after its start
    store_up, recovered = tracker.milestones["store_up"], tracker.milestones["recovered"]
    assert store_up.wall >= first_beat - 0.01  # stamped at PD's heartbeat, not at PutStore
    assert store_up.wall <= first_beat + 0.6  # ...not when some later poll noticed it
    assert tracker.sources["store_up"] == "pd_heartbeat"
    assert recovered.wall >= store_up.wall
    assert not tracker.relapsed  # healthy through the settle window


def test_under_the_old_predicate_tikvlike_recovers_early_and_the_settle_window_catches_it() -> None:
    start_t = events("tikvlike_restart")[1][0]

    tracker = replay_trial("tikvlike_restart", "tikv-1", settle=15, naive=True)

    assert tracker.milestones["recovered"].wall < start_t + 1  # at PutStore: too early
    assert tracker.relapsed
    assert tracker.relapse_reason is not None
    # PD marks the store Disconnected 20 s after the dead process's last heartbeat.
    assert tracker.milestones["relapsed"].wall - tracker.milestones["recovered"].wall > 5


def test_faketikv_relapse_when_every_store_is_killed_within_the_settle_window() -> None:
    kills = [t for t, what, p in events("faketikv") if what == "SIGKILL"]
    all_killed_at = kills[2]

    tracker = replay_trial("faketikv", "tikv-2", settle=30)

    assert tracker.recovered
    assert tracker.relapsed
    assert tracker.milestones["relapsed"].wall >= all_killed_at
    assert tracker.milestones["relapsed"].wall > tracker.milestones["recovered"].wall


def test_faketikv_short_kill_never_seen_by_pd_is_still_measured_from_the_restart() -> None:
    """tikv-2 is back 3 s after its SIGKILL: PD never shows it anything but Up; the new start
    timestamp and a heartbeat since it are the evidence."""
    polls = series("faketikv")
    kill_t, start_t = [t for t, _, p in events("faketikv") if p == "tikv-2"][:2]
    states = {
        s["store"]["state_name"]
        for p in polls
        if kill_t <= p.t <= start_t + 5
        for s in p.body["stores"]
        if s["store"]["address"].startswith("tikv-2.")
    }

    tracker = replay_trial("faketikv", "tikv-2", settle=10)

    assert states == {"Up"}
    assert tracker.recovered
    assert tracker.milestones["store_up"].wall >= start_t


@pytest.mark.parametrize("name", ["faketikv", "tikvlike_restart", "faketikv_down_then_restart", "sim"])
def test_every_series_is_healthy_only_when_every_store_is_up_and_reporting(name: str) -> None:
    for poll in series(name):
        if poll.status != 200:
            continue
        stores = [parse_store(s) for s in poll.body["stores"] or []]
        healthy = judge(poll).healthy if all(s.address.startswith("tikv-") for s in stores) else None
        if healthy is None:
            continue  # PD's simulator stores have no pod names: no pod to match
        expected = len(stores) == 3 and all(s.state_name == "Up" and s.heartbeat_since_start for s in stores)
        assert healthy == expected, (name, poll.t)
