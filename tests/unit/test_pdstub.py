"""The PD stand-in itself: PD's shapes, store states judged from heartbeats, faults, counters."""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from tests.pdstub import PdStandIn, PodRecord, Timing, go_duration, kube_source, rfc3339
from tests.pdstub.kube_source import pod_record

T0 = 1_750_000_000.0


class World:
    """Pods and a clock the test moves by hand."""

    def __init__(self, n: int = 3) -> None:
        self.now = T0
        self.pods: dict[str, PodRecord] = {
            f"tikv-{i}": {"name": f"tikv-{i}", "uid": f"u{i}-a", "ready": True, "ready_since": T0 - 100 + i}
            for i in range(n)
        }

    def source(self) -> list[PodRecord]:
        return [p.copy() for p in self.pods.values()]

    def clock(self) -> float:
        return self.now


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def stand_in(world: World) -> Iterator[PdStandIn]:
    with PdStandIn(world.source, headless_service="tikv-peer", namespace="db", clock=world.clock) as s:
        yield s


def get(stand_in: PdStandIn, path: str, timeout: float = 5.0) -> tuple[int, str, bytes]:
    host, port = stand_in.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def post(stand_in: PdStandIn, path: str, body: Any) -> tuple[int, Any]:
    host, port = stand_in.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def stores(stand_in: PdStandIn) -> dict[str, dict[str, Any]]:
    status, _, body = get(stand_in, "/pd/api/v1/stores")
    assert status == 200
    payload = json.loads(body)
    assert payload["count"] == len(payload["stores"])
    return {s["store"]["address"].split(".")[0]: s for s in payload["stores"]}


# --- shapes -------------------------------------------------------------------------------------


def test_stores_shape(stand_in: PdStandIn, world: World) -> None:
    started = stores(stand_in)["tikv-1"]  # the fleet starts a process per Ready pod: PutStore
    world.now += 10  # one heartbeat interval later, the first heartbeat
    s = stores(stand_in)["tikv-1"]

    meta, status = s["store"], s["status"]
    assert started["store"]["state_name"] == "Down"  # registered, never heartbeated, as in PD
    assert started["status"]["last_heartbeat_ts"] == "1970-01-01T00:00:00Z"
    assert "last_heartbeat" not in started["store"]  # omitempty
    assert meta["address"] == "tikv-1.tikv-peer.db.svc:20160"
    assert meta["status_address"] == "tikv-1.tikv-peer.db.svc:20180"
    assert meta["state_name"] == "Up"
    assert meta["version"] == "8.5.3"
    assert meta["start_timestamp"] == int(T0)
    assert meta["last_heartbeat"] == int((T0 + 10) * 1e9)
    assert "state" not in meta  # metapb Up is 0: omitted by Go's omitempty
    assert status["start_ts"] == rfc3339(int(T0) * 1_000_000_000)
    assert status["last_heartbeat_ts"] == rfc3339(int((T0 + 10) * 1e9))
    assert status["uptime"] == "10s"
    assert status["capacity"].endswith("GiB")
    assert isinstance(status["leader_count"], int)
    assert status["region_count"] == 24
    assert "pending_peer_count" not in status  # omitempty: absent when 0


def test_store_ids_stable_and_pd_like(stand_in: PdStandIn, world: World) -> None:
    first = {name: s["store"]["id"] for name, s in stores(stand_in).items()}
    world.pods["tikv-9"] = {"name": "tikv-9", "uid": "u9", "ready": True, "ready_since": T0}
    second = {name: s["store"]["id"] for name, s in stores(stand_in).items()}

    assert first == {"tikv-0": 1, "tikv-1": 4, "tikv-2": 5}
    assert second == {**first, "tikv-9": 6}


def test_leaders_spread_over_up_stores(stand_in: PdStandIn, world: World) -> None:
    stores(stand_in)
    world.now += 10
    assert sum(s["status"]["leader_count"] for s in stores(stand_in).values()) == 24
    world.pods["tikv-2"]["ready"] = False
    world.now += 21  # tikv-2 missed two heartbeats: Disconnected

    now = stores(stand_in)
    assert now["tikv-2"]["store"]["state_name"] == "Disconnected"
    assert now["tikv-0"]["status"]["leader_count"] + now["tikv-1"]["status"]["leader_count"] == 24


