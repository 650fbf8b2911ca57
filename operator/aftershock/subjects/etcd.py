"""etcd as a subject: health, roles and recovery milestones from etcd's own HTTP API.

Read through the v3 JSON gateway every etcd serves on its client URLs (uint64 values come as
decimal strings there): ``GET /health``, ``POST /v3/cluster/member/list`` (names and ids),
``POST /v3/maintenance/status`` (per member: its id, the leader it follows, raft term, raft
index, applied index), and for the write probe ``POST /v3/kv/put`` and ``/v3/kv/range``.

Members are matched to pods by name: the member name is the pod name (``--name $POD_NAME``,
as a StatefulSet's members are normally started). The endpoints come from the spec, checked by
the same rules as TiKV's pdURL (`aftershock.endpoints`); every look asks every endpoint, so a
dead member shows as unreachable rather than hiding the cluster's answer.

Milestones of a trial, after kill sent and pod gone (the engine's): ``leader_lost`` (the victim
was the leader and a majority of the members no longer follows it), ``leader_elected`` (a
majority of the members follows a leader in a later raft term than the one the killed leader
led in: another member, or the killed one itself, back in place before the others' election
timeout ran out; or, once lost, the old leader followed again in its own term: frozen with its
node and thawed before anyone won, it leads on), then the replacement pod Ready (the engine's;
for a partition: the heal, ``fault_healed``), ``rejoined_as_follower`` (a partition only: each
victim's member follows the cluster's leader again),
``member_healthy`` (the victim's member answers healthy and has applied everything the leader
had committed one look earlier: caught up), and the whole cluster healthy (``recovered``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from aftershock.endpoints import check_endpoint_namespace
from aftershock.errors import ProbeUnavailableError, SpecError
from aftershock.model import CampaignSpec, Milestone, PodState, ProbeResult, Victim
from aftershock.subjects.base import Look, RecoveryJudge, SubjectKindInfo, SubjectResources

LEADER = "Leader"
FOLLOWER = "Follower"
#: While an election is pending the judge wants a look this often: the election itself takes
#: 0.2-1.2 s on the test bed, so a coarser poll would blur the number being measured.
ELECTION_PROBE_INTERVAL = 0.02
#: ... and each of those looks ends this long after it began, once a majority of the members
#: has answered.
ELECTION_STATUS_TIMEOUT = 0.02
#: A member's status and health are waited for this long at most (each request as a whole).
STATUS_TIMEOUT = 1.0
_MAX_RESPONSE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class MemberStatus:
    """One endpoint's answer, every field of it stated (or its silence: `unreachable`)."""

    endpoint: str
    reachable: bool
    name: str | None  # None: not in the member list held
    member_id: int
    leader_id: int  # 0: follows no leader
    raft_term: int
    raft_index: int
    applied_index: int
    healthy: bool
    error: str | None = None
    #: Seconds from the look's start until this member's /health answer was in (None: not
    #: asked, or no answer). /health is a read through Raft: a member catching up holds it until
    #: it can serve it, so a healthy answer after a wait says when the member became healthy.
    health_after: float | None = None
    #: False: /health was not asked (an election's quick look), so `healthy` says nothing.
    health_asked: bool = True

    @classmethod
    def unreachable(cls, endpoint: str, error: str) -> MemberStatus:
        """An endpoint that did not answer: no member, no leader, no raft position."""
        return cls(endpoint, False, None, 0, 0, 0, 0, 0, False, error)


@dataclass(frozen=True)
class ClusterView:
    """One look at every endpoint, with the member list of whoever answered it."""

    members: Mapping[int, str]  # member id -> name
    statuses: tuple[MemberStatus, ...]

    def by_name(self) -> dict[str, MemberStatus]:
        return {s.name: s for s in self.statuses if s.name is not None}

    def leader_name(self) -> str | None:
        """The leader most reachable members follow, if a majority of all members agree."""
        led = self.leadership()
        return led[0] if led is not None else None

    def leadership(self) -> tuple[str, int] | None:
        """The leader a majority of all members follows, and the raft term it leads in (a
        follower's term is its leader's)."""
        votes: dict[tuple[int, int], int] = {}
        for s in self.statuses:
            if s.reachable and s.leader_id:
                key = (s.leader_id, s.raft_term)
                votes[key] = votes.get(key, 0) + 1
        if not votes:
            return None
        (leader, term), count = max(votes.items(), key=lambda kv: kv[1])
        name = self.members.get(leader)
        return (name, term) if name is not None and count * 2 > max(len(self.members), 1) else None


