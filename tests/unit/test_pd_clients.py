"""One PD client per endpoint, shared by every Campaign that names it (`PdClients`)."""

from __future__ import annotations

import httpx

from aftershock.model import CampaignSpec, parse_campaign_spec
from aftershock.subjects.base import SubjectResources
from aftershock.subjects.pd import PdClient, PdClients
from aftershock.subjects.tikv import TiKVProbe


class _Made:
    """A client factory that remembers what it made (no network: a transport that refuses)."""

    def __init__(self) -> None:
        self.clients: list[PdClient] = []

    def __call__(self, url: str) -> PdClient:
        transport = httpx.MockTransport(lambda request: httpx.Response(503))
        client = PdClient(url, transport=transport)
        self.clients.append(client)
        return client


def closed(client: PdClient) -> bool:
    return client._client.is_closed


async def test_campaigns_on_one_endpoint_share_one_client_closed_by_the_last_release() -> None:
    made = _Made()
    clients = PdClients(made)
    first = clients.acquire("http://pd.a.svc:2379")
    second = clients.acquire("http://pd.a.svc:2379")
    other = clients.acquire("http://pd.b.svc:2379")
    assert first is second
    assert other is not first
    assert len(made.clients) == 2
    assert len(clients) == 2
    await clients.release("http://pd.a.svc:2379")
    assert not closed(first)  # one holder left
    assert clients.users("http://pd.a.svc:2379") == 1
    await clients.release("http://pd.a.svc:2379")
    assert closed(first)
    assert len(clients) == 1
    assert not closed(other)
    # Used again after it closed: a new client, not the closed one.
    again = clients.acquire("http://pd.a.svc:2379")
    assert again is not first
    assert not closed(again)
    await clients.aclose()
    assert closed(again)
    assert closed(other)
    assert len(clients) == 0


def _spec(pd_url: str | None) -> CampaignSpec:
    subject: dict[str, object] = {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}}
    if pd_url is not None:
        subject["pdURL"] = pd_url
    return parse_campaign_spec({"subject": subject, "chaos": {}, "trials": 3})


async def test_probes_of_campaigns_in_one_namespace_share_the_client_and_give_it_back_once() -> None:
    made = _Made()
    clients = PdClients(made)
    a = TiKVProbe.for_spec(_spec("http://pd:2379"), "db", SubjectResources(pd_clients=clients))
    b = TiKVProbe.for_spec(_spec("http://pd:2379"), "db", SubjectResources(pd_clients=clients))
    c = TiKVProbe.for_spec(_spec("http://pd:2379"), "other", SubjectResources(pd_clients=clients))
    assert a is not None
    assert b is not None
    assert c is not None
    # A bare Service name is the Campaign's namespace's: two namespaces, two endpoints.
    assert len(made.clients) == 2
    assert clients.users("http://pd.db.svc:2379") == 2
    await a.close()
    await a.close()  # twice: still one release, b's client stays open
    assert clients.users("http://pd.db.svc:2379") == 1
    assert not closed(made.clients[0])
    await b.close()
    assert closed(made.clients[0])
    await c.close()
    assert len(clients) == 0
    assert TiKVProbe.for_spec(_spec(None), "db", SubjectResources(pd_clients=clients)) is None
    assert len(made.clients) == 2
