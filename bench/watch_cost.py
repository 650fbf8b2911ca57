"""What one open pod watch costs the operator's process in memory (RSS), through
`aftershock.kube` as the engine opens them: N watches of an empty selection, RSS before and after.

Why: at 100 Campaigns each holds its own pod watch, and kopf holds one Campaign watch per
namespace when given a namespace glob; the per-watch cost says what sharing them would save
(docs/performance.md, "What the engine would need").

Usage: .venv/bin/python -m bench.watch_cost [--watches 100] [--kubeconfig PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
from pathlib import Path

from aftershock.kube import Kube


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    return int(match.group(1)) / 1024 if match else float("nan")


async def measure(watches: int, kubeconfig: str | None, settle: float) -> tuple[float, float]:
    kube = await Kube.connect(kubeconfig)
    try:
        _, rv = await kube.list_pods("default", "aftershock.dev/watch-cost=none")
        gc.collect()
        before = rss_mib()

        async def one() -> None:
            async for _ in kube.watch_pods(
                "default", "aftershock.dev/watch-cost=none", rv, timeout_seconds=60
            ):
                pass

        tasks = [asyncio.create_task(one()) for _ in range(watches)]
        await asyncio.sleep(settle)  # every watch established (bounded: the tasks end at 60 s)
        gc.collect()
        after = rss_mib()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return before, after
    finally:
        await kube.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--watches", type=int, default=100)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--settle", type=float, default=8.0)
    args = parser.parse_args()
    before, after = asyncio.run(measure(args.watches, args.kubeconfig, args.settle))
    per = (after - before) / max(args.watches, 1) * 1024
    print("| watches | RSS before (MiB) | RSS after (MiB) | per watch (KiB) |\n|---|---|---|---|")
    print(f"| {args.watches} | {before:.1f} | {after:.1f} | {per:.0f} |")


if __name__ == "__main__":
    main()
