# ruff: noqa: E501  (Markdown table templates read better unwrapped)
"""aftershock against the tools people use today, side by side on the same test bed.

Every tool does the same work: N pod kills, one at a time, each waiting for full recovery, on
its own fresh 3-replica TiKV-shaped StatefulSet in its own namespace. The harness watches the
pods itself (`bench.groundtruth`), and where PD is in the loop the stores' reports to the PD
stand-in too (`groundtruth.PdWatch`), counts each tool's API requests at the API server
(`bench.apicount`), and measures each tool's processes (CPU seconds, peak RSS).

Two subjects:
- kwok (default): pods on kwok nodes, nothing runs; where a tool uses PD (aftershock), the
  stand-in's simulated store processes follow the pods. For scale and for the control plane.
- `--real-node`: pods on the test bed's real node (docs/adr/0006-real-node.md), each a real
  store process (tests/pdstub/store.py) that registers with and heartbeats to a PD stand-in in
  this process on 127.0.0.1, for every tool (peers ignore PD; their recovery is the pods').

Usage: .venv/bin/python -m bench.compare [--trials 20] [--tools aftershock,aftershock-pods,...] [--real-node]
Writes bench/results/<date>[-realnode].md (and .json with every trial, and .png: the chart).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, campaign, wait_phase
from tests.pdstub import PdStandIn, Timing
from tests.pdstub.kube_source import KubePodSource

from bench import apicount, audittruth, chart, groundtruth, harness
from bench.ctk_experiment import build_experiment, read_journal

RESULTS = Path(__file__).resolve().parent / "results"
TOOLS = ("aftershock", "aftershock-pods", "aftershock-short", "chaostoolkit", "chaostoolkit-ssh", "krkn")


@dataclass
class Run:
    """One tool's run: what it recorded per trial, next to what the harness saw."""

    tool: str
    trials_asked: int
    started: float = 0.0  # harness monotonic
    ended: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)  # the tool's own, in kill order
    kills: list[groundtruth.Kill] = field(default_factory=list)  # the tool's kills only
    artifacts: int = 0  # disruptions no tool asked for (kwok's by-name delete of a Ready replacement)
    cpu: float = 0.0
    rss_mib: float = 0.0
    api: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: The tool's recovery includes the store back in PD (aftershock with pdURL); else pods only.
    measures_store: bool = False
    #: PD was in the loop (its stand-in served the subject): the truth knows when stores returned.
    pd_in_loop: bool = False
    #: aftershock with PD: per trial, the store-Up stamp retraced step by step (`pd_steps`).
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: The machine's 1-minute load average when the tool's run began and ended (shared cores).
    load: tuple[float, float] = (0.0, 0.0)
    #: CPU seconds of this harness process (every thread: watchers, the PD stand-in, polling)
    #: over the tool's run, and the run's wall seconds: how busy the stand-in's process was,
    #: i.e. how often a stand-in thread could have waited for the GIL.
    harness_cpu: tuple[float, float] = (0.0, 0.0)
    #: wall - monotonic of the witness's events (its `Kill` stamps are monotonic).
    witness_wall_offset: float | None = None
    #: Per kill (index into `kills`): the truth of what the tool measures from the API server's
    #: audit log (`audittruth`): the DELETE's commit -> the Ready status write's commit (and the
    #: store back, with PD), seconds; None where the log does not place both ends.
    audit_truth: list[float | None] = field(default_factory=list)


@dataclass
class Subject:
    """A tool's subject: its namespace, and the PD stand-in that serves it (if any)."""

    ns: str
    pd: PdStandIn | None = None
    pd_watch: groundtruth.PdWatch | None = None
    source: KubePodSource | None = None

    def close(self, bed: harness.Bed) -> None:
        if self.pd is not None:
            self.pd.stop()
        if self.source is not None:
            self.source.stop()
        harness.drop_namespace(bed, self.ns)


#: Set by main: where the subjects run and how fast PD's clocks tick.
REAL_NODE = False
PD_SCALE = 0.02


def make_subject(bed: harness.Bed, prefix: str, *, with_pd: bool) -> Subject:
    """kwok: pods only, plus the PD stand-in's simulated stores when `with_pd`. Real node:
    real store processes, which always need their PD stand-in (peers just ignore it)."""
    timing = Timing.fast(PD_SCALE)
    if REAL_NODE:
        pd = PdStandIn(timing=timing, headless_service="tikv-peer", namespace="")
        watch = groundtruth.PdWatch(pd)
        url = pd.start()
        ns = harness.fresh_real_subject(bed, prefix, url, timing.heartbeat_interval)
        # The stand-in names stores by the pod's namespace in their address: set it now.
        pd.namespace = ns
        return Subject(ns, pd, watch)
    ns = harness.fresh_subject(bed, prefix)
    if not with_pd:
        return Subject(ns)
    source = KubePodSource(bed.cluster.api_client(), ns, harness.SELECTOR).start()
    assert source.wait_synced(30)
    # PD and TiKV's timing x PD_SCALE: with 0.02, a restarted store's first heartbeat 0.2 s
    # after it starts.
    pd = PdStandIn(source, timing=timing, headless_service="tikv-peer", namespace=ns)
    watch = groundtruth.PdWatch(pd)
    pd.start()
    return Subject(ns, pd, watch, source)


