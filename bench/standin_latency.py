"""What a look at the PD stand-in costs, from the operator's side of the socket: N GETs of
`/pd/api/v1/stores` on one kept-alive httpx connection (as the operator's PD client asks),
a pause between them like the engine's looks, latency percentiles.

Why: the store-Up milestone is PD's heartbeat placed on the operator's clock through a look's
round trip (docs/performance.md, "PD's timing error, step by step"). A stand-in that answers
slower than real PD makes aftershock look worse than it is. `--as-before` serves with the
stand-in's answer path as it was until 2026-12-07 (Nagle's algorithm on, headers and body in
two writes), to show what that cost.

Usage: .venv/bin/python -m bench.standin_latency [--gets 300] [--pause 0.01] [--as-before]
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import time

import httpx
from tests.pdstub import PdStandIn, PodRecord
from tests.pdstub import server as pdserver


def _two_writes(
    self: pdserver._Handler, status: int, body: bytes, content_type: str = "application/json"
) -> None:
    # The answer path before 2026-12-07: end_headers() then the body, two sends.
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)


def _three_stores() -> list[PodRecord]:
    """Three Ready TiKV pods, each with a simulated store process (PD's usual answer shape)."""
    since = time.time() - 100
    return [{"name": f"tikv-{i}", "uid": f"u{i}", "ready": True, "ready_since": since} for i in range(3)]


async def measure(gets: int, pause: float) -> list[float]:
    with PdStandIn(_three_stores) as pd:
        async with httpx.AsyncClient() as client:
            latencies = []
            for _ in range(gets):
                start = time.perf_counter()
                response = await client.get(pd.base_url + "/pd/api/v1/stores")
                response.raise_for_status()
                latencies.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(pause)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.standin_latency", description=__doc__)
    parser.add_argument("--gets", type=int, default=300)
    parser.add_argument("--pause", type=float, default=0.01, help="seconds between GETs")
    parser.add_argument("--as-before", action="store_true", help="Nagle on, two writes per answer")
    args = parser.parse_args()
    if args.as_before:
        pdserver._Handler.disable_nagle_algorithm = False
        pdserver._Handler._send = _two_writes  # type: ignore[method-assign]
    assert issubclass(pdserver._Handler, http.server.BaseHTTPRequestHandler)
    lat = sorted(asyncio.run(measure(args.gets, args.pause)))

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    print(
        f"{'as before' if args.as_before else 'now'}: {len(lat)} GETs, pause {args.pause * 1000:g} ms: "
        f"p50 {pct(0.5):.2f} ms, p95 {pct(0.95):.2f} ms, p99 {pct(0.99):.2f} ms, max {lat[-1]:.2f} ms, "
        f">= 30 ms: {sum(x >= 30 for x in lat)}"
    )


if __name__ == "__main__":
    main()
