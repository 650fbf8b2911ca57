# ruff: noqa: E501  (Markdown table templates read better unwrapped)
"""Chaos kinds on the test bed's real node: container kills side by side with the peers that have
one, and per kind and subject the recovery p50/p95 over N trials.

  .venv/bin/python -m bench.kinds compare [--trials 10] [--tools aftershock,chaostoolkit,krkn]
  .venv/bin/python -m bench.kinds trials  [--trials 10] [--subjects tikv,etcd] [--kinds container_kill,node_kill]

Subjects (real processes under the real node's kubelet, pods sharing one PID namespace, which
container_kill needs): ``tikv``, three TiKV store stand-ins (tests/pdstub/store.py) reporting to
a PD stand-in on loopback (0.5 s heartbeats); ``etcd``, three etcd members (hostNetwork, loopback
ports). Ground truth is the harness's own pod watch (`bench.groundtruth`): for a container kill,
from the first sight of the victim's container down to a new containerID running and Ready in
the same pod; for a pod kill, from the victim seen deleted to the set whole again. The etcd
members' own health is aftershock's alone here (its `member_healthy`/`cluster_healthy`).

compare (container kill, TiKV stand-in):
- aftershock: a Campaign of `container_kill` (ADR 0018), its recovery from the ledger's report;
- Chaos Toolkit 1.19 + chaostoolkit-kubernetes 0.39: no container-kill action exists; the
  experiment a user writes is ``exec_in_pods`` with a kill command (here the same script
  aftershock runs, so the kill is identical), then the pod-kill bench's StatefulSet probes;
  recovery as its journal tells it (after-hypothesis end minus action end);
- krkn-lib 7.0.x: Krkn's container scenario plugin's calls (bench/krkn_runner.py
  ``--container-kill``), its ``affected_pods`` as the recovery it records.

Writes bench/results/<date>-container-kill.md/.json (compare) and <date>-kinds.md/.json (trials).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.e2e import realnode, testbed
from tests.e2e.operator import TIKV_LABELS, OperatorProcess, free_port, wait_phase
from tests.e2e.test_etcd_realnode import LABELS as ETCD_LABELS
from tests.e2e.test_etcd_realnode import etcd_statefulset
from tests.pdstub import PdStandIn, Timing

from aftershock.chaos.container_kill import KILL_SCRIPT
from bench import ctk_experiment, groundtruth, harness

RESULTS = Path(__file__).resolve().parent / "results"
#: This bench's own identities and roles, apart from bench.compare's and bench.scale's
#: (``aftershock-bench``), whose teardown removes theirs while this may run.
#: Unique per run: namespace deletion on a busy test bed can take minutes.
KINDS_NS = testbed.unique("aftershock-bench-kinds")
PART_OF = {"app.kubernetes.io/part-of": KINDS_NS}
PEER_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": f"{KINDS_NS}-peer", "labels": PART_OF},
    "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
        # A container kill by exec (Chaos Toolkit's exec_in_pods, Krkn's exec_cmd_in_pod).
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
        {"apiGroups": [""], "resources": ["namespaces", "nodes"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "list", "watch"]},
    ],
}
#: The operator's own roles as shipped: its base role and each chaos kind's.
OPERATOR_ROLES = (
    "aftershock",
    "aftershock-author-check",
    "aftershock-chaos-node-kill",
    "aftershock-chaos-container-kill",
)


class KindsBed(harness.Bed):
    def identity(self, tool: str, role: str = PEER_ROLE["metadata"]["name"]) -> str:  # type: ignore[index]
        """A ServiceAccount of this bench's namespace bound to `role` (``aftershock``: the
        operator's roles), and a kubeconfig with its token."""
        self.cluster.kubectl("create", "serviceaccount", tool, "-n", KINDS_NS, check=False)
        for name in OPERATOR_ROLES if role == "aftershock" else (role,):
            self.cluster.apply(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": f"{KINDS_NS}-{tool}-{name}", "labels": PART_OF},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": tool, "namespace": KINDS_NS}],
                }
            )
        return self.cluster.service_account_kubeconfig(
            KINDS_NS, tool, self.workdir / f"{tool}.kubeconfig", "4h"
        )


