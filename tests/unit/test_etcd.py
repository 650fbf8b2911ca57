"""The etcd subject: its reading of etcd's JSON gateway (served here by httpx's mock transport
in etcd 3.6's shapes: uint64 as decimal strings), its health judgement, its roles, and the
milestones of an election and a member's return."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aftershock.chaos import victims as pod_kill
from aftershock.errors import ProbeUnavailableError, SpecError
from aftershock.model import (
    ChaosSpec,
    Milestone,
    PodState,
    ProbeResult,
    Victim,
    parse_campaign_spec,
)
from aftershock.subjects import registry
from aftershock.subjects.base import Look
from aftershock.subjects.etcd import (
    ClusterView,
    ElectionRecovery,
    EtcdClient,
    EtcdSubject,
    MemberStatus,
    judge_cluster,
)

IDS = {"etcd-0": 1001, "etcd-1": 1002, "etcd-2": 1003}
ENDPOINTS = [f"http://127.0.0.1:{2379 + i}" for i in range(3)]


def pod(name: str, *, ready: bool = True) -> PodState:
    return PodState(name, f"uid-{name}", "db", {"app": "etcd"}, "n", "Running", ready, 0, None, False)


PODS = [pod(n) for n in IDS]


def etcd_app(leader: str, down: frozenset[str] = frozenset()) -> Callable[[httpx.Request], httpx.Response]:
    """A 3-member etcd as its gateway answers; members in `down` refuse connections."""
    by_port = {2379 + i: name for i, name in enumerate(IDS)}

    def handle(request: httpx.Request) -> httpx.Response:
        name = by_port[request.url.port or 0]
        if name in down:
            raise httpx.ConnectError("connection refused", request=request)
        header = {"cluster_id": "77", "member_id": str(IDS[name]), "raft_term": "5"}
        if request.url.path == "/v3/cluster/member/list":
            members = [
                {"ID": str(i), "name": n, "clientURLs": [ENDPOINTS[k]]}
                for k, (n, i) in enumerate(IDS.items())
            ]
            return httpx.Response(200, json={"header": header, "members": members})
        if request.url.path == "/v3/maintenance/status":
            body = {"header": header, "version": "3.6.16", "leader": str(IDS[leader]), "raftTerm": "5",
                    "raftIndex": "120", "raftAppliedIndex": "120"}  # fmt: skip
            return httpx.Response(200, json=body)
        if request.url.path == "/health":
            return httpx.Response(200, json={"health": "true", "reason": ""})
        return httpx.Response(404)

    return handle


def client(app: Callable[[httpx.Request], httpx.Response]) -> EtcdClient:
    c = EtcdClient(ENDPOINTS)
    c._http = httpx.AsyncClient(transport=httpx.MockTransport(app))
    return c


async def test_a_healthy_cluster_names_its_leader_and_gives_every_member_a_role() -> None:
    view = await client(etcd_app("etcd-1")).view()
    assert view.leader_name() == "etcd-1"
    assert judge_cluster(view, PODS) == ()


async def test_a_member_down_makes_the_cluster_unhealthy_with_a_reason_naming_it() -> None:
    view = await client(etcd_app("etcd-1", frozenset({"etcd-2"}))).view()
    reasons = judge_cluster(view, PODS)
    assert any("127.0.0.1:2381 unreachable" in r for r in reasons)
    assert view.leader_name() == "etcd-1"  # two of three still follow it: a majority


async def test_no_member_answering_is_an_infrastructure_error_not_a_verdict() -> None:
    with pytest.raises(ProbeUnavailableError, match="no etcd endpoint answered"):
        await client(etcd_app("etcd-0", frozenset(IDS))).view()


def status(
    name: str,
    leader: str | None,
    *,
    applied: int = 100,
    index: int = 100,
    up: bool = True,
    healthy: bool = True,
    health_after: float | None = None,
) -> MemberStatus:
    if not up:
        return MemberStatus.unreachable(ENDPOINTS[int(name[-1])], "refused")
    return MemberStatus(
        ENDPOINTS[int(name[-1])], True, name, IDS[name], IDS[leader] if leader else 0, 5, index, applied,
        healthy, health_after=health_after,
    )  # fmt: skip


def followers_answering(first: float, second: float) -> tuple[MemberStatus, MemberStatus]:
    """etcd-0 (leading) and etcd-1, healthy, their /health in `first` and `second` seconds."""
    return (
        status("etcd-0", "etcd-0", index=200, health_after=first),
        status("etcd-1", "etcd-0", index=200, health_after=second),
    )


def look(*statuses: MemberStatus, healthy: bool = False) -> ProbeResult:
    view = ClusterView({i: n for n, i in IDS.items()}, statuses)
    return ProbeResult(healthy=healthy, detail=view)


def stamp(mono: float, wall: float) -> Milestone:
    return Milestone(wall, mono)


def test_killing_the_leader_is_timed_from_leader_lost_to_a_new_majority_leader() -> None:
    judge = ElectionRecovery([Victim("etcd-0", "uid-etcd-0", role="Leader")], old_leader="etcd-0")
    assert judge.probe_interval(False, 0.5) == pytest.approx(0.02)  # polled fast until elected
    still = look(status("etcd-0", "etcd-0"), status("etcd-1", "etcd-0"), status("etcd-2", "etcd-0"))
    assert judge.observe(Look(still, 0.1, 1.1, stamp, replacement_ready=False)) == {}
    # The survivors stop following etcd-0 but have no leader yet: lost, not elected.
    lost = look(status("etcd-0", None, up=False), status("etcd-1", None), status("etcd-2", None))
    assert set(judge.observe(Look(lost, 0.4, 1.4, stamp, replacement_ready=False))) == {"leader_lost"}
    elected = look(status("etcd-0", None, up=False), status("etcd-1", "etcd-2"), status("etcd-2", "etcd-2"))
    assert judge.observe(Look(elected, 1.2, 2.2, stamp, replacement_ready=False)) == {
        "leader_elected": Milestone(2.2, 1.2)
    }
    assert judge.probe_interval(False, 0.5) == 0.5
    assert judge.done is None
    assert "etcd-0" in judge.pending()


def test_the_member_is_back_only_once_it_has_applied_what_the_leader_had_a_look_earlier() -> None:
    judge = ElectionRecovery([Victim("etcd-2", "uid-etcd-2", role="Follower")], old_leader="etcd-0")
    others = (status("etcd-0", "etcd-0", index=200), status("etcd-1", "etcd-0", index=200))
    behind = look(*others, status("etcd-2", "etcd-0", applied=150), healthy=True)
    assert judge.observe(Look(behind, 2.0, 3.0, stamp, replacement_ready=True)) == {}
    caught_up = look(*others, status("etcd-2", "etcd-0", applied=200), healthy=True)
    reached = judge.observe(Look(caught_up, 2.5, 3.5, stamp, replacement_ready=True))
    assert set(reached) == {"member_healthy", "cluster_healthy"}
    assert judge.done == Milestone(3.5, 2.5)
    assert "leader_lost" not in reached  # a follower's death elects nobody


def test_health_is_stamped_at_the_looks_middle_not_when_the_slowest_member_let_it_end() -> None:
    # A look from 2.0 to 2.3 (offsets): every member answered /health somewhere in it; stamped
    # at its end the recovery was as late as the look was long (150 ms on the loaded test bed).
    judge = ElectionRecovery([Victim("etcd-2", "uid-etcd-2", role="Follower")], old_leader="etcd-0")
    others = (status("etcd-0", "etcd-0", index=200), status("etcd-1", "etcd-0", index=200))
    behind = look(*others, status("etcd-2", "etcd-0", applied=150), healthy=True)
    judge.observe(Look(behind, 1.9, 2.9, stamp, replacement_ready=True, asked=Milestone(2.8, 1.8)))
    caught_up = look(*others, status("etcd-2", "etcd-0", applied=200), healthy=True)
    asked = Milestone(3.0, 2.0)
    reached = judge.observe(Look(caught_up, 2.3, 3.3, stamp, replacement_ready=True, asked=asked))
    assert set(reached) == {"member_healthy", "cluster_healthy"}
    for at in (*reached.values(), judge.done):
        assert at is not None
        assert at.wall == pytest.approx(3.15)
        assert at.offset == pytest.approx(2.15)


def test_a_member_that_turns_healthy_is_stamped_when_its_health_answer_came_not_at_the_middle() -> None:
    # A thawed member holds its /health (a read through Raft) until it has caught up: a look
    # from 2.0 to 3.3 whose victim answered healthy 1.25 s in, the others in 0.01-0.02 s. The
    # middle (2.65) was 0.6 s early against the test's own poller of /health: the member was
    # healthy when it served the read, just before its answer came in.
    judge = ElectionRecovery([Victim("etcd-2", "uid-etcd-2", role="Follower")], old_leader="etcd-0")
    others = followers_answering(0.01, 0.02)
    down = status("etcd-2", "etcd-0", applied=150, healthy=False)
    judge.observe(
        Look(look(*others, down), 1.9, 2.9, stamp, replacement_ready=True, asked=Milestone(2.8, 1.8))
    )
    back = status("etcd-2", "etcd-0", applied=200, health_after=1.25)
    asked = Milestone(3.0, 2.0)
    reached = judge.observe(
        Look(look(*others, back, healthy=True), 3.3, 4.3, stamp, replacement_ready=True, asked=asked)
    )
    assert set(reached) == {"member_healthy", "cluster_healthy"}
    # Served half the quickest round trip (0.01 s) before its answer came in.
    for at in (*reached.values(), judge.done):
        assert at is not None
        assert at.wall == pytest.approx(4.245)
        assert at.offset == pytest.approx(3.245)


def test_a_member_whose_health_was_not_held_is_stamped_at_the_middle_of_its_own_request() -> None:
    # A loaded machine: every /health takes 0.2 s, the victim's too. Nothing held it: it was
    # served somewhere in its own request, stamped at its middle (the answer's arrival was 0.1 s
    # late against the test's own watch of the pod's Ready, which needs /health healthy).
    judge = ElectionRecovery([Victim("etcd-2", "uid-etcd-2", role="Follower")], old_leader="etcd-0")
    others = followers_answering(0.2, 0.21)
    down = status("etcd-2", "etcd-0", applied=150, healthy=False)
    judge.observe(
        Look(look(*others, down), 1.9, 2.9, stamp, replacement_ready=True, asked=Milestone(2.7, 1.7))
    )
    back = status("etcd-2", "etcd-0", applied=200, health_after=0.22)
    judge.observe(
        Look(
            look(*others, back, healthy=True),
            2.23,
            3.23,
            stamp,
            replacement_ready=True,
            asked=Milestone(3.0, 2.0),
        )
    )
    assert judge.done is not None
    assert judge.done.offset == pytest.approx(2.12)  # 0.22 - 0.2 / 2, not the answer's 2.22


def test_members_healthy_all_along_do_not_move_the_stamp_and_an_election_look_forgets_nothing() -> None:
    # Only a member that was not healthy when last asked says when health came back: the others'
    # answers are just their round trips. An election's quick look asks no /health, so it says
    # nothing about who was healthy.
    judge = ElectionRecovery([Victim("etcd-2", "uid-etcd-2", role="Follower")], old_leader="etcd-0")
    slow_others = followers_answering(0.9, 0.95)
    down = status("etcd-2", "etcd-0", applied=150, healthy=False)
    judge.observe(
        Look(look(*slow_others, down), 1.0, 2.0, stamp, replacement_ready=True, asked=Milestone(1.9, 0.9))
    )
    quick = tuple(
        dataclasses.replace(s, healthy=False, health_after=None, health_asked=False) for s in slow_others
    )
    judge.observe(
        Look(look(*quick, down), 1.5, 2.5, stamp, replacement_ready=True, asked=Milestone(2.45, 1.45))
    )
    back = status("etcd-2", "etcd-0", applied=200, health_after=0.3)
    asked = Milestone(3.0, 2.0)
    judge.observe(
        Look(look(*slow_others, back, healthy=True), 3.0, 4.0, stamp, replacement_ready=True, asked=asked)
    )
    assert judge.done is not None
    # The victim's own answer (the quickest: the middle of its request), not the others' 0.95.
    assert judge.done.offset == pytest.approx(2.15)


def test_a_healthy_answer_before_the_replacement_is_ready_is_the_old_process_not_a_recovery() -> None:
    judge = ElectionRecovery([Victim("etcd-2", "uid-etcd-2")], old_leader="etcd-0")
    fine = look(
        status("etcd-0", "etcd-0"), status("etcd-1", "etcd-0"), status("etcd-2", "etcd-0"), healthy=True
    )
    judge.observe(Look(fine, 0.05, 1.05, stamp, replacement_ready=False))
    assert judge.observe(Look(fine, 0.1, 1.1, stamp, replacement_ready=False)) == {}
    assert judge.done is None


@pytest.mark.parametrize(("target", "expected"), [("Leader", "etcd-1"), ("Follower", None)])
def test_target_chooses_victims_by_their_role_at_the_gate(target: str, expected: str | None) -> None:
    roles = {"etcd-0": "Follower", "etcd-1": "Leader", "etcd-2": "Follower"}
    seen = {
        pod_kill.choose_victims(PODS, ChaosSpec(target=target), pod_kill.rng_for(f"s{i}"), roles=roles)[
            0
        ].name
        for i in range(20)
    }
    assert seen == ({expected} if expected else {"etcd-0", "etcd-2"})


def test_a_leader_target_without_a_leader_in_sight_is_refused_not_guessed() -> None:
    with pytest.raises(pod_kill.VictimSelectionError, match="0 pod\\(s\\) with that role"):
        pod_kill.choose_victims(PODS, ChaosSpec(target="Leader"), pod_kill.rng_for("s"), roles={})


def spec(subject: dict[str, Any], **chaos: Any) -> Any:
    return parse_campaign_spec(
        {
            "subject": {"selector": {"matchLabels": {"app": "etcd"}}, **subject},
            "chaos": {"type": "node_kill", **chaos},
        },
        allow_loopback_pd=True,
    )


def test_etcd_endpoints_follow_the_pd_url_rules() -> None:
    with pytest.raises(SpecError, match="IP addresses are refused"):
        parse_campaign_spec(
            {"subject": {"kind": "Etcd", "selector": {"matchLabels": {"a": "b"}}, "endpoints": ["http://10.0.0.1:2379"]},
             "chaos": {"type": "node_kill"}}
        )  # fmt: skip
    with pytest.raises(SpecError, match="outside the Campaign's namespace"):
        registry.open_subject(spec({"kind": "Etcd", "endpoints": ["http://etcd.other.svc:2379"]}), "db")


def test_each_kind_refuses_the_others_fields_and_roles_it_does_not_have() -> None:
    with pytest.raises(SpecError, match=r"subject\.endpoints"):
        registry.open_subject(spec({"kind": "Etcd"}), "db")
    with pytest.raises(SpecError, match="TiKV field"):
        registry.open_subject(
            spec({"kind": "Etcd", "pdURL": "http://pd:2379", "endpoints": ["http://e:2379"]}), "db"
        )
    with pytest.raises(SpecError, match=r"chaos\.target"):
        registry.open_subject(spec({"kind": "TiKV"}, target="Leader"), "db")
    with pytest.raises(SpecError, match=r"chaos\.target"):
        registry.open_subject(spec({"kind": "Etcd", "endpoints": ["http://e:2379"]}, target="Primary"), "db")


def test_the_registry_alone_lists_the_kinds_and_their_roles() -> None:
    assert list(registry.KINDS) == ["TiKV", "Etcd"]
    assert registry.KINDS["Etcd"].roles == ("Leader", "Follower")
    with pytest.raises(SpecError, match="must be one of 'TiKV', 'Etcd', got 'Cassandra'") as refused:
        registry.open_subject(spec({"kind": "Cassandra"}), "db")
    assert refused.value.field == "spec.subject.kind"
    assert "leader_elected" in registry.milestone_descriptions()


async def test_the_write_probe_reads_back_what_it_wrote() -> None:
    store: dict[str, str] = {}

    def app(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v3/kv/put":
            store[body["key"]] = body["value"]
            return httpx.Response(200, json={"header": {}})
        return httpx.Response(200, json={"kvs": [{"value": store.get(body["key"])}]})

    await client(app).put_and_get("/aftershock/probe/uid", "1", 0.5)
    assert len(store) == 1


async def test_a_write_refused_everywhere_is_a_failed_write() -> None:
    def app(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    with pytest.raises(ProbeUnavailableError, match="write failed on every endpoint"):
        await client(app).put_and_get("/k", "v", 0.5)


async def test_a_member_cut_off_does_not_hold_the_write_back() -> None:
    """A partitioned member holds a write until the timeout; the others take it meanwhile."""
    store: dict[str, str] = {}
    cut_off = ENDPOINTS[0].split("//")[1]

    async def app(request: httpx.Request) -> httpx.Response:
        if request.url.netloc.decode() == cut_off:
            await asyncio.sleep(30)
        body = json.loads(request.content)
        if request.url.path == "/v3/kv/put":
            store[body["key"]] = body["value"]
            return httpx.Response(200, json={"header": {}})
        return httpx.Response(200, json={"kvs": [{"value": store.get(body["key"])}]})

    c = EtcdClient(ENDPOINTS)
    c._http = httpx.AsyncClient(transport=httpx.MockTransport(app))
    started = time.monotonic()
    await c.put_and_get("/k", "v", 20)
    assert time.monotonic() - started < 10
    await c.aclose()


async def _etcd_gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A real HTTP/1.1 server on loopback answering the write probe's put and range (keep-alive)."""
    store: dict[str, str] = {}
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            body = json.loads(await reader.readexactly(length) or b"{}")
            if head.split(b" ")[1] == b"/v3/kv/put":
                store[body["key"]] = body["value"]
                out: dict[str, Any] = {"header": {}}
            else:
                out = {"kvs": [{"value": store.get(body["key"])}]}
            data = json.dumps(out).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
            await writer.drain()


