"""Is a TiKV cluster healthy? Pure judgements over pods and PD's view, and `TiKVProbe`, the
only part that does I/O (through `PdClient`).

Each judgement returns `Health`: a verdict and the reasons it is not healthy, written for a
person reading a Campaign condition or a log line ("store 4 (tikv-1...) is Disconnected").

Why PD's view is judged on `start_timestamp` and heartbeats, not only on ``state_name`` (real
PD, captured in ``tests/data/pd/``): TiKV heartbeats every 10 s and PD shows a store Disconnected
only after 20 s without one, so a pod that is back within that window may never leave ``Up``. A
restart shows reliably as a new start timestamp (`store_restarted`), which PD takes at once from
the new process's ``PutStore``, while ``last_heartbeat`` is still the dead process's: the store
is back only once it has heartbeated since its start (`StoreInfo.heartbeat_since_start`), about
one heartbeat interval after tikv-server started.
"""

from __future__ import annotations

import ipaddress
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aftershock.endpoints import check_endpoint_namespace
from aftershock.errors import ProbeUnavailableError, SpecError
from aftershock.model import (
    SOURCE_OBSERVED,
    SOURCE_PD_HEARTBEAT,
    CampaignSpec,
    Milestone,
    PodState,
    ProbeResult,
    Victim,
)
from aftershock.subjects.base import Look, RecoveryJudge, SubjectKindInfo, SubjectResources
from aftershock.subjects.pd import (
    HeartbeatHistory,
    PdClient,
    PdClock,
    PdError,
    PdMemberHealth,
    StoreInfo,
    store_host,
)

UP = "Up"
TOMBSTONE = "Tombstone"


@dataclass(frozen=True)
class Health:
    healthy: bool
    reasons: tuple[str, ...] = ()  # empty when healthy

    @classmethod
    def from_reasons(cls, reasons: Iterable[str]) -> Health:
        found = tuple(reasons)
        return cls(healthy=not found, reasons=found)

    def __and__(self, other: Health) -> Health:
        """Both judgements together: healthy only if both are, with the reasons of both."""
        return Health.from_reasons(self.reasons + other.reasons)


def judge_pods(pods: Sequence[PodState], expected: int) -> Health:
    """Healthy when exactly `expected` pods exist, none is being deleted, and all are Ready."""
    reasons: list[str] = []
    if len(pods) != expected:
        reasons.append(f"expected {expected} pods, found {len(pods)}")
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.deleting:
            reasons.append(f"pod {pod.name} is being deleted")
        elif not pod.ready:
            reasons.append(f"pod {pod.name} is not Ready (phase {pod.phase})")
    return Health.from_reasons(reasons)


def judge_pd(
    stores: Sequence[StoreInfo],
    members: Sequence[PdMemberHealth],
    *,
    expected_stores: int,
    now: float,
    heartbeat_fresh_seconds: float = 30.0,
    pending_peer_regions: int = 0,
    down_peer_regions: int = 0,
    previous_process_heartbeat: Collection[int] = (),
) -> Health:
    """Healthy when PD sees `expected_stores` stores Up, none other than Up (Tombstone aside),
    every Up store heartbeating within `heartbeat_fresh_seconds` of `now` (unix seconds) and
    since its current process started, no store with pending peers, no region with a pending
    or down peer, and every PD member healthy.

    A store listed but not Up (Disconnected, Down, Offline) is a reason even when enough others are
    Up: its regions are missing a replica until it returns or PD replaces it.

    `previous_process_heartbeat`: ids of restarted stores whose last heartbeat is known to be the
    dead process's although it is not older than the new start (`HeartbeatHistory`).
    """
    reasons: list[str] = []
    live = sorted((s for s in stores if s.state_name != TOMBSTONE), key=lambda s: s.id)
    up = [s for s in live if s.state_name == UP]
    if len(up) != expected_stores:
        reasons.append(f"expected {expected_stores} stores Up, PD reports {len(up)}")
    for store in live:
        label = f"store {store.id} ({store.address})"
        if store.state_name != UP:
            reasons.append(f"{label} is {store.state_name}")
            continue
        age = now - store.last_heartbeat_ns / 1e9
        if store.last_heartbeat_ns <= 0:
            reasons.append(f"{label} has never sent a heartbeat")
        elif age > heartbeat_fresh_seconds:
            reasons.append(f"{label} last heartbeat {age:.0f}s ago (limit {heartbeat_fresh_seconds:g}s)")
        elif not store.heartbeat_since_start or store.id in previous_process_heartbeat:
            reasons.append(f"{label} restarted (start {store.start_timestamp}) and has not heartbeated since")
        if store.pending_peer_count > 0:
            reasons.append(f"{label} has {store.pending_peer_count} pending peers")
    if pending_peer_regions > 0:
        reasons.append(f"PD reports {pending_peer_regions} regions with pending peers")
    if down_peer_regions > 0:
        reasons.append(f"PD reports {down_peer_regions} regions with down peers")
    if not members:
        reasons.append("PD reports no members")
    for member in sorted(members, key=lambda m: m.name):
        if not member.health:
            reasons.append(f"PD member {member.name} is unhealthy")
    return Health.from_reasons(reasons)


