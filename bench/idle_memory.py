"""What an idle operator's memory holds when it serves many namespaces by a glob.

`bench.scale` 100 x 10 run with `--namespace <prefix>-*` (a glob: kopf then watches Campaigns in
each matching namespace) measured 125.2 MiB idle before any Campaign, against 91.4 MiB with
`--all-namespaces` (one watch). This starts the operator idle (no Campaign anywhere) twice, over
1 and over N empty namespaces of its own, each time with `AFTERSHOCK_TRACEMALLOC`, takes a
snapshot once its watches run (SIGUSR1), and reports the RSS of both and the allocations that
differ, grouped by file. Python allocations are what tracemalloc sees; what RSS adds beyond them
is native memory (OpenSSL's per-connection state, the allocator's arenas).

Usage: .venv/bin/python -m bench.idle_memory [--namespaces 100] [--settle-seconds 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

from tests.e2e.operator import OperatorProcess

from bench import harness


def _rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _run(bed: harness.Bed, glob: str, workdir: Path, settle: float, tag: str) -> tuple[float, Path]:
    kubeconfig = bed.identity("idle-memory", role="aftershock")
    snaps = workdir / f"snaps-{tag}"
    os.environ["AFTERSHOCK_TRACEMALLOC"] = str(snaps)
    op = OperatorProcess(
        kubeconfig=kubeconfig,
        db=workdir / f"ledger-{tag}.db",
        namespaces=[glob],
        log_path=workdir / f"operator-{tag}.log",
        extra_args=["--author-check", "off"],
    )
    op.start()
    del os.environ["AFTERSHOCK_TRACEMALLOC"]
    assert op.proc is not None
    # Started (ledger open, metrics replayed, kopf's watches being set up), then `settle` more.
    deadline = time.monotonic() + 300
    while "aftershock started" not in op.log_text():
        if time.monotonic() > deadline or not op.alive():
            raise RuntimeError(f"the operator did not start: {op.log_path}")
        time.sleep(1)
    time.sleep(settle)
    rss = _rss(op.proc.pid)
    op.proc.send_signal(signal.SIGUSR1)
    snap = snaps / "snapshot-1.tracemalloc"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not snap.exists():
        time.sleep(0.5)
    time.sleep(2)  # the dump finishes writing
    op.stop()
    return rss, snap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--settle-seconds", type=float, default=30)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="aftershock-idle-"))
    bed = harness.setup(workdir)
    c = bed.cluster
    prefix = f"bidle{uuid.uuid4().hex[:4]}"
    names = [f"{prefix}-{i:03d}" for i in range(args.namespaces)]
    try:
        for ns in names:
            c.kubectl("create", "namespace", ns)
        one_rss, one = _run(bed, names[0], workdir, args.settle_seconds, "one")
        many_rss, many = _run(bed, f"{prefix}-*", workdir, args.settle_seconds, "many")
    finally:
        for ns in names:
            c.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        harness.teardown(bed)
    a, b = tracemalloc.Snapshot.load(str(one)), tracemalloc.Snapshot.load(str(many))
    traced = (
        sum(s.size for s in b.statistics("filename")) - sum(s.size for s in a.statistics("filename"))
    ) / 2**20
    print(f"RSS idle: 1 namespace {one_rss:.1f} MiB, {args.namespaces} namespaces {many_rss:.1f} MiB")
    print(f"difference {many_rss - one_rss:.1f} MiB, of which traced Python allocations {traced:.1f} MiB")
    print("top differences by file (KiB):")
    for stat in b.compare_to(a, "filename")[:15]:
        frame = stat.traceback[0]
        print(f"  {stat.size_diff / 1024:9.1f}  {stat.count_diff:+7d} blocks  {frame.filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