def test_health_members_leader_shapes(stand_in: PdStandIn) -> None:
    _, ctype, body = get(stand_in, "/pd/api/v1/health")
    health = json.loads(body)
    members = json.loads(get(stand_in, "/pd/api/v1/members")[2])
    leader = json.loads(get(stand_in, "/pd/api/v1/leader")[2])

    assert ctype.startswith("application/json")
    assert health == [
        {
            "name": "pd-0",
            "member_id": health[0]["member_id"],
            "client_urls": ["http://pd-0.pd-peer.db.svc:2379"],
            "health": True,
        }
    ]
    assert members["members"][0]["name"] == "pd-0"
    assert members["leader"]["member_id"] == health[0]["member_id"]
    assert members["header"]["cluster_id"] > 0
    assert leader == {k: members["leader"][k] for k in ("name", "member_id", "peer_urls", "client_urls")}


def test_unknown_path_is_404(stand_in: PdStandIn) -> None:
    status, ctype, body = get(stand_in, "/pd/api/v1/nope")

    assert (status, ctype, body) == (404, "text/plain; charset=utf-8", b"404 page not found\n")


def test_state_filter_is_honoured(stand_in: PdStandIn, world: World) -> None:
    stores(stand_in)
    world.now += 10
    stores(stand_in)
    world.pods["tikv-0"]["ready"] = False
    world.now += 25

    up_state = json.loads(get(stand_in, "/pd/api/v1/stores?state=0")[2])
    tombstones = json.loads(get(stand_in, "/pd/api/v1/stores?state=2")[2])

    # metapb state 0 is Up, which in PD includes the Disconnected and Down ones.
    assert sorted(s["store"]["state_name"] for s in up_state["stores"]) == ["Disconnected", "Up", "Up"]
    assert tombstones == {"count": 0, "stores": []}


# --- PD before any TiKV -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/pd/api/v1/stores", "/pd/api/v1/store/1", "/pd/api/v1/regions/check/down-peer"]
)
def test_not_bootstrapped_until_a_store_registers(path: str) -> None:
    with PdStandIn() as s:
        status, _, body = get(s, path)
        assert status == 500
        assert json.loads(body).startswith("[PD:cluster:ErrNotBootstrapped]")
        assert get(s, "/pd/api/v1/health")[0] == 200  # PD itself is up
        s.put_store(1, address="tikv-0.tikv-peer.default.svc:20160", start_timestamp=int(T0))
        assert get(s, path)[0] == 200


# --- a store's life as PD sees it: heartbeats only ----------------------------------------------


def test_a_killed_store_stays_up_until_its_heartbeat_is_20s_old(stand_in: PdStandIn, world: World) -> None:
    stores(stand_in)
    world.now += 10
    before = stores(stand_in)["tikv-1"]
    world.now += 0.2
    del world.pods["tikv-1"]  # SIGKILL: no more heartbeats

    states = []
    for _ in range(4):
        world.now += 5
        states.append(stores(stand_in)["tikv-1"]["store"]["state_name"])

    assert states == ["Up", "Up", "Up", "Disconnected"]  # 5.2, 10.2, 15.2, 20.2 s after
    gone = stores(stand_in)["tikv-1"]["store"]
    assert gone["last_heartbeat"] == before["store"]["last_heartbeat"]  # stale, kept
    assert gone["start_timestamp"] == before["store"]["start_timestamp"]


def test_restart_shows_new_start_and_old_heartbeat_until_the_first_new_one(
    stand_in: PdStandIn, world: World
) -> None:
    stores(stand_in)
    world.now += 10
    before = stores(stand_in)["tikv-1"]
    world.now += 1
    del world.pods["tikv-1"]
    stores(stand_in)
    world.now += 12
    world.pods["tikv-1"] = {"name": "tikv-1", "uid": "u1-b", "ready": True, "ready_since": world.now}

    registered = stores(stand_in)["tikv-1"]
    world.now += 9.9
    still_silent = stores(stand_in)["tikv-1"]
    world.now += 0.1
    back = stores(stand_in)["tikv-1"]

    assert registered["store"]["id"] == before["store"]["id"]
    assert registered["store"]["start_timestamp"] == int(world.now - 10)  # PutStore: new start at once
    assert registered["store"]["last_heartbeat"] == before["store"]["last_heartbeat"]  # the dead one's
    assert registered["store"]["state_name"] == "Up"  # 13 s since the old heartbeat: still Up
    assert "uptime" not in registered["status"]  # heartbeat older than start
    assert still_silent["store"]["state_name"] == "Disconnected"  # 22.9 s without a heartbeat
    assert back["store"]["state_name"] == "Up"
    assert back["store"]["last_heartbeat"] == int(world.now * 1e9)
    assert back["status"]["uptime"] == "10s"