# --- the tools ---------------------------------------------------------------------------------


def _iso(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _set_kills(
    run: Run,
    events: list[groundtruth.PodEvent],
    stamps: list[tuple[str, float]],
    subject: Subject | None = None,
) -> None:
    found = groundtruth.kills(events, 3, stamps)
    if subject is not None and subject.pd_watch is not None:
        # PD in the loop: recovered = the pods whole again AND the victim's store reporting
        # again from its new process, whichever comes last.
        reports = subject.pd_watch.snapshot()
        run.pd_in_loop = True
        found = [_with_store(k, reports) for k in found]
    run.kills = [k for k in found if k.by_tool]
    run.artifacts = len(found) - len(run.kills)
    # The witness's monotonic clock on the wall clock (each event's own pair): its stamps can
    # then be set beside the tool's ledger and the audit log, which are on the wall clock.
    if events:
        run.witness_wall_offset = statistics.median(e.wall - e.mono for e in events)
    _set_audit_truth(run, events, subject)


#: The API server's audit log from the bench's start (None: the test bed keeps none).
AUDIT: audittruth.AuditLog | None = None


def _set_audit_truth(run: Run, events: list[groundtruth.PodEvent], subject: Subject | None) -> None:
    """Each kill's two ends as the API server completed them (`audittruth`), placed by the
    witness's events; the harness's monotonic clock is put on the wall clock by the events' own
    (mono, wall) pairs."""
    if AUDIT is None or not events or subject is None:
        return
    offset = statistics.median(e.wall - e.mono for e in events)
    writes = AUDIT.pod_writes(subject.ns)
    truths: list[float | None] = []
    for k in run.kills:
        pods_ready = k.pods_ready_at if k.pods_ready_at is not None else k.ready_at
        kill = audittruth.kill_commit(writes, k.victim, k.deleted_at + offset)
        # The replacement's events as the witness saw them: which one first showed it Ready.
        own = [e for e in events if e.uid == k.replacement_uid and e.type != "LISTED"]
        index = next((n for n, e in enumerate(own) if e.ready), None)
        ready = (
            None
            if kill is None or pods_ready is None or index is None or own[0].type != "ADDED"
            else audittruth.ready_commit(writes, k.victim, kill.received, index, own[index].wall)
        )
        if kill is None or ready is None:
            truths.append(None)
            continue
        end = ready.completed
        if run.measures_store and k.ready_at is not None and k.pods_ready_at is not None:
            # The store back in PD: the stand-in's own receipt (no delivery in it), if later.
            end = max(end, k.ready_at + offset) if k.ready_at > k.pods_ready_at else end
        truths.append(end - kill.completed)
    run.audit_truth = truths


def _with_store(kill: groundtruth.Kill, reports: list[groundtruth.StoreReport]) -> groundtruth.Kill:
    back = groundtruth.store_back(reports, kill.victim, kill.deleted_at)
    ready = None if kill.ready_at is None or back is None else max(kill.ready_at, back)
    return dataclasses.replace(kill, ready_at=ready, pods_ready_at=kill.ready_at)


def run_aftershock(
    bed: harness.Bed,
    trials: int,
    *,
    tool: str,
    with_pd: bool,
    shared: tuple[OperatorProcess, str] | None = None,
) -> Run:
    """`shared`: an operator already running (the under-load bench's) and the namespace prefix
    its glob watches; it is neither started nor stopped here, and its CPU and RSS are its own
    whole run's, not this Campaign's."""
    run = Run(tool, trials, measures_store=with_pd)
    subject = make_subject(bed, "bench-as" if shared is None else shared[1], with_pd=with_pd)
    ns = subject.ns
    pd = subject.pd if with_pd else None
    watcher = groundtruth.PodWatcher(bed.cluster.api_client(), ns).start()
    if shared is None:
        op = OperatorProcess(
            kubeconfig=bed.identity("aftershock", role="aftershock"),
            db=bed.workdir / f"{tool}.db",
            namespaces=[ns],
            log_path=bed.workdir / f"{tool}.log",
        )
    else:
        op = shared[0]
    before = apicount.scrape(bed.cluster)
    try:
        run.started = time.monotonic()
        if shared is None:
            op.start()
        bed.cluster.apply(
            campaign(
                "bench",
                ns,
                pd.base_url if pd else None,
                trials=trials,
                steadyState={"timeoutSeconds": 60, "stableSeconds": 0},
                # No relapse watch after each recovery (the default watches 15 s, which is
                # then 15 s of every trial's overhead by design); the peers have none either.
                recovery={"timeoutSeconds": 60, "settleSeconds": 0},
            )
        )
        final = wait_phase(
            bed.cluster, ns, "bench", {"Succeeded", "Failed"}, timeout=120 + 15 * trials, op=op
        )
        run.ended = time.monotonic()
        status = final.get("status") or {}
        print(f"Campaign {ns}/bench {status.get('phase')}: {status.get('message')}", flush=True)
        assert op.proc is not None
        run.cpu, run.rss_mib = harness.proc_cpu_rss(op.proc.pid)
        report = harness.report_json(ns, "bench", op.db)
    finally:
        if shared is None:
            op.stop()
        watcher.stop()
        subject.close(bed)
    run.api = apicount.delta(before, apicount.scrape(bed.cluster), "aftershock")
    stamps = [
        (t["victims"][0]["name"], _iso(t["timings"]["kill_sent"]["wall"]))
        for t in report["trials"]
        if t["victims"] and "kill_sent" in t["timings"]
    ]
    _set_kills(run, watcher.snapshot(), sorted(stamps, key=lambda s: s[1]), subject)
    status = final["status"]
    run.notes.append(
        f"Campaign {status.get('phase')} verdict {status.get('verdict')}: {status.get('message')}"
    )
    by_uid = {}
    for t in report["trials"]:
        if t["outcome"] != "recovered":
            run.notes.append(f"attempt {t['index']}.{t['attempt']}: {t['outcome']} {t.get('error')}")
            continue
        ready = (t["timings"].get("replacement_ready") or {}).get("offsetSeconds")
        gone = (t["timings"].get("victim_gone") or {}).get("offsetSeconds")
        final_state = t.get("finalState") or {}
        timings = t["timings"]
        recovered_wall = _iso(timings["recovered"]["wall"]) if "recovered" in timings else None
        by_uid[t["victims"][0]["uid"]] = {
            "victim": t["victims"][0]["name"],
            "recovery": t["recoverySeconds"],
            "start_wall": None if recovered_wall is None else recovered_wall - t["recoverySeconds"],
            "store_up_wall": _iso(timings["store_up"]["wall"]) if "store_up" in timings else None,
            "clock_offset": final_state.get("clockOffsetSeconds"),
            "best_look": (final_state.get("probe") or {}).get("pdClockBestLook"),
            "pod_ready": ready,
            "gone": gone,
            "store_up": (t["timings"].get("store_up") or {}).get("offsetSeconds"),
            "sources": t.get("sources") or t.get("milestoneSources"),
        }
    run.records = [by_uid.get(k.victim_uid, {"victim": k.victim, "recovery": None}) for k in run.kills]
    if with_pd and subject.pd_watch is not None:
        run.steps = pd_steps(run, subject.pd_watch)
    return run


def pd_steps(run: Run, watch: groundtruth.PdWatch) -> list[dict[str, Any]]:
    """Per trial, where aftershock's error with PD comes from, in ms, every stamp on the host's
    clock (the stand-in and the watcher stamp in this process, the operator in its own; one
    host, one clock; harness monotonic placed on the wall clock by the harness's own pairs):

    - `hb_to_arrive`: PD took the newest heartbeat -> the operator's GET /stores of the look
      that fixed PD's clock offset (the best look) reached the stand-in; split into
      `hb_to_asked` (the heartbeat -> the operator asked: the look's phase, negative when the
      heartbeat came while the request was on its way) and `asked_to_arrive` (the request's
      way: the operator's send, the kernel, the stand-in's thread waking);
    - `serve`: that request arrived -> its answer's last byte left the stand-in;
    - `leave_to_seen`: the answer left -> the operator had it parsed and stamped (`seen`);
    - `offset_excess` = the sum: how much the offset estimate exceeds the true offset (0 on
      one host), hence how late the store-Up stamp is placed;
    - `store_up_late`: the operator's store_up - the stand-in's receipt of the victim store's
      first heartbeat from its new process (the truth): should equal `offset_excess`;
    - `start_late`: the operator's start of the recovery - the watcher's first sight of the
      deletion (negative: the operator saw it first);
    - `error` = recorded - truth (signed) = `store_up_late` - `start_late` when the store is last;
    - `bracket`: upper - lower bound of the offset when the trial ended (`PdClock`).
    """
    reports = watch.snapshot()
    if not reports:
        return []
    to_wall = statistics.median(r.wall - r.mono for r in reports)
    answers = [a for a in watch.answered() if a[0].split("?", 1)[0] == "/pd/api/v1/stores"]
    out: list[dict[str, Any]] = []
    for kill, rec in zip(run.kills, run.records, strict=False):
        if rec.get("recovery") is None or kill.recovery is None:
            continue
        row: dict[str, Any] = {"victim": kill.victim, "error": (rec["recovery"] - kill.recovery) * 1000}
        if rec.get("start_wall") is not None:
            row["start_late"] = (rec["start_wall"] - (kill.deleted_at + to_wall)) * 1000
        back = groundtruth.store_back(reports, kill.victim, kill.deleted_at)
        if rec.get("store_up_wall") is not None and back is not None:
            row["store_up_late"] = (rec["store_up_wall"] - (back + to_wall)) * 1000
        if rec.get("clock_offset") is not None:
            row["clock_offset"] = rec["clock_offset"] * 1000
        best = rec.get("best_look")
        if best:
            seen, newest = best["answeredWall"], best["newestHeartbeat"]
            row["looks_in_window"] = best.get("looks")
            found = [
                a for a in answers if abs(a[3] / 1e9 - newest) < 1e-6 and a[2] + to_wall <= seen + 0.0005
            ]
            if best.get("askedWall") is not None:
                row["hb_to_asked"] = (best["askedWall"] - newest) * 1000
            if best.get("bracketSeconds") is not None:
                row["bracket"] = best["bracketSeconds"] * 1000
            if found:
                _, arrived, left, _ = max(found, key=lambda a: a[2])
                row["hb_to_arrive"] = (arrived + to_wall - newest) * 1000
                if best.get("askedWall") is not None:
                    row["asked_to_arrive"] = (arrived + to_wall - best["askedWall"]) * 1000
                row["serve"] = (left - arrived) * 1000
                row["leave_to_seen"] = (seen - left - to_wall) * 1000
            row["offset_excess"] = (seen - newest) * 1000
        out.append(row)
    return out


STEP_KEYS = (
    "hb_to_asked",
    "asked_to_arrive",
    "hb_to_arrive",
    "serve",
    "leave_to_seen",
    "offset_excess",
    "store_up_late",
    "start_late",
    "error",
    "bracket",
)


def steps_table(steps: list[dict[str, Any]]) -> str:
    """p50 / p95 / min / max of each step over the trials (ms)."""
    lines = [
        "| step (ms) | p50 | p95 | min | max |",
        "|---|---|---|---|---|",
    ]
    for key in STEP_KEYS:
        values = [r[key] for r in steps if r.get(key) is not None]
        if not values:
            continue
        lines.append(
            f"| {key} | {_f(pct(values, 50))} | {_f(pct(values, 95))} | {_f(min(values))} | {_f(max(values))} |"
        )
    return "\n".join(lines)


def run_chaostoolkit(bed: harness.Bed, trials: int, *, tool: str, wait_for_disruption: bool) -> Run:
    run = Run(tool, trials)
    chaos = harness.VENVS / "chaostoolkit" / "bin" / "chaos"
    if not chaos.exists():
        raise SystemExit(f"{chaos} missing: run bench/peers.sh first")
    subject = make_subject(bed, "bench-ctk", with_pd=False)
    ns = subject.ns
    kubeconfig = bed.identity("chaostoolkit")
    exp = bed.workdir / "experiment.json"
    exp.write_text(
        json.dumps(build_experiment(ns, harness.SELECTOR, wait_for_disruption=wait_for_disruption), indent=2)
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(bed.workdir), "KUBECONFIG": kubeconfig, "LANG": "C.UTF-8"}
    watcher = groundtruth.PodWatcher(bed.cluster.api_client(), ns).start()
    before = apicount.scrape(bed.cluster)
    rss: list[float] = []
    try:
        run.started = time.monotonic()
        for i in range(trials):
            journal = bed.workdir / f"journal-{i}.json"
            fin = harness.run_measured(
                [
                    str(chaos),
                    "--no-version-check",
                    "--settings",
                    str(bed.workdir / "ctk-settings.yaml"),
                    "--log-file",
                    str(bed.workdir / "chaostoolkit.log"),
                    "run",
                    "--journal-path",
                    str(journal),
                    str(exp),
                ],
                env=env,
                log=bed.workdir / "chaostoolkit.out",
                timeout=180,
            )
            run.cpu += fin.cpu
            rss.append(fin.max_rss_mib)
            rec: dict[str, Any] = (
                read_journal(json.loads(journal.read_text())) if journal.exists() else {"recovery": None}
            )
            rec["returncode"] = fin.returncode
            rec["victim"] = (rec.get("victims") or [None])[0]
            run.records.append(rec)
            if fin.returncode != 0 or rec.get("status") != "completed":
                run.notes.append(f"run {i}: exit {fin.returncode}, status {rec.get('status')}")
            if rec.get("disrupted_probe") not in (None, "succeeded"):
                run.notes.append(
                    f"run {i}: the statefulset_not_fully_available probe {rec['disrupted_probe']} "
                    f"(the StatefulSet was whole again before its watch began); recorded recovery "
                    f"{rec.get('recovery') or 0:.3f}s"
                )
        run.ended = time.monotonic()
    finally:
        watcher.stop()
        subject.close(bed)
    run.rss_mib = max(rss, default=0.0)
    run.api = apicount.delta(before, apicount.scrape(bed.cluster), "chaostoolkit")
    stamps = [
        (r["victim"], r["kill_started"]) for r in run.records if r.get("victim") and r.get("kill_started")
    ]
    _set_kills(run, watcher.snapshot(), stamps, subject)
    return run


def run_krkn(bed: harness.Bed, trials: int, duration: float, wait_duration: float) -> Run:
    run = Run("krkn", trials)
    python = harness.VENVS / "krkn" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} missing: run bench/peers.sh first")
    subject = make_subject(bed, "bench-krkn", with_pd=False)
    ns = subject.ns
    kubeconfig = bed.identity("krkn")
    out = bed.workdir / "krkn.jsonl"
    watcher = groundtruth.PodWatcher(bed.cluster.api_client(), ns).start()
    before = apicount.scrape(bed.cluster)
    try:
        fin = harness.run_measured(
            [
                str(python),
                str(Path(__file__).with_name("krkn_runner.py")),
                "--kubeconfig",
                kubeconfig,
                "--namespace",
                ns,
                "--selector",
                harness.SELECTOR,
                "--iterations",
                str(trials),
                "--duration",
                str(duration),
                "--wait-duration",
                str(wait_duration),
                "--out",
                str(out),
            ],
            env={"PATH": os.environ["PATH"], "HOME": str(bed.workdir), "LANG": "C.UTF-8"},
            log=bed.workdir / "krkn.log",
            timeout=300 + 150 * trials,
        )
        run.started, run.ended, run.cpu, run.rss_mib = fin.started, fin.ended, fin.cpu, fin.max_rss_mib
        if fin.returncode != 0:
            run.notes.append(f"krkn runner exit {fin.returncode} (see krkn.log)")
    finally:
        watcher.stop()
        subject.close(bed)
    run.api = apicount.delta(before, apicount.scrape(bed.cluster), "krkn")
    stamps = []
    for line in out.read_text().splitlines() if out.exists() else []:
        it = json.loads(line)
        stamps.append((it["victim"], it["kill_ts"]))
        rec: dict[str, Any] = {"victim": it["victim"], "recovery": None}
        if it["recovered"]:
            a = it["recovered"][0]
            rec.update(
                recovery=a["total"],
                readiness=a["readiness"],
                rescheduling=a["rescheduling"],
                replacement=a["pod"],
            )
        if it["unrecovered"] or len(it["recovered"]) != 1:
            run.notes.append(
                f"iteration {it['iteration']}: recovered {it['recovered']}, unrecovered {it['unrecovered']}"
            )
        run.records.append(rec)
    _set_kills(run, watcher.snapshot(), stamps, subject)
    return run


