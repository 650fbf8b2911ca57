"""What decoding one pod event costs the shared pod watch (pure Python, no cluster).

Every event of the shared pod watch (`aftershock.engine.podwatch`: every pod of the watched
namespaces, for every Campaign) goes through `aftershock.kube.decode.decode_pod`. Since ADR 0022
a pod's managedFields are part of `PodState`; this measures what that costs per event, on a real
pod captured from the test bed's API server (tests/data/kube/pod-managed-fields.json: a
StatefulSet pod on the real node, 4 managedFields entries, 8.7 KB of JSON).

Rows, each per event (median and best of the repeats, µs):
- `json.loads` of the watch line (``{"type": "MODIFIED", "object": pod}``): what the client pays
  anyway, for scale;
- `decode_pod` and the pod watch's `settle`, in a namespace where no Campaign names a field
  manager: what nearly every event pays;
- the same where a Campaign names one (`spec.remediator.identities.fieldManagers`): decoded;
- `decode_pod` of the pod without managedFields: the floor.
And the memory one kept pod holds (tracemalloc, per pod, over `--pods` pods kept alive).

Run it against any checkout: the same script measured the eager decoding (the code before
`ManagedFields`, ADR 0025) with ``PYTHONPATH=<old checkout>/operator``.

Usage: .venv/bin/python -m bench.decode_cost [--events 20000] [--repeats 7] [--pods 2000]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aftershock.kube import decode

POD = Path(__file__).resolve().parents[1] / "tests" / "data" / "kube" / "pod-managed-fields.json"


def per_call_us(fn: Callable[[], object], events: int, repeats: int) -> tuple[float, float]:
    """Median and best of `repeats` runs of `events` calls, µs per call."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(events):
            fn()
        runs.append((time.perf_counter_ns() - start) / events / 1000)
    return statistics.median(runs), min(runs)


def held_bytes(make: Callable[[], object], pods: int) -> float:
    """Bytes per object that `pods` objects made by `make` hold, all kept alive."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [make() for _ in range(pods)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return (after - before) / pods


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pods", type=int, default=2000)
    args = parser.parse_args()

    raw: dict[str, Any] = json.loads(POD.read_text())
    line = json.dumps({"type": "MODIFIED", "object": raw})
    bare = copy.deepcopy(raw)
    del bare["metadata"]["managedFields"]
    lazy = hasattr(decode, "ManagedFields")

    def settled(pod: Any, keep: bool) -> Any:
        """What the shared pod watch does with each pod it keeps (`PodFeed._changed`)."""
        if lazy:
            pod.managed.settle(keep)
        return pod

    rows: list[tuple[str, Callable[[], object]]] = [
        ("json.loads of the watch line (for scale)", lambda: json.loads(line)),
        (
            "decode_pod, kept by a watch no Campaign reads managedFields of",
            lambda: settled(decode.decode_pod(raw), False),
        ),
        (
            "decode_pod, kept decoded (a Campaign names a field manager)",
            lambda: settled(decode.decode_pod(raw), True),
        ),
        ("decode_pod of the pod without managedFields (floor)", lambda: decode.decode_pod(bare)),
    ]
    code = "ManagedFields (decoded on first read, or released)" if lazy else "eager (decoded in decode_pod)"
    print(f"code: {code}")
    print(
        f"pod: {POD.name}, {len(line)} bytes as a watch line, "
        f"{len(raw['metadata']['managedFields'])} managedFields entries"
    )
    print(f"{args.events} events x {args.repeats} repeats\n")
    print("| per pod event | median (µs) | best (µs) |\n|---|---|---|")
    for name, fn in rows:
        fn()  # warm
        median, best = per_call_us(fn, args.events, args.repeats)
        print(f"| {name} | {median:.1f} | {best:.1f} |")

    # Each pod parsed from its own watch line inside the measurement, as the watch gives them:
    # what stays allocated is what the kept pod holds (the rest of the JSON is freed).
    bare_line = json.dumps({"type": "MODIFIED", "object": bare})

    def parsed(text: str) -> Any:
        return json.loads(text)["object"]

    released = held_bytes(lambda: settled(decode.decode_pod(parsed(line)), False), args.pods)
    kept = held_bytes(lambda: settled(decode.decode_pod(parsed(line)), True), args.pods)
    raw_kept = held_bytes(lambda: decode.decode_pod(parsed(line)), args.pods)
    floor = held_bytes(lambda: decode.decode_pod(parsed(bare_line)), args.pods)
    print(f"\n| memory per pod kept ({args.pods} pods) | bytes |\n|---|---|")
    print(f"| no Campaign reads managedFields | {released:.0f} |")
    print(f"| kept decoded (a Campaign names a field manager) | {kept:.0f} |")
    print(f"| never settled (raw JSON held: what settling avoids) | {raw_kept:.0f} |")
    print(f"| pod without managedFields (floor) | {floor:.0f} |")


if __name__ == "__main__":
    main()