def test_restart_within_the_same_second_still_moves_start(stand_in: PdStandIn, world: World) -> None:
    world.now = T0 + 0.2
    first = stores(stand_in)["tikv-0"]["store"]["start_timestamp"]
    world.pods["tikv-0"] = {"name": "tikv-0", "uid": "u0-b", "ready": True, "ready_since": T0 + 0.7}
    world.now = T0 + 0.8

    assert stores(stand_in)["tikv-0"]["store"]["start_timestamp"] == first + 1


def test_down_only_after_max_store_down_time(stand_in: PdStandIn, world: World) -> None:
    stores(stand_in)
    world.now += 10
    stores(stand_in)  # its first heartbeat
    world.pods["tikv-2"]["ready"] = False

    world.now += 1799
    at_29m59 = stores(stand_in)["tikv-2"]["store"]["state_name"]
    world.now += 2
    after_30m = stores(stand_in)["tikv-2"]["store"]["state_name"]

    assert (at_29m59, after_30m) == ("Disconnected", "Down")


def test_fast_mode_scales_every_interval_by_one_factor(world: World) -> None:
    timing = Timing.fast(0.1)
    with PdStandIn(world.source, timing=timing, clock=world.clock) as s:
        stores(s)
        world.now += 1.0  # first heartbeat one (scaled) interval after the start
        up = stores(s)["tikv-0"]["store"]["state_name"]
        world.pods["tikv-0"]["ready"] = False
        world.now += 1.9
        still_up = stores(s)["tikv-0"]["store"]["state_name"]
        world.now += 0.2
        disconnected = stores(s)["tikv-0"]["store"]["state_name"]
        world.now += 180
        down = stores(s)["tikv-0"]["store"]["state_name"]
        schedule = json.loads(get(s, "/pd/api/v1/config/schedule")[2])

    assert (timing.heartbeat_interval, timing.disconnected_after) == (1.0, 2.0)
    assert [up, still_up, disconnected, down] == ["Up", "Up", "Disconnected", "Down"]
    assert schedule["max-store-down-time"] == "3m0s"


def test_stores_report_over_http(world: World) -> None:
    with PdStandIn(clock=world.clock) as s:
        put = {
            "id": 4,
            "address": "tikv-1.tikv-peer.tikv.svc:20160",
            "status_address": "tikv-1.tikv-peer.tikv.svc:20180",
            "version": "8.5.3",
            "start_timestamp": int(T0),
            "labels": {"zone": "a"},
        }
        assert post(s, "/pdstub/v1/stores/put", put)[0] == 200
        world.now += 10
        assert post(s, "/pdstub/v1/stores/heartbeat", {"id": 4})[0] == 200
        unknown = post(s, "/pdstub/v1/stores/heartbeat", {"id": 99})
        bad = post(s, "/pdstub/v1/stores/put", {"id": "four"})
        store = json.loads(get(s, "/pd/api/v1/store/4")[2])
        missing = get(s, "/pd/api/v1/store/5")

    assert store["store"]["state_name"] == "Up"
    assert store["store"]["labels"] == [{"key": "zone", "value": "a"}]
    assert store["store"]["last_heartbeat"] == int((T0 + 10) * 1e9)
    assert unknown[0] == 404
    assert bad[0] == 400
    assert missing[0] == 404


def test_pod_never_ready_has_no_store_yet(world: World) -> None:
    world.pods["tikv-3"] = {"name": "tikv-3", "uid": "u3", "ready": False, "ready_since": None}

    with PdStandIn(world.source, clock=world.clock) as s:
        assert sorted(stores(s)) == ["tikv-0", "tikv-1", "tikv-2"]


# --- faults and counters ------------------------------------------------------------------------