def setup(workdir: Path) -> KindsBed:
    cluster = testbed.start_or_reuse()
    manifests = testbed.REPO / "manifests"
    crd = manifests / "crd" / "campaigns.aftershock.dev.yaml"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for f in ("rbac.yaml", "chaos-rbac.yaml"):
        cluster.kubectl("apply", "-f", str(manifests / "operator" / f))
    cluster.kubectl("apply", "-f", str(manifests / "admission" / "author.yaml"))
    harness._ensure_namespace(cluster, KINDS_NS)
    cluster.apply(PEER_ROLE)
    workdir.mkdir(parents=True, exist_ok=True)
    return KindsBed(cluster, workdir)


def teardown(bed: harness.Bed) -> None:
    c = bed.cluster
    c.kubectl("delete", "clusterrolebindings,clusterroles", "-l", f"app.kubernetes.io/part-of={KINDS_NS}",
              "--ignore-not-found", check=False)  # fmt: skip
    c.kubectl("delete", "namespace", KINDS_NS, "--wait=false", "--ignore-not-found", check=False)


SELECTOR = ",".join(f"{k}={v}" for k, v in TIKV_LABELS.items())
PD_SCALE = 0.05


@dataclass
class Subject:
    kind: str  # tikv or etcd
    ns: str
    campaign_subject: dict[str, Any]
    container: str
    statefulset: str
    selector: str
    pd: PdStandIn | None = None
    data_dir: Path | None = None

    def close(self, bed: harness.Bed) -> None:
        bed.cluster.kubectl(
            "delete",
            "statefulset",
            self.statefulset,
            "-n",
            self.ns,
            "--wait=true",
            "--timeout=60s",
            check=False,
        )
        if self.pd is not None:
            self.pd.stop()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        harness.drop_namespace(bed, self.ns)


def _namespace(bed: harness.Bed, prefix: str) -> str:
    ns = testbed.unique(prefix)
    c = bed.cluster
    c.kubectl("create", "namespace", ns)
    testbed.wait_for(
        lambda: c.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0,
        60,
        what=f"default ServiceAccount in {ns}",
    )
    return ns


def _shared_pid(objs: list[dict[str, Any]], grace: int) -> list[dict[str, Any]]:
    for obj in objs:
        if obj["kind"] == "StatefulSet":
            pod = obj["spec"]["template"]["spec"]
            pod["shareProcessNamespace"] = True
            pod["terminationGracePeriodSeconds"] = grace
            # An emptyDir rather than a claim: the busy test bed's provisioner left claims
            # unbound for minutes, and the stand-in keeps nothing that must outlive its pod.
            if obj["spec"].pop("volumeClaimTemplates", None) is not None:
                pod["volumes"] = [*pod.get("volumes", []), {"name": "data", "emptyDir": {}}]
    return objs


