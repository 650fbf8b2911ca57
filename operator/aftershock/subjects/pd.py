"""A read-only client for PD's HTTP API: the stores and the PD members' health.

What can go wrong, and how it is reported:

- PD cannot be reached, times out, or answers 5xx: `PdUnavailableError`. PD is briefly
  unavailable during its own leader changes; callers retry.
- PD answers, but not with what its API documents (malformed JSON, a wrong shape, a 3xx or 4xx):
  `PdDataError`. A wrong pdURL (not PD at all) usually ends up here.

Both are `PdError` and keep the original exception as ``__cause__``. They are infrastructure
errors: a trial that meets one is not a measurement of the subject.

Redirects are never followed: the pdURL has been checked (`aftershock.model.check_pd_url`) and a
redirect could lead the operator to a host nobody checked. Proxy variables from the environment
are ignored for the same reason.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from aftershock.model import PodState

STORES_PATH = "/pd/api/v1/stores"
HEALTH_PATH = "/pd/api/v1/health"
PENDING_PEER_PATH = "/pd/api/v1/regions/check/pending-peer"
DOWN_PEER_PATH = "/pd/api/v1/regions/check/down-peer"

#: A response larger than this is refused instead of read into memory: a stores list of a
#: thousand stores is well under 2 MiB.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class PdError(Exception):
    """PD could not be read. Always an infrastructure error, never the subject's failure.

    `status` is the HTTP status when PD answered, None when it did not.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PdUnavailableError(PdError):
    """PD did not answer usefully: connection refused, timeout, or a 5xx."""


class PdDataError(PdError):
    """PD answered with something its API does not produce (bad JSON or shape, a 3xx or 4xx)."""


# --- Parsed values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreInfo:
    """One TiKV store as PD sees it."""

    id: int
    address: str  # <pod>.<headless-svc>.<ns>.svc:20160
    state_name: str  # Up, Disconnected, Down, Offline, Tombstone
    start_timestamp: int  # unix seconds; changes when tikv-server restarts; 0 if PD has none
    last_heartbeat_ns: int  # unix nanoseconds; 0 if PD has none
    leader_count: int
    region_count: int
    pending_peer_count: int = 0  # PD omits it when zero
    uptime: str | None = None  # Go duration string; PD omits it when zero
    status_address: str | None = None

    @property
    def heartbeat_since_start(self) -> bool:
        """Whether the process now behind the store has reported at all: PD keeps the dead
        process's last heartbeat after a restart's ``PutStore`` until the new one heartbeats
        (``uptime``, heartbeat minus start, is absent until then)."""
        return self.start_timestamp > 0 and self.last_heartbeat_ns / 1e9 >= self.start_timestamp


@dataclass(frozen=True)
class PdMemberHealth:
    name: str
    member_id: int
    health: bool


# --- Parsing: pure, raises PdDataError naming what is wrong ------------------------------------