# --- analysis ----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def analyse(run: Run) -> dict[str, Any]:
    pairs = list(zip(run.kills, run.records, strict=False))
    mismatched = sum(1 for kill, rec in pairs if rec.get("victim") not in (None, kill.victim))

    # Each tool is judged against the truth of what it says it measures: the pods and the
    # store back in PD for aftershock with a pdURL, the pods alone for everyone else.
    def own(k: groundtruth.Kill) -> float | None:
        return k.recovery if run.measures_store else k.pod_recovery

    def own_ready(k: groundtruth.Kill) -> float | None:
        return k.ready_at if run.measures_store or k.pods_ready_at is None else k.pods_ready_at

    errors = [
        abs(rec["recovery"] - t) * 1000
        for k, rec in pairs
        if rec.get("recovery") is not None and (t := own(k)) is not None
    ]
    # With PD in the loop: how far each tool's number is from the subject's full recovery
    # (pods and store), whatever it measures: what a TiKV user would read it as.
    full_errors = [
        abs(rec["recovery"] - k.recovery) * 1000
        for k, rec in pairs
        if run.pd_in_loop and rec.get("recovery") is not None and k.recovery is not None
    ]
    pod_errors = [
        abs(rec[key] - t) * 1000
        for k, rec in pairs
        for key in ("pod_ready", "readiness")
        if rec.get(key) is not None and (t := k.pod_recovery) is not None
    ]
    # Against the API server's audit log (`audittruth`): no witness's watch delivery in it.
    audit_errors = [
        abs(rec["recovery"] - t) * 1000
        for (_k, rec), t in zip(pairs, run.audit_truth, strict=False)
        if rec.get("recovery") is not None and t is not None
    ]
    lead = [rec["gone"] * 1000 for _, rec in pairs if rec.get("gone") is not None]
    aligned = [
        abs(rec["pod_ready"] - rec["gone"] - t) * 1000
        for k, rec in pairs
        if rec.get("gone") is not None
        and rec.get("pod_ready") is not None
        and (t := k.pod_recovery) is not None
    ]
    # The store milestone alone: aftershock's store_up against the stand-in's receipt of the
    # victim store's first heartbeat, both from the kill.
    store_errors = [
        abs(rec["store_up"] - rec["gone"] - (k.ready_at - k.deleted_at)) * 1000
        for k, rec in pairs
        if run.measures_store
        and rec.get("store_up") is not None
        and rec.get("gone") is not None
        and k.ready_at is not None
        and k.pods_ready_at is not None
        and k.ready_at > k.pods_ready_at
    ]
    truth = [t * 1000 for k in run.kills if (t := own(k)) is not None]
    gaps = [
        (b.deleted_at - r) * 1000
        for a, b in zip(run.kills, run.kills[1:], strict=False)
        if (r := own_ready(a)) is not None
    ]
    n = max(len(run.kills), 1)
    verbs = run.api.get("tool", {})
    watches = verbs.get("watch", 0)
    non_watch = sum(v for k, v in verbs.items() if k != "watch")
    return {
        "tool": run.tool,
        "kills": len(run.kills),
        "records": sum(1 for r in run.records if r.get("recovery") is not None),
        "truth_p50": pct(truth, 50),
        "err_p50": pct(errors, 50),
        "err_p95": pct(errors, 95),
        "err_max": max(errors, default=float("nan")),
        "audit_err_p50": pct(audit_errors, 50) if audit_errors else None,
        "audit_err_p95": pct(audit_errors, 95) if audit_errors else None,
        "audit_err_max": max(audit_errors) if audit_errors else None,
        "audit_kills": len(audit_errors),
        "full_err_p50": pct(full_errors, 50) if full_errors else None,
        "full_err_p95": pct(full_errors, 95) if full_errors else None,
        "store_err_p50": pct(store_errors, 50) if store_errors else None,
        "store_err_p95": pct(store_errors, 95) if store_errors else None,
        "measures": "pods + store" if run.measures_store else "pods",
        "pod_err_p50": pct(pod_errors, 50) if pod_errors else None,
        "pod_err_p95": pct(pod_errors, 95) if pod_errors else None,
        "lead_p50": pct(lead, 50) if lead else None,
        "aligned_err_p50": pct(aligned, 50) if aligned else None,
        "aligned_err_p95": pct(aligned, 95) if aligned else None,
        "overhead_p50": pct(gaps, 50),
        "overhead_p95": pct(gaps, 95),
        "startup": (run.kills[0].deleted_at - run.started) * 1000 if run.kills else float("nan"),
        "tail": (run.ended - r) * 1000
        if run.kills and (r := own_ready(run.kills[-1])) is not None
        else float("nan"),
        "wall_per_trial": (run.ended - run.started) / n * 1000,
        "non_watch_per_trial": non_watch / n,
        "watch_per_trial": watches / n,
        "verbs": verbs,
        "all_clients": run.api.get("all_clients", {}),
        "cpu": run.cpu,
        "cpu_per_trial": run.cpu / n,
        "rss": run.rss_mib,
        "notes": [
            *run.notes,
            *([f"{mismatched} kills matched to a record of another pod"] if mismatched else []),
            *(
                [
                    f"{run.artifacts} disruption(s) no tool asked for (kwok's by-name delete of a Ready "
                    "replacement, ADR 0005): not trials, their recovery time falls in the overhead gap"
                ]
                if run.artifacts
                else []
            ),
        ],
    }


