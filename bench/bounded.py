"""A big cluster, few Campaigns: does the operator's memory follow its Campaigns or the cluster?

N namespaces of P pods each (20,000 pods in 200 namespaces by default), in K of them a subject
(a 3-pod StatefulSet on kwok nodes) and one Campaign that keeps running (pods-only health, many
trials). One operator process serving every namespace (`--all-namespaces`, the cluster-wide
install) is started for each code under test, and measured:

- RSS sampled every 0.5 s from /proc while the K Campaigns run, and the peak (VmHWM);
- the API requests it makes at start, per verb, counted by the API server itself (API Priority
  and Fairness FlowSchemas per ServiceAccount and verb: `bench/apicount.py`), from its start
  until its K Campaigns run, and the time to get there.

Codes: `before` is the operator at `--before-ref` (git archive of operator/ at that commit, run
from the same virtualenv), whose default pod watch in a cluster-wide install was one watch of
every pod of the cluster, listed unpaginated from etcd; `after` is this checkout (one pod watch
per namespace with running Campaigns, lists paged from the watch cache).

The pods of the N namespaces are bare pods that no scheduler takes (`schedulerName` of none):
they exist in the API and in every cluster-wide watch as any pod does, but no node, kwok
controller or scheduler works on them. They are created once and reused by both codes
(`--prefix` reuses a previous run's), and deleted at the end unless `--keep`.

Usage: .venv/bin/python -m bench.bounded [--namespaces 200] [--pods 100] [--campaign-namespaces 10]
       [--codes before,after] [--before-ref 64bdf8b] [--measure-seconds 60] [--prefix P] [--keep]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client
from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, campaign, tikv_statefulset

from bench import apicount, harness

RESULTS = Path(__file__).resolve().parent / "results"
UNSCHEDULED = "aftershock-bench-none"


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/name": "filler", "app.kubernetes.io/part-of": apicount.PREFIX},
        },
        "spec": {
            "schedulerName": UNSCHEDULED,
            "containers": [
                {
                    "name": "app",
                    "image": "registry.local/none:never-pulled",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
            ],
        },
    }


def _fill(core: client.CoreV1Api, namespaces: list[str], pods: int) -> float:
    """P pods in each namespace (those already there are kept); seconds it took."""
    started = time.monotonic()

    def one_namespace(ns: str) -> None:
        have = {
            p.metadata.name
            for p in core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=filler").items
        }
        for i in range(pods):
            name = f"filler-{i:03d}"
            if name not in have:
                core.create_namespaced_pod(ns, _pod(name))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one_namespace, namespaces))
    return time.monotonic() - started


def _rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a live process, MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _before_tree(ref: str, workdir: Path) -> Path:
    out = workdir / f"operator-{ref}"
    if not out.exists():
        out.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(testbed.REPO), "archive", ref, "operator"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "operator"


def measure(
    bed: harness.Bed, code: str, args: argparse.Namespace, subjects: list[str], workdir: Path
) -> dict[str, Any]:
    c = bed.cluster
    tool = f"bounded-{code}"
    kubeconfig = bed.identity(tool, role="aftershock")
    saved = os.environ.get("PYTHONPATH")
    if code == "before":
        os.environ["PYTHONPATH"] = str(_before_tree(args.before_ref, workdir))
    op = OperatorProcess(
        kubeconfig=kubeconfig,
        db=workdir / f"ledger-{code}.db",
        namespaces=None,  # --all-namespaces: the cluster-wide install
        log_path=workdir / f"operator-{code}.log",
        # The bench's own ServiceAccount has the operator's ClusterRole only, not the author
        # check's SubjectAccessReview right (ClusterRole aftershock-author-check): the check is
        # not what is measured here, and the "before" code has none.
        extra_args=["--author-check", "off"] if code == "after" else [],
    )
    counts0 = apicount.scrape(c)
    t0 = time.monotonic()
    op.start()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved
    assert op.proc is not None
    names = [f"{code}-{uuid.uuid4().hex[:5]}" for _ in subjects]
    for ns, name in zip(subjects, names, strict=True):
        c.apply(
            campaign(
                name,
                ns,
                None,
                trials=100000,
                intervalSeconds=1,
                steadyState={"timeoutSeconds": 300, "stableSeconds": 0},
                recovery={"timeoutSeconds": 120, "settleSeconds": 0},
            )
        )
    samples: list[float] = []

    def running() -> bool:
        samples.append(_rss(op.proc.pid)[0])  # type: ignore[union-attr]
        phases = [
            (c.get_json("campaign", n, "-n", ns).get("status") or {}).get("phase")
            for ns, n in zip(subjects, names, strict=True)
        ]
        return all(p == "Running" for p in phases)

    testbed.wait_for(running, 600, interval=0.5, what=f"{code}: every Campaign Running")
    to_running = time.monotonic() - t0
    counts1 = apicount.scrape(c)
    start_requests = apicount.delta(counts0, counts1, tool)["tool"]
    deadline = time.monotonic() + args.measure_seconds
    while time.monotonic() < deadline:
        samples.append(_rss(op.proc.pid)[0])
        time.sleep(0.5)
    rss_now, peak = _rss(op.proc.pid)
    alive = op.alive()
    op.stop()
    for ns, name in zip(subjects, names, strict=True):
        c.kubectl(
            "patch",
            "campaign",
            name,
            "-n",
            ns,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        c.kubectl("delete", "campaign", name, "-n", ns, "--wait=false", check=False)
    return {
        "code": code,
        "alive": alive,
        "seconds_to_running": round(to_running, 1),
        "start_requests": start_requests,
        "rss_peak_mib": round(peak, 1),
        "rss_p50_mib": round(statistics.median(samples), 1),
        "rss_last_mib": round(rss_now, 1),
        "rss_samples": len(samples),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--campaign-namespaces", type=int, default=10)
    parser.add_argument("--codes", default="before,after")
    parser.add_argument("--before-ref", default="64bdf8b")
    parser.add_argument("--measure-seconds", type=float, default=60)
    parser.add_argument("--prefix", default=None, help="reuse the namespaces of an earlier run")
    parser.add_argument("--keep", action="store_true", help="keep the namespaces and pods")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="aftershock-bounded-"))
    bed = harness.setup(workdir)
    c = bed.cluster
    api = c.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    prefix = args.prefix or f"bb{uuid.uuid4().hex[:4]}"
    namespaces = [f"{prefix}-{i:03d}" for i in range(args.namespaces)]
    result: dict[str, Any] = {"date": dt.date.today().isoformat(), "prefix": prefix, "args": vars(args)}
    try:
        existing = {n.metadata.name for n in core.list_namespace().items}
        for ns in namespaces:
            if ns not in existing:
                core.create_namespace(
                    {"metadata": {"name": ns, "labels": {"app.kubernetes.io/part-of": apicount.PREFIX}}}
                )
        testbed.wait_for(
            lambda: all(_has_sa(core, ns) for ns in namespaces[: args.campaign_namespaces]),
            120,
            what="ServiceAccounts",
        )
        result["fill_seconds"] = round(_fill(core, namespaces, args.pods), 1)
        total = sum(
            1
            for _ in core.list_pod_for_all_namespaces(
                label_selector="app.kubernetes.io/name=filler", limit=50000
            ).items
        )
        result["filler_pods"] = total
        print(f"{total} filler pods in {len(namespaces)} namespaces ({result['fill_seconds']} s)", flush=True)
        subjects = namespaces[: args.campaign_namespaces]
        for ns in subjects:
            try:
                apps.create_namespaced_stateful_set(
                    ns,
                    tikv_statefulset(replicas=3)
                    | {"spec": {**tikv_statefulset(replicas=3)["spec"], "volumeClaimTemplates": []}},
                )
            except client.ApiException as exc:
                if exc.status != 409:
                    raise
        for ns in subjects:
            c.kubectl("rollout", "status", "statefulset/tikv", "-n", ns, "--timeout=300s", timeout=320)
        result["runs"] = []
        for code in args.codes.split(","):
            run = measure(bed, code, args, subjects, workdir)
            print(json.dumps(run), flush=True)
            result["runs"].append(run)
    finally:
        if not args.keep:
            for ns in namespaces:
                harness.drop_namespace(bed, ns)
        harness.teardown(bed)
    out = RESULTS / f"{result['date']}-bounded-{args.namespaces * args.pods}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _has_sa(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespaced_service_account("default", ns)
    except client.ApiException:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