async def test_a_pool_that_lost_its_slots_is_replaced_and_the_next_write_goes_through() -> None:
    """httpcore can lose its pool's slots to cancelled requests (encode/httpcore#1093); then
    every request fails with PoolTimeout though the member answers. Here the one slot is held
    by a response never closed: the write that meets the PoolTimeout fails, the next goes
    through a new pool."""
    server = await asyncio.start_server(_etcd_gateway, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    c = EtcdClient([url], timeout=0.5)
    c._http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=0.5, trust_env=False)
    try:
        await c.put_and_get("/k", "v0", 0.5)
        lost = await c._http.send(
            c._http.build_request("POST", url + "/v3/kv/range", json={"key": "x"}), stream=True
        )
        with pytest.raises(ProbeUnavailableError, match="PoolTimeout"):
            await c.put_and_get("/k", "v1", 0.5)
        await c.put_and_get("/k", "v2", 0.5)
        await lost.aclose()
    finally:
        await c.aclose()
        server.close()
        await server.wait_closed()


def test_a_new_leader_is_stamped_when_the_look_began_not_when_a_dying_member_let_it_end() -> None:
    judge = ElectionRecovery([Victim("etcd-0", "uid-etcd-0", role="Leader")], old_leader="etcd-0")
    elected = look(status("etcd-0", None, up=False), status("etcd-1", "etcd-1"), status("etcd-2", "etcd-1"))
    asked = Milestone(1.05, 0.05)
    reached = judge.observe(Look(elected, 0.3, 1.3, stamp, replacement_ready=False, asked=asked))
    assert reached == {"leader_lost": Milestone(1.05, 0.05), "leader_elected": Milestone(1.05, 0.05)}


