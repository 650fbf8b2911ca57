"""The PD stand-in: PD's HTTP API shapes, with store states judged from what the stores report.

Real PD cannot run here (no images, no pd-server package); see docs/adr/0003-pd-stand-in.md for
what this is faithful to and what it does not simulate. The captures of a real PD it is checked
against are in ``tests/data/pd/``.

Stores report the way tikv-server does, but over a stand-in-only HTTP endpoint instead of PD's
gRPC (**not PD's API**: real PD has no such paths):

- ``POST /pdstub/v1/stores/put`` ``{"id", "address", "status_address", "version",
  "start_timestamp", "labels"}``: tikv-server's ``PutStore`` at start. A new ``start_timestamp``
  at once; ``last_heartbeat`` stays the previous process's.
- ``POST /pdstub/v1/stores/heartbeat`` ``{"id"}``: a store heartbeat; PD stamps
  ``last_heartbeat`` with its own clock on receipt.

From those, and nothing else, the state: ``Up`` while the last heartbeat is at most
`Timing.disconnected_after` old, then ``Disconnected``, ``Down`` past `Timing.max_store_down_time`
(a store that never heartbeated is ``Down`` at once, as in PD). Before the first ``PutStore`` PD is
not bootstrapped: ``/stores`` and ``/regions/check/*`` answer HTTP 500 ``ErrNotBootstrapped``.

``GET /metrics``: PD's own Prometheus metrics for what the stand-in models (`PdStandIn.metrics_text`):
``pd_cluster_status{type}`` (store counts by state, regions, leaders, storage) and
``pd_scheduler_store_status{address,store,type}``, refreshed every
`Timing.metrics_collection_interval` as PD's metrics collection job does, from the same store
states as ``/stores``; and ``etcd_server_is_leader``/``etcd_server_has_leader`` of the one
member, which PD's embedded etcd exports and PD's upstream alert rules join on.

Who reports: `tests.pdstub.store` (a real process, one per TiKV pod on a real kubelet) or
`tests.pdstub.fleet.StoreFleet` (simulated processes that follow a pod source, for kwok pods).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import http.server
import json
import pathlib
import re
import signal
import socket
import sys
import threading
import time
import types
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypedDict

FaultKind = Literal["none", "error500", "timeout", "malformed"]

#: The version PD and TiKV report; the project pins the v8.5 LTS line.
VERSION = "8.5.3"
GIT_HASH = "0000000000000000000000000000000000000000"
TIKV_PORT = 20160
TIKV_STATUS_PORT = 20180
PD_CLIENT_PORT = 2379
PD_PEER_PORT = 2380
REPLICAS = 3  # PD's default max-replicas

PUT_STORE_PATH = "/pdstub/v1/stores/put"
HEARTBEAT_PATH = "/pdstub/v1/stores/heartbeat"

GIB = 1 << 30
#: Each store's size as ``/stores`` shows it ("10GiB", "7.5GiB", "1.2GiB") and /metrics counts it.
CAPACITY_BYTES = 10 * GIB
AVAILABLE_BYTES = int(7.5 * GIB)
USED_BYTES = int(1.2 * GIB)

NOT_BOOTSTRAPPED = "[PD:cluster:ErrNotBootstrapped]TiKV cluster not bootstrapped, please start TiKV first"
_SCHEDULE_TEMPLATE = pathlib.Path(__file__).with_name("config_schedule.json")
_REGION_CHECKS = frozenset(
    ("miss-peer", "extra-peer", "pending-peer", "down-peer", "learner-peer", "offline-peer", "empty-region")
)
_STORE_PATH = re.compile(r"^/pd/api/v1/store/(\d+)$")


@dataclass(frozen=True)
class Timing:
    """PD's and TiKV's clocks for store liveness, in seconds.

    `faithful()` is real PD and TiKV's defaults; `fast(scale)` multiplies every one of them by
    the same factor, for quick tests: the same rules, scaled, never different rules.
    """

    #: TiKV's ``raftstore.pd-store-heartbeat-tick-interval`` (10 s).
    heartbeat_interval: float = 10.0
    #: PD shows ``Disconnected`` when the last heartbeat is older than this (20 s, fixed in PD).
    disconnected_after: float = 20.0
    #: PD's ``schedule.max-store-down-time`` (30 min): ``Down`` after that.
    max_store_down_time: float = 1800.0
    #: PD refreshes ``pd_cluster_status`` in its metrics collection job, every 10 s
    #: (``metricsCollectionJobInterval``, server/cluster/cluster.go; fixed in PD).
    metrics_collection_interval: float = 10.0
    scale: float = 1.0

    @classmethod
    def faithful(cls, *, max_store_down_time: float | None = None) -> Timing:
        """PD's and TiKV's defaults; `max_store_down_time` (seconds) as a PD configured with
        ``pd-ctl config set max-store-down-time`` (the captures include one at 1m)."""
        base = cls()
        if max_store_down_time is None:
            return base
        if max_store_down_time <= 0:
            raise ValueError(f"max_store_down_time must be positive, got {max_store_down_time!r}")
        return replace(base, max_store_down_time=max_store_down_time)

    @classmethod
    def fast(cls, scale: float, *, max_store_down_time: float | None = None) -> Timing:
        """Every interval of `faithful` (with the same `max_store_down_time`, in real PD's
        terms) multiplied by `scale`."""
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale!r}")
        base = cls.faithful(max_store_down_time=max_store_down_time)
        return cls(
            heartbeat_interval=base.heartbeat_interval * scale,
            disconnected_after=base.disconnected_after * scale,
            max_store_down_time=base.max_store_down_time * scale,
            metrics_collection_interval=base.metrics_collection_interval * scale,
            scale=scale,
        )


FAITHFUL = Timing.faithful()


class PodRecord(TypedDict):
    """One TiKV pod as a pod source reports it."""

    name: str
    uid: str
    ready: bool
    ready_since: float | None  # unix seconds the Ready condition last became True


PodSource = Callable[[], list[PodRecord]]


class StoreError(ValueError):
    """A PutStore or heartbeat PD would refuse (unknown store, bad fields)."""


def go_duration(ns: int) -> str:
    """Go's `time.Duration.String()`: ``1h0m0s``, ``1m2.5s``, ``2.5s``, ``1.5ms``, ``0s``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rem = divmod(ns, 3600 * 1_000_000_000)
    minutes, rem = divmod(rem, 60 * 1_000_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _decimal(rem, 1_000_000_000) + "s"


def _decimal(n: int, size: int) -> str:
    whole, frac = divmod(n, size)
    digits = str(frac).rjust(len(str(size)) - 1, "0").rstrip("0") if frac else ""
    return f"{whole}.{digits}" if digits else str(whole)


def rfc3339(ns: int) -> str:
    """Go's `time.Time` JSON (RFC 3339 with nanoseconds, trailing zeros dropped), in UTC."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        text += "." + str(frac).rjust(9, "0").rstrip("0")
    return text + "Z"


@dataclass
class _Store:
    id: int
    address: str
    status_address: str
    version: str
    start_timestamp: int  # unix seconds, from the latest PutStore
    labels: tuple[tuple[str, str], ...] = ()
    last_heartbeat_ns: int = 0  # PD's clock at the latest heartbeat's receipt; 0: never
    leader_count: int = 0
    region_count: int = 0


@dataclass
class _Fault:
    kind: FaultKind = "none"
    delay_seconds: float = 5.0
    remaining: int | None = None  # requests left to affect; None = until cleared
    paths: frozenset[str] | None = None  # None = every path


@dataclass
class _Answer:
    status: int
    payload: Any = None
    content_type: str = "application/json; charset=UTF-8"
    raw: bytes | None = None
    extra: dict[str, str] = field(default_factory=dict)


#: Every store-state ``type`` PD's ``Collect`` sets (store_collection.go), in its order.
_STORE_STATUSES = (
    "store_up_count",
    "store_disconnected_count",
    "store_down_count",
    "store_unhealth_count",
    "store_offline_count",
    "store_tombstone_count",
    "store_low_space_count",
    "store_slow_count",
    "store_preparing_count",
    "store_serving_count",
    "store_removing_count",
    "store_removed_count",
)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class _Collected:
    """One metrics collection: PD's clock then, ``pd_cluster_status`` by type, and per store
    (address, id, ``pd_scheduler_store_status`` by type)."""

    at: float
    cluster: dict[str, float]
    stores: list[tuple[str, str, dict[str, float]]]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class PdStandIn:
    """A PD HTTP API on 127.0.0.1 (ephemeral port unless `port`), in a daemon thread.

    `pods`, if given, is a pod source: a `StoreFleet` of simulated store processes follows it
    (a Ready pod runs one; see `tests.pdstub.fleet`). Without it, stores appear only when
    something reports them (`put_store`, `heartbeat`, or the HTTP endpoints). `clock` returns
    unix seconds; it is PD's clock.

    The simulated stores move at every request and, with `background_ticks`, every 50 ms in a
    thread of their own (heartbeats on time whether anyone asks or not). By default the thread
    runs only on the real clock: a test that moves a fake clock by hand steps them itself.
    """

    def __init__(
        self,
        pods: PodSource | None = None,
        *,
        timing: Timing = FAITHFUL,
        headless_service: str = "tikv-peer",
        namespace: str = "default",
        pd_name: str = "pd-0",
        regions: int = 24,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
        background_ticks: bool | None = None,
    ) -> None:
        self.headless_service = headless_service
        self.namespace = namespace
        self.pd_name = pd_name
        self.regions = regions
        self._timing = timing
        self._clock = clock
        self._host = host
        self._port = port
        self._background_ticks = clock is time.time if background_ticks is None else background_ticks
        self._lock = threading.Lock()
        self._stores: dict[int, _Store] = {}
        self._fault = _Fault()
        self._served = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._collector: threading.Thread | None = None
        #: What /metrics shows: the latest metrics collection (None before the first one after
        #: bootstrap, when PD has no cluster to report on).
        self._collected: _Collected | None = None
        self.base_url = ""
        #: Called after every GET is answered, from the serving thread, with (path, arrived,
        #: left, newest heartbeat ns in PD at the time): `time.monotonic()` when the request
        #: line was read and when the answer's last byte was handed to the socket. For the
        #: benchmarks' step-by-step timing (bench/groundtruth.PdWatch); None costs nothing.
        self.on_answer: Callable[[str, float, float, int], None] | None = None
        #: Called after every metrics collection, from the collecting thread, with PD's clock
        #: then and the ``pd_cluster_status`` values it set (a copy): the stand-in's own record
        #: of when PD counted what, for tests that split time to alert. None costs nothing.
        self.on_collect: Callable[[float, dict[str, float]], None] | None = None
        # Stable per instance, like a real cluster's id and member id.
        self.cluster_id = 7_000_000_000_000_000_000 + id(self) % 1_000_000
        self.member_id = 12_000_000_000_000_000_000 + id(self) % 1_000_000
        from tests.pdstub.fleet import StoreFleet

        self.fleet: StoreFleet | None = None
        if pods is not None:
            self.fleet = StoreFleet(self, pods, headless_service=headless_service, namespace=namespace)

    # --- time -------------------------------------------------------------------------------

    @property
    def timing(self) -> Timing:
        return self._timing

    def set_timing(self, timing: Timing) -> None:
        """Change the intervals while serving (tests widen or shrink the heartbeat phase)."""
        self._timing = timing

    def now(self) -> float:
        """PD's clock, unix seconds."""
        return self._clock()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:<port>``)."""
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler)
        server.stand_in = self
        self._server = server
        self.base_url = f"http://{self._host}:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="pd-stand-in", daemon=True
        )
        self._thread.start()
        if self.fleet is not None and self._background_ticks:
            self._ticker = threading.Thread(target=self._tick_forever, name="pd-store-fleet", daemon=True)
            self._ticker.start()
        if self._background_ticks:
            self._collector = threading.Thread(target=self._collect_forever, name="pd-metrics", daemon=True)
            self._collector.start()
        return self.base_url

    def _collect_forever(self) -> None:
        """PD's metrics collection job: a ticker, the first collection one interval after start."""
        while not self._stopping.wait(self._timing.metrics_collection_interval):
            with contextlib.suppress(Exception):  # a failing pod source shows as 500s on requests
                self.collect_metrics()

    def _tick_forever(self) -> None:
        """Let the simulated stores heartbeat on time, requests or not."""
        while not self._stopping.wait(min(0.05, self._timing.heartbeat_interval / 20)):
            with contextlib.suppress(Exception):  # a failing pod source shows as 500s on requests
                self.step()

    def step(self) -> None:
        """Bring the simulated store processes up to date with the pods (no-op without them)."""
        if self.fleet is not None:
            self.fleet.step()

    def stop(self) -> None:
        """Stop serving. Requests held by a ``timeout`` fault are released at once."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.drop_connections()
        for thread in (self._thread, self._ticker, self._collector):
            if thread is not None:
                thread.join(timeout=5)
        self._thread = self._ticker = self._collector = None

    def __enter__(self) -> PdStandIn:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    # --- what the stores report (tikv-server's PutStore and StoreHeartbeat) -------------------

    def put_store(
        self,
        store_id: int,
        *,
        address: str,
        start_timestamp: int,
        status_address: str = "",
        version: str = VERSION,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """tikv-server's ``PutStore`` at start: the store's new `start_timestamp` shows at once;
        its last heartbeat stays the previous process's until the new one heartbeats."""
        if store_id <= 0:
            raise StoreError(f"store id must be positive, got {store_id}")
        if not address:
            raise StoreError("address is required")
        label_pairs = tuple(sorted((labels or {}).items()))
        with self._lock:
            for other in self._stores.values():
                if other.id != store_id and other.address == address:
                    raise StoreError(f"duplicated store address: {address} is store {other.id}")
            store = self._stores.get(store_id)
            if store is None:
                self._stores[store_id] = _Store(
                    store_id, address, status_address, version, start_timestamp, label_pairs
                )
                return
            store.address = address
            store.status_address = status_address
            store.version = version
            store.start_timestamp = start_timestamp
            store.labels = label_pairs

    def heartbeat(self, store_id: int) -> None:
        """A store heartbeat: stamped with PD's clock on receipt."""
        now_ns = int(self._clock() * 1_000_000_000)
        with self._lock:
            store = self._stores.get(store_id)
            if store is None:
                raise StoreError(f"store {store_id} not found")
            store.last_heartbeat_ns = max(now_ns, store.last_heartbeat_ns)

    def newest_heartbeat_ns(self) -> int:
        """The newest heartbeat of any store (PD's clock, ns); 0 before any."""
        with self._lock:
            return max((s.last_heartbeat_ns for s in self._stores.values()), default=0)

    @property
    def bootstrapped(self) -> bool:
        """Whether a TiKV has registered: before that PD answers ``ErrNotBootstrapped``."""
        with self._lock:
            return bool(self._stores)

    # --- fault injection and counters ---------------------------------------------------------

    def set_fault(
        self,
        kind: FaultKind,
        *,
        delay_seconds: float = 5.0,
        times: int | None = None,
        paths: set[str] | frozenset[str] | None = None,
    ) -> None:
        """Misbehave on the next requests.

        - ``error500``: HTTP 500 with a PD-style JSON error string.
        - ``timeout``: hold the request `delay_seconds` (past the client's timeout), then answer.
        - ``malformed``: HTTP 200 with the JSON cut in half (a correct Content-Length: the body
          itself is bad, not the transfer).
        - ``none``: behave again.

        `times` limits the fault to that many requests; `paths` to those paths. The stores'
        own reports (``/pdstub/...``) are never affected.
        """
        if kind not in ("none", "error500", "timeout", "malformed"):
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._fault = _Fault(
                kind=kind,
                delay_seconds=delay_seconds,
                remaining=times,
                paths=None if paths is None else frozenset(paths),
            )

    @property
    def requests_served(self) -> int:
        """PD API requests answered so far (faults and 404s included; store reports not)."""
        with self._lock:
            return self._served

    # --- PD's payloads ------------------------------------------------------------------------

    def state_name(self, store_id: int) -> str:
        """``Up``, ``Disconnected`` or ``Down``, judged from the last heartbeat's age alone."""
        with self._lock:
            return self._state(self._stores[store_id], self._clock())

    def _state(self, store: _Store, now: float) -> str:
        if store.last_heartbeat_ns <= 0:
            return "Down"  # PD: DownTime() since the zero time, past any max-store-down-time
        age = now - store.last_heartbeat_ns / 1e9
        if age > self._timing.max_store_down_time:
            return "Down"
        if age > self._timing.disconnected_after:
            return "Disconnected"
        return "Up"

    def stores_payload(self, states: frozenset[int] | None = None) -> dict[str, Any]:
        """``GET /pd/api/v1/stores[?state=N...]``: ``{"count": N, "stores": [...]}``.

        PD lists stores in no particular order. `states` filters on metapb's state (0 Up,
        1 Offline, 2 Tombstone); every store here is metapb-Up (Disconnected and Down are
        derived from heartbeats), so ``state=0`` lists them all, as PD does.
        """
        self.step()
        with self._lock:
            now = self._clock()
            self._balance(now)
            stores = sorted(self._stores.values(), key=lambda s: s.id)
            entries = [self._store_json(s, now) for s in stores if states is None or 0 in states]
        return {"count": len(entries), "stores": entries}

    def store_payload(self, store_id: int) -> dict[str, Any] | None:
        """``GET /pd/api/v1/store/{id}``; None if there is no such store."""
        self.step()
        with self._lock:
            now = self._clock()
            self._balance(now)
            store = self._stores.get(store_id)
            return None if store is None else self._store_json(store, now)

    def health_payload(self) -> list[dict[str, Any]]:
        """``GET /pd/api/v1/health``."""
        return [
            {
                "name": self.pd_name,
                "member_id": self.member_id,
                "client_urls": [self._pd_client_url()],
                "health": True,
            }
        ]

    def member_payload(self, *, full: bool = True) -> dict[str, Any]:
        """One member as ``/members`` shows it (`full`), or ``/leader`` (name, id and urls)."""
        member: dict[str, Any] = {
            "name": self.pd_name,
            "member_id": self.member_id,
            "peer_urls": [f"http://{self._pd_host()}:{PD_PEER_PORT}"],
            "client_urls": [self._pd_client_url()],
        }
        if full:
            member |= {"deploy_path": "/", "binary_version": f"v{VERSION}", "git_hash": GIT_HASH}
        return member

    def members_payload(self) -> dict[str, Any]:
        """``GET /pd/api/v1/members``."""
        member = self.member_payload()
        return {
            "header": {"cluster_id": self.cluster_id},
            "members": [member],
            "leader": member,
            "etcd_leader": member,
        }

    def schedule_config_payload(self) -> dict[str, Any]:
        """``GET /pd/api/v1/config/schedule``: real PD's defaults (captured), with this
        stand-in's ``max-store-down-time`` and a store limit per store."""
        body: dict[str, Any] = copy.deepcopy(_schedule_template())
        body["max-store-down-time"] = go_duration(int(self._timing.max_store_down_time * 1e9))
        with self._lock:
            ids = sorted(self._stores)
        body["store-limit"] = {str(i): {"add-peer": 15, "remove-peer": 15} for i in ids}
        return body

    # --- PD's /metrics -----------------------------------------------------------------------

    def collect_metrics(self) -> None:
        """One run of PD's metrics collection job: judge every store now and keep the counts
        that /metrics shows until the next run (by itself every
        `Timing.metrics_collection_interval` on the real clock; a test with a fake clock calls it).

        Followed: tikv/pd ``pkg/statistics/store_collection.go`` (v7-v8: ``Observe`` then
        ``Collect``, one ``pd_cluster_status`` series per ``type``; the ``store`` and ``engine``
        labels came only after v8.5, tikv/pd#9898). A Serving store counts as down when it is
        ``Down`` (its last heartbeat older than max-store-down-time), else as disconnected
        when ``Disconnected``, else as up: the same judgement as ``state_name`` in ``/stores``.
        No store here is Unhealthy, Slow, Preparing, Offline or Tombstone, and none has low
        space: those counts are 0, as on such a real cluster."""
        self.step()
        with self._lock:
            if not self._stores:
                return  # not bootstrapped: PD's cluster (and its collection job) is not running
            now = self._clock()
            self._balance(now)
            stores = sorted(self._stores.values(), key=lambda s: s.id)
            states = [self._state(s, now) for s in stores]
            cluster = dict.fromkeys(_STORE_STATUSES, 0.0)
            cluster["store_up_count"] = float(states.count("Up"))
            cluster["store_disconnected_count"] = float(states.count("Disconnected"))
            cluster["store_down_count"] = float(states.count("Down"))
            cluster["store_serving_count"] = float(len(stores))  # node_state Serving, all of them
            cluster["region_count"] = float(sum(s.region_count for s in stores))
            cluster["leader_count"] = float(sum(s.leader_count for s in stores))
            cluster["witness_count"] = 0.0
            cluster["storage_size"] = float(USED_BYTES * len(stores))
            cluster["storage_capacity"] = float(CAPACITY_BYTES * len(stores))
            per_store = [
                (
                    s.address,
                    str(s.id),
                    {
                        "region_count": float(s.region_count),
                        "leader_count": float(s.leader_count),
                        "store_available": float(AVAILABLE_BYTES),
                        "store_used": float(USED_BYTES),
                        "store_capacity": float(CAPACITY_BYTES),
                    },
                )
                for s in stores
            ]
            self._collected = _Collected(now, cluster, per_store)
        if self.on_collect is not None:
            self.on_collect(now, dict(cluster))

    def metrics_text(self) -> str:
        """``GET /metrics``: Prometheus text format 0.0.4, PD's metric names, types and labels.

        Real PD exports far more (Go runtime, gRPC, TSO, schedulers, regions); only what this
        stand-in models is here. ``pd_regions_status`` is not: no regions are modelled (ADR 0003)."""
        lines: list[str] = []

        def family(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            for labels, value in samples:
                text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")

        with self._lock:
            collected = self._collected
        # PD's embedded etcd (etcd's server metrics): this stand-in is one member, its own leader.
        family(
            "etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", [({}, 1)]
        )
        family(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            [({}, 1)],
        )
        if collected is not None:
            # pkg/statistics/metrics.go: clusterStatusGauge and storeStatusGauge.
            family(
                "pd_cluster_status",
                "Status of the cluster.",
                [({"type": t}, v) for t, v in sorted(collected.cluster.items())],
            )
            family(
                "pd_scheduler_store_status",
                "Store status for schedule",
                [
                    ({"address": address, "store": store, "type": t}, v)
                    for address, store, values in collected.stores
                    for t, v in sorted(values.items())
                ],
            )
        return "\n".join(lines) + "\n"

    def _pd_host(self) -> str:
        return f"{self.pd_name}.pd-peer.{self.namespace}.svc"

    def _pd_client_url(self) -> str:
        return f"http://{self._pd_host()}:{PD_CLIENT_PORT}"

    def _balance(self, now: float) -> None:
        """Plausible counts: regions spread evenly, 3 replicas, leaders only on Up stores.

        A store that is not Up keeps the counts it last reported, as PD does. Called with the
        lock held.
        """
        up = [s for s in sorted(self._stores.values(), key=lambda s: s.id) if self._state(s, now) == "Up"]
        if not up:
            return
        replicas_each = self.regions * min(REPLICAS, len(up)) // len(up)
        leaders, extra = divmod(self.regions, len(up))
        for i, store in enumerate(up):
            store.region_count = replicas_each
            store.leader_count = leaders + (1 if i < extra else 0)

    def _store_json(self, s: _Store, now: float) -> dict[str, Any]:
        # Go's omitempty: zero values (start_timestamp, last_heartbeat, labels) are left out.
        meta: dict[str, Any] = {"id": s.id, "address": s.address}
        if s.labels:
            meta["labels"] = [{"key": k, "value": v} for k, v in s.labels]
        meta["version"] = s.version
        if s.status_address:
            meta["status_address"] = s.status_address
        meta["git_hash"] = GIT_HASH
        if s.start_timestamp:
            meta["start_timestamp"] = s.start_timestamp
        meta["deploy_path"] = "/"
        if s.last_heartbeat_ns:
            meta["last_heartbeat"] = s.last_heartbeat_ns
        meta["node_state"] = 1  # metapb.NodeState.Serving
        # "state" (metapb.StoreState) is omitted: Up is 0, and Disconnected and Down are Up there.
        meta["state_name"] = self._state(s, now)
        status: dict[str, Any] = {
            "capacity": "10GiB",
            "available": "7.5GiB",
            "used_size": "1.2GiB",
            "leader_count": s.leader_count,
            "leader_weight": 1,
            "leader_score": s.leader_count,
            "leader_size": s.leader_count,
            "region_count": s.region_count,
            "region_weight": 1,
            "region_score": s.region_count,
            "region_size": s.region_count,
            # pending_peer_count is omitempty in PD: absent when 0.
            "start_ts": rfc3339(s.start_timestamp * 1_000_000_000),
            "last_heartbeat_ts": rfc3339(s.last_heartbeat_ns),
        }
        uptime_ns = s.last_heartbeat_ns - s.start_timestamp * 1_000_000_000  # PD: heartbeat - start
        if uptime_ns > 0:
            status["uptime"] = go_duration(uptime_ns)
        return {"store": meta, "status": status}

    # --- serving ------------------------------------------------------------------------------

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            self._served += 1
            fault = self._fault
            if fault.kind == "none" or (fault.paths is not None and path not in fault.paths):
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._fault = _Fault()
            return fault

    def _route(self, path: str, query: Mapping[str, list[str]]) -> _Answer:
        if path == "/pd/api/v1/health":
            return _Answer(200, self.health_payload())
        if path == "/pd/api/v1/members":
            return _Answer(200, self.members_payload())
        if path == "/pd/api/v1/leader":
            return _Answer(200, self.member_payload(full=False))
        if path == "/pd/api/v1/config/schedule":
            return _Answer(200, self.schedule_config_payload())
        if path == "/metrics":
            return _Answer(200, raw=self.metrics_text().encode(), content_type=METRICS_CONTENT_TYPE)
        cluster_path = (
            path == "/pd/api/v1/stores"
            or _STORE_PATH.match(path) is not None
            or path.removeprefix("/pd/api/v1/regions/check/") in _REGION_CHECKS
        )
        if not cluster_path:
            return _Answer(404, raw=b"404 page not found\n", content_type="text/plain; charset=utf-8")
        self.step()
        if not self.bootstrapped:
            return _Answer(500, NOT_BOOTSTRAPPED)
        if path == "/pd/api/v1/stores":
            try:
                states = frozenset(int(v) for v in query["state"]) if "state" in query else None
            except ValueError:
                return _Answer(400, "strconv.ParseInt: parsing state: invalid syntax")
            return _Answer(200, self.stores_payload(states))
        match = _STORE_PATH.match(path)
        if match is not None:
            entry = self.store_payload(int(match.group(1)))
            if entry is None:
                return _Answer(404, f"[PD:core:ErrStoreNotFound]store id {match.group(1)} not found")
            return _Answer(200, entry)
        # No regions are modelled: no pending, down or missing peers, ever (ADR 0003).
        return _Answer(200, {"count": 0, "regions": []}, content_type="application/octet-stream")

    def _report(self, path: str, body: Any) -> _Answer:
        """The stand-in-only store reports (not PD's API)."""
        try:
            if not isinstance(body, dict):
                raise StoreError("expected a JSON object")
            store_id = body.get("id")
            if isinstance(store_id, bool) or not isinstance(store_id, int):
                raise StoreError("id must be an integer")
            if path == PUT_STORE_PATH:
                start = body.get("start_timestamp")
                if isinstance(start, bool) or not isinstance(start, int):
                    raise StoreError("start_timestamp must be an integer (unix seconds)")
                labels = body.get("labels") or {}
                if not isinstance(labels, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
                ):
                    raise StoreError("labels must map strings to strings")
                self.put_store(
                    store_id,
                    address=str(body.get("address") or ""),
                    status_address=str(body.get("status_address") or ""),
                    version=str(body.get("version") or VERSION),
                    start_timestamp=start,
                    labels=labels,
                )
            elif path == HEARTBEAT_PATH:
                self.heartbeat(store_id)
            else:
                return _Answer(404, raw=b"404 page not found\n", content_type="text/plain; charset=utf-8")
        except StoreError as exc:
            return _Answer(404 if "not found" in str(exc) else 400, f"[PD:stand-in:ErrStore]{exc}")
        return _Answer(200, {"ok": True, "state_name": self.state_name(store_id)})


_schedule_cache: dict[str, Any] = {}


def _schedule_template() -> dict[str, Any]:
    if not _schedule_cache:
        _schedule_cache.update(json.loads(_SCHEDULE_TEMPLATE.read_text()))
    return _schedule_cache


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    stand_in: PdStandIn

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def drop_connections(self) -> None:
        """Cut kept-alive connections: once stopped, a pooled connection must not be served."""
        with self.connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.connections.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout fault, closed keep-alive) is not a stand-in failure.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    # As PD (Go's net/http) answers: TCP_NODELAY on every connection (Go sets it on all TCP
    # sockets), and an answer in one send (Go's buffered writer flushes a small answer's headers
    # and body together; here `wbufsize` and the flush in `_send`). Before, the body waited in
    # the kernel for the ACK of the headers (Nagle), which a kept-alive client delays by up to
    # 40 ms: looks asked in quick succession took ~46 ms instead of ~2 (bench.standin_latency,
    # 10 ms apart: p50 45.8 ms before, 1.7 ms after), which real PD never costs.
    disable_nagle_algorithm = True
    wbufsize = 1 << 16

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        arrived = time.monotonic()
        self._do_get()
        stand_in = self.server.stand_in
        if stand_in.on_answer is not None:
            stand_in.on_answer(self.path, arrived, time.monotonic(), stand_in.newest_heartbeat_ns())

    def _do_get(self) -> None:
        stand_in = self.server.stand_in
        if stand_in._stopping.is_set():
            self.close_connection = True
            return
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        fault = stand_in._take_fault(path)
        if fault is not None and fault.kind == "error500":
            self._send(500, json.dumps("[PD:stand-in:ErrInjected]injected fault").encode())
            return
        if fault is not None and fault.kind == "timeout" and stand_in._stopping.wait(fault.delay_seconds):
            self.close_connection = True  # stopped while holding the request: no answer
            return
        try:
            answer = stand_in._route(path, urllib.parse.parse_qs(parts.query))
        except Exception as exc:  # the pod source failed: PD answers 500 like on an internal error
            self._send(500, json.dumps(f"[PD:stand-in:ErrPodSource]{exc}").encode())
            return
        self._answer(answer, malformed=fault is not None and fault.kind == "malformed")

    def do_POST(self) -> None:
        stand_in = self.server.stand_in
        if stand_in._stopping.is_set():
            self.close_connection = True
            return
        path = urllib.parse.urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._answer(_Answer(400, "[PD:stand-in:ErrStore]body is not JSON"))
            return
        self._answer(stand_in._report(path, body))

    def _answer(self, answer: _Answer, *, malformed: bool = False) -> None:
        body = answer.raw if answer.raw is not None else json.dumps(answer.payload, indent=4).encode()
        if malformed:
            body = body[: len(body) // 2]
        self._send(answer.status, body, answer.content_type)

    def _send(self, status: int, body: bytes, content_type: str = "application/json; charset=UTF-8") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            # Buffered (wbufsize): headers and body leave in one send, now (not when the
            # handler returns: on_answer's "left" stamp follows this).
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- as a process: python -m tests.pdstub.server ------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT. Prints the base URL on the first line of stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.pdstub.server",
        description="PD stand-in (tests only; see docs/adr/0003-pd-stand-in.md).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2379, help="0: an ephemeral port (default 2379)")
    parser.add_argument("--mode", choices=("faithful", "fast"), default="faithful")
    parser.add_argument(
        "--scale", type=float, default=0.1, help="fast mode: factor on every interval (default 0.1)"
    )
    parser.add_argument(
        "--max-store-down-time",
        type=float,
        help="seconds, as configured in a real PD (default 1800); fast mode scales it too",
    )
    parser.add_argument("--namespace", default="default", help="namespace in PD's own member URLs")
    parser.add_argument("--kube-namespace", help="simulate a store process per Ready pod of this namespace")
    parser.add_argument("--kube-selector", default="app=tikv", help="with --kube-namespace: the TiKV pods")
    parser.add_argument(
        "--headless-service", default="tikv-peer", help="with --kube-namespace: store addresses"
    )
    parser.add_argument("--kubeconfig", help="with --kube-namespace (default: $KUBECONFIG)")
    args = parser.parse_args(argv)
    down = args.max_store_down_time
    timing = (
        Timing.faithful(max_store_down_time=down)
        if args.mode == "faithful"
        else Timing.fast(args.scale, max_store_down_time=down)
    )
    source: Any = None
    if args.kube_namespace:
        from kubernetes import config as k8s_config

        from tests.pdstub.kube_source import KubePodSource

        api = k8s_config.new_client_from_config(config_file=args.kubeconfig)
        source = KubePodSource(api, args.kube_namespace, args.kube_selector).start()
        if not source.wait_synced(30):
            print(f"could not list pods in {args.kube_namespace}", file=sys.stderr)
            return 1
    stand_in = PdStandIn(
        source,
        timing=timing,
        headless_service=args.headless_service,
        namespace=args.kube_namespace or args.namespace,
        host=args.host,
        port=args.port,
    )
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    print(stand_in.start(), flush=True)
    try:
        stopped.wait()
    finally:
        stand_in.stop()
        if source is not None:
            source.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
