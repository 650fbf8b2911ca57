# ruff: noqa: E501  (Markdown table templates read better unwrapped)
"""Many Campaigns at once, one operator process: does everything finish, and at what cost?

C subjects (one namespace each, a StatefulSet of R pods on kwok nodes, no volumes, no PD: the
Campaigns judge the pods only), one Campaign of T trials (interval 0, stableSeconds 0) in each,
all created at once, one operator process watching the namespaces by a glob pattern
(`--namespace ascale-<run>-*`, so that other work's Campaigns elsewhere in the shared cluster are
never touched). Reports: time until every Campaign is Succeeded or Failed, the operator's peak
RSS and CPU, event-loop lag as seen from outside, status patches per second, API requests per
trial, and the ledger's size.

Event-loop lag is the operator's own measurement: a task inside it sleeps 0.1 s over and over
and records how late it woke (`aftershock.metrics.LoopLagMeter`), exported as the histogram
`aftershock_event_loop_lag_seconds` on /metrics. The harness reads that histogram before the
Campaigns are created and after the last one finished, and reports quantiles of the difference
(interpolated inside buckets, as Prometheus's histogram_quantile does: bucket bounds at 1, 2, 5,
10, 15, 20, 30, 40, 50, 75, 100 ms...). The kopf liveness endpoint (/healthz) is still timed every
100 ms from outside, as a cross-check and for comparison with earlier runs: its latency is the
lag plus about a millisecond of HTTP. `/metrics` itself is timed every second.

With `--max-concurrent N` the operator is started with `--max-concurrent-campaigns N` (an
operator-wide bound on running Campaigns); if this operator has no such flag, the run is skipped
and says so. Its result adds RSS sampled over the run, to show whether memory grows with
finished Campaigns.

`--settle-seconds S` sets the Campaigns' `recovery.settleSeconds` (default: the Campaign's own
default, 15 s of watching for a relapse after each recovery): 1,000 Campaigns of 10 trials, 20
at a time, would otherwise take hours. `--node-pods N` raises the kwok nodes' pod capacity (110
each, 330 in all) so that more subjects fit: it patches the nodes' status, so only on a cluster
of your own (`AFTERSHOCK_CLUSTER_NAME`), as for `--all-namespaces`.

Usage: .venv/bin/python -m bench.scale [--campaigns 100] [--trials 10] [--replicas 3] [--max-concurrent 20]
       [--settle-seconds 0] [--node-pods 1200] [--all-namespaces]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client
from tests.e2e.operator import OperatorProcess, campaign, free_port, tikv_statefulset

from bench import apicount, harness

RESULTS = Path(__file__).resolve().parent / "results"


class Sampler:
    """GET a path on 127.0.0.1:port every `interval` s in a thread; latencies in ms, bounded."""

    def __init__(
        self, port: int, path: str, interval: float, max_seconds: float, *, gzip_ok: bool = False
    ) -> None:
        self.port, self.path, self.interval, self.max_seconds = port, path, interval, max_seconds
        #: Ask for gzip, as Prometheus does (the latency then includes the compression).
        self.gzip_ok = gzip_ok
        self.samples: list[tuple[float, float]] = []  # (monotonic, latency ms)
        self.failures = 0
        self.last_body = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sample{path}")

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        end = time.monotonic() + self.max_seconds
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < end:
            t0 = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", self.path, headers={"Accept-Encoding": "gzip"} if self.gzip_ok else {})
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                if resp.getheader("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                self.samples.append((t0, (time.monotonic() - t0) * 1000))
                self.last_body = body.decode(errors="replace")
            except OSError:
                self.failures += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def scale_statefulset(replicas: int) -> dict[str, Any]:
    sts = tikv_statefulset(replicas=replicas)
    del sts["spec"]["volumeClaimTemplates"]  # no PVCs: 100 subjects need no 300 volumes here
    return sts


def create_subjects(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    namespaces: list[str],
    replicas: int,
    *,
    sa_wait_seconds: float,
) -> None:
    """A namespace each (labelled as the bench's) with a `scale_statefulset(replicas)` in it."""
    for ns in namespaces:
        core.create_namespace(
            {"metadata": {"name": ns, "labels": {"app.kubernetes.io/part-of": apicount.PREFIX}}}
        )
    for ns in namespaces:
        for _ in range(
            int(sa_wait_seconds / 0.2)
        ):  # the default ServiceAccount appears asynchronously; pods need it
            try:
                core.read_namespaced_service_account("default", ns)
                break
            except client.ApiException:
                time.sleep(0.2)
        apps.create_namespaced_stateful_set(ns, scale_statefulset(replicas))


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


LAG = "aftershock_event_loop_lag_seconds"
RENDER = "aftershock_metrics_render_seconds"


def histogram(metrics_text: str, name: str) -> dict[float, float]:
    """A label-less histogram's cumulative buckets from an exposition: upper bound -> count."""
    out: dict[float, float] = {}
    for m in re.finditer(rf'^{name}_bucket\{{le="([^"]+)"\}} ([0-9.e+]+)$', metrics_text, re.M):
        out[float(m.group(1))] = float(m.group(2))
    return out


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """The q-quantile of what was observed between two scrapes, interpolated linearly inside
    the bucket it falls in (Prometheus's histogram_quantile); the +Inf bucket answers its lower
    bound."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


def histogram_max_bucket(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bucket bound that holds every observation between the scrapes."""
    bounds = sorted(after)
    total = after[bounds[-1]] - before.get(bounds[-1], 0.0) if bounds else 0.0
    for b in bounds:
        if after[b] - before.get(b, 0.0) >= total:
            return b
    return float("nan")


def scrape(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    return body


def operator_has_flag(flag: str) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "aftershock", "run", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return flag in out


class RssSampler:
    """The operator's current RSS (VmRSS) every `interval` s in a thread: (monotonic, MiB)."""

    def __init__(self, pid: int, interval: float, max_seconds: float) -> None:
        self.pid, self.interval, self.max_seconds = pid, interval, max_seconds
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss")

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        end = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples.append((time.monotonic(), int(line.split()[1]) / 1024))
            except OSError:
                return
            self._stop.wait(self.interval)


def patches_total(metrics_text: str) -> float:
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^aftershock_status_patches_total\{[^}]*\} ([0-9.e+]+)$", metrics_text, re.M)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--campaigns", type=int, default=int(os.environ.get("SCALE_CAMPAIGNS", "100")))
    parser.add_argument("--trials", type=int, default=int(os.environ.get("SCALE_TRIALS", "10")))
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=0,
        help="start the operator with --max-concurrent-campaigns N (skipped if it has no such flag)",
    )
    parser.add_argument(
        "--all-namespaces",
        action="store_true",
        help="the operator watches all namespaces (one Campaign watch, not one per namespace); "
        "ONLY on a cluster of your own: it would run other people's Campaigns",
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=None,
        help="the Campaigns' recovery.settleSeconds (default: the Campaign's default, 15 s)",
    )
    parser.add_argument(
        "--node-pods",
        type=int,
        default=0,
        help="raise each kwok node's pod capacity to N first (ONLY on a cluster of your own)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.max_concurrent and not operator_has_flag("--max-concurrent-campaigns"):
        print(
            f"SKIPPED: {args.campaigns} Campaigns with a concurrency bound of {args.max_concurrent}: "
            "this operator has no --max-concurrent-campaigns flag (`aftershock run --help`)",
            flush=True,
        )
        return

    run_id = uuid.uuid4().hex[:5]
    prefix = f"ascale-{run_id}"
    workdir = Path(tempfile.mkdtemp(prefix="aftershock-scale-"))
    bed = harness.setup(workdir)
    api = bed.cluster.api_client()
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    namespaces = [f"{prefix}-{i:03d}" for i in range(args.campaigns)]
    result: dict[str, Any] = {
        "campaigns": args.campaigns,
        "trials": args.trials,
        "replicas": args.replicas,
        "settle_seconds": args.settle_seconds,
    }
    op: OperatorProcess | None = None
    samplers: list[Sampler] = []
    try:
        if args.node_pods:
            set_node_pods(core, args.node_pods)
        t0 = time.monotonic()
        create_subjects(core, apps, namespaces, args.replicas, sa_wait_seconds=20)
        want = args.campaigns * args.replicas
        wait_ready = max(600.0, want * 0.5)  # kwok makes a few pods Ready per second on 2 cores
        deadline = time.monotonic() + wait_ready
        while time.monotonic() < deadline:
            pods = core.list_pod_for_all_namespaces(label_selector=harness.SELECTOR).items
            ready = sum(
                1
                for p in pods
                if p.metadata.namespace.startswith(prefix)
                and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
            )
            if ready >= want:
                break
            time.sleep(2)
        else:
            raise RuntimeError(f"subjects not Ready in {wait_ready:.0f}s ({ready}/{want} pods)")
        result["subjects_ready_s"] = time.monotonic() - t0
        print(
            f"{args.campaigns} subjects Ready ({want} pods) in {result['subjects_ready_s']:.0f}s", flush=True
        )

        kubeconfig = bed.identity("aftershock-scale", role="aftershock")
        live = free_port()
        op = OperatorProcess(
            kubeconfig=kubeconfig,
            db=workdir / "ledger.db",
            # A glob makes kopf watch Campaigns per matching namespace (one connection each);
            # --all-namespaces is one cluster-wide watch, but touches every Campaign in the
            # cluster: only on a cluster of your own.
            namespaces=None if args.all_namespaces else [f"{prefix}-*"],
            log_path=workdir / "operator.log",
            extra_args=["--liveness-port", str(live)]
            + (["--max-concurrent-campaigns", str(args.max_concurrent)] if args.max_concurrent else []),
        )
        op.start()
        assert op.proc is not None
        health = Sampler(live, "/healthz", 0.1, args.timeout + 120)
        for _ in range(300):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", live, timeout=2)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(3)  # kopf has found the namespaces and their (empty) Campaign lists
        health.start()
        samplers.append(health)
        time.sleep(3)
        idle = [ms for _, ms in health.samples]
        result["healthz_idle_p50_ms"] = pct(idle, 50)
        # /metrics is rendered from memory now (cached per Campaign): sampling it every
        # second no longer adds the load it is meant to observe.
        metrics = Sampler(op.metrics_port, "/metrics", 1.0, args.timeout + 120, gzip_ok=True).start()
        samplers.append(metrics)
        rss_sampler = RssSampler(op.proc.pid, 1.0, args.timeout + 120).start()
        before = apicount.scrape(bed.cluster)
        cpu0, rss_idle = harness.proc_cpu_rss(op.proc.pid)
        result["operator_idle_rss_mib"] = rss_idle
        first = scrape(op.metrics_port)
        lag_before, render_before = histogram(first, LAG), histogram(first, RENDER)

        started = time.monotonic()
        for ns in namespaces:
            _again(
                custom.create_namespaced_custom_object,
                "aftershock.dev",
                "v1alpha1",
                ns,
                "campaigns",
                campaign(
                    "scale",
                    ns,
                    None,
                    trials=args.trials,
                    steadyState={"timeoutSeconds": 120, "stableSeconds": 0},
                    recovery={"timeoutSeconds": 120}
                    | ({} if args.settle_seconds is None else {"settleSeconds": args.settle_seconds}),
                ),
            )
        result["create_campaigns_s"] = time.monotonic() - started
        phases: dict[str, str] = {}
        finished_by_time: list[tuple[float, int]] = []  # (monotonic, Campaigns finished)
        # Listing 1,000 Campaigns with their status every second would load the machine it
        # measures: one list per second per 200 Campaigns.
        poll = max(1.0, args.campaigns / 200)
        deadline = started + args.timeout
        while time.monotonic() < deadline:
            if not op.alive():
                raise RuntimeError("operator exited; see " + str(op.log_path))
            objs = _again(custom.list_cluster_custom_object, "aftershock.dev", "v1alpha1", "campaigns")[
                "items"
            ]
            phases = {
                o["metadata"]["namespace"]: (o.get("status") or {}).get("phase", "")
                for o in objs
                if o["metadata"]["namespace"].startswith(prefix)
            }
            done = sum(1 for p in phases.values() if p in ("Succeeded", "Failed"))
            finished_by_time.append((time.monotonic(), done))
            if done == args.campaigns:
                break
            time.sleep(poll)
        finished = time.monotonic()
        result["finish_s"] = finished - started
        result["timed_out"] = sum(1 for p in phases.values() if p in ("Succeeded", "Failed")) < args.campaigns
        result["phases"] = {p: list(phases.values()).count(p) for p in set(phases.values())}
        last = scrape(op.metrics_port)
        lag_after, render_after = histogram(last, LAG), histogram(last, RENDER)
        result["render_p50_ms"] = histogram_quantile(0.50, render_before, render_after) * 1000
        result["render_p95_ms"] = histogram_quantile(0.95, render_before, render_after) * 1000
        time.sleep(2.5)  # one more /metrics sample after the last status patch
        cpu1, rss = harness.proc_cpu_rss(op.proc.pid)
        rss_sampler.stop()
        result["lag_in_p50_ms"] = histogram_quantile(0.50, lag_before, lag_after) * 1000
        result["lag_in_p95_ms"] = histogram_quantile(0.95, lag_before, lag_after) * 1000
        result["lag_in_p99_ms"] = histogram_quantile(0.99, lag_before, lag_after) * 1000
        result["lag_in_max_bucket_ms"] = histogram_max_bucket(lag_before, lag_after) * 1000
        bounds = sorted(lag_after)
        result["lag_in_samples"] = lag_after[bounds[-1]] - lag_before.get(bounds[-1], 0.0) if bounds else 0
        result["lag_in_over_50ms"] = result["lag_in_samples"] - (
            lag_after.get(0.05, 0.0) - lag_before.get(0.05, 0.0)
        )
        rss_run = [mib for t, mib in rss_sampler.samples if started <= t <= finished]
        if rss_run:
            # Memory against finished Campaigns: the RSS at each quarter of the run.
            quarter = max(len(rss_run) // 4, 1)
            result["rss_by_quarter_mib"] = [
                round(rss_run[min(i * quarter, len(rss_run) - 1)], 1) for i in range(4)
            ] + [round(rss_run[-1], 1)]
            # ... and how many Campaigns had finished by then: flat RSS while this grows is
            # memory that finished Campaigns do not keep.
            span = finished - started
            result["finished_by_quarter"] = [
                max((n for t, n in finished_by_time if t <= started + i * span / 4), default=0)
                for i in range(5)
            ]
            result["rss_max_by_quarter_mib"] = [
                round(max((m for t, m in rss_sampler.samples if lo <= t <= lo + span / 4), default=0.0), 1)
                for lo in (started + i * span / 4 for i in range(4))
            ]
        result["operator_cpu_s"] = cpu1 - cpu0
        result["operator_peak_rss_mib"] = rss
        in_run = [ms for t, ms in health.samples if started <= t <= finished]
        result["healthz_samples"] = len(in_run)
        result["healthz_failures"] = health.failures
        result["lag_p50_ms"] = pct(in_run, 50)
        result["lag_p95_ms"] = pct(in_run, 95)
        result["lag_p99_ms"] = pct(in_run, 99)
        result["lag_max_ms"] = max(in_run, default=float("nan"))
        m_run = [ms for t, ms in metrics.samples if started <= t <= finished]
        result["metrics_latency_p50_ms"] = pct(m_run, 50)
        result["metrics_latency_p95_ms"] = pct(m_run, 95)
        patches = patches_total(metrics.last_body)
        result["status_patches"] = patches
        result["status_patches_per_s"] = patches / max(result["finish_s"], 1e-9)
        result["status_patches_per_trial"] = patches / (args.campaigns * args.trials)
        db = workdir / "ledger.db"
        result["ledger_bytes"] = sum(p.stat().st_size for p in workdir.glob("ledger.db*"))
        result["ledger_files"] = sorted(p.name for p in workdir.glob("ledger.db*"))
        for s in samplers:
            s.stop()
        samplers = []
        op.stop()
        result["ledger_bytes_after_stop"] = db.stat().st_size
        api_delta = apicount.delta(before, apicount.scrape(bed.cluster), "aftershock-scale")["tool"]
        result["api_by_verb"] = api_delta
        n = args.campaigns * args.trials
        result["api_non_watch_per_trial"] = sum(v for k, v in api_delta.items() if k != "watch") / n
        result["api_watch_per_trial"] = api_delta.get("watch", 0) / n
        outcomes = re.findall(r"daemon ends in phase (\w+)", op.log_text())
        result["daemons_ended"] = len(outcomes)
    finally:
        for s in samplers:
            s.stop()
        if op is not None:
            op.stop()
        _cleanup(bed, namespaces, custom, core)
        if args.node_pods:
            set_node_pods(core, KWOK_NODE_PODS)
        harness.teardown(bed)

    text = render(result, args)
    suffix = (f"-bound{args.max_concurrent}" if args.max_concurrent else "") + (
        "-all-namespaces" if args.all_namespaces else ""
    )
    out = (
        Path(args.out)
        if args.out
        else RESULTS / f"{dt.date.today().isoformat()}-scale-{args.campaigns}{suffix}.md"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    print(text)
    print(f"written: {out}; work files: {workdir}")


#: The kwok nodes' pod capacity in hack/testbed/manifests/nodes.yaml.
KWOK_NODE_PODS = 110


def _again(call: Any, *args: Any, **kwargs: Any) -> Any:
    """`call`, asked again for up to a minute while the API server cannot serve Campaigns for a
    moment: on the shared test bed other work re-applies the CRD, and its storage answers 429
    "(re)initializing", or the admission policies, still on the old schema, refuse the new one's
    defaults. Both went away in seconds; a run of ten minutes died of them."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return call(*args, **kwargs)
        except client.ApiException as exc:
            passing = exc.status in (429, 500, 503, 504) or (
                exc.status == 403 and "error applying patch" in str(exc.body)
            )
            if not passing or time.monotonic() > deadline:
                raise
            time.sleep(1)


def set_node_pods(core: client.CoreV1Api, pods: int) -> None:
    """Every kwok node's pod capacity (its status: kwok keeps what it is given)."""
    for node in core.list_node(label_selector="type=kwok").items:
        body = {"status": {"capacity": {"pods": str(pods)}, "allocatable": {"pods": str(pods)}}}
        core.patch_node_status(node.metadata.name, body)
        print(f"node {node.metadata.name}: pod capacity {pods}", flush=True)


def _cleanup(
    bed: harness.Bed, namespaces: list[str], custom: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    """Campaigns lose their finalizer (no operator remains to remove it), then the namespaces go."""
    for ns in namespaces:
        with contextlib.suppress(client.ApiException):
            custom.patch_namespaced_custom_object(
                "aftershock.dev", "v1alpha1", ns, "campaigns", "scale", {"metadata": {"finalizers": None}}
            )
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(ns)


def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    def f(key: str, digits: int = 1) -> str:
        v = r.get(key)
        return "-" if v is None else f"{v:.{digits}f}"

    return f"""# Scale run: {args.campaigns} Campaigns x {args.trials} trials, one operator, \
{dt.datetime.now().strftime("%Y-%m-%d %H:%M")}

Command: `.venv/bin/python -m bench.scale --campaigns {args.campaigns} --trials {args.trials} \
--replicas {args.replicas}{f" --max-concurrent {args.max_concurrent}" if args.max_concurrent else ""}\
{f" --settle-seconds {args.settle_seconds:g}" if args.settle_seconds is not None else ""}\
{f" --node-pods {args.node_pods}" if args.node_pods else ""}\
{" --all-namespaces" if args.all_namespaces else ""}`. \
Method: docs/performance.md. 2 cores shared with the control plane, kwok and other work: timings are noisy.

Each Campaign: {args.trials} trials, `intervalSeconds: 0`, `steadyState.stableSeconds: 0`, \
`recovery.settleSeconds: {"15 (the default)" if args.settle_seconds is None else f"{args.settle_seconds:g}"}`, \
{args.replicas} pods, no PD.

| metric | value | target |
|---|---|---|
| Campaigns finished | {r.get("phases")} of {args.campaigns} | all |
| time to finish (s), from creating the first Campaign | {f("finish_s")}\
{" (TIMED OUT: not all finished; per-trial figures below are per planned trial)" if r.get("timed_out") else ""} | - |
| operator peak RSS (MiB) | {f("operator_peak_rss_mib")} | <= 150 MB |
| operator CPU (s) during the run | {f("operator_cpu_s")} | - |
| operator RSS idle before the Campaigns; at each quarter of the run, and at its end (MiB) | \
{f("operator_idle_rss_mib")}; {r.get("rss_by_quarter_mib")} | - |
| operator RSS peak within each quarter of the run (MiB); Campaigns finished at the start of each quarter and at the end | \
{r.get("rss_max_by_quarter_mib")}; {r.get("finished_by_quarter")} | flat |
| event-loop lag p50 / p95 / p99 (ms), measured inside the operator (aftershock_event_loop_lag_seconds, \
bucket-interpolated); smallest bucket holding the max; wake-ups over 50 ms | \
{f("lag_in_p50_ms")} / {f("lag_in_p95_ms")} / {f("lag_in_p99_ms")}; <= {f("lag_in_max_bucket_ms", 0)}; \
{f("lag_in_over_50ms", 0)} of {f("lag_in_samples", 0)} | p95 <= 50 ms |
| cross-check: /healthz latency p50 / p95 / p99 / max (ms), from outside every 100 ms | \
{f("lag_p50_ms")} / {f("lag_p95_ms")} / {f("lag_p99_ms")} / {f("lag_max_ms")} ({r.get("healthz_samples")} samples, \
{r.get("healthz_failures")} failed; idle p50 {f("healthz_idle_p50_ms", 2)}) | - |
| /metrics latency p50 / p95 (ms), every 1 s, from outside, gzip asked as Prometheus does (HTTP, the loop's queue, the harness's own GIL; compressed only if the operator does) | {f("metrics_latency_p50_ms")} / {f("metrics_latency_p95_ms")} | p95 <= 50 ms |
| /metrics render time inside the operator p50 / p95 (ms; aftershock_metrics_render_seconds, bucket-interpolated) | {f("render_p50_ms", 2)} / {f("render_p95_ms", 2)} | - |
| status patches (aftershock_status_patches_total) | {f("status_patches", 0)}: \
{f("status_patches_per_s", 2)}/s, {f("status_patches_per_trial", 2)} per trial | - |
| API requests per trial, non-watch (+watch) | {f("api_non_watch_per_trial", 2)} \
(+{f("api_watch_per_trial", 2)}); by verb {r.get("api_by_verb")} | <= 8 |
| ledger size (bytes, db + WAL while running; db after stop) | {r.get("ledger_bytes")}; \
{r.get("ledger_bytes_after_stop")} | - |
| subjects Ready before the run (s) | {f("subjects_ready_s")} | - |
"""


if __name__ == "__main__":
    main()