def test_a_member_one_heartbeat_behind_does_not_hold_the_election_back() -> None:
    judge = ElectionRecovery([Victim("etcd-0", "uid-etcd-0", role="Leader")], old_leader="etcd-0")
    # etcd-0 handed leadership to etcd-1 and follows it; etcd-2 has not heard yet.
    handed_over = look(status("etcd-0", "etcd-1"), status("etcd-1", "etcd-1"), status("etcd-2", "etcd-0"))
    reached = judge.observe(Look(handed_over, 0.04, 1.04, stamp, replacement_ready=False))
    assert reached == {"leader_lost": Milestone(1.04, 0.04), "leader_elected": Milestone(1.04, 0.04)}


def status_in(name: str, leader: str | None, term: int, *, up: bool = True) -> MemberStatus:
    """A member's status in raft term `term`."""
    if not up:
        return MemberStatus.unreachable(ENDPOINTS[int(name[-1])], "refused")
    return MemberStatus(
        ENDPOINTS[int(name[-1])], True, name, IDS[name], IDS[leader] if leader else 0, term, 100, 100, True
    )


def test_the_killed_leader_re_elected_in_a_later_term_is_an_election() -> None:
    # container_kill: etcd-0's process restarted in place and won the next term itself.
    gate = look(*(status_in(n, "etcd-0", 5) for n in IDS), healthy=True)
    subject = EtcdSubject(EtcdClient(ENDPOINTS))
    judge = subject.judge([Victim("etcd-0", "uid-etcd-0", role="Leader")], gate)
    assert isinstance(judge, ElectionRecovery)
    assert (judge.old_leader, judge.old_term) == ("etcd-0", 5)
    # The followers still follow etcd-0 in term 5 while it is gone: nothing yet.
    gone = look(
        status_in("etcd-0", None, 0, up=False),
        status_in("etcd-1", "etcd-0", 5),
        status_in("etcd-2", "etcd-0", 5),
    )
    assert judge.observe(Look(gone, 0.5, 1.5, stamp, replacement_ready=False)) == {}
    again = look(*(status_in(n, "etcd-0", 6) for n in IDS))
    assert judge.observe(Look(again, 1.3, 2.3, stamp, replacement_ready=False)) == {
        "leader_lost": Milestone(2.3, 1.3),
        "leader_elected": Milestone(2.3, 1.3),
    }


