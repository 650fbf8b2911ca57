# ruff: noqa: E501  (Markdown table templates read better unwrapped)
"""Accuracy under load: the timing error of one Campaign while 0, 10, 50, 100 others run on the
same operator process, with /metrics scraped every second.

One operator watches the namespaces of this run by a glob (`aload-<run>-*`: nobody else's
Campaigns are touched). Background: N subjects on kwok nodes (3 pods each, no volumes, as
`bench.scale`), each with a Campaign as people run them (the defaults: 15 s of relapse watch
after each recovery, so a kill every ~15 s per Campaign), with enough trials to outlast the
measurement. At each load level (levels ascending: the background only grows) the measured
Campaign is exactly `bench.compare`'s aftershock run (20 kills, PD in the loop with
`--tool aftershock`, pods only with `aftershock-pods`; on the real node with `--real-node`),
judged by the same independent watchers (`bench.groundtruth`) with the same analysis
(`compare.analyse`, `compare.pd_steps`). Only after every background Campaign is Running does
the measured one start.

Also per level: the operator's event-loop lag (its own histogram, read from /metrics before and
after the measured Campaign), /metrics latency from outside (every 1 s, like a Prometheus scrape,
the whole run), status patches per second, and the machine's load average.

Usage: .venv/bin/python -m bench.under_load [--levels 0,10,50,100] [--trials 20] [--tool aftershock] [--real-node]
Writes bench/results/<date>-under-load[-realnode].md, .json and .png (error p50/p95 against load).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client
from tests.e2e.operator import OperatorProcess, campaign, free_port

from bench import compare, harness, scale

RESULTS = Path(__file__).resolve().parent / "results"
GROUP, VERSION = "aftershock.dev", "v1alpha1"


def background_subjects(bed: harness.Bed, prefix: str, first: int, count: int) -> list[str]:
    """`count` more kwok subjects (3 pods, no volumes), Ready; their namespaces."""
    api = bed.cluster.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    names = [f"{prefix}-bg{i:03d}" for i in range(first, first + count)]
    scale.create_subjects(core, apps, names, 3, sa_wait_seconds=30)
    deadline = time.monotonic() + max(300.0, count * 3.0)
    while time.monotonic() < deadline:
        ready = 0
        for ns in names:
            sts = apps.read_namespaced_stateful_set("tikv", ns)
            ready += (sts.status.ready_replicas or 0) >= 3
        if ready == len(names):
            return names
        time.sleep(2)
    raise RuntimeError(f"background subjects not Ready in time ({ready}/{len(names)})")


def start_background(bed: harness.Bed, namespaces: list[str], trials: int) -> None:
    custom = client.CustomObjectsApi(bed.cluster.api_client())
    for ns in namespaces:
        # The Campaign people run: default relapse watch (15 s), default steady-state gate.
        body = campaign("load", ns, None, trials=trials)
        del body["spec"]["steadyState"]
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "campaigns", body)


def wait_running(bed: harness.Bed, namespaces: list[str], timeout: float) -> int:
    """Until every background Campaign is Running (it has started its trials); how many are."""
    custom = client.CustomObjectsApi(bed.cluster.api_client())
    want = set(namespaces)
    deadline = time.monotonic() + timeout
    running = 0
    while time.monotonic() < deadline:
        items = custom.list_cluster_custom_object(GROUP, VERSION, "campaigns")["items"]
        running = sum(
            1
            for o in items
            if o["metadata"]["namespace"] in want and (o.get("status") or {}).get("phase") == "Running"
        )
        if running == len(want):
            break
        time.sleep(2)
    return running


def patches(text: str) -> float:
    return scale.patches_total(text)


def level_run(
    bed: harness.Bed,
    op: OperatorProcess,
    prefix: str,
    level: int,
    args: argparse.Namespace,
    metrics: scale.Sampler,
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    first = scale.scrape(op.metrics_port)
    t0 = time.monotonic()
    run = compare.run_aftershock(
        bed, args.trials, tool=args.tool, with_pd=args.tool == "aftershock", shared=(op, prefix)
    )
    t1 = time.monotonic()
    last = scale.scrape(op.metrics_port)
    row = compare.analyse(run)
    lag0, lag1 = scale.histogram(first, scale.LAG), scale.histogram(last, scale.LAG)
    scrapes = [ms for t, ms in metrics.samples if t0 <= t <= t1]
    steps = run.steps
    out: dict[str, Any] = {
        "level": level,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "seconds": t1 - t0,
        "kills": row["kills"],
        "records": row["records"],
        "err_p50": row["err_p50"],
        "err_p95": row["err_p95"],
        "err_max": row["err_max"],
        "store_err_p50": row.get("store_err_p50"),
        "store_err_p95": row.get("store_err_p95"),
        "overhead_p50": row["overhead_p50"],
        "lag_p50_ms": scale.histogram_quantile(0.50, lag0, lag1) * 1000,
        "lag_p95_ms": scale.histogram_quantile(0.95, lag0, lag1) * 1000,
        "lag_p99_ms": scale.histogram_quantile(0.99, lag0, lag1) * 1000,
        "metrics_p50_ms": scale.pct(scrapes, 50) if scrapes else float("nan"),
        "metrics_p95_ms": scale.pct(scrapes, 95) if scrapes else float("nan"),
        "metrics_scrapes": len(scrapes),
        "patches_per_s": (patches(last) - patches(first)) / max(t1 - t0, 1e-9),
        "notes": row["notes"],
        "steps": steps,
        "records_detail": run.records,
    }
    for key in ("offset_excess", "start_late", "store_up_late"):
        values = [s[key] for s in steps if s.get(key) is not None]
        out[f"{key}_p50"] = statistics.median(values) if values else None
    return out


def _f(v: float | None, digits: int = 1) -> str:
    return compare._f(v, digits)


def render(rows: list[dict[str, Any]], args: argparse.Namespace, versions: dict[str, str], png: str) -> str:
    where = "the real node (real store processes, PD stand-in)" if args.real_node else "kwok nodes"
    lines = [
        "| other Campaigns running | load avg (start / end) | kills seen / recorded | timing error p50 / p95 / max (ms) "
        "| store-Up error p50 / p95 (ms) | offset excess p50 (ms) | start late p50 (ms) | loop lag p50 / p95 / p99 (ms) "
        "| /metrics p50 / p95 (ms, every 1 s) | status patches/s | overhead p50 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['level']} | {r['load_before']:.1f} / {r['load_after']:.1f} | {r['kills']} / {r['records']} "
            f"| {_f(r['err_p50'])} / {_f(r['err_p95'])} / {_f(r['err_max'])} "
            f"| {_f(r.get('store_err_p50'))} / {_f(r.get('store_err_p95'))} "
            f"| {_f(r.get('offset_excess_p50'))} | {_f(r.get('start_late_p50'))} "
            f"| {_f(r['lag_p50_ms'])} / {_f(r['lag_p95_ms'])} / {_f(r['lag_p99_ms'])} "
            f"| {_f(r['metrics_p50_ms'])} / {_f(r['metrics_p95_ms'])} | {_f(r['patches_per_s'], 2)} "
            f"| {_f(r['overhead_p50'], 0)} |"
        )
    notes = "\n".join(f"- {r['level']}: {n}" for r in rows for n in r["notes"]) or "- none"
    vers = "\n".join(f"- {k}: {v}" for k, v in versions.items())
    return f"""# Accuracy under load on {where}, {dt.datetime.now().strftime("%Y-%m-%d %H:%M")}