def _uint(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key, 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ProbeUnavailableError(f"etcd answered {key}={value!r}, not a number") from None


def _reaped(task: asyncio.Task[Any]) -> None:
    """A background request's own failure is nobody's to hear (the look it served is over)."""
    if not task.cancelled():
        task.exception()


class EtcdClient:
    """A read-mostly client of etcd's JSON gateway: no redirects, no proxies from the
    environment (the URLs were checked; nothing else may be reached)."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = STATUS_TIMEOUT) -> None:
        self._endpoints = tuple(e.rstrip("/") for e in endpoints)
        self._timeout = timeout
        self._http = self._new_http()
        self._members: dict[int, str] = {}
        #: Requests left to end by their own timeout, and old clients being closed.
        self._background: set[asyncio.Task[Any]] = set()

    def _new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, trust_env=False)

    def _in_background(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(_reaped)
        task.add_done_callback(self._background.discard)

    async def _send(self, method: str, url: str, timeout: float | None, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(
                method, url, timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT, **kwargs
            )
        except httpx.PoolTimeout:
            # httpcore (1.0.9, the latest) can lose its pool's slots to requests cancelled while
            # they wait for a connection (encode/httpcore#1093): every later request then fails
            # with PoolTimeout though the members answer. Seen here: a member frozen for 245 s
            # (node_failure), then every endpoint PoolTimeout until the recovery timeout. This
            # client never has more than a few requests out at once, so a PoolTimeout means a
            # lost pool: the next request goes through a new one.
            old, self._http = self._http, self._new_http()
            self._in_background(asyncio.create_task(old.aclose()))
            raise

    async def _request(
        self, method: str, endpoint: str, path: str, body: Mapping[str, Any] | None, timeout: float | None
    ) -> Any:
        """One request, bounded as a whole (a fifth over `timeout`, so that httpx's own errors,
        PoolTimeout among them, come first when they come at `timeout`): httpx's timeout bounds
        each phase (connect, write, each read) apart, so a member slow in each took a multiple
        of it (seen on the real node during an election: 86 ms against 50)."""
        wait = self._timeout if timeout is None else timeout
        try:
            # Not cancelled at the bound: a request cancelled while it waits for a connection can
            # cost httpcore's pool a slot for good (`_send`). It ends by its own timeout instead.
            send = asyncio.create_task(
                self._send(method, endpoint + path, wait, json=dict(body) if body is not None else None)
            )
            try:
                done, _ = await asyncio.wait({send}, timeout=1.2 * wait)
            except asyncio.CancelledError:
                self._in_background(send)
                raise
            if not done:
                self._in_background(send)
                raise ProbeUnavailableError(f"{endpoint}{path}: no answer within {1.2 * wait:g}s")
            response = send.result()
        except httpx.HTTPError as exc:
            raise ProbeUnavailableError(f"{endpoint}{path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200 or len(response.content) > _MAX_RESPONSE_BYTES:
            raise ProbeUnavailableError(f"{endpoint}{path}: HTTP {response.status_code}")
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise ProbeUnavailableError(f"{endpoint}{path}: not JSON") from exc

    async def _post(
        self, endpoint: str, path: str, body: Mapping[str, Any], timeout: float | None = None
    ) -> Any:
        return await self._request("POST", endpoint, path, body, timeout)

    async def _health(self, endpoint: str, timeout: float, since: float) -> tuple[Any, float]:
        """The member's /health answer (or why there was none) and when it was in: seconds
        since `since`, on the event loop's clock."""
        loop = asyncio.get_running_loop()
        try:
            said: Any = await self._request("GET", endpoint, "/health", None, timeout)
        except ProbeUnavailableError as exc:
            said = exc
        return said, loop.time() - since

    async def _status(
        self, endpoint: str, members: Mapping[int, str], timeout: float, health: bool, since: float
    ) -> MemberStatus:
        """The member's status and its health, asked at once: /health waits for a linearizable
        read, which an election holds up, and must not hold up the status (who leads, in which
        term). A member whose status answers is reachable; one whose /health does not is
        reachable and not healthy. `health` False: not asked (not healthy, by want of asking).
        `since`: the look's start (the loop's clock), for `MemberStatus.health_after`."""
        asks: list[Any] = [self._post(endpoint, "/v3/maintenance/status", {}, timeout)]
        if health:
            asks.append(self._health(endpoint, timeout, since))
        answers: list[Any] = await asyncio.gather(*asks, return_exceptions=True)
        raw = answers[0]
        after: float | None = None
        if not health:
            said: Any = ProbeUnavailableError("/health not asked during an election")
        elif isinstance(answers[1], BaseException):
            said = answers[1]
        else:
            said, after = answers[1]
        if isinstance(raw, BaseException):
            if not isinstance(raw, ProbeUnavailableError):
                raise raw
            return MemberStatus.unreachable(endpoint, str(raw))
        if isinstance(said, BaseException) and not isinstance(said, ProbeUnavailableError):
            raise said
        header = raw.get("header") or {}
        member_id = _uint(header, "member_id")
        healthy = isinstance(said, dict) and said.get("health") == "true"
        return MemberStatus(
            endpoint,
            reachable=True,
            name=members.get(member_id),
            member_id=member_id,
            leader_id=_uint(raw, "leader"),
            raft_term=_uint(raw, "raftTerm"),
            raft_index=_uint(raw, "raftIndex"),
            applied_index=_uint(raw, "raftAppliedIndex"),
            healthy=healthy,
            error=None if healthy else f"/health: {said}",
            health_after=after if isinstance(said, dict) else None,
            health_asked=health,
        )

    async def _member_list(self) -> dict[int, str]:
        members: dict[int, str] = {}
        errors: list[str] = []
        for endpoint in self._endpoints:
            try:
                raw = await self._post(endpoint, "/v3/cluster/member/list", {})
            except ProbeUnavailableError as exc:
                errors.append(str(exc))
                continue
            members = {_uint(m, "ID"): str(m.get("name", "")) for m in raw.get("members") or []}
            break
        if not members:
            raise ProbeUnavailableError("no etcd endpoint answered the member list: " + "; ".join(errors))
        return members

    async def view(self, *, quick: float | None = None) -> ClusterView:
        """Every endpoint's status and health at once, each within the client's timeout. The
        member list is asked again only when a status names a member it does not hold
        (membership rarely changes; a look must be quick).

        `quick` (an election's look): status only, and the look ends `quick` seconds in once a
        majority of the members has answered (else when a majority has, or at the timeout): a
        dying member that accepts and does not answer holds it back no longer, and a machine
        too loaded to answer within `quick` gets a look that waits for a majority instead of
        one that fails."""
        since = asyncio.get_running_loop().time()
        if not self._members:
            self._members = await self._member_list()
        statuses = await self._statuses(quick, since)
        if any(s.reachable and s.name is None for s in statuses):
            self._members = await self._member_list()
            statuses = await self._statuses(quick, since)
        if not any(s.reachable for s in statuses):
            raise ProbeUnavailableError(
                "no etcd endpoint answered: " + "; ".join(str(s.error) for s in statuses)
            )
        return ClusterView(dict(self._members), tuple(statuses))

    async def _statuses(self, quick: float | None, since: float) -> list[MemberStatus]:
        tasks = [
            asyncio.create_task(self._status(e, self._members, self._timeout, quick is None, since))
            for e in self._endpoints
        ]
        try:
            if quick is None:
                return list(await asyncio.gather(*tasks))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout
            done, pending = await asyncio.wait(tasks, timeout=quick)
            while pending and 2 * sum(t.result().reachable for t in done) <= len(tasks):
                left = deadline - loop.time()
                if left <= 0:
                    break
                more, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                done |= more
            late = f"no answer within {quick:g}s, a majority having answered"
            return [
                t.result() if t in done else MemberStatus.unreachable(e, late)
                for t, e in zip(tasks, self._endpoints, strict=True)
            ]
        finally:
            # The late ones end by their own timeout, not by cancellation (`_request`).
            for t in tasks:
                if not t.done():
                    self._in_background(t)

    async def put_and_get(self, key: str, value: str, timeout: float) -> None:
        """Write through every endpoint at once and read it back where it was taken
        (linearizable); the first to succeed answers. At once, not one after another: a member
        cut off from the others (a partition) holds a write until the timeout, and trying it
        first would hide the majority's own window without a leader behind that wait."""
        k = base64.b64encode(key.encode()).decode()
        v = base64.b64encode(value.encode()).decode()

        async def through(endpoint: str) -> None:
            await self._post(endpoint, "/v3/kv/put", {"key": k, "value": v}, timeout)
            got = await self._post(endpoint, "/v3/kv/range", {"key": k}, timeout)
            kvs = got.get("kvs") or []
            if not kvs or kvs[0].get("value") != v:
                raise ProbeUnavailableError(f"{endpoint}: read back {kvs!r}, wrote {value!r}")

        tasks = [asyncio.create_task(through(e)) for e in self._endpoints]
        last = "no endpoint"
        try:
            for done in asyncio.as_completed(tasks):
                try:
                    await done
                except ProbeUnavailableError as exc:
                    last = str(exc)
                    continue
                return
        finally:
            # The others end by their own timeout, not by cancellation: a request cancelled
            # while it waits for a connection can cost the pool a slot for good (`_request`).
            for task in tasks:
                if not task.done():
                    self._in_background(task)
        raise ProbeUnavailableError(f"write failed on every endpoint; last: {last}")

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._http.aclose()


def judge_cluster(view: ClusterView, pods: Sequence[PodState]) -> tuple[str, ...]:
    """Why the cluster is not healthy (empty: healthy): every pod's member answers healthy,
    all follow one leader, the member list has exactly one member per pod."""
    reasons: list[str] = []
    names = {p.name for p in pods}
    if set(view.members.values()) != names:
        reasons.append(f"etcd members {sorted(view.members.values())} are not the pods {sorted(names)}")
    by_name = view.by_name()
    for s in view.statuses:
        if not s.reachable:
            reasons.append(f"etcd endpoint {s.endpoint} unreachable: {s.error}")
        elif not s.healthy:
            reasons.append(f"etcd member {s.name or s.endpoint} is not healthy")
    for name in sorted(names - set(by_name)):
        reasons.append(f"etcd member {name} answered on no endpoint")
    leaders = {s.leader_id for s in view.statuses if s.reachable}
    if 0 in leaders or len(leaders) != 1:
        reasons.append("etcd members do not agree on one leader")
    return tuple(reasons)


def _summary(view: ClusterView) -> dict[str, Any]:
    return {
        "leader": view.leader_name(),
        "members": [
            {
                "name": s.name,
                "endpoint": s.endpoint,
                "reachable": s.reachable,
                "healthy": s.healthy,
                "leaderId": str(s.leader_id),
                "raftTerm": s.raft_term,
                "raftIndex": s.raft_index,
                "appliedIndex": s.applied_index,
            }
            for s in view.statuses
        ],
    }


@dataclass
class ElectionRecovery:
    """An etcd trial's own milestones (see the module's docstring)."""

    victims: Sequence[Victim]
    old_leader: str | None
    #: The raft term `old_leader` led in at the gate (None: not known). An election is a later
    #: term: the member that wins may be the killed one, back in place (a container_kill).
    old_term: int | None = None
    #: False: the victims keep their processes (a partition): after the heal each victim's
    #: member is seen following the cluster's leader (``rejoined_as_follower``).
    restarts: bool = True
    _views: dict[int, ClusterView] = field(default_factory=dict)
    _reached: dict[str, Milestone] = field(default_factory=dict)
    _last_leader_index: int | None = None
    _done: Milestone | None = None
    #: Every victim's member seen back in the cluster (`restarts` False): following the
    #: majority's leader, or leading it.
    _rejoined: bool = False
    #: The members whose /health answered healthy when last asked.
    _healthy: set[str] = field(default_factory=set)

    @property
    def _leader_killed(self) -> bool:
        return self.old_leader is not None and any(v.name == self.old_leader for v in self.victims)

    @property
    def electing(self) -> bool:
        """The victim led and no new leader has been seen yet."""
        return self._leader_killed and "leader_elected" not in self._reached

    def probe_interval(self, replacement_ready: bool, normal: float) -> float | None:
        return min(ELECTION_PROBE_INTERVAL, normal) if self.electing else normal

    @property
    def done(self) -> Milestone | None:
        return self._done

    @property
    def sources(self) -> Mapping[str, str]:
        return {}

    @property
    def clock_offset(self) -> float | None:
        return None

    def _later_term(self, term: int) -> bool:
        return self.old_term is not None and term > self.old_term

    def _mark(self, name: str, at: Milestone) -> None:
        self._reached.setdefault(name, at)

    def observe(self, look: Look) -> Mapping[str, Milestone]:
        view = look.result.detail if isinstance(look.result.detail, ClusterView) else None
        if view is None:
            return {}
        before = set(self._reached)
        now = look.answered
        # A leader change is stamped when the look began: the members answered about the
        # moment they were asked, and a dying member can hold the look's end back by its
        # timeout (seen on the real node: 0.2 s late).
        began = look.asked or now
        healthy_at = self._health_stamp(look, view)
        victims = {v.name for v in self.victims}
        if self._leader_killed and any(s.reachable for s in view.statuses):
            # As etcd's members see it, by majority of the cluster: the old leader lost once a
            # majority no longer follows it in its term (a graceful shutdown hands leadership
            # over first, so "lost" and "elected" are then the same look); elected once a
            # majority follows a leader in a later term (without the gate's term: another
            # member). A member lagging one heartbeat behind does not hold either back.
            #
            # Or the old leader resumed: once lost, a majority following a leader again, even the
            # old one in its own term, ends the election. A leader frozen with its node
            # (node_failure) and thawed before a survivor's election timer fired leads on in its
            # term; no later term ever comes (seen on the real nodes under load). Without this the
            # trial stayed in its election looks, which ask no /health, so no member was ever
            # healthy and a recovered cluster was judged unrecovered after the whole timeout.
            led = view.leadership()
            lost_before = "leader_lost" in self._reached
            if led is None or led[0] != self.old_leader or self._later_term(led[1]):
                self._mark("leader_lost", began)
            if led is not None and (
                lost_before
                or (self._later_term(led[1]) if self.old_term is not None else led[0] not in victims)
            ):
                self._mark("leader_elected", began)
        by_name = view.by_name()
        leader_now = by_name.get(view.leader_name() or "")
        caught_up = look.replacement_ready and all(
            (m := by_name.get(name)) is not None
            and m.healthy
            and self._last_leader_index is not None
            and m.applied_index >= self._last_leader_index
            for name in victims
        )
        if caught_up:
            self._mark("member_healthy", healthy_at)
        leader_id = next((s.member_id for s in view.statuses if s.name == view.leader_name()), 0)
        # Back in the cluster: each victim's member follows the majority's leader, or is that
        # leader (a leader frozen with its node that resumed in its term: the others follow it
        # again). A follower in a minority of its own follows nobody the majority follows.
        in_cluster = (
            not self.restarts
            and look.replacement_ready
            and leader_id != 0
            and all(
                (m := by_name.get(name)) is not None and m.reachable and m.leader_id == leader_id
                for name in victims
            )
        )
        if in_cluster:
            self._rejoined = True
            if all((m := by_name.get(name)) is not None and m.member_id != leader_id for name in victims):
                self._mark("rejoined_as_follower", began)
        if leader_now is not None:
            self._last_leader_index = leader_now.raft_index
        back = "member_healthy" in self._reached and (self.restarts or self._rejoined)
        if back and look.result.healthy and self._done is None:
            self._done = healthy_at
            self._reached["cluster_healthy"] = healthy_at
        for status in view.statuses:
            if status.name is not None and (status.health_asked or not status.reachable):
                (self._healthy.add if status.healthy else self._healthy.discard)(status.name)
        return {n: m for n, m in self._reached.items() if n not in before}

    def _health_stamp(self, look: Look, view: ClusterView) -> Milestone:
        """When what this look found healthy became so.

        A member that was not healthy when last asked and answers healthy now: when it served
        that /health. /health is a read through Raft, which a member catching up holds until it
        can serve it: a held answer comes when the member is healthy, less its way back (a
        thawed member's was held 1.2 s; the look's middle stamped it 0.6 s early against the
        test's own poller of /health). How long the way is, the quickest /health of this look
        says (a round trip with nothing held, under the same load): a member's answer d seconds
        in, against a quickest r, was served about max(d/2, d - r/2) in: the middle of its own
        request when nothing held it (d = r), the answer less half a round trip when held.

        Nothing turned healthy (the change was in the status: who leads, how far applied): the
        look's middle. The members answer their status at once, somewhere between the look's
        start and its end, and the end waits for the slowest of them (stamped at the end, 150 ms
        late on the loaded test bed)."""
        now = look.answered
        if look.asked is None:
            return now
        answers = [s.health_after for s in view.statuses if s.healthy and s.health_after is not None]
        turned = [
            s.health_after
            for s in view.statuses
            if s.healthy and s.health_after is not None and s.name is not None and s.name not in self._healthy
        ]
        if not turned:
            return _middle(look.asked, now)
        latest, quickest = max(turned), min(answers)
        served = max(latest / 2, latest - quickest / 2)
        after = min(served, now.offset - look.asked.offset)
        return Milestone(wall=look.asked.wall + after, offset=look.asked.offset + after)

    def pending(self) -> Mapping[str, str]:
        waiting: dict[str, str] = {}
        if self._leader_killed and "leader_elected" not in self._reached:
            waiting[""] = "no new etcd leader elected"
        if not self.restarts and not self._rejoined:
            waiting.update(
                {
                    v.name: "etcd member not back in the cluster (following its leader, or leading it)"
                    for v in self.victims
                }
            )
        if "member_healthy" not in self._reached:
            waiting.update({v.name: "etcd member not healthy and caught up" for v in self.victims})
        return waiting


def _middle(a: Milestone, b: Milestone) -> Milestone:
    return Milestone(wall=(a.wall + b.wall) / 2, offset=(a.offset + b.offset) / 2)


def check_spec(spec: CampaignSpec, namespace: str) -> None:
    """etcd's rules on a spec: its members' client URLs in `endpoints`, each naming a Service
    (or a member of a headless one, ``etcd-0.etcd``) in the Campaign's namespace."""
    if spec.subject.pd_url is not None:
        raise SpecError("subject.pdURL", "is a TiKV field: give etcd's client URLs in subject.endpoints")
    if not spec.subject.endpoints:
        raise SpecError("subject.endpoints", "is required for Etcd: its members' client URLs")
    for i, url in enumerate(spec.subject.endpoints):
        check_endpoint_namespace(url, namespace, f"subject.endpoints[{i}]")


class EtcdSubject:
    """The engine's `Subject` for etcd."""

    health_source = "pods+etcd"
    api_name = "etcd"
    writes = True

    def __init__(self, client: EtcdClient) -> None:
        self._client = client
        self._trial: ElectionRecovery | None = None

    @classmethod
    def for_spec(
        cls, spec: CampaignSpec, namespace: str, resources: SubjectResources | None = None
    ) -> EtcdSubject | None:
        check_spec(spec, namespace)
        return cls(EtcdClient(spec.subject.endpoints))

    async def check(self, pods: Sequence[PodState], now: float) -> ProbeResult:
        # While an election is awaited, looks come every 20 ms, ask the members' status only
        # (their /health waits for the election itself), and a dying member must not hold one
        # back (seen on the real node: 0.2 s late): `EtcdClient.view`'s `quick`. Otherwise a
        # member gets the full second, so a slow answer under load is not taken for a relapse.
        electing = self._trial is not None and self._trial.electing
        view = await self._client.view(quick=ELECTION_STATUS_TIMEOUT if electing else None)
        reasons = judge_cluster(view, pods)
        leader = view.leader_name()
        roles = {name: LEADER if name == leader else FOLLOWER for name in view.members.values()}
        return ProbeResult(
            healthy=not reasons, reasons=reasons, summary=_summary(view), roles=roles, detail=view
        )

    def judge(
        self, victims: Sequence[Victim], gate: ProbeResult | None, restarts: bool = True
    ) -> RecoveryJudge:
        if gate is not None and isinstance(gate.detail, ClusterView):
            led = gate.detail.leadership()
            leader, term = led if led is not None else (None, None)
        else:  # a gate without the members' answers: who led, in no known term
            named = gate.summary.get("leader") if gate is not None else None
            leader, term = (named if isinstance(named, str) else None), None
        self._trial = ElectionRecovery(victims, leader, term, restarts)
        return self._trial

    def victim_details(self, gate: ProbeResult | None) -> Mapping[str, int]:
        return {}  # a member keeps its id across a restart: nothing to tell victims apart by

    async def write_and_read(self, key: str, value: str, timeout: float) -> None:
        await self._client.put_and_get(key, value, timeout)

    async def close(self) -> None:
        await self._client.aclose()


KIND = SubjectKindInfo(
    kind="Etcd",
    milestones=(
        ("leader_lost", "a majority of the etcd members no longer follows the killed leader"),
        (
            "leader_elected",
            "a majority of the members follows a leader again (a later raft term, or the old leader resumed)",
        ),
        ("member_healthy", "the victim's member is healthy and has applied what the leader had"),
        (
            "rejoined_as_follower",
            "after a fault that kept the process (a partition), the victim's member follows the leader",
        ),
        ("cluster_healthy", "every member healthy, all following one leader"),
    ),
    roles=(LEADER, FOLLOWER),
    api_field="endpoints",
    open=EtcdSubject.for_spec,
    check=check_spec,
)