def test_a_frozen_leader_that_resumes_in_its_own_term_ends_the_election() -> None:
    # node_failure: etcd-0 (the leader) frozen with its node; etcd-1 and etcd-2 stop following it
    # (pre-candidates: no leader), and none wins before the thaw, where etcd-0 leads on in term 5.
    gate = look(*(status_in(n, "etcd-0", 5) for n in IDS), healthy=True)
    subject = EtcdSubject(EtcdClient(ENDPOINTS))
    judge = subject.judge([Victim("etcd-0", "uid-etcd-0", role="Leader")], gate)
    assert isinstance(judge, ElectionRecovery)
    frozen = look(
        status_in("etcd-0", None, 0, up=False),
        status_in("etcd-1", None, 5),
        status_in("etcd-2", None, 5),
    )
    assert judge.observe(Look(frozen, 0.5, 1.5, stamp, replacement_ready=False)) == {
        "leader_lost": Milestone(1.5, 0.5)
    }
    assert judge.electing
    resumed = look(*(status_in(n, "etcd-0", 5) for n in IDS))
    assert judge.observe(Look(resumed, 55.0, 56.0, stamp, replacement_ready=True)) == {
        "leader_elected": Milestone(56.0, 55.0)
    }
    # Out of the election looks: the next look asks every member's /health again.
    assert not judge.electing
    assert judge.probe_interval(True, 0.5) == 0.5