def test_error500(stand_in: PdStandIn) -> None:
    stand_in.set_fault("error500")

    status, _, body = get(stand_in, "/pd/api/v1/stores")

    assert status == 500
    assert "injected" in json.loads(body)


def test_malformed_is_truncated_json_with_honest_length(stand_in: PdStandIn) -> None:
    stand_in.set_fault("malformed")

    status, _, body = get(stand_in, "/pd/api/v1/stores")

    assert status == 200
    assert body.startswith(b"{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


def test_timeout_holds_the_answer(stand_in: PdStandIn) -> None:
    stand_in.set_fault("timeout", delay_seconds=0.3)

    started = time.monotonic()
    status, _, _ = get(stand_in, "/pd/api/v1/health")

    assert status == 200
    assert time.monotonic() - started >= 0.3


def test_stop_releases_held_requests(world: World) -> None:
    s = PdStandIn(world.source, clock=world.clock)
    s.start()
    s.set_fault("timeout", delay_seconds=30)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            get(s, "/pd/api/v1/health", timeout=10)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.2)
    started = time.monotonic()
    s.stop()
    t.join(timeout=5)

    assert not t.is_alive()
    assert time.monotonic() - started < 3
    assert errors  # the held request got no answer


def test_fault_times_and_paths(stand_in: PdStandIn) -> None:
    stand_in.set_fault("error500", times=2, paths={"/pd/api/v1/health"})

    assert get(stand_in, "/pd/api/v1/stores")[0] == 200  # other paths untouched, not counted
    assert [get(stand_in, "/pd/api/v1/health")[0] for _ in range(3)] == [500, 500, 200]


def test_fault_none_clears(stand_in: PdStandIn) -> None:
    stand_in.set_fault("error500")
    stand_in.set_fault("none")

    assert get(stand_in, "/pd/api/v1/health")[0] == 200


def test_unknown_fault_is_refused(stand_in: PdStandIn) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        stand_in.set_fault("slow")  # type: ignore[arg-type]


def test_requests_served_counts_everything(stand_in: PdStandIn) -> None:
    get(stand_in, "/pd/api/v1/stores")
    get(stand_in, "/pd/api/v1/nope")
    stand_in.set_fault("error500", times=1)
    get(stand_in, "/pd/api/v1/health")

    assert stand_in.requests_served == 3


def test_failing_pod_source_is_a_500(world: World) -> None:
    def broken() -> list[PodRecord]:
        raise RuntimeError("watch not synced")

    with PdStandIn(broken) as s:
        status, _, body = get(s, "/pd/api/v1/stores")
        assert status == 500
        assert "watch not synced" in json.loads(body)
        assert get(s, "/pd/api/v1/health")[0] == 200  # health does not read pods


def test_listens_on_loopback_only(stand_in: PdStandIn) -> None:
    assert stand_in.base_url.startswith("http://127.0.0.1:")


def test_stopped_stand_in_refuses_connections(world: World) -> None:
    s = PdStandIn(world.source)
    s.start()
    s.stop()
    s.stop()  # idempotent

    with pytest.raises(ConnectionRefusedError):
        get(s, "/pd/api/v1/stores", timeout=1)


# --- Go formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (1_500_000, "1.5ms"),
        (2_500_000_000, "2.5s"),
        (62_500_000_000, "1m2.5s"),
        (3_600_000_000_000, "1h0m0s"),
        (90_061_000_000_000, "25h1m1s"),
        (-2_000_000_000, "-2s"),
    ],
)
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1_500_000_000) == "1970-01-01T00:00:01.5Z"
    assert rfc3339(1_000_000_001) == "1970-01-01T00:00:01.000000001Z"


# --- the kube pod source's decoding (the watch itself needs a cluster) ------------------------


def _v1pod(ready: str | None, *, deleting: bool = False, name: str = "tikv-0", uid: str = "abc") -> k8s.V1Pod:
    since = datetime.datetime(2025, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)
    conditions = (
        None
        if ready is None
        else [k8s.V1PodCondition(type="Ready", status=ready, last_transition_time=since)]
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name=name,
            uid=uid,
            deletion_timestamp=since if deleting else None,
        ),
        status=k8s.V1PodStatus(conditions=conditions),
    )


