"""PD's clock as its heartbeats show it (`PdClock`), kept across the probe's looks: the store-Up
milestone is placed with it, so one lucky look must fix it for the looks that follow."""

from __future__ import annotations

import json
from typing import Any

import httpx

from aftershock.model import PodState
from aftershock.subjects.pd import PdClient
from aftershock.subjects.tikv import PdClock, TiKVProbe

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