def _kept(old_term: int = 5) -> ElectionRecovery:
    """A fault that keeps the victim's process (partition, node failure): etcd-0, the leader."""
    return ElectionRecovery(
        [Victim("etcd-0", "uid-etcd-0", role="Leader")], "etcd-0", old_term, restarts=False
    )


def test_a_resumed_leader_is_back_in_the_cluster_and_the_trial_recovers() -> None:
    judge = _kept()
    frozen = look(
        status_in("etcd-0", None, 0, up=False), status_in("etcd-1", None, 5), status_in("etcd-2", None, 5)
    )
    judge.observe(Look(frozen, 0.5, 1.5, stamp, replacement_ready=False))
    assert "etcd-0" in judge.pending()
    resumed = look(*(status_in(n, "etcd-0", 5) for n in IDS), healthy=True)
    assert set(judge.observe(Look(resumed, 55.0, 55.2, stamp, replacement_ready=True))) == {"leader_elected"}
    # A look later (caught up with what the leader had then) and healthy: recovered, with no
    # "rejoined as a follower" (it leads).
    reached = judge.observe(Look(resumed, 55.3, 55.5, stamp, replacement_ready=True))
    assert set(reached) == {"member_healthy", "cluster_healthy"}, reached
    assert judge.done is not None
    assert judge.pending() == {}