def _f(v: float | None, digits: int = 1) -> str:
    if v is None or v != v:  # noqa: PLR0124 (NaN)
        return "-"
    return f"{v:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| tool | measures | kills seen / recorded | truth recovery p50 (ms) | timing error p50 / p95 / max (ms) "
        "| error vs the audit log p50 / p95 / max (ms, kills) "
        "| error vs pods + store p50 / p95 (ms) | store-Up milestone error p50 / p95 (ms) "
        "| pod-level error p50 / p95 (ms) | kill-stamp lead p50 (ms) | aligned error p50 / p95 (ms) "
        "| overhead p50 / p95 (ms) | startup / tail (ms) "
        "| wall per trial (ms) | API req/trial non-watch (+watch) | CPU s total (per trial) | peak RSS (MiB) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['tool']} | {r.get('measures', 'pods')} | {r['kills']} / {r['records']} | {_f(r['truth_p50'], 0)} "
            f"| {_f(r['err_p50'])} / {_f(r['err_p95'])} / {_f(r['err_max'])} "
            f"| {_f(r.get('audit_err_p50'))} / {_f(r.get('audit_err_p95'))} / {_f(r.get('audit_err_max'))} "
            f"({r.get('audit_kills', 0)}) "
            f"| {_f(r.get('full_err_p50'))} / {_f(r.get('full_err_p95'))} "
            f"| {_f(r.get('store_err_p50'))} / {_f(r.get('store_err_p95'))} "
            f"| {_f(r['pod_err_p50'])} / {_f(r['pod_err_p95'])} | {_f(r['lead_p50'])} "
            f"| {_f(r['aligned_err_p50'])} / {_f(r['aligned_err_p95'])} "
            f"| {_f(r['overhead_p50'], 0)} / {_f(r['overhead_p95'], 0)} | {_f(r['startup'], 0)} / {_f(r['tail'], 0)} "
            f"| {_f(r['wall_per_trial'], 0)} | {_f(r['non_watch_per_trial'], 2)} (+{_f(r['watch_per_trial'], 2)}) "
            f"| {_f(r['cpu'], 2)} ({_f(r['cpu_per_trial'], 3)}) | {_f(r['rss'], 0)} |"
        )
    return "\n".join(lines)