def make_subject(bed: harness.Bed, kind: str, prefix: str) -> Subject:
    ns = _namespace(bed, prefix)
    if kind == "tikv":
        timing = Timing.fast(PD_SCALE)
        pd = PdStandIn(timing=timing, headless_service="tikv-peer", namespace=ns)
        url = pd.start()
        objs = realnode.store_standin(
            "tikv", url, heartbeat_interval=timing.heartbeat_interval, labels=dict(TIKV_LABELS)
        )
        bed.cluster.apply(yaml.safe_dump_all(_shared_pid(objs, 0)), namespace=ns)
        bed.cluster.kubectl("rollout", "status", "statefulset/tikv", "-n", ns, "--timeout=600s", timeout=620)
        subject = {"kind": "TiKV", "selector": {"matchLabels": dict(TIKV_LABELS)}, "pdURL": url}
        return Subject("tikv", ns, subject, "tikv", "tikv", SELECTOR, pd=pd)
    clients = [free_port() for _ in range(3)]
    peers = [free_port() for _ in range(3)]
    data_dir = Path(f"/tmp/aftershock-bench-{ns}")
    objs = _shared_pid(etcd_statefulset(clients, peers, str(data_dir)), 0)
    bed.cluster.apply(yaml.safe_dump_all(objs), namespace=ns)
    bed.cluster.kubectl("rollout", "status", "statefulset/etcd", "-n", ns, "--timeout=600s", timeout=620)
    endpoints = [f"http://127.0.0.1:{p}" for p in clients]
    subject = {"kind": "Etcd", "selector": {"matchLabels": dict(ETCD_LABELS)}, "endpoints": endpoints}
    selector = ",".join(f"{k}={v}" for k, v in ETCD_LABELS.items())
    return Subject("etcd", ns, subject, "etcd", "etcd", selector, data_dir=data_dir)


# --- runs ---------------------------------------------------------------------------------------


@dataclass
class Run:
    tool: str
    subject: str
    chaos: str
    trials: int
    #: per trial: victim, the tool's recorded recovery (s), the truth's (s), milestones.
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall: float = 0.0


def _truth(
    events: list[groundtruth.PodEvent], stamps: list[tuple[str, float]], chaos: str, container: str
) -> dict[str, float | None]:
    """ "victim@stamp" -> recovery (s) as the harness's own watch saw it (None: no clean kill)."""
    out: dict[str, float | None] = {}
    if chaos == "container_kill":
        for k in groundtruth.container_kills(events, stamps, container):
            out[f"{k.victim}@{k.stamp:.3f}"] = k.recovery if k.same_pod else None
        return out
    ordered = sorted(stamps, key=lambda s: s[1])
    found = [k for k in groundtruth.kills(events, 3, ordered) if k.by_tool]
    for (victim, stamp), pod_kill in zip(ordered, found, strict=False):
        out[f"{victim}@{stamp:.3f}"] = pod_kill.recovery if pod_kill.victim == victim else None
    return out


def run_aftershock(bed: harness.Bed, subject_kind: str, chaos: str, trials: int) -> Run:
    run = Run("aftershock", subject_kind, chaos, trials)
    subject = make_subject(bed, subject_kind, "bench-kinds")
    watcher = groundtruth.PodWatcher(bed.cluster.api_client(), subject.ns).start()
    op = OperatorProcess(
        kubeconfig=bed.identity("aftershock", role="aftershock"),
        db=bed.workdir / f"{subject.ns}.db",
        namespaces=[subject.ns],
        log_path=bed.workdir / f"{subject.ns}.log",
        extra_args=["--probe-interval", "0.1"],
    )
    spec_chaos: dict[str, Any] = {"type": chaos, "mode": "one"}
    if chaos == "container_kill":
        spec_chaos["container"] = subject.container
    else:
        spec_chaos["gracePeriodSeconds"] = 0
    if subject_kind == "etcd":
        spec_chaos["target"] = "Leader"
    body = {
        "apiVersion": "aftershock.dev/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": "bench", "namespace": subject.ns},
        "spec": {
            "subject": subject.campaign_subject,
            "chaos": spec_chaos,
            "trials": trials,
            "intervalSeconds": 0,
            "steadyState": {"timeoutSeconds": 180, "stableSeconds": 1},
            # No relapse watch (the peers have none); the kubelet's restart back-off (10 s, then
            # doubling, for a container killed again soon) is part of the fault.
            "recovery": {"timeoutSeconds": 300, "settleSeconds": 0},
        },
    }
    started = time.monotonic()
    try:
        op.start()
        bed.cluster.apply(body)
        final = wait_phase(
            bed.cluster, subject.ns, "bench", {"Succeeded", "Failed"}, timeout=300 + 60 * trials, op=op
        )
        run.wall = time.monotonic() - started
        report = harness.report_json(subject.ns, "bench", op.db)
    finally:
        op.stop()
        watcher.stop()
        subject.close(bed)
    status = final["status"]
    run.notes.append(
        f"Campaign {status.get('phase')}: {status.get('message')}; status recovery {status.get('recovery')}"
    )
    stamps = [
        (t["victims"][0]["name"], _iso(t["timings"]["kill_sent"]["wall"]))
        for t in report["trials"]
        if t["victims"] and "kill_sent" in t["timings"] and t["outcome"] == "recovered"
    ]
    truth = _truth(watcher.snapshot(), stamps, chaos, subject.container)
    for t in report["trials"]:
        if t["outcome"] != "recovered":
            run.notes.append(f"attempt {t['index']}.{t['attempt']}: {t['outcome']} {t.get('error')}")
            continue
        victim = t["victims"][0]["name"]
        stamp = _iso(t["timings"]["kill_sent"]["wall"])
        own = {k: (v or {}).get("offsetSeconds") for k, v in t["timings"].items()}
        # The same span as the truth's, from aftershock's own milestones: container down ->
        # new container Ready, or victim gone -> replacement Ready (its recovery itself runs
        # from the kill's first answer to the subject healthy: store Up, members healthy).
        start, end = (
            ("container_down", "container_ready")
            if chaos == "container_kill"
            else ("victim_gone", "replacement_ready")
        )
        aligned = (
            None
            if own.get(start) is None or own.get(end) is None
            else float(own[end] or 0) - float(own[start] or 0)
        )
        run.rows.append(
            {
                "victim": victim,
                "recorded": t["recoverySeconds"],
                "aligned": aligned,
                "truth": truth.get(f"{victim}@{stamp:.3f}"),
                "milestones": own,
            }
        )
    return run


