"""The PD stand-in: PD's HTTP API shapes, derived from a list of TiKV pods.

Real PD cannot run here (no images, no pd-server package); see docs/adr/0003-pd-stand-in.md for
what this is faithful to and what it does not simulate.

The stores are derived lazily, on every request, from the pod source: a Ready pod is a store Up
that heartbeats now; a pod not Ready, being deleted or gone is a store Disconnected whose last
heartbeat stays where it was. A new incarnation of a pod (new uid, or Ready again after not being
Ready) is a tikv-server restart: its store keeps its id and gets a new ``start_timestamp``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
import types
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
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


class PodRecord(TypedDict):
    """One TiKV pod as a pod source reports it."""

    name: str
    uid: str
    ready: bool
    ready_since: float | None  # unix seconds the Ready condition last became True


PodSource = Callable[[], list[PodRecord]]


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
    pod: str
    incarnation: tuple[str, float | None]  # (uid, ready_since) of the tikv-server behind it
    start_timestamp: int  # unix seconds
    last_heartbeat_ns: int
    leader_count: int = 0
    region_count: int = 0
    up: bool = True


@dataclass
class _Fault:
    kind: FaultKind = "none"
    delay_seconds: float = 5.0
    remaining: int | None = None  # requests left to affect; None = until cleared
    paths: frozenset[str] | None = None  # None = every path


class PdStandIn:
    """A PD HTTP API on 127.0.0.1 (ephemeral port), in a daemon thread.

    `pods` is called on every request; it must be thread-safe. `clock` returns unix seconds.
    """

    def __init__(
        self,
        pods: PodSource,
        *,
        headless_service: str = "tikv-peer",
        namespace: str = "default",
        pd_name: str = "pd-0",
        regions: int = 24,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pods = pods
        self.headless_service = headless_service
        self.namespace = namespace
        self.pd_name = pd_name
        self.regions = regions
        self._clock = clock
        self._lock = threading.Lock()
        self._stores: dict[str, _Store] = {}  # by pod name
        self._next_id = 1
        self._fault = _Fault()
        self._served = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        #: Seconds between a replaced pod turning Ready and its store reporting Up with the
        #: new start timestamp (0: at once). Settable while serving.
        self.restart_delay_seconds = 0.0
        # Stable per instance, like a real cluster's id and member id.
        self.cluster_id = 7_000_000_000_000_000_000 + id(self) % 1_000_000
        self.member_id = 12_000_000_000_000_000_000 + id(self) % 1_000_000

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:<port>``)."""
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.stand_in = self
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="pd-stand-in", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving. Requests held by a ``timeout`` fault are released at once."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

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

        `times` limits the fault to that many requests; `paths` to those paths.
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
        """Requests answered so far (faults and 404s included)."""
        with self._lock:
            return self._served

    # --- PD's payloads ------------------------------------------------------------------------

    def stores_payload(self) -> dict[str, Any]:
        """``GET /pd/api/v1/stores``: ``{"count": N, "stores": [{"store": {...}, "status": {...}}]}``."""
        with self._lock:
            self._refresh()
            stores = sorted(self._stores.values(), key=lambda s: s.id)
            entries = [self._store_json(s) for s in stores]
        return {"count": len(entries), "stores": entries}

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

    def member_payload(self) -> dict[str, Any]:
        """One member as ``/members`` and ``/leader`` show it."""
        return {
            "name": self.pd_name,
            "member_id": self.member_id,
            "peer_urls": [f"http://{self._pd_host()}:{PD_PEER_PORT}"],
            "client_urls": [self._pd_client_url()],
            "deploy_path": "/",
            "binary_version": f"v{VERSION}",
            "git_hash": GIT_HASH,
        }

    def members_payload(self) -> dict[str, Any]:
        """``GET /pd/api/v1/members``."""
        member = self.member_payload()
        return {
            "header": {"cluster_id": self.cluster_id},
            "members": [member],
            "leader": member,
            "etcd_leader": member,
        }

    def _pd_host(self) -> str:
        return f"{self.pd_name}.pd-peer.{self.namespace}.svc"

    def _pd_client_url(self) -> str:
        return f"http://{self._pd_host()}:{PD_CLIENT_PORT}"

    def _refresh(self) -> None:
        """Bring the stores up to date with the pods. Called with the lock held."""
        now = self._clock()
        now_ns = int(now * 1_000_000_000)
        pods = {p["name"]: p for p in self._pods()}
        for name, pod in sorted(pods.items()):
            store = self._stores.get(name)
            if not pod.get("ready"):
                if store is not None:
                    store.up = False
                continue
            ready_since = pod.get("ready_since")
            incarnation = (pod["uid"], ready_since)
            started = int(ready_since if ready_since is not None else now)
            if store is None:
                # A store exists once its tikv-server has started and registered with PD.
                self._stores[name] = _Store(self._allocate_id(), name, incarnation, started, now_ns)
                continue
            if (
                store.incarnation != incarnation
                and ready_since is not None
                and now < ready_since + self.restart_delay_seconds
            ):
                # tikv-server is listening (the pod is Ready) but has not heartbeated to PD
                # yet: real TiKV takes seconds to open its engines. Tests widen this window.
                store.up = False
                continue
            if store.incarnation != incarnation or not store.up:
                # A new tikv-server process. Real TiKV takes seconds to start, so its start second
                # always moves; simulated pods can be back within the same second: force it on.
                store.start_timestamp = max(started, store.start_timestamp + 1)
                store.incarnation = incarnation
            store.up = True
            store.last_heartbeat_ns = max(now_ns, store.last_heartbeat_ns)
        for name, store in self._stores.items():
            if name not in pods:
                store.up = False
        self._balance()

    def _allocate_id(self) -> int:
        # PD's allocator hands 1 to the first store, then 2 and 3 to the first region and its peer.
        allocated = self._next_id
        self._next_id = 4 if allocated == 1 else allocated + 1
        return allocated

    def _balance(self) -> None:
        """Plausible counts: regions spread evenly, 3 replicas, leaders only on Up stores.

        A store that is not Up keeps the counts it last reported, as PD does.
        """
        up = sorted((s for s in self._stores.values() if s.up), key=lambda s: s.id)
        if not up:
            return
        replicas_each = self.regions * min(REPLICAS, len(up)) // len(up)
        leaders, extra = divmod(self.regions, len(up))
        for i, store in enumerate(up):
            store.region_count = replicas_each
            store.leader_count = leaders + (1 if i < extra else 0)

    def _store_json(self, s: _Store) -> dict[str, Any]:
        host = f"{s.pod}.{self.headless_service}.{self.namespace}.svc"
        meta: dict[str, Any] = {
            "id": s.id,
            "address": f"{host}:{TIKV_PORT}",
            # "state" (metapb.StoreState) is omitted: Up is 0 and Disconnected is still Up there.
            "version": VERSION,
            "peer_address": f"{host}:{TIKV_PORT}",
            "status_address": f"{host}:{TIKV_STATUS_PORT}",
            "git_hash": GIT_HASH,
            "start_timestamp": s.start_timestamp,
            "deploy_path": "/",
            "last_heartbeat": s.last_heartbeat_ns,
            "node_state": 1,  # metapb.NodeState.Serving
            "state_name": "Up" if s.up else "Disconnected",
        }
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
            "slow_score": 1,
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

    def _route(self, path: str) -> tuple[int, Any]:
        if path == "/pd/api/v1/stores":
            return 200, self.stores_payload()
        if path == "/pd/api/v1/health":
            return 200, self.health_payload()
        if path == "/pd/api/v1/members":
            return 200, self.members_payload()
        if path == "/pd/api/v1/leader":
            return 200, self.member_payload()
        return 404, None


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
        stand_in = self.server.stand_in
        if stand_in._stopping.is_set():
            self.close_connection = True
            return
        path = urllib.parse.urlsplit(self.path).path
        fault = stand_in._take_fault(path)
        if fault is not None and fault.kind == "error500":
            self._send(500, json.dumps("[PD:stand-in:ErrInjected]injected fault").encode())
            return
        if fault is not None and fault.kind == "timeout" and stand_in._stopping.wait(fault.delay_seconds):
            self.close_connection = True  # stopped while holding the request: no answer
            return
        try:
            status, payload = stand_in._route(path)
        except Exception as exc:  # the pod source failed: PD answers 500 like on an internal error
            self._send(500, json.dumps(f"[PD:stand-in:ErrPodSource]{exc}").encode())
            return
        if status == 404:
            self._send(404, b"404 page not found\n", content_type="text/plain; charset=utf-8")
            return
        body = json.dumps(payload, indent=4).encode()
        if fault is not None and fault.kind == "malformed":
            body = body[: len(body) // 2]
        self._send(status, body)

    def _send(self, status: int, body: bytes, content_type: str = "application/json; charset=UTF-8") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass
