#!/usr/bin/env python3
"""A stand-in tikv-server for the PD stand-in: reports a store the way tikv-server does.

Stdlib only and a single file, so that it can run as PID 1 in a pod on a real kubelet (with
hostNetwork, the PD stand-in on 127.0.0.1). It imports nothing from the repository.

At start it registers its store (PD's ``PutStore``: ``start_timestamp`` = its own start, unix
seconds), then sends a store heartbeat every interval, the FIRST one a full interval after the
start, as tikv-server does (it registers before its heartbeat tick starts). PD being down is
tolerated: every report is retried at the next tick. SIGTERM or SIGINT: exit 0 at once.

With ``--start-delay`` it waits that long before it registers, standing for tikv-server's own
start (opening its RocksDB engines, replaying the raft log: seconds on a real store). With
``--metrics-port`` it serves ``GET /metrics`` on 127.0.0.1 from the moment it registers (as
tikv-server's status server): real TiKV metric names, ``tikv_store_size_bytes{type}`` (the sizes
the PD stand-in reports for it) and ``process_start_time_seconds``; so that a scrape of it says
whether this store's process is there (``up``) and when it started.

The reports go to the stand-in's own endpoints, ``POST /pdstub/v1/stores/put`` and
``POST /pdstub/v1/stores/heartbeat``: not PD's API (real TiKV speaks gRPC to PD).

    python3 store.py --pd http://127.0.0.1:2379 --store-id 1 --address tikv-0.tikv-peer.tikv.svc:20160

Every option also comes from the environment (the option wins): ``PDSTUB_PD_URL``,
``PDSTUB_STORE_ID``, ``PDSTUB_ADDRESS``, ``PDSTUB_STATUS_ADDRESS``, ``PDSTUB_HEARTBEAT_INTERVAL``,
``PDSTUB_VERSION``, ``PDSTUB_LABELS`` (``k=v,k=v``), ``PDSTUB_START_DELAY``,
``PDSTUB_METRICS_PORT``; ``PDSTUB_METRICS_PORT_BASE`` gives pod ordinal n the port base + n
(pods of one StatefulSet on the host's network each need a port of their own). Without a store
id, it is derived from ``POD_NAME``'s ordinal the way a fresh PD allocates ids (``tikv-0`` -> 1,
``tikv-1`` -> 4, ``tikv-2`` -> 5, ...); without an address,
``$POD_NAME.$PDSTUB_HEADLESS_SERVICE.$POD_NAMESPACE.svc:20160``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

PUT_STORE_PATH = "/pdstub/v1/stores/put"
HEARTBEAT_PATH = "/pdstub/v1/stores/heartbeat"
DEFAULT_INTERVAL = 10.0  # TiKV's raftstore.pd-store-heartbeat-tick-interval
VERSION = "8.5.3"
GIB = 1 << 30
#: What the PD stand-in shows for every store (tests/pdstub/server.py: CAPACITY_BYTES, ...).
STORE_SIZES = {"capacity": 10 * GIB, "available": int(7.5 * GIB), "used": int(1.2 * GIB)}


def metrics_text(started: float) -> str:
    """tikv-server's /metrics, the part this stand-in models: ``tikv_store_size_bytes`` (TiKV's
    ``STORE_SIZE_GAUGE_VEC``, label ``type``) and the process collector's start time."""
    lines = [
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {int(started)}",
        "# HELP tikv_store_size_bytes Size of storage.",
        "# TYPE tikv_store_size_bytes gauge",
        *(f'tikv_store_size_bytes{{type="{t}"}} {v}' for t, v in STORE_SIZES.items()),
    ]
    return "\n".join(lines) + "\n"


def serve_metrics(port: int, started: float) -> http.server.ThreadingHTTPServer:
    """``GET /metrics`` on 127.0.0.1:`port`, in a daemon thread."""
    body = metrics_text(started).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def store_id_for_pod(pod_name: str) -> int:
    """``tikv-0`` -> 1, ``tikv-1`` -> 4, ``tikv-2`` -> 5: the ids a fresh PD hands out in order."""
    match = re.search(r"-(\d+)$", pod_name)
    if match is None:
        raise ValueError(f"no ordinal at the end of pod name {pod_name!r}")
    ordinal = int(match.group(1))
    return 1 if ordinal == 0 else ordinal + 3


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"label {item!r} is not key=value")
        labels[key] = value
    return labels