def store_restarted(before: StoreInfo, after: StoreInfo) -> bool:
    """Whether tikv-server behind this store started again between the two observations.

    True when the start timestamp changed (a later one normally; an earlier one only after a clock
    step, still a new process), or when `after` is another store altogether (the data was lost and
    a new store registered at the same address: certainly a new process). A missing start
    timestamp (0) proves nothing.
    """
    if after.id != before.id:
        return True
    return after.start_timestamp not in (0, before.start_timestamp)


def match_store(pod_name: str, stores: Iterable[StoreInfo]) -> StoreInfo | None:
    """The store a TiKV pod advertises, by ``<pod>.<headless-svc>.<ns>.svc:20160``.

    Matched on the first DNS label of the address being exactly the pod name (``tikv-1`` does not
    match ``tikv-10.…``). If several stores share it (an old one not yet Tombstone beside one that
    registered after its data was lost), the live one with the newest start wins.
    """
    found = [s for s in stores if store_host(s.address).split(".", 1)[0] == pod_name]
    if not found:
        return None
    return max(found, key=lambda s: (s.state_name != TOMBSTONE, s.start_timestamp, s.id))


def expected_store_count(pods: Iterable[PodState]) -> int:
    """One store per pod name: a replaced pod keeps its name, address and volume, hence its store."""
    return len({p.name for p in pods})


# --- The probe the engine asks (I/O through PdClient) -------------------------------------------


def qualify_pd_url(url: str, namespace: str) -> str:
    """A bare Service name (``http://pd:2379``) would resolve in the *operator's* namespace;
    the subject lives in the Campaign's, so qualify it: ``http://pd.<namespace>.svc:2379``."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if "." in host or host == "localhost" or host.replace(":", "").isdigit() or _is_ip(host):
        return url
    netloc = f"{host}.{namespace}.svc" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_spec(spec: CampaignSpec, namespace: str) -> None:
    """TiKV's rules on a spec: PD is named by pdURL (in the Campaign's namespace), nothing else."""
    if spec.subject.endpoints:
        raise SpecError("subject.endpoints", "is not a TiKV field: name PD with subject.pdURL")
    if spec.subject.pd_url is not None:
        check_endpoint_namespace(spec.subject.pd_url, namespace, "subject.pdURL")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class TiKVJudging:
    """What TiKV's probe says of itself beside its looks at PD: how a trial is judged (PD's
    stores coming back, `StoreRecovery`), what a victim carries (its store id), no write probe.
    A base, so that a stand-in probe of the tests judges exactly as TiKV's does."""

    health_source = "pods+pd"
    api_name = "PD"
    writes = False

    def judge(
        self, victims: Sequence[Victim], gate: ProbeResult | None, restarts: bool = True
    ) -> RecoveryJudge:
        return StoreRecovery(victims, dict(gate.restarts) if gate is not None else {}, restarts=restarts)

    def victim_details(self, gate: ProbeResult | None) -> Mapping[str, int]:
        ids = gate.summary.get("storeIds") if gate is not None else None
        return {str(k): int(v) for k, v in ids.items()} if isinstance(ids, Mapping) else {}

    async def write_and_read(self, key: str, value: str, timeout: float) -> None:
        raise ProbeUnavailableError("TiKV has no write probe here")