def verbs_table(rows: list[dict[str, Any]]) -> str:
    verbs = [*apicount.VERBS, "nonresource"]
    used = [v for v in verbs if any(r["verbs"].get(v) for r in rows)]
    lines = [
        "| tool | " + " | ".join(used) + " | all clients (incl. controllers, kwok, other work) |",
        "|---|" + "---|" * (len(used) + 1),
    ]
    for r in rows:
        n = max(r["kills"], 1)
        cells = " | ".join(_f(r["verbs"].get(v, 0) / n, 2) for v in used)
        everyone = ", ".join(f"{k} {v / n:.1f}" for k, v in sorted(r["all_clients"].items()))
        lines.append(f"| {r['tool']} | {cells} | {everyone} |")
    return "\n".join(lines)


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_tool(bed: harness.Bed, tool: str, args: argparse.Namespace) -> Run:
    if tool == "aftershock":
        return run_aftershock(bed, args.trials, tool=tool, with_pd=True)
    if tool == "aftershock-pods":
        return run_aftershock(bed, args.trials, tool=tool, with_pd=False)
    if tool == "aftershock-short":
        return run_aftershock(bed, args.short_trials, tool=tool, with_pd=True)
    if tool == "chaostoolkit":
        return run_chaostoolkit(bed, args.trials, tool=tool, wait_for_disruption=True)
    if tool == "chaostoolkit-ssh":
        return run_chaostoolkit(bed, args.trials, tool=tool, wait_for_disruption=False)
    if tool == "krkn":
        return run_krkn(bed, args.trials, args.krkn_duration, args.krkn_wait_duration)
    raise SystemExit(f"unknown tool {tool}; known: {', '.join(TOOLS)}")