def post(pd_url: str, path: str, body: dict[str, object], timeout: float) -> bool:
    """One report; False (logged) if PD did not take it."""
    request = urllib.request.Request(
        pd_url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return True
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"store {body.get('id')}: {path} failed: {exc}", file=sys.stderr, flush=True)
        return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pd", default=env.get("PDSTUB_PD_URL", "http://127.0.0.1:2379"))
    parser.add_argument("--store-id", type=int, default=env.get("PDSTUB_STORE_ID"))
    parser.add_argument("--address", default=env.get("PDSTUB_ADDRESS"))
    parser.add_argument("--status-address", default=env.get("PDSTUB_STATUS_ADDRESS"))
    parser.add_argument("--version", default=env.get("PDSTUB_VERSION", VERSION))
    parser.add_argument("--labels", default=env.get("PDSTUB_LABELS", ""), help="k=v,k=v")
    parser.add_argument(
        "--start-delay",
        type=float,
        default=float(env.get("PDSTUB_START_DELAY", 0)),
        help="seconds before the store registers (tikv-server's own start)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env["PDSTUB_METRICS_PORT"]) if env.get("PDSTUB_METRICS_PORT") else None,
        help="serve /metrics on 127.0.0.1:PORT once registered",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=float(env.get("PDSTUB_HEARTBEAT_INTERVAL", DEFAULT_INTERVAL)),
        help="seconds (default 10, as TiKV)",
    )
    args = parser.parse_args(argv)
    pod = env.get("POD_NAME", "")
    if args.store_id is None:
        if not pod:
            parser.error("--store-id (or PDSTUB_STORE_ID, or POD_NAME with an ordinal) is required")
        try:
            args.store_id = store_id_for_pod(pod)
        except ValueError as exc:
            parser.error(str(exc))
    if args.address is None:
        if not pod:
            parser.error("--address (or PDSTUB_ADDRESS, or POD_NAME) is required")
        service = env.get("PDSTUB_HEADLESS_SERVICE", "tikv-peer")
        namespace = env.get("POD_NAMESPACE", "default")
        args.address = f"{pod}.{service}.{namespace}.svc:20160"
    if args.status_address is None:
        args.status_address = args.address.rsplit(":", 1)[0] + ":20180"
    if args.heartbeat_interval <= 0:
        parser.error("--heartbeat-interval must be positive")
    if args.start_delay < 0:
        parser.error("--start-delay must not be negative")
    if args.metrics_port is None and env.get("PDSTUB_METRICS_PORT_BASE"):
        match = re.search(r"-(\d+)$", pod)
        if match is None:
            parser.error("PDSTUB_METRICS_PORT_BASE needs POD_NAME with an ordinal")
        args.metrics_port = int(env["PDSTUB_METRICS_PORT_BASE"]) + int(match.group(1))
    try:
        args.labels = parse_labels(args.labels)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def run(args: argparse.Namespace, stop: threading.Event) -> None:
    """PutStore now, then a heartbeat every interval (the first an interval from now), until
    `stop`. A PutStore PD did not take is retried before each heartbeat would be due."""
    interval: float = args.heartbeat_interval
    timeout = max(0.5, min(interval / 2, 3.0))
    started = time.time()
    if stop.wait(args.start_delay):
        return
    put = {
        "id": args.store_id,
        "address": args.address,
        "status_address": args.status_address,
        "version": args.version,
        "start_timestamp": int(started),
        "labels": args.labels,
    }
    registered = post(args.pd, PUT_STORE_PATH, put, timeout)
    if args.metrics_port is not None:
        serve_metrics(args.metrics_port, started)
    next_beat = time.monotonic() + interval
    while not stop.is_set():
        if not registered:
            # PD was down: try again soon, but keep the heartbeat schedule.
            if stop.wait(min(1.0, interval)):
                return
            registered = post(args.pd, PUT_STORE_PATH, put, timeout)
            continue
        if stop.wait(max(0.0, next_beat - time.monotonic())):
            return
        if not post(args.pd, HEARTBEAT_PATH, {"id": args.store_id}, timeout):
            # A PD that restarted has forgotten the store: register again (as TiKV does).
            registered = post(args.pd, PUT_STORE_PATH, put, timeout)
        next_beat += interval
        while next_beat <= time.monotonic():
            next_beat += interval


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # PID 1 in a container gets no default handler
    print(
        f"store {args.store_id} ({args.address}) reporting to {args.pd} every {args.heartbeat_interval:g}s",
        flush=True,
    )
    run(args, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