Command: `.venv/bin/python -m bench.under_load --levels {args.levels} --trials {args.trials} --tool {args.tool}\
{" --real-node" if args.real_node else ""}`. The measured Campaign is `bench.compare`'s {args.tool} run
({args.trials} kills) on one operator process that also runs the other Campaigns (kwok subjects, default
Campaigns: a kill every ~15 s each), /metrics scraped every second throughout. Method: docs/performance.md.

Chart: ![timing error against load]({png})

{chr(10).join(lines)}

Notes:
{notes}

Versions and machine:
{vers}
"""


def draw(rows: list[dict[str, Any]], path: Path, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    levels = [r["level"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(levels, [r["err_p50"] for r in rows], "o-", label="timing error p50")
    ax.plot(levels, [r["err_p95"] for r in rows], "s-", label="timing error p95")
    ax.axhline(50, color="grey", linestyle="--", linewidth=1, label="target p95 at 100 (50 ms)")
    ax.axhline(20, color="grey", linestyle=":", linewidth=1, label="target p95 alone (20 ms)")
    ax.set_xlabel("other Campaigns running on the same operator")
    ax.set_ylabel("ms (|recorded - independent watcher|)")
    ax.set_title(title, fontsize=9)
    ax.set_xticks(levels)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def run_levels(
    bed: harness.Bed,
    op: OperatorProcess,
    prefix: str,
    levels: list[int],
    args: argparse.Namespace,
    background: list[str],
) -> list[dict[str, Any]]:
    """Start the operator, then per level: grow the background, measure one Campaign."""
    rows: list[dict[str, Any]] = []
    op.start()
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", op.metrics_port, timeout=2)
            conn.request("GET", "/metrics")
            conn.getresponse().read()
            break
        except OSError:
            time.sleep(0.1)
    # Like a Prometheus scrape: every second, the whole run.
    metrics = scale.Sampler(op.metrics_port, "/metrics", 1.0, 7200).start()
    try:
        for level in levels:
            if level > len(background):
                more = background_subjects(bed, prefix, len(background), level - len(background))
                background += more  # dropped at the end whatever happens next
                start_background(bed, more, args.background_trials)
                running = wait_running(bed, background, 300)
                print(f"{running} of {len(background)} background Campaigns Running", flush=True)
            print(f"== {level} others running (load average {os.getloadavg()[0]:.2f})", flush=True)
            row = level_run(bed, op, prefix, level, args, metrics)
            rows.append(row)
            print(render([row], args, {}, "-").split("\n\n")[3], flush=True)
            if not op.alive():
                raise RuntimeError(f"operator exited; see {op.log_path}")
    finally:
        metrics.stop()
    return rows


def cleanup(bed: harness.Bed, op: OperatorProcess, background: list[str]) -> None:
    custom = client.CustomObjectsApi(bed.cluster.api_client())
    for ns in background:
        with contextlib.suppress(client.ApiException):
            custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "campaigns", "load")
    time.sleep(5)  # the operator heals what the deleted Campaigns had in flight
    op.stop()
    for ns in background:
        harness.drop_namespace(bed, ns)
    harness.teardown(bed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="0,10,50,100")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tool", choices=("aftershock", "aftershock-pods"), default="aftershock")
    parser.add_argument("--real-node", action="store_true")
    parser.add_argument("--pd-scale", type=float, default=None)
    parser.add_argument(
        "--background-trials",
        type=int,
        default=200,
        help="trials of each background Campaign: enough to outlast the run (they are deleted at the end)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    compare.REAL_NODE = args.real_node
    compare.PD_SCALE = args.pd_scale if args.pd_scale is not None else (0.05 if args.real_node else 0.02)
    prefix = f"aload-{uuid.uuid4().hex[:5]}"
    workdir = Path(tempfile.mkdtemp(prefix="aftershock-under-load-"))
    bed = harness.setup(workdir)
    if args.real_node and (why := harness.real_node_ready(bed)):
        harness.teardown(bed)
        print(f"SKIPPED: {why}", flush=True)
        return
    versions = harness.versions(bed)
    background: list[str] = []
    live = free_port()
    op = OperatorProcess(
        kubeconfig=bed.identity("aftershock", role="aftershock"),
        db=workdir / "ledger.db",
        namespaces=[f"{prefix}-*"],
        log_path=workdir / "operator.log",
        extra_args=["--liveness-port", str(live)],
    )
    try:
        rows = run_levels(bed, op, prefix, levels, args, background)
    finally:
        cleanup(bed, op, background)
    date = dt.date.today().isoformat()
    out = (
        Path(args.out)
        if args.out
        else RESULTS / f"{date}-under-load{'-realnode' if args.real_node else ''}.md"
    )
    title = f"{date}, one Campaign ({args.tool}, {'real node' if args.real_node else 'kwok'}) beside N others"
    png = draw(rows, out.with_suffix(".png"), title) or "(no chart: matplotlib missing)"
    out.write_text(render(rows, args, versions, png))
    out.with_suffix(".json").write_text(
        json.dumps(
            {"title": title, "args": vars(args), "versions": versions, "rows": rows}, indent=1, default=str
        )
    )
    print(out.read_text())
    print(f"written: {out} (+ .json, .png); work files: {workdir}")


if __name__ == "__main__":
    main()
