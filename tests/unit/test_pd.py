"""PdClient against the PD stand-in on 127.0.0.1, and against hand-made answers."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from tests.pdstub import PdStandIn

from aftershock.subjects import pd
from aftershock.subjects.pd import PdClient, PdDataError, PdError, PdUnavailableError

NOW = time.time()

#: (pod, store id, start): three tikv-servers that started at different times.
STORES = [("tikv-0", 1, NOW - 300.25), ("tikv-1", 4, NOW - 200.5), ("tikv-2", 5, NOW - 100.75)]


@pytest.fixture
def stand_in() -> Iterator[PdStandIn]:
    # PD's clock is pinned: each store registered at its start and heartbeated a second ago.
    clock = [NOW]
    with PdStandIn(namespace="db", clock=lambda: clock[0]) as s:
        for pod, store_id, started in STORES:
            host = f"{pod}.tikv-peer.db.svc"
            s.put_store(
                store_id,
                address=f"{host}:20160",
                status_address=f"{host}:20180",
                start_timestamp=int(started),
            )
            s.heartbeat(store_id)
        clock[0] = NOW + 1.0
        yield s


@pytest.fixture
async def client(stand_in: PdStandIn) -> AsyncIterator[PdClient]:
    c = PdClient(stand_in.base_url, timeout=0.5)
    yield c
    await c.aclose()


def _mock(handler: Any) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


async def _client_answering(status: int, body: bytes, headers: dict[str, str] | None = None) -> PdClient:
    return PdClient(
        "http://pd.db:2379",
        transport=_mock(lambda request: httpx.Response(status, content=body, headers=headers)),
    )


# --- reading a healthy cluster ------------------------------------------------------------------


async def test_stores_are_parsed_from_pd_shapes(client: PdClient) -> None:
    stores = await client.stores()

    assert [s.id for s in stores] == [1, 4, 5]
    by_addr = {s.address: s for s in stores}
    s0 = by_addr["tikv-0.tikv-peer.db.svc:20160"]
    assert s0.state_name == "Up"
    assert s0.start_timestamp == int(NOW - 300.25)
    assert s0.last_heartbeat_ns == int(NOW * 1e9)
    assert s0.pending_peer_count == 0
    assert s0.status_address == "tikv-0.tikv-peer.db.svc:20180"
    assert s0.uptime is not None
    assert s0.uptime.startswith("5m")
    assert sum(s.leader_count for s in stores) == 24
    assert all(s.region_count == 24 for s in stores)


async def test_health_lists_pd_members(client: PdClient) -> None:
    members = await client.health()

    assert len(members) == 1
    assert members[0].name == "pd-0"
    assert members[0].health is True
    assert members[0].member_id > 0


async def test_base_url_with_trailing_slash(stand_in: PdStandIn) -> None:
    async with PdClient(stand_in.base_url + "/") as c:
        assert len(await c.stores()) == 3


# --- faults map to the right error class --------------------------------------------------------


async def test_http_500_is_unavailable(stand_in: PdStandIn, client: PdClient) -> None:
    stand_in.set_fault("error500")

    with pytest.raises(PdUnavailableError, match="HTTP 500") as info:
        await client.stores()
    assert info.value.status == 500


async def test_timeout_is_unavailable_and_bounded(stand_in: PdStandIn) -> None:
    stand_in.set_fault("timeout", delay_seconds=3.0)
    async with PdClient(stand_in.base_url, timeout=0.2) as c:
        started = time.monotonic()
        with pytest.raises(PdUnavailableError) as info:
            await c.health()
        assert time.monotonic() - started < 1.5
    assert info.value.__cause__ is not None


async def test_malformed_json_is_data_error(stand_in: PdStandIn, client: PdClient) -> None:
    stand_in.set_fault("malformed")

    with pytest.raises(PdDataError, match="not JSON") as info:
        await client.stores()
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.status == 200


async def test_connection_refused_is_unavailable(stand_in: PdStandIn) -> None:
    url = stand_in.base_url
    stand_in.stop()
    async with PdClient(url) as c:
        with pytest.raises(PdUnavailableError) as info:
            await c.stores()
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_not_found_is_data_error_with_status(stand_in: PdStandIn) -> None:
    async with PdClient(stand_in.base_url + "/not-pd") as c:
        with pytest.raises(PdDataError) as info:
            await c.stores()
    assert info.value.status == 404


async def test_fault_limited_to_some_requests_then_recovers(stand_in: PdStandIn, client: PdClient) -> None:
    stand_in.set_fault("error500", times=1)

    with pytest.raises(PdUnavailableError):
        await client.stores()
    assert len(await client.stores()) == 3


async def test_both_error_kinds_are_pd_errors() -> None:
    assert issubclass(PdUnavailableError, PdError)
    assert issubclass(PdDataError, PdError)


# --- answers PD never gives ---------------------------------------------------------------------


async def test_redirect_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data"})

    async with PdClient("http://pd.db:2379", transport=_mock(handler)) as c:
        with pytest.raises(PdDataError, match="not followed") as info:
            await c.stores()
    assert info.value.status == 302
    assert seen == ["http://pd.db:2379/pd/api/v1/stores"]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "expected an object"),
        ({"count": 1}, "missing 'stores'"),
        ({"count": 1, "stores": {}}, "not a list"),
        ({"count": 1, "stores": [{"status": {}}]}, "missing 'store'"),
        ({"count": 1, "stores": [{"store": {"address": "a:1", "state_name": "Up"}}]}, "missing 'id'"),
        ({"count": 1, "stores": [{"store": {"id": "1", "address": "a:1", "state_name": "Up"}}]}, "integer"),
        ({"count": 1, "stores": [{"store": {"id": True, "address": "a:1", "state_name": "Up"}}]}, "integer"),
        (
            {
                "count": 1,
                "stores": [{"store": {"id": 1, "address": "a:1", "state_name": "Up"}, "status": []}],
            },
            "expected an object",
        ),
    ],
)
async def test_wrong_stores_shape_is_data_error(body: Any, match: str) -> None:
    c = await _client_answering(200, json.dumps(body).encode())
    async with c:
        with pytest.raises(PdDataError, match=match):
            await c.stores()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"health": True}, "expected a list"),
        ([{"name": "pd-0", "member_id": 1}], "missing 'health'"),
        ([{"name": "pd-0", "member_id": 1, "health": "true"}], "true or false"),
        ([{"member_id": 1, "health": True}], "missing 'name'"),
    ],
)
async def test_wrong_health_shape_is_data_error(body: Any, match: str) -> None:
    c = await _client_answering(200, json.dumps(body).encode())
    async with c:
        with pytest.raises(PdDataError, match=match):
            await c.health()


async def test_client_error_status_is_data_error() -> None:
    c = await _client_answering(403, b"forbidden")
    async with c:
        with pytest.raises(PdDataError, match="HTTP 403") as info:
            await c.health()
    assert info.value.status == 403


async def test_503_is_unavailable() -> None:
    c = await _client_answering(503, b"no leader")
    async with c:
        with pytest.raises(PdUnavailableError, match="503"):
            await c.health()


async def test_non_utf8_body_is_data_error() -> None:
    c = await _client_answering(200, b"\xff\xfe{")
    async with c:
        with pytest.raises(PdDataError):
            await c.stores()


async def test_oversized_response_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pd, "MAX_RESPONSE_BYTES", 10)
    c = await _client_answering(200, b"[" + b" " * 100 + b"]")
    async with c:
        with pytest.raises(PdDataError, match="larger than"):
            await c.health()


async def test_null_stores_means_none() -> None:
    c = await _client_answering(200, b'{"count": 0, "stores": null}')
    async with c:
        assert await c.stores() == []


def test_omitted_zero_fields_default_to_zero() -> None:
    """Go's omitempty drops zeros: a store without pending peers or uptime has no such keys."""
    store = pd.parse_store({"store": {"id": 7, "address": "tikv-3.p.db.svc:20160", "state_name": "Up"}})

    assert store.start_timestamp == 0
    assert store.last_heartbeat_ns == 0
    assert store.leader_count == 0
    assert store.pending_peer_count == 0
    assert store.uptime is None
    assert store.status_address is None


def test_pending_peers_are_read() -> None:
    store = pd.parse_store(
        {
            "store": {"id": 7, "address": "a:1", "state_name": "Up"},
            "status": {"pending_peer_count": 3, "leader_count": 2, "region_count": 9, "uptime": "1m"},
        }
    )

    assert (store.pending_peer_count, store.leader_count, store.region_count) == (3, 2, 9)
    assert store.uptime == "1m"
