"""`aftershock compare` end to end: two campaigns run on the local cluster, the second against a
subject that is slower to come back, are told apart with an exit code a CI pipeline can use."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, Subject, campaign, wait_phase
from tests.pdstub import Timing

StartOperator = Callable[..., OperatorProcess]


def _compare(op: OperatorProcess, namespace: str, a: str, b: str) -> tuple[int, dict[str, Any]]:
    proc = testbed.run(
        [
            str(testbed.REPO / ".venv" / "bin" / "aftershock"),
            "compare",
            a,
            b,
            "-n",
            namespace,
            "--db",
            str(op.db),
            "--format",
            "json",
            "--resamples",
            "2000",
        ],
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_a_slower_subject_is_reported_regressed(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    op = start_operator()
    subject.pd.set_timing(Timing.fast(0.02))  # first heartbeat 0.2 s after a restart
    cluster.apply(campaign("fast", namespace, subject.pd_url, trials=8))
    wait_phase(cluster, namespace, "fast", {"Succeeded"}, timeout=180, op=op)
    # The same subject, now taking 1 s longer for a restarted store to report Up in PD (its
    # first heartbeat 1.2 s after the restart: every interval scaled by 0.12 instead of 0.02).
    subject.pd.set_timing(Timing.fast(0.12))
    cluster.apply(campaign("slow", namespace, subject.pd_url, trials=8))
    wait_phase(cluster, namespace, "slow", {"Succeeded"}, timeout=180, op=op)

    code, result = _compare(op, namespace, "fast", "slow")
    assert code == 1
    assert result["verdict"] == "Regressed", result
    code, result = _compare(op, namespace, "slow", "fast")
    assert code == 0
    assert result["verdict"] == "Improved", result