def test_pod_record_ready_since_is_the_ready_transition() -> None:
    since = datetime.datetime(2025, 6, 1, 12, 0, 0, tzinfo=datetime.UTC).timestamp()

    assert pod_record(_v1pod("True")) == {"name": "tikv-0", "uid": "abc", "ready": True, "ready_since": since}


@pytest.mark.parametrize(("ready", "deleting"), [("False", False), (None, False), ("True", True)])
def test_pod_record_not_ready(ready: str | None, deleting: bool) -> None:
    assert pod_record(_v1pod(ready, deleting=deleting))["ready"] is False


def test_kube_source_lists_then_follows_the_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch loop with the API replaced: list, ADDED/MODIFIED/DELETED, then a relist."""

    def v1pod(name: str, uid: str, ready: str) -> k8s.V1Pod:
        return _v1pod(ready, name=name, uid=uid)

    lists = [
        [v1pod("tikv-0", "a", "True"), v1pod("tikv-1", "b", "True")],
        [v1pod("tikv-0", "a", "True")],
    ]
    events = [
        {"type": "MODIFIED", "object": v1pod("tikv-1", "b", "False")},
        {"type": "DELETED", "object": v1pod("tikv-1", "old-uid", "False")},  # an older pod: ignored
        {"type": "ADDED", "object": v1pod("tikv-2", "c", "True")},
        {"type": "DELETED", "object": v1pod("tikv-0", "a", "True")},
    ]
    seen: list[list[PodRecord]] = []
    second_round = threading.Event()

    class FakeV1:
        def __init__(self, api_client: object) -> None:
            pass

        def list_namespaced_pod(self, namespace: str, **kwargs: object) -> k8s.V1PodList:
            assert (namespace, kwargs["label_selector"]) == ("db", "app=tikv")
            if len(lists) == 1:  # the second list (or later): the first round is over
                second_round.set()
            items = lists.pop(0) if len(lists) > 1 else lists[0]  # the last list stays the truth
            return k8s.V1PodList(items=items, metadata=k8s.V1ListMeta(resource_version="42"))

    class FakeWatch:
        def stream(self, func: Any, namespace: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
            assert kwargs["resource_version"] == "42"
            if second_round.is_set():
                return
            for event in events:
                yield event
                seen.append(source())

        def stop(self) -> None:
            pass

    monkeypatch.setattr(k8s, "CoreV1Api", FakeV1)  # the module kube_source uses
    monkeypatch.setattr(k8s_watch, "Watch", FakeWatch)
    source = kube_source.KubePodSource(object(), "db", "app=tikv")
    with source:
        assert source.wait_synced(5)
        assert second_round.wait(5)

    def state(pods: list[PodRecord]) -> list[tuple[str, bool]]:
        return sorted((p["name"], p["ready"]) for p in pods)

    assert [state(s) for s in seen] == [
        [("tikv-0", True), ("tikv-1", False)],
        [("tikv-0", True), ("tikv-1", False)],
        [("tikv-0", True), ("tikv-1", False), ("tikv-2", True)],
        [("tikv-1", False), ("tikv-2", True)],
    ]
    assert state(source()) == [("tikv-0", True)]  # the relist replaced everything the watch had built


def test_answers_like_go_net_http_nodelay_and_one_write(stand_in: PdStandIn) -> None:
    """PD is Go: TCP_NODELAY on its connections and an answer written in one piece. The stand-in
    must not add the 40 ms a kept-alive client waits when a body sits behind Nagle's algorithm
    (what the stand-in cost every look before, and real PD never does)."""
    writes: list[int] = []
    original = socket.SocketIO.write

    def counting(self: socket.SocketIO, b: Any) -> int | None:
        # The server writes through SocketIO (its wfile); http.client's sendall does not.
        writes.append(len(b))
        return original(self, b)

    socket.SocketIO.write = counting  # type: ignore[method-assign]
    try:
        host, port = stand_in.base_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/pd/api/v1/stores")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        assert json.loads(body)["count"] >= 0
        server = stand_in._server
        assert server is not None
        with server.connections_lock:
            sockets = list(server.connections)
        assert sockets, "the kept-alive connection is the server's"
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
        # One send for the whole answer: headers, blank line and body together.
        assert len(writes) == 1, writes
        assert writes[0] > len(body), writes
        conn.close()
    finally:
        socket.SocketIO.write = original  # type: ignore[method-assign]