def _open_audit(bed: harness.Bed) -> None:
    global AUDIT  # noqa: PLW0603 (set once, before any run)
    AUDIT = audittruth.AuditLog.of_test_bed(testbed.TESTBED / "cluster.sh", bed.cluster.env())
    if AUDIT is None:
        print("no audit log on this test bed: no audit-log column", flush=True)


def _freeze_heap() -> None:
    """The witness's watch and the PD stand-in live in this process: a full collection of its
    heap (50-100 ms here; it grows with every tool's events) stalls their stamps as much. What
    exists before each tool runs is moved out of the collector's reach."""
    gc.collect()
    gc.freeze()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=int(os.environ.get("BENCH_TRIALS", "20")))
    parser.add_argument("--short-trials", type=int, default=5, help="aftershock-short: for flatness")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument(
        "--krkn-duration",
        type=float,
        default=1.0,
        help="Krkn's wait_for_pods poll interval (its plugin default is 10)",
    )
    parser.add_argument(
        "--krkn-wait-duration",
        type=float,
        default=1.0,
        help="Krkn's tunings.wait_duration between iterations (its default is 60). Below 1 s "
        "krkn-lib's delete_pod can loop forever: it waits for the pod's creationTimestamp "
        "(whole seconds) to change, and a replacement made in the same second as the pod "
        "it replaces never changes it",
    )
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="subjects on the test bed's real node: real store processes heartbeating to a PD stand-in",
    )
    parser.add_argument(
        "--pd-scale",
        type=float,
        default=None,
        help="PD and TiKV's intervals times this (default 0.02 on kwok: 0.2 s heartbeats; "
        "0.05 on the real node: 0.5 s)",
    )
    parser.add_argument("--out", default=None, help="results file (default bench/results/<date>.md)")
    args = parser.parse_args()
    global REAL_NODE, PD_SCALE  # noqa: PLW0603 (set once, before any run)
    REAL_NODE = args.real_node
    PD_SCALE = args.pd_scale if args.pd_scale is not None else (0.05 if args.real_node else 0.02)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="aftershock-compare-"))
    bed = harness.setup(workdir)
    if REAL_NODE and (why := harness.real_node_ready(bed)):
        # Not an error: a test bed without the real node still has the kwok table.
        harness.teardown(bed)
        print(f"SKIPPED the real-node comparison: {why}", flush=True)
        return
    versions = harness.versions(bed)
    _open_audit(bed)
    if REAL_NODE:
        versions["subject"] = f"real node, store stand-in processes, PD intervals x{PD_SCALE:g}"
    runs: list[Run] = []
    try:
        for tool in tools:
            load_before = os.getloadavg()[0]
            print(f"== {tool} (load average {load_before:.2f})", flush=True)
            _freeze_heap()
            cpu0, wall0 = _self_cpu(), time.monotonic()
            runs.append(run_tool(bed, tool, args))
            runs[-1].load = (load_before, os.getloadavg()[0])
            runs[-1].harness_cpu = (_self_cpu() - cpu0, time.monotonic() - wall0)
            print(table([analyse(runs[-1])]), flush=True)
            if runs[-1].steps:
                print(steps_table(runs[-1].steps), flush=True)
    finally:
        harness.teardown(bed)
    rows = [analyse(r) for r in runs]
    date = dt.date.today().isoformat()
    out = Path(args.out) if args.out else RESULTS / f"{date}{'-realnode' if REAL_NODE else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(rows, versions, args, workdir, runs)
    out.write_text(text)
    raw = {
        "title": _title(versions),
        "versions": versions,
        "args": vars(args),
        "rows": rows,
        "runs": [
            {
                "tool": r.tool,
                "load": r.load,
                "harness_cpu": r.harness_cpu,
                "records": r.records,
                "kills": [k.__dict__ for k in r.kills],
                "steps": r.steps,
                "audit_truth": r.audit_truth,
                "witness_wall_offset": r.witness_wall_offset,
            }
            for r in runs
        ],
    }
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    png = chart.write(rows, out.with_suffix(".png"), title=_title(versions))
    print()
    print(text)
    print(f"\nwritten: {out} (+ .json{', ' + png.name if png else ''}); work files: {workdir}")