def _field(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise PdDataError(f"{where}: missing {key!r}")
    return obj[key]


def _int(value: Any, where: str) -> int:
    # bool is an int in Python, never in PD's JSON.
    if isinstance(value, bool) or not isinstance(value, int):
        raise PdDataError(f"{where}: expected an integer, got {type(value).__name__}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PdDataError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PdDataError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _optional_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    """Go's `omitempty` drops zero values: absent means 0."""
    return _int(obj[key], f"{where}.{key}") if key in obj else 0


def parse_store(raw: Any, where: str = "store") -> StoreInfo:
    entry = _obj(raw, where)
    meta = _obj(_field(entry, "store", where), f"{where}.store")
    status_raw = entry.get("status")
    status = {} if status_raw is None else _obj(status_raw, f"{where}.status")
    m, s = f"{where}.store", f"{where}.status"
    uptime = status.get("uptime")
    status_address = meta.get("status_address")
    return StoreInfo(
        id=_int(_field(meta, "id", m), f"{m}.id"),
        address=_str(_field(meta, "address", m), f"{m}.address"),
        state_name=_str(_field(meta, "state_name", m), f"{m}.state_name"),
        start_timestamp=_optional_int(meta, "start_timestamp", m),
        last_heartbeat_ns=_optional_int(meta, "last_heartbeat", m),
        leader_count=_optional_int(status, "leader_count", s),
        region_count=_optional_int(status, "region_count", s),
        pending_peer_count=_optional_int(status, "pending_peer_count", s),
        uptime=None if uptime is None else _str(uptime, f"{s}.uptime"),
        status_address=None if status_address is None else _str(status_address, f"{m}.status_address"),
    )


def parse_stores(raw: Any) -> list[StoreInfo]:
    """``{"count": N, "stores": [...]}``; PD sends ``"stores": null`` when there are none."""
    body = _obj(raw, "stores response")
    stores = _field(body, "stores", "stores response")
    if stores is None:
        return []
    if not isinstance(stores, list):
        raise PdDataError(f"stores response: 'stores' is not a list but {type(stores).__name__}")
    return [parse_store(item, f"stores[{i}]") for i, item in enumerate(stores)]


def parse_region_check(raw: Any, what: str) -> int:
    """``{"count": N, "regions": [...]}`` of ``/regions/check/*``: how many regions it lists."""
    body = _obj(raw, what)
    regions = _field(body, "regions", what)
    if regions is None:
        return 0
    if not isinstance(regions, list):
        raise PdDataError(f"{what}: 'regions' is not a list but {type(regions).__name__}")
    count = body.get("count", len(regions))
    return max(_int(count, f"{what}.count"), len(regions))


def parse_health(raw: Any) -> list[PdMemberHealth]:
    """A list of ``{"name", "member_id", "client_urls", "health"}``."""
    if not isinstance(raw, list):
        raise PdDataError(f"health response: expected a list, got {type(raw).__name__}")
    members = []
    for i, item in enumerate(raw):
        where = f"health[{i}]"
        obj = _obj(item, where)
        health = _field(obj, "health", where)
        if not isinstance(health, bool):
            raise PdDataError(f"{where}.health: expected true or false, got {health!r}")
        members.append(
            PdMemberHealth(
                name=_str(_field(obj, "name", where), f"{where}.name"),
                member_id=_int(_field(obj, "member_id", where), f"{where}.member_id"),
                health=health,
            )
        )
    return members


# --- The client ---------------------------------------------------------------------------------


class PdClient:
    """Reads PD at `base_url` (a checked pdURL such as ``http://pd.tikv:2379``).

    `timeout` bounds each whole request (connect, send, read), not only each phase of it.
    `transport` replaces the network, for tests.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            headers={"Accept": "application/json"},
        )

    async def stores(self) -> list[StoreInfo]:
        """Every store PD lists (by default all but Tombstone ones)."""
        return parse_stores(await self._get_json(STORES_PATH))

    async def health(self) -> list[PdMemberHealth]:
        """The health of each PD member."""
        return parse_health(await self._get_json(HEALTH_PATH))

    async def pending_peer_regions(self) -> int:
        """How many regions have a pending peer (a replica catching up)."""
        return parse_region_check(await self._get_json(PENDING_PEER_PATH), "pending-peer response")

    async def down_peer_regions(self) -> int:
        """How many regions have a down peer (a replica on a store that stopped answering)."""
        return parse_region_check(await self._get_json(DOWN_PEER_PATH), "down-peer response")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> PdClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _get_json(self, path: str) -> Any:
        what = f"GET {self.base_url.rstrip('/')}{path}"
        try:
            async with asyncio.timeout(self._timeout):
                body, status, location = await self._fetch(path)
        except TimeoutError as exc:
            raise PdUnavailableError(f"{what}: no answer within {self._timeout:g}s") from exc
        except httpx.DecodingError as exc:  # a body its Content-Encoding cannot decode
            raise PdDataError(f"{what}: undecodable body: {exc}") from exc
        except httpx.RequestError as exc:  # connection refused, reset, timeouts, protocol errors
            raise PdUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc
        if status >= 500:
            raise PdUnavailableError(f"{what}: HTTP {status}: {_snippet(body)}", status=status)
        if 300 <= status < 400:
            raise PdDataError(f"{what}: HTTP {status} redirect to {location!r}; not followed", status=status)
        if status >= 400 or status < 200:
            raise PdDataError(f"{what}: HTTP {status}: {_snippet(body)}", status=status)
        try:
            return json.loads(body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise PdDataError(f"{what}: not JSON ({exc}): {_snippet(body)}", status=status) from exc

    async def _fetch(self, path: str) -> tuple[bytes, int, str | None]:
        async with self._client.stream("GET", path) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise PdDataError(
                        f"GET {path}: response larger than {MAX_RESPONSE_BYTES} bytes; refused",
                        status=response.status_code,
                    )
                chunks.append(chunk)
            return b"".join(chunks), response.status_code, response.headers.get("location")


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", errors="replace").strip()
    return text + ("..." if len(body) > limit else "")


# --- One client per endpoint --------------------------------------------------------------------


class PdClients:
    """The PD clients of one operator process: one `PdClient` per pdURL, shared by every
    Campaign that names it, closed when the last of them lets it go.

    Why: a client holds a connection pool (and the TLS and DNS state behind it). One per
    Campaign meant a hundred Campaigns on one TiKV cluster opened a hundred pools to the same
    PD, each with its own idle connections and buffers; shared, they reuse a few kept-alive
    connections. A client is closed once unused, so a finished Campaign leaves nothing behind.

    `factory` makes a client for a URL (tests pass one with a fake transport). Not thread-safe:
    it belongs to the operator's event loop, as the clients do.
    """

    def __init__(self, factory: Callable[[str], PdClient] | None = None) -> None:
        self._factory: Callable[[str], PdClient] = factory or PdClient
        self._clients: dict[str, PdClient] = {}
        self._users: dict[str, int] = {}

    def acquire(self, base_url: str) -> PdClient:
        """The client for `base_url`, made on first use; pair every call with `release`."""
        client = self._clients.get(base_url)
        if client is None:
            client = self._clients[base_url] = self._factory(base_url)
            self._users[base_url] = 0
        self._users[base_url] += 1
        return client

    async def release(self, base_url: str) -> None:
        """One user fewer; the last one closes the client (and its connections)."""
        users = self._users.get(base_url, 0) - 1
        if users > 0:
            self._users[base_url] = users
            return
        self._users.pop(base_url, None)
        client = self._clients.pop(base_url, None)
        if client is not None:
            await client.aclose()

    def __len__(self) -> int:
        """How many clients are open (one per endpoint in use)."""
        return len(self._clients)

    def users(self, base_url: str) -> int:
        """How many holders `base_url`'s client has (0: none open)."""
        return self._users.get(base_url, 0)

    async def aclose(self) -> None:
        """At shutdown: close every client, whoever still holds it."""
        clients = list(self._clients.values())
        self._clients.clear()
        self._users.clear()
        for client in clients:
            await client.aclose()


# --- What PD shows across looks -------------------------------------------------------------


def store_host(address: str) -> str:
    """The host part of ``host:port`` (IPv6 literals in brackets are unwrapped)."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or "]:" in address else address
    return host.strip("[]")


@dataclass
class _Process:
    """What the looks have shown of one store process (one start)."""

    start: int
    newest_heartbeat_ns: int
    pod_uid: str | None  # the pod it ran in, when a look showed that pod live
    #: A look showed this start after its pod was gone or replaced: the process was dead, so
    #: the newest heartbeat seen is its last one, exactly.
    last_heartbeat_known: bool = False


class HeartbeatHistory:
    """Tells a restarted store's first heartbeat from its dead process's last one, across looks.

    PD's ``start_timestamp`` has whole seconds (TiKV sends it so). A process that starts in the
    same second as its predecessor's last heartbeat therefore looks "heartbeated since start" at
    once, on the dead process's heartbeat, and its store Up before it ever reported: seen in
    about half the trials on the stand-in's 0.2 s heartbeats, whose simulated processes restart
    within 0.1 s of the kill (bench/results/2026-12-01.md: store Up stamped at the kill). Real
    tikv-server takes seconds to start, so there it is rare, not impossible.

    So remember, per store, what the looks showed of each process (start): its newest heartbeat
    and the pod it ran in. After a restart, the new process counts from a heartbeat newer than
    the previous process's last one. That last one is known exactly when a look showed the old
    start after the old pod was gone or replaced (a pod object goes only once its containers
    have stopped: the process was dead, and PD's heartbeat then was its last). Otherwise the
    heartbeat shown at the first look with the new start is taken for the old process's too: it
    may have heartbeated unseen after the last look (the gate's look can be a poll interval old
    at the kill), and tikv-server heartbeats a full interval (10 s) after it starts, so a look
    between its PutStore and its first heartbeat is all but certain. The cost there, where a
    look sees both at once (heartbeats faster than the polls): one heartbeat late, never early.
    """

    def __init__(self) -> None:
        self._current: dict[int, _Process] = {}  # store id -> its process now
        self._before: dict[int, tuple[int, int]] = {}  # store id -> (new start, dead's last ns)

    def observe(self, stores: Iterable[StoreInfo], pods: Sequence[PodState] = ()) -> None:
        """One look: PD's stores and the subject's pods at the same moment."""
        by_name = {p.name: p for p in pods}
        for store in stores:
            pod = by_name.get(store_host(store.address).split(".", 1)[0])
            # A pod being deleted may still run its process (a graceful stop can heartbeat);
            # only a pod object gone or replaced proves it stopped.
            pod_uid = pod.uid if pod is not None and not pod.deleting else None
            seen = self._current.get(store.id)
            if seen is not None and seen.start == store.start_timestamp:
                seen.newest_heartbeat_ns = max(seen.newest_heartbeat_ns, store.last_heartbeat_ns)
                if seen.pod_uid is None:
                    seen.pod_uid = pod_uid
                elif pod is None or pod.uid != seen.pod_uid:
                    seen.last_heartbeat_known = True
                continue
            if seen is not None:
                last = seen.newest_heartbeat_ns
                if not seen.last_heartbeat_known:
                    last = max(last, store.last_heartbeat_ns)
                self._before[store.id] = (store.start_timestamp, last)
            self._current[store.id] = _Process(store.start_timestamp, store.last_heartbeat_ns, pod_uid)

    def previous_process_heartbeat(self, store: StoreInfo) -> bool:
        """Whether `store`'s last heartbeat is known to be its previous process's."""
        before = self._before.get(store.id)
        return (
            before is not None and before[0] == store.start_timestamp and store.last_heartbeat_ns <= before[1]
        )

    def reported_since_start(self, store: StoreInfo) -> bool:
        """`StoreInfo.heartbeat_since_start`, without the same-second ambiguity where the
        looks so far resolve it."""
        return store.heartbeat_since_start and not self.previous_process_heartbeat(store)


class PdClock:
    """Where PD's clock stands, as far as its stores' heartbeats show it, against this
    process's monotonic clock.

    PD has no "what time is it" in its HTTP API; its newest heartbeat is the latest instant of
    its clock it shows. Each look gives ``seen - newest`` (`seen`: our monotonic clock when the
    stores answer), which is the true offset plus that heartbeat's age plus the answer's
    delay: never below the offset. The smallest over many looks is the offset to within the
    best look's heartbeat age: with polls every 0.2-0.5 s and stores heartbeating at staggered
    moments, some look lands just after a heartbeat, and that look fixes the estimate.

    Why keep it across looks and trials (this object lives as long as the Campaign's probe):
    one trial alone has a poll or two between its replacement turning Ready and its store
    reporting, so its own estimate is off by up to a heartbeat interval, and the store-Up
    milestone placed with it by as much (bench/results: 125 ms p50 on 0.2 s heartbeats). The
    looks of the steady-state gate between trials are free samples.

    Only the last `window` seconds count, so that two clocks drifting apart (tens of ppm) or
    a stepped PD clock cannot keep an old sample in charge for long.

    **Looks aimed at the heartbeats** (`next_look`). Looks at random moments land just after
    a heartbeat only by luck: measured on the real node, the best of ~100 looks a minute still
    came 13-45 ms after the heartbeat it showed, and the store-Up stamp was late by that much.
    But each store heartbeats on a period (10 s on TiKV) that its own reports show, so the
    next heartbeat's arrival can be predicted, and bracketed: a look that showed the previous
    heartbeat was asked before the new one arrived (a lower bound on the offset: ``asked -
    new``), and a look that shows it saw it after (the upper bound above). `next_look` is the
    moment halfway between, for the heartbeat due next; whichever way that look falls, it
    halves the bracket, so within a few heartbeats the upper bound is within about one look's
    own round trip of the truth. The estimate itself stays the upper bound: a stamp placed
    with it is late, never early.
    """

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        # (seen, gap, seen on the wall clock, newest heartbeat, asked - seen): the last three
        # say which look fixed the estimate (`best`), for a person or a benchmark retracing it.
        self._samples: collections.deque[tuple[float, float, float | None, float, float | None]] = (
            collections.deque()
        )
        # (seen, lower bound on the offset): from a heartbeat newer than the previous look showed.
        self._lower: collections.deque[tuple[float, float]] = collections.deque()
        # Per store id: (start timestamp, last heartbeat PD s) as the previous look showed it.
        self._shown: dict[int, tuple[int, float]] = {}
        # Per store id: its heartbeat period, from two heartbeats of one process.
        self._periods: dict[int, float] = {}
        self._last_asked: float | None = None

    def observe(
        self,
        newest_heartbeat: float,
        seen: float,
        seen_wall: float | None = None,
        *,
        asked: float | None = None,
        stores: Mapping[int, tuple[int, float]] | None = None,
    ) -> None:
        """A look asked at `asked` and answered at `seen` (monotonic s; `seen_wall` the same
        moment on the wall clock) showed `newest_heartbeat` (PD's unix s) and, per store id,
        (start timestamp, last heartbeat in PD's unix s)."""
        took = None if asked is None else seen - asked
        self._samples.append((seen, seen - newest_heartbeat, seen_wall, newest_heartbeat, took))
        if stores is not None:
            self._observe_stores(stores, seen)
            self._last_asked = asked
        for queue in (self._samples, self._lower):
            while queue and queue[0][0] < seen - self.window:
                queue.popleft()
        upper, lower = self.offset(), self.lower_bound()
        if upper is not None and lower is not None and lower > upper:
            # Only a stepped clock (or a heartbeat stamped long before PD showed it) can cross
            # the bounds: keep the upper one, which alone places stamps.
            self._lower.clear()

    def _observe_stores(self, stores: Mapping[int, tuple[int, float]], seen: float) -> None:
        for store_id, (start, heartbeat) in stores.items():
            before = self._shown.get(store_id)
            if before is not None and heartbeat > before[1]:
                if self._last_asked is not None:
                    # Newer than the previous look showed: it reached PD after that look was
                    # asked (our clock `asked`, PD's `heartbeat`).
                    self._lower.append((seen, self._last_asked - heartbeat))
                if before[0] == start:
                    # One process, so a whole number of periods apart; a missed heartbeat
                    # gives a multiple, which the next single period replaces.
                    gap = heartbeat - before[1]
                    period = self._periods.get(store_id)
                    if period is None or gap < 1.5 * period:
                        self._periods[store_id] = gap
            self._shown[store_id] = (start, heartbeat)
        for gone in set(self._shown) - set(stores):
            del self._shown[gone]

    def lower_bound(self) -> float | None:
        """The offset is above this (`offset`'s other side); None until a look showed a
        heartbeat that the look before it did not."""
        return max((sample[1] for sample in self._lower), default=None)

    def next_look(self, mono: float) -> float | None:
        """When (our monotonic s, after `mono`) a look is best asked: halfway through the
        bracket where the earliest next heartbeat of a store will reach PD. None until there
        are both bounds and a store's period."""
        upper, lower = self.offset(), self.lower_bound()
        if upper is None or lower is None:
            return None
        middle = (upper + lower) / 2
        best: float | None = None
        for store_id, period in self._periods.items():
            shown = self._shown.get(store_id)
            if shown is None or period <= 0:
                continue
            at = shown[1] + period + middle
            if at <= mono:  # heartbeats were missed since (or none came): the next one due
                at += period * (1 + (mono - at) // period)
            best = at if best is None else min(best, at)
        return best

    def offset(self) -> float | None:
        """Our monotonic clock minus PD's unix clock, seconds (an upper bound); None unseen."""
        return min((sample[1] for sample in self._samples), default=None)

    def best(self) -> dict[str, float] | None:
        """The look that fixes the estimate: when its answer was in (wall clock, unix s) and
        the newest heartbeat it showed (PD's unix s); None unseen or without a wall time."""
        sample = min(self._samples, key=lambda s: s[1], default=None)
        if sample is None or sample[2] is None:
            return None
        best = {"answeredWall": sample[2], "newestHeartbeat": sample[3], "looks": float(len(self._samples))}
        if sample[4] is not None:
            best["askedWall"] = sample[2] - sample[4]
        upper, lower = self.offset(), self.lower_bound()
        if upper is not None and lower is not None:
            best["bracketSeconds"] = upper - lower
        return best

    def now(self, mono: float) -> float | None:
        """PD's clock (unix s) at our monotonic `mono`, as best known; None unseen."""
        offset = self.offset()
        return None if offset is None else mono - offset