def test_a_partitioned_leader_is_back_once_it_follows_the_majoritys_new_leader() -> None:
    judge = _kept()
    cut = look(
        status_in("etcd-0", "etcd-0", 5), status_in("etcd-1", "etcd-1", 6), status_in("etcd-2", "etcd-1", 6)
    )
    assert set(judge.observe(Look(cut, 2.0, 2.1, stamp, replacement_ready=True))) == {
        "leader_lost",
        "leader_elected",
    }
    # Healed, but still leading a term of its own: healthy answers or not, not back yet.
    stale = look(
        status_in("etcd-0", "etcd-0", 5), status_in("etcd-1", "etcd-1", 6), status_in("etcd-2", "etcd-1", 6),
        healthy=True,
    )  # fmt: skip
    assert "rejoined_as_follower" not in judge.observe(Look(stale, 10.0, 10.1, stamp, replacement_ready=True))
    assert judge.done is None
    assert "etcd-0" in judge.pending()
    back = look(*(status_in(n, "etcd-1", 6) for n in IDS), healthy=True)
    reached = judge.observe(Look(back, 11.0, 11.2, stamp, replacement_ready=True))
    assert {"rejoined_as_follower", "cluster_healthy"} <= set(reached), reached
    assert judge.done is not None


def test_the_old_leader_still_followed_in_its_term_is_no_election_before_a_loss() -> None:
    gate = look(*(status_in(n, "etcd-0", 5) for n in IDS), healthy=True)
    judge = EtcdSubject(EtcdClient(ENDPOINTS)).judge([Victim("etcd-0", "uid-etcd-0", role="Leader")], gate)
    assert isinstance(judge, ElectionRecovery)
    still = look(*(status_in(n, "etcd-0", 5) for n in IDS))
    assert judge.observe(Look(still, 0.5, 1.5, stamp, replacement_ready=False)) == {}
    assert judge.electing


