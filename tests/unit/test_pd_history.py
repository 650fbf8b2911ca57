"""What the TiKV probe remembers across its looks at PD: PD's clock as the heartbeats show it
(`PdClock`: the store-Up milestone is placed with it, so one lucky look must fix it for the looks
that follow), and each store's heartbeats per process (`HeartbeatHistory`: a restart in the
same second as the dead process's last heartbeat must not count as a report)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from aftershock.model import PodState
from aftershock.subjects.pd import HeartbeatHistory, PdClient, PdClock, PdMemberHealth, StoreInfo
from aftershock.subjects.tikv import TiKVProbe, judge_pd

#: Our monotonic clock reads PD's unix clock minus this (any constant: two unrelated clocks).
OFFSET = -1_700_000_000.0


def test_the_estimate_is_the_smallest_gap_seen_within_the_window() -> None:
    clock = PdClock(window=10.0)
    assert clock.now(5.0) is None
    # Looks at PD-time t showing a heartbeat `age` old: each gap is the offset plus that age.
    for mono, age in ((100.0, 0.15), (100.2, 0.01), (100.4, 0.18)):
        clock.observe(mono - OFFSET - age, mono)
    assert clock.offset() == OFFSET + 0.01
    assert clock.now(101.0) == 101.0 - OFFSET - 0.01
    # Ten seconds on, the lucky look has left the window: the newer, worse ones decide.
    clock.observe(111.0 - OFFSET - 0.05, 111.0)
    assert clock.offset() == OFFSET + 0.05


class _Pd:
    """PD answering with one store whose last heartbeat is set by the test."""

    def __init__(self) -> None:
        self.heartbeat = 0.0

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            path = request.url.path
            body: Any
            if path.endswith("/stores"):
                store = {
                    "store": {
                        "id": 1,
                        "address": "tikv-0.tikv-peer.db.svc:20160",
                        "state_name": "Up",
                        "start_timestamp": int(self.heartbeat) - 100,
                        "last_heartbeat": int(self.heartbeat * 1e9),
                    },
                    "status": {"leader_count": 1, "region_count": 1},
                }
                body = {"count": 1, "stores": [store]}
            elif path.endswith("/health"):
                body = [{"name": "pd-0", "member_id": 1, "client_urls": [], "health": True}]
            else:
                body = {"count": 0, "regions": None}
            return httpx.Response(200, content=json.dumps(body).encode())

        return httpx.MockTransport(handler)


async def test_a_probe_reports_pd_now_from_its_best_look_not_only_the_current_one() -> None:
    pd = _Pd()
    mono = [0.0]
    probe = TiKVProbe(PdClient("http://pd.db:2379", transport=pd.transport()), monotonic=lambda: mono[0])
    pods = [PodState("tikv-0", "u0", "db", {"app": "tikv"}, "n1", "Running", True, 0, 0.0, False)]
    pd_now: list[float | None] = []
    for at, age in ((50.0, 0.15), (50.2, 0.002), (50.4, 0.19)):
        mono[0] = at
        pd.heartbeat = at - OFFSET - age
        pd_now.append((await probe.check(pods, now=0.0)).pd_now)
    await probe.close()
    truth = [at - OFFSET for at in (50.0, 50.2, 50.4)]
    errors = [t - p for t, p in zip(truth, pd_now, strict=True) if p is not None]
    # The first look knows only its own heartbeat (0.15 s old); from the lucky second look on,
    # PD's clock is known to its 2 ms, also when the third look's heartbeat is 0.19 s old.
    assert [round(e, 6) for e in errors] == [0.15, 0.002, 0.002]


def _store(start: int, heartbeat: float) -> StoreInfo:
    return StoreInfo(
        id=4,
        address="tikv-1.tikv-peer.db.svc:20160",
        state_name="Up",
        start_timestamp=start,
        last_heartbeat_ns=int(heartbeat * 1e9),
        leader_count=1,
        region_count=1,
    )


def test_a_restart_in_the_same_second_as_the_last_heartbeat_is_not_up_on_that_heartbeat() -> None:
    history = HeartbeatHistory()
    history.observe([_store(900, 1000.2)])  # the old process, seen heartbeating at 1000.2
    # Killed at 1000.3; the new process starts at 1000.9: PD shows start 1000 (whole seconds)
    # with the dead process's heartbeat, which is "since the start" by PD's rule.
    restarted = _store(1000, 1000.2)
    assert restarted.heartbeat_since_start
    history.observe([restarted])
    assert history.previous_process_heartbeat(restarted)
    assert not history.reported_since_start(restarted)
    # Its own first heartbeat decides.
    reported = _store(1000, 1001.4)
    history.observe([reported])
    assert history.reported_since_start(reported)


def test_the_heartbeat_shown_with_a_new_start_at_first_sight_is_the_dead_processs() -> None:
    history = HeartbeatHistory()
    history.observe([_store(900, 1000.2)])  # the last look at the old process
    # It heartbeated once more (1000.4) before it died, unseen; the new process started in
    # the same second: the first look at the new start shows that unseen heartbeat.
    restarted = _store(1000, 1000.4)
    history.observe([restarted])
    assert not history.reported_since_start(restarted)
    history.observe([restarted])  # nothing new at the next look either
    assert not history.reported_since_start(restarted)
    reported = _store(1000, 1000.6)
    history.observe([reported])
    assert history.reported_since_start(reported)


def _pod(uid: str) -> PodState:
    return PodState("tikv-1", uid, "db", {"app": "tikv"}, "n1", "Running", True, 0, 0.0, False)


def test_a_look_after_the_old_pod_was_replaced_knows_the_dead_processs_last_heartbeat() -> None:
    history = HeartbeatHistory()
    history.observe([_store(900, 1000.2)], [_pod("old")])
    # The pod was replaced; PD still shows the old start with the dead process's last
    # heartbeat (1000.4, unseen before): that is its last, exactly.
    history.observe([_store(900, 1000.4)], [_pod("new")])
    # The next look shows the new start together with the new process's first heartbeat
    # (heartbeats faster than looks): it counts at once, not one heartbeat later.
    first = _store(1000, 1000.6)
    history.observe([first], [_pod("new")])
    assert history.reported_since_start(first)
    # Had PD shown the dead process's heartbeat with the new start, it would not count.
    other = HeartbeatHistory()
    other.observe([_store(900, 1000.2)], [_pod("old")])
    other.observe([_store(900, 1000.4)], [_pod("new")])
    stale = _store(1000, 1000.4)
    other.observe([stale], [_pod("new")])
    assert not other.reported_since_start(stale)


def test_a_pod_being_deleted_does_not_prove_its_process_dead() -> None:
    history = HeartbeatHistory()
    history.observe([_store(900, 1000.2)], [_pod("old")])
    deleting = PodState("tikv-1", "old", "db", {"app": "tikv"}, "n1", "Running", True, 0, 0.0, True)
    history.observe([_store(900, 1000.4)], [deleting])  # graceful shutdown may still heartbeat
    restarted = _store(1000, 1000.6)
    history.observe([restarted], [_pod("new")])
    assert not history.reported_since_start(restarted)  # the first-sight rule decides


def test_without_a_look_at_the_previous_process_pds_rule_decides() -> None:
    history = HeartbeatHistory()
    first_look = _store(1000, 1000.2)
    history.observe([first_look])
    assert history.reported_since_start(first_look)
    stale = _store(1000, 999.5)  # a heartbeat older than the start: PD's rule says no anyway
    assert not history.reported_since_start(stale)


def test_a_restarted_store_on_its_dead_process_heartbeat_is_a_reason_pd_is_unhealthy() -> None:
    restarted = _store(1000, 1000.2)
    members = [PdMemberHealth("pd-0", 1, True)]
    assert judge_pd([restarted], members, expected_stores=1, now=1000.3).healthy
    judged = judge_pd([restarted], members, expected_stores=1, now=1000.3, previous_process_heartbeat={4})
    assert not judged.healthy
    assert any("has not heartbeated since" in r for r in judged.reasons)


def _look(clock: PdClock, asked: float, seen: float, heartbeats: dict[int, float], start: int = 100) -> None:
    """A look asked at `asked`, answered at `seen` (our clock), showing each store's last
    heartbeat (PD's clock, which reads ours minus OFFSET)."""
    clock.observe(
        max(heartbeats.values()), seen, asked=asked, stores={k: (start, v) for k, v in heartbeats.items()}
    )


def test_a_heartbeat_newer_than_the_previous_look_showed_bounds_the_offset_from_below() -> None:
    clock = PdClock(window=60.0)
    # Store 1 heartbeats every 0.5 s, reaching PD at our 10.0, 10.5, 11.0 (PD: that - OFFSET).
    pd = 10.0 - OFFSET
    _look(clock, 10.10, 10.12, {1: pd})
    assert clock.lower_bound() is None  # one look shows no arrival between looks
    _look(clock, 10.30, 10.32, {1: pd})
    _look(clock, 10.52, 10.54, {1: pd + 0.5})  # arrived between 10.30 (asked) and 10.54
    lower, upper = clock.lower_bound(), clock.offset()
    assert lower is not None
    assert upper is not None
    assert lower == OFFSET - 0.2  # 10.30 - (10.5 - OFFSET)
    assert upper == OFFSET + 0.04  # 10.54 - (10.5 - OFFSET): the look came 40 ms after it
    assert lower < OFFSET < upper


def test_looks_aimed_halfway_through_the_bracket_narrow_it_to_a_look_s_round_trip() -> None:
    """The heartbeat arrives at our 10.0 + 0.5 k exactly; a look takes 4 ms and is served 2 ms
    after it is asked. Aimed looks (`next_look`) must bring the upper bound, which alone places
    stamps, to within that round trip of the truth, and never below it."""
    clock = PdClock(window=600.0)
    arrivals = [10.0 + 0.5 * k for k in range(40)]

    def look(asked: float) -> None:
        served = asked + 0.002
        shown = max(a for a in arrivals if a <= served)
        _look(clock, asked, asked + 0.004, {1: shown - OFFSET})

    # A few unaimed looks 50 ms apart start both bounds (and the period) off.
    for i in range(25):
        look(10.01 + 0.05 * i)
    start = clock.offset()
    assert start is not None
    assert start - OFFSET > 0.004
    now = 11.3
    for _ in range(20):
        aimed = clock.next_look(now)
        assert aimed is not None
        assert aimed > now
        look(aimed)
        now = aimed + 0.004
    upper, lower = clock.offset(), clock.lower_bound()
    assert upper is not None
    assert lower is not None
    assert OFFSET <= upper <= OFFSET + 0.0045  # late by at most the look's round trip
    assert lower <= OFFSET
    best = clock.best()
    assert best is None  # no wall times given: nothing to retrace


def test_a_restart_does_not_give_a_period_and_a_missed_heartbeat_is_replaced() -> None:
    clock = PdClock(window=60.0)
    base = 10.0 - OFFSET
    clock.observe(base, 10.01, asked=10.0, stores={1: (100, base)})
    # Two periods between looks (one heartbeat missed): 1.0 s for now.
    clock.observe(base + 1.0, 11.01, asked=11.0, stores={1: (100, base + 1.0)})
    assert clock._periods == {1: 1.0}
    clock.observe(base + 1.5, 11.51, asked=11.5, stores={1: (100, base + 1.5)})
    assert clock._periods == {1: 0.5}
    # A new process heartbeats 0.2 s after the old one's last: no period from that.
    clock.observe(base + 1.7, 11.71, asked=11.7, stores={1: (200, base + 1.7)})
    assert clock._periods == {1: 0.5}


def test_crossed_bounds_drop_the_lower_one() -> None:
    """A PD clock stepped back makes a later heartbeat look older than the lower bound allows:
    the lower bounds go, the upper one (which places stamps) stays."""
    clock = PdClock(window=60.0)
    base = 10.0 - OFFSET
    clock.observe(base, 10.01, asked=10.0, stores={1: (100, base)})
    clock.observe(base + 0.5, 10.52, asked=10.51, stores={1: (100, base + 0.5)})
    assert clock.lower_bound() is not None
    # PD's clock jumps 5 s ahead: its heartbeat now reads 5 s later than before.
    clock.observe(base + 6.0, 11.02, asked=11.0, stores={1: (100, base + 6.0)})
    upper, lower = clock.offset(), clock.lower_bound()
    assert upper is not None
    assert lower is None