class TiKVProbe(TiKVJudging):
    """The engine's `SubjectProbe` for TiKV: PD's stores and members, judged per pod."""

    def __init__(
        self,
        client: PdClient,
        *,
        heartbeat_fresh_seconds: float = 30.0,
        release: Callable[[], Awaitable[None]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._fresh = heartbeat_fresh_seconds
        self._monotonic = monotonic
        self._wall = wall
        self.pd_clock = PdClock()
        self.history = HeartbeatHistory()
        # A shared client is given back, not closed: other Campaigns may be using it.
        self._release = release
        self._closed = False

    @classmethod
    def for_spec(
        cls, spec: CampaignSpec, namespace: str, resources: SubjectResources | None = None
    ) -> TiKVProbe | None:
        """The probe for a Campaign's subject, or None when it names no PD. With the process's
        shared PD clients, the client is the one for that URL; without, a private one."""
        check_spec(spec, namespace)
        clients = resources.pd_clients if resources is not None else None
        if spec.subject.pd_url is None:
            return None
        url = qualify_pd_url(spec.subject.pd_url, namespace)
        if clients is None:
            return cls(PdClient(url))

        async def release() -> None:
            await clients.release(url)

        return cls(clients.acquire(url), release=release)

    async def check(self, pods: Sequence[PodState], now: float) -> ProbeResult:
        try:
            asked = self._monotonic()
            stores = await self._client.stores()
            seen, seen_wall = self._monotonic(), self._wall()
            members = await self._client.health()
            pending = await self._client.pending_peer_regions()
            down = await self._client.down_peer_regions()
        except PdError as exc:
            raise ProbeUnavailableError(str(exc)) from exc
        names = sorted({p.name for p in pods})
        # Heartbeat freshness is judged on PD's own clock (its freshest heartbeat), never on
        # the operator's: a skewed or stepped operator clock must not make healthy stores look
        # stale. A store that stopped heartbeating falls behind the others; PD marks all of
        # them Disconnected by itself when none heartbeats.
        heartbeats = [s.last_heartbeat_ns for s in stores if s.last_heartbeat_ns > 0]
        if heartbeats:
            now = max(heartbeats) / 1e9
            self.pd_clock.observe(
                now,
                seen,
                seen_wall,
                asked=asked,
                stores={
                    st.id: (st.start_timestamp, st.last_heartbeat_ns / 1e9)
                    for st in stores
                    if st.last_heartbeat_ns > 0
                },
            )
        self.history.observe(stores, pods)
        health = judge_pd(
            stores,
            members,
            expected_stores=len(names),
            now=now,
            heartbeat_fresh_seconds=self._fresh,
            pending_peer_regions=pending,
            down_peer_regions=down,
            previous_process_heartbeat={s.id for s in stores if self.history.previous_process_heartbeat(s)},
        )
        reasons = list(health.reasons)
        restarts: dict[str, int] = {}
        up: dict[str, bool] = {}
        heartbeats_ns: dict[str, int] = {}
        store_ids: dict[str, int] = {}
        for name in names:
            store = match_store(name, stores)
            if store is None:
                reasons.append(f"PD has no store for pod {name}")
                continue
            store_ids[name] = store.id
            restarts[name] = store.start_timestamp
            heartbeats_ns[name] = store.last_heartbeat_ns
            fresh = store.last_heartbeat_ns > 0 and now - store.last_heartbeat_ns / 1e9 <= self._fresh
            # Back means reporting: a PutStore alone (new start, the dead process's heartbeat)
            # is not a running store yet.
            up[name] = store.state_name == UP and fresh and self.history.reported_since_start(store)
        summary = {
            "storeIds": store_ids,
            "stores": [
                {
                    "id": s.id,
                    "address": s.address,
                    "state": s.state_name,
                    "startTimestamp": s.start_timestamp,
                    "lastHeartbeat": s.last_heartbeat_ns,
                    "leaderCount": s.leader_count,
                    "regionCount": s.region_count,
                }
                for s in sorted(stores, key=lambda s: s.id)
            ],
            "members": [{"name": m.name, "health": m.health} for m in members],
            "pendingPeerRegions": pending,
            "downPeerRegions": down,
        }
        best = self.pd_clock.best()
        if best is not None:
            # Which look fixed PD's clock offset (the store-Up stamp's only estimate).
            summary["pdClockBestLook"] = best
        return ProbeResult(
            healthy=not reasons,
            reasons=tuple(reasons),
            restarts=restarts,
            up=up,
            summary=summary,
            heartbeats_ns=heartbeats_ns,
            # PD's clock now, from every look so far (`PdClock`), not only this one's newest
            # heartbeat: the engine places the store's heartbeat on its own clock with it.
            pd_now=self.pd_clock.now(self._monotonic()) if heartbeats else None,
            look_at=self.pd_clock.next_look(self._monotonic()),
        )

    async def close(self) -> None:
        """Idempotent: a second close must not give a shared client back twice (that would
        close it under another Campaign)."""
        if self._closed:
            return
        self._closed = True
        if self._release is not None:
            await self._release()
        else:
            await self._client.aclose()


#: How often PD is asked between the replacements' Ready and their stores' first heartbeats: a
#: bounded window (one heartbeat interval, 10 s on real TiKV); measured on the real node, the
#: store-Up stamp was ~40 ms late in a Campaign's first trials at 0.2 s polls (too few samples).
RECOVERY_PROBE_INTERVAL = 0.05


@dataclass
class StoreRecovery:
    """A TiKV trial's own milestone, ``store_up``: PD has a heartbeat from each victim's store
    newer than its new start timestamp, stamped at that heartbeat's time (PD's clock placed on
    the operator's by their offset, estimated as the smallest gap seen between a poll and PD's
    newest heartbeat), not when a poll happened to notice it."""

    victims: Sequence[Victim]
    #: Per victim pod name: its store's start timestamp before the kill.
    initial_starts: Mapping[str, int]
    store_up: dict[str, Milestone] = field(default_factory=dict)
    #: False: the stores keep their processes (a partition): PD shows each victim's store not
    #: Up while the fault holds (``store_disconnected``), and Up with a heartbeat newer than
    #: any it had during the fault once healed (``store_up``); no new start is waited for.
    restarts: bool = True
    _held_heartbeat: dict[str, int] = field(default_factory=dict)
    _disconnected: set[str] = field(default_factory=set)
    _sources: dict[str, str] = field(default_factory=dict)
    _offset: float | None = None
    _done: Milestone | None = None

    def probe_interval(self, replacement_ready: bool, normal: float) -> float | None:
        # Before the pods are back, at the usual pace: one look between the kill and the new
        # process's first heartbeat tells that heartbeat from the dead process's last
        # (`HeartbeatHistory`). Looking only from the replacement's Ready on, a look could show
        # the new start and its first heartbeat at once whenever Ready came a heartbeat interval
        # after the process started (a kubelet slow to report readiness): then the store-Up
        # stamp was one heartbeat late (bench, real node under load: ~0.45 s in 1-3 of 20).
        # Once the pods are back, ask often: every look is a sample of PD's clock (`PdClock`
        # keeps the smallest gap), and the store-Up stamp is only as exact as that offset.
        # Beside these, the engine asks when a look says (`ProbeResult.look_at`: just as a
        # heartbeat is due).
        if not self.restarts:
            # A partition: Disconnected comes while the fault holds, so PD is watched throughout.
            return normal if self._done is not None else min(normal, RECOVERY_PROBE_INTERVAL * 4)
        if not replacement_ready or self._done is not None:
            return normal
        return min(normal, RECOVERY_PROBE_INTERVAL)

    @property
    def done(self) -> Milestone | None:
        return self._done

    @property
    def sources(self) -> Mapping[str, str]:
        return self._sources

    @property
    def clock_offset(self) -> float | None:
        return self._offset

    def observe(self, look: Look) -> Mapping[str, Milestone]:
        result = look.result
        if result.pd_now is not None:
            gap = look.wall - result.pd_now  # >= the true offset: PD's newest heartbeat is in its past
            self._offset = gap if self._offset is None else min(self._offset, gap)
        if not self.restarts:
            return self._observe_held(look)
        for victim in self.victims:
            name = victim.name
            if name in self.store_up:
                continue
            start = result.restarts.get(name)
            if result.up.get(name) and start is not None and start != self.initial_starts.get(name):
                self.store_up[name], self._sources[name] = self._heartbeat_stamp(
                    result.heartbeats_ns.get(name), look
                )
        if self._done is not None or len(self.store_up) < len(self.victims):
            return {}
        # The last victim's store to report decides, with its own stamp and source.
        self._done = max(self.store_up.values(), key=lambda m: m.offset)
        per_store = [self._sources[v.name] for v in self.victims]
        self._sources["store_up"] = (
            SOURCE_PD_HEARTBEAT if all(s == SOURCE_PD_HEARTBEAT for s in per_store) else SOURCE_OBSERVED
        )
        return {"store_up": self._done}

    def _observe_held(self, look: Look) -> Mapping[str, Milestone]:
        """A fault that keeps the stores' processes: Disconnected while held, Up after."""
        result, reached = look.result, dict[str, Milestone]()
        for victim in self.victims:
            name = victim.name
            beat = result.heartbeats_ns.get(name, 0)
            if not look.replacement_ready:
                self._held_heartbeat[name] = max(self._held_heartbeat.get(name, 0), beat)
                if not result.up.get(name, False):
                    self._disconnected.add(name)
            elif (
                name not in self.store_up and result.up.get(name) and beat > self._held_heartbeat.get(name, 0)
            ):
                self.store_up[name], self._sources[name] = self._heartbeat_stamp(beat, look)
        if "store_disconnected" not in self._sources and self._disconnected >= {v.name for v in self.victims}:
            self._sources["store_disconnected"] = SOURCE_OBSERVED
            reached["store_disconnected"] = look.answered
        if self._done is None and len(self.store_up) == len(self.victims):
            self._done = max(self.store_up.values(), key=lambda m: m.offset)
            per_store = [self._sources[v.name] for v in self.victims]
            self._sources["store_up"] = (
                SOURCE_PD_HEARTBEAT if all(s == SOURCE_PD_HEARTBEAT for s in per_store) else SOURCE_OBSERVED
            )
            reached["store_up"] = self._done
        return reached

    def _heartbeat_stamp(self, heartbeat_ns: int | None, look: Look) -> tuple[Milestone, str]:
        """When the store's heartbeat reached PD, on the operator's clocks; the poll's own
        moment if PD's clock cannot be placed. Never before the kill, never after the poll."""
        answered = look.answered
        if not heartbeat_ns or self._offset is None:
            return answered, SOURCE_OBSERVED
        age = look.wall - (heartbeat_ns / 1e9 + self._offset)
        age = min(max(age, 0.0), answered.offset)
        return look.stamp(look.mono - age, look.wall - age), SOURCE_PD_HEARTBEAT

    def pending(self) -> Mapping[str, str]:
        if not self.restarts:
            return {
                v.name: "store not back Up with a heartbeat after the heal"
                for v in self.victims
                if v.name not in self.store_up
            }
        return {
            v.name: "store not back Up with a new start timestamp"
            for v in self.victims
            if v.name not in self.store_up
        }


KIND = SubjectKindInfo(
    kind="TiKV",
    milestones=(
        (
            "store_disconnected",
            "a fault that keeps the process (a partition): PD no longer shows the victim's store Up",
        ),
        ("store_up", "PD has a heartbeat from the victim's store newer than its new start (or the fault)"),
    ),
    roles=(),
    api_field="pdURL",
    open=TiKVProbe.for_spec,
    check=check_spec,
)