def _iso(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def ctk_container_experiment(ns: str, selector: str, container: str) -> dict[str, Any]:
    exp = ctk_experiment.build_experiment(ns, selector)
    exp["title"] = "Killing one TiKV store process in place leaves the StatefulSet whole again"
    exp["method"][0] = {
        "type": "action",
        "name": "terminate-one-tikv-pod",  # the name read_journal reads the kill from
        "provider": {
            "type": "python",
            "module": "chaosk8s.pod.actions",
            "func": "exec_in_pods",
            "arguments": {
                "cmd": ["sh", "-c", KILL_SCRIPT],
                "label_selector": selector,
                "ns": ns,
                "qty": 1,
                "rand": True,
                "container_name": container,
            },
        },
    }
    return exp


def run_chaostoolkit(bed: harness.Bed, trials: int) -> Run:
    run = Run("chaostoolkit", "tikv", "container_kill", trials)
    chaos = harness.VENVS / "chaostoolkit" / "bin" / "chaos"
    if not chaos.exists():
        raise SystemExit(f"{chaos} missing: run bench/peers.sh first")
    subject = make_subject(bed, "tikv", "bench-ctk-ck")
    kubeconfig = bed.identity("chaostoolkit")
    exp = bed.workdir / "ck-experiment.json"
    exp.write_text(
        json.dumps(ctk_container_experiment(subject.ns, subject.selector, subject.container), indent=2)
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(bed.workdir), "KUBECONFIG": kubeconfig, "LANG": "C.UTF-8"}
    watcher = groundtruth.PodWatcher(bed.cluster.api_client(), subject.ns).start()
    records = []
    started = time.monotonic()
    try:
        for i in range(trials):
            journal = bed.workdir / f"ck-journal-{i}.json"
            fin = harness.run_measured(
                [str(chaos), "--no-version-check", "--log-file", str(bed.workdir / "ctk-ck.log"), "run",
                 "--journal-path", str(journal), str(exp)],
                env=env,
                log=bed.workdir / "ctk-ck.out",
                timeout=300,
            )  # fmt: skip
            raw = json.loads(journal.read_text()) if journal.exists() else {}
            rec = ctk_experiment.read_journal(raw) if raw else {"recovery": None}
            victims = rec.get("victims") or []
            rec["victim"] = victims[0].get("pod_name") if victims and isinstance(victims[0], dict) else None
            records.append(rec)
            if fin.returncode != 0 or rec.get("status") != "completed":
                run.notes.append(f"run {i}: exit {fin.returncode}, status {rec.get('status')}")
    finally:
        run.wall = time.monotonic() - started
        watcher.stop()
        subject.close(bed)
    stamps = [
        (str(r["victim"]), float(r["kill_started"] or 0.0))
        for r in records
        if r.get("victim") and r.get("kill_started")
    ]
    truth = _truth(watcher.snapshot(), stamps, "container_kill", "tikv")
    for r in records:
        key = f"{r.get('victim')}@{(r.get('kill_started') or 0):.3f}"
        run.rows.append({"victim": r.get("victim"), "recorded": r.get("recovery"), "truth": truth.get(key)})
    return run


def run_krkn(bed: harness.Bed, trials: int, action: int) -> Run:
    run = Run(f"krkn (action {action})", "tikv", "container_kill", trials)
    python = harness.VENVS / "krkn" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} missing: run bench/peers.sh first")
    subject = make_subject(bed, "tikv", "bench-krkn-ck")
    kubeconfig = bed.identity("krkn")
    out = bed.workdir / f"krkn-ck-{action}.jsonl"
    watcher = groundtruth.PodWatcher(bed.cluster.api_client(), subject.ns).start()
    started = time.monotonic()
    try:
        fin = harness.run_measured(
            [str(python), str(Path(__file__).with_name("krkn_runner.py")), "--kubeconfig", kubeconfig,
             "--namespace", subject.ns, "--selector", subject.selector, "--iterations", str(trials),
             "--container-kill", str(action), "--container", subject.container,
             "--recovery-time", "30", "--wait-duration", "1", "--out", str(out)],
            env={"PATH": os.environ["PATH"], "HOME": str(bed.workdir), "LANG": "C.UTF-8"},
            log=bed.workdir / "krkn-ck.log",
            timeout=120 + 90 * trials,
        )  # fmt: skip
        if fin.returncode != 0:
            run.notes.append(f"krkn runner exit {fin.returncode} (see krkn-ck.log)")
    finally:
        run.wall = time.monotonic() - started
        watcher.stop()
        subject.close(bed)
    items = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    stamps = [(it["victim"], it["kill_ts"]) for it in items]
    truth = _truth(watcher.snapshot(), stamps, "container_kill", "tikv")
    for it in items:
        recorded = it["recovered"][0]["total"] if it["recovered"] else None
        run.rows.append({"victim": it["victim"], "recorded": recorded, "truth": truth.get(f"{it['victim']}@{it['kill_ts']:.3f}"),
                         "responses": it["responses"], "unrecovered": it["unrecovered"]})  # fmt: skip
        if it["unrecovered"] or not it["recovered"]:
            run.notes.append(
                f"iteration {it['iteration']}: recovered {it['recovered']}, unrecovered {it['unrecovered']}, exec said {it['responses']}"
            )
    return run


