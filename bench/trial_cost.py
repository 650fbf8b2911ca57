"""What one trial costs the operator, measured on the local test bed.

Runs one Campaign of N trials (interval 0) against a 3-replica TiKV-shaped StatefulSet with the
PD stand-in, the operator as a real process under its own ServiceAccount, then prints:
- operator overhead per trial: time the operator spends that is not waiting for the subject
  (gate passed -> kill sent, plus recovered -> attempt committed), from the ledger's timestamps;
- API requests the operator's own client made per trial, by verb (kopf's own watch and
  finalizer/annotation patches are not in this count);
- the operator's peak RSS (VmHWM).

Usage: .venv/bin/python -m bench.trial_cost [--trials 20]
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import re
import statistics
import tempfile
from pathlib import Path

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, campaign, start_subject, wait_phase


def _ts(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()

    cluster = testbed.start_or_reuse()
    ns = testbed.unique("bench")
    cluster.kubectl("create", "namespace", ns)
    testbed.wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0, 60
    )
    tmp = Path(tempfile.mkdtemp(prefix="aftershock-bench-"))
    kubeconfig = testbed.install_operator_identity(cluster, tmp / "sa.kubeconfig")
    subject = start_subject(cluster, ns)
    op = OperatorProcess(
        kubeconfig=kubeconfig, db=tmp / "ledger.db", namespaces=[ns], log_path=tmp / "op.log"
    )
    op.start()
    try:
        cluster.apply(
            campaign(
                "cost",
                ns,
                subject.pd_url,
                trials=args.trials,
                steadyState={"timeoutSeconds": 60, "stableSeconds": 0},
            )
        )
        final = wait_phase(cluster, ns, "cost", {"Succeeded", "Failed"}, timeout=60 + 10 * args.trials, op=op)
        print("campaign:", final["status"]["phase"], final["status"]["verdict"], final["status"]["message"])
        assert op.proc is not None
        hwm = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{op.proc.pid}/status").read_text())
        assert hwm is not None, "no VmHWM in the operator's /proc status"
        rss_kb = int(hwm.group(1))
        report = json.loads(
            testbed.run(
                [
                    str(testbed.REPO / ".venv/bin/aftershock"),
                    "report",
                    "cost",
                    "-n",
                    ns,
                    "--db",
                    str(op.db),
                    "--format",
                    "json",
                ]
            ).stdout
        )
        log = op.log_text()
        match = re.findall(r"API requests so far by verb: (\{.*\})", log)
    finally:
        op.stop()
        subject.close()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)

    for t in report["trials"]:
        if t["outcome"] != "recovered":
            print("attempt", t["index"], t["attempt"], t["outcome"], t["error"])
    trials = [t for t in report["trials"] if t["outcome"] == "recovered"]
    overhead = []
    recovery = []
    for t in trials:
        tm = t["timings"]
        before_kill = -tm["gate_passed"]["offsetSeconds"]
        after_recovery = _ts(t["finishedAt"]) - _ts(tm["recovered"]["wall"])
        overhead.append((before_kill + after_recovery) * 1000)
        recovery.append(t["recoverySeconds"] * 1000)
    requests = ast.literal_eval(match[-1]) if match else {}
    n = len(trials)
    print(f"\n| metric ({n} trials) | p50 | p95 | max |")
    print("|---|---|---|---|")
    q = statistics.quantiles
    print(
        f"| operator overhead per trial (ms) | {statistics.median(overhead):.1f} | "
        f"{q(overhead, n=20, method='inclusive')[18]:.1f} | {max(overhead):.1f} |"
    )
    print(
        f"| recovery, kill -> healthy (ms) | {statistics.median(recovery):.1f} | "
        f"{q(recovery, n=20, method='inclusive')[18]:.1f} | {max(recovery):.1f} |"
    )
    total = sum(requests.values())
    print(
        f"\nAPI requests by the operator's client: {requests} = {total} total, "
        f"{total / max(n, 1):.2f} per trial"
    )
    print(f"operator peak RSS: {rss_kb / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