def test_a_member_whose_health_hangs_is_reachable_and_not_healthy_and_holds_no_look_back() -> None:
    """/health waits for a linearizable read, which an election holds up; the status does not.
    They are asked at once, and the client's timeout bounds each whole request."""

    async def app(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health" and request.url.port == 2381:
            await asyncio.sleep(5)
        return etcd_app("etcd-1")(request)

    async def run() -> tuple[ClusterView, float]:
        c = EtcdClient(ENDPOINTS, timeout=0.2)
        c._http = httpx.AsyncClient(transport=httpx.MockTransport(app))
        await c.view()  # the member list, once
        started = time.monotonic()
        view = await c.view()
        return view, time.monotonic() - started

    view, took = asyncio.run(run())
    assert took < 1
    # When each healthy answer came, from the look's start; none from the member that hung.
    fast = view.by_name()["etcd-0"]
    assert fast.health_after is not None
    assert 0 <= fast.health_after < 0.2
    slow = view.by_name()["etcd-2"]
    assert slow.health_after is None
    assert (slow.reachable, slow.healthy, slow.leader_id) == (True, False, IDS["etcd-1"])
    assert "no answer within 0.24s" in str(slow.error)
    assert view.leadership() == ("etcd-1", 5)
    assert any("etcd member etcd-2 is not healthy" in r for r in judge_cluster(view, PODS))


def test_a_health_answer_that_was_held_says_when_it_came() -> None:
    """A member that holds its /health (catching up) answers healthy late: `health_after` is
    when that answer was in, from the look's start."""

    async def app(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health" and request.url.port == 2381:
            await asyncio.sleep(0.3)
        return etcd_app("etcd-1")(request)

    async def run() -> ClusterView:
        c = EtcdClient(ENDPOINTS, timeout=1.0)
        c._http = httpx.AsyncClient(transport=httpx.MockTransport(app))
        await c.view()  # the member list, once
        return await c.view()

    view = asyncio.run(run())
    held = view.by_name()["etcd-2"]
    assert held.healthy
    assert held.health_after is not None
    assert 0.3 <= held.health_after < 0.9
    quick = view.by_name()["etcd-0"].health_after
    assert quick is not None
    assert quick < 0.3


def _electing_subject(app: Callable[[httpx.Request], Any]) -> EtcdSubject:
    c = EtcdClient(ENDPOINTS)
    c._http = httpx.AsyncClient(transport=httpx.MockTransport(app))
    return EtcdSubject(c)


async def _elect(subject: EtcdSubject) -> None:
    gate = await subject.check(PODS, 0)
    subject.judge([Victim("etcd-0", "uid-etcd-0", role="Leader")], gate)


def test_an_election_look_asks_no_health_and_a_hung_member_does_not_hold_it_back() -> None:
    asked: list[str] = []
    leader = ["etcd-0"]

    async def app(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if leader[0] != "etcd-0" and request.url.port == 2379:  # etcd-0 dying: accepts, never answers
            await asyncio.sleep(5)
        return etcd_app(leader[0])(request)

    async def run() -> tuple[ProbeResult, float]:
        subject = _electing_subject(app)
        await _elect(subject)  # etcd-0 led and is the victim
        leader[0] = "etcd-1"
        asked.clear()
        started = time.monotonic()
        result = await subject.check(PODS, 0)
        return result, time.monotonic() - started

    result, took = asyncio.run(run())
    assert took < 0.5
    assert "/health" not in asked
    assert result.summary["leader"] == "etcd-1"
    view = result.detail
    assert isinstance(view, ClusterView)
    assert [s.reachable for s in view.statuses] == [False, True, True]


def test_an_election_look_on_a_loaded_machine_waits_for_a_majority_rather_than_fail() -> None:
    """Every member answers its status in 0.15 s, beyond the election's 20 ms: the look waits
    for a majority and tells the leader, instead of finding no one."""

    async def app(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v3/maintenance/status":
            await asyncio.sleep(0.15)
        return etcd_app("etcd-0")(request)

    async def run() -> tuple[ProbeResult, float]:
        subject = _electing_subject(app)
        await _elect(subject)
        started = time.monotonic()
        result = await subject.check(PODS, 0)
        return result, time.monotonic() - started

    result, took = asyncio.run(run())
    assert 0.1 < took < 0.9
    assert result.summary["leader"] == "etcd-0"