def _title(versions: dict[str, str]) -> str:
    where = "real node (real store processes, real kubelet)" if REAL_NODE else "kwok nodes"
    return f"{dt.date.today().isoformat()}, {where}, PD intervals x{PD_SCALE:g}"


def render(
    rows: list[dict[str, Any]],
    versions: dict[str, str],
    args: argparse.Namespace,
    workdir: Path,
    runs: list[Run] | None = None,
) -> str:
    loads = "\n".join(
        f"- {r.tool}: {r.load[0]:.2f} at the start, {r.load[1]:.2f} at the end; this harness process "
        f"(watchers, PD stand-in) used {r.harness_cpu[0]:.1f} CPU s in {r.harness_cpu[1]:.0f} s"
        for r in runs or []
    )
    steps = "".join(
        f"\n{r.tool}: the store-Up stamp step by step over {len(r.steps)} trials (`compare.pd_steps`)\n\n"
        f"{steps_table(r.steps)}\n"
        for r in runs or []
        if r.steps
    )
    notes = "\n".join(f"- {r['tool']}: {n}" for r in rows for n in r["notes"]) or "- none"
    vers = "\n".join(f"- {k}: {v}" for k, v in versions.items())
    where = (
        "the real node (real store processes under a real kubelet, a PD stand-in for each subject)"
        if REAL_NODE
        else "kwok nodes"
    )
    return f"""# Benchmark: aftershock and its peers on {where}, {dt.datetime.now().strftime("%Y-%m-%d %H:%M")}

Command: `.venv/bin/python -m bench.compare --trials {args.trials} --tools {args.tools} \
--krkn-duration {args.krkn_duration} --krkn-wait-duration {args.krkn_wait_duration}\
{" --real-node" if REAL_NODE else ""} --pd-scale {PD_SCALE:g}`. Method and definitions: docs/performance.md.
2 cores shared with the control plane and other work: timings are noisy; counts are not.

Chart: ![timing error and overhead per tool]({Path(args.out).with_suffix(".png").name if args.out else f"{dt.date.today().isoformat()}{'-realnode' if REAL_NODE else ''}.png"})

{table(rows)}

API requests per trial by verb (counted by the API server per ServiceAccount through APF FlowSchemas):

{verbs_table(rows)}
{steps}
Load average (1 min) per tool's run:
{loads or "- not recorded"}

Versions and machine:
{vers}

Notes from the runs:
{notes}
"""


if __name__ == "__main__":
    main()