# --- analysis -------------------------------------------------------------------------------------


def pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _f(v: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def summarise(run: Run) -> dict[str, Any]:
    recorded = [r["recorded"] for r in run.rows if r.get("recorded") is not None]
    truth = [r["truth"] for r in run.rows if r.get("truth") is not None]
    # Peers measure the pods alone: their recorded number is their pod-level one.
    aligned = [(r["aligned"] if "aligned" in r else r.get("recorded"), r.get("truth")) for r in run.rows]
    errors = [abs(a - t) for a, t in aligned if a is not None and t is not None]
    return {
        "tool": run.tool,
        "subject": run.subject,
        "chaos": run.chaos,
        "trials": run.trials,
        "recorded_n": len(recorded),
        "killed_n": len(truth),
        "recorded_p50": pct(recorded, 50),
        "recorded_p95": pct(recorded, 95),
        "truth_p50": pct(truth, 50),
        "truth_p95": pct(truth, 95),
        "err_p50_ms": None if not errors else pct(errors, 50) * 1000,  # type: ignore[operator]
        "err_p95_ms": None if not errors else pct(errors, 95) * 1000,  # type: ignore[operator]
        "wall_per_trial": run.wall / max(run.trials, 1),
        "notes": run.notes,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| tool | subject | kind | trials recorded / truth saw a kill | recorded recovery p50 / p95 (s) | truth (pod watch) p50 / p95 (s) | pod-level timing error vs truth p50 / p95 (ms) | wall per trial (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tool']} | {r['subject']} | {r['chaos']} | {r['recorded_n']} / {r['killed_n']} "
            f"| {_f(r['recorded_p50'])} / {_f(r['recorded_p95'])} | {_f(r['truth_p50'])} / {_f(r['truth_p95'])} "
            f"| {_f(r['err_p50_ms'], digits=0)} / {_f(r['err_p95_ms'], digits=0)} | {_f(r['wall_per_trial'], digits=1)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("compare", "trials"))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--tools", default="aftershock,chaostoolkit,krkn")
    parser.add_argument(
        "--krkn-action", type=int, default=1, help="Krkn's container scenario `action` (its default 1)"
    )
    parser.add_argument("--subjects", default="tikv,etcd")
    parser.add_argument("--kinds", default="container_kill,node_kill")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="aftershock-kinds-"))
    bed = setup(workdir)
    if why := harness.real_node_ready(bed):
        teardown(bed)
        raise SystemExit(f"the real node cannot take a subject: {why}")
    runs: list[Run] = []
    try:
        if args.mode == "compare":
            for tool in [t for t in args.tools.split(",") if t]:
                print(f"== {tool}", flush=True)
                if tool == "aftershock":
                    runs.append(run_aftershock(bed, "tikv", "container_kill", args.trials))
                elif tool == "chaostoolkit":
                    runs.append(run_chaostoolkit(bed, args.trials))
                elif tool == "krkn":
                    runs.append(run_krkn(bed, args.trials, args.krkn_action))
                else:
                    raise SystemExit(f"unknown tool {tool}")
                print(table([summarise(runs[-1])]), flush=True)
        else:
            for subject in [s for s in args.subjects.split(",") if s]:
                for chaos in [k for k in args.kinds.split(",") if k]:
                    print(f"== {subject} {chaos}", flush=True)
                    runs.append(run_aftershock(bed, subject, chaos, args.trials))
                    print(table([summarise(runs[-1])]), flush=True)
    finally:
        teardown(bed)
    rows = [summarise(r) for r in runs]
    date = dt.date.today().isoformat()
    name = "container-kill" if args.mode == "compare" else "kinds"
    out = Path(args.out) if args.out else RESULTS / f"{date}-{name}.md"
    notes = (
        "\n".join(f"- {r['tool']} {r['subject']} {r['chaos']}: {n}" for r in rows for n in r["notes"])
        or "- none"
    )
    text = (
        f"# Chaos kinds on the real node ({args.mode}), {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}\n\n"
        f"Command: `.venv/bin/python -m bench.kinds {args.mode} --trials {args.trials}"
        f"{' --tools ' + args.tools + ' --krkn-action ' + str(args.krkn_action) if args.mode == 'compare' else ' --subjects ' + args.subjects + ' --kinds ' + args.kinds}`."
        " Method: bench/kinds.py's docstring and docs/performance.md. 2 cores shared with other work: timings are noisy.\n\n"
        f"{table(rows)}\n\nNotes from the runs:\n{notes}\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    raw = {"args": vars(args), "rows": rows, "runs": [r.__dict__ for r in runs]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    print(text)
    print(f"written: {out} (+ .json); work files: {workdir}")


if __name__ == "__main__":
    main()
