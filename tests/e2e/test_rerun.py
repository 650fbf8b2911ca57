"""Re-runs without delete: changing the annotation aftershock.dev/run runs a finished Campaign
again; the ledger keeps both runs, and report/export pick a run (the latest by default)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, Subject, campaign, get_campaign, wait_phase

StartOperator = Callable[..., OperatorProcess]


def _aftershock(op: OperatorProcess, *args: str) -> Any:
    out = testbed.run([str(testbed.REPO / ".venv" / "bin" / "aftershock"), *args, "--db", str(op.db)]).stdout
    return json.loads(out)


def test_changing_the_run_annotation_runs_the_campaign_again_and_the_ledger_keeps_both_runs(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    op = start_operator()
    cluster.apply(campaign("again", namespace, subject.pd_url, trials=2, intervalSeconds=0))
    first = wait_phase(cluster, namespace, "again", {"Succeeded", "Failed"}, timeout=120, op=op)
    assert (first["status"]["phase"], first["status"]["run"]["number"]) == ("Succeeded", 1)

    cluster.kubectl("annotate", "campaign", "again", "-n", namespace, "aftershock.dev/run=second")

    def second_run_finished() -> dict[str, Any] | None:
        assert op.alive(), op.log_text()[-4000:]
        status = get_campaign(cluster, namespace, "again").get("status") or {}
        run = status.get("run") or {}
        return status if run.get("number") == 2 and status.get("phase") in ("Succeeded", "Failed") else None

    status = testbed.wait_for(second_run_finished, 120, what="run 2 finished")
    assert (status["phase"], status["progress"], status["run"]["token"]) == ("Succeeded", "2/2", "second")

    rows = _aftershock(op, "export", "--all", "--format", "json")
    by_run: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)
    assert sorted(by_run) == [1, 2]
    for run in (1, 2):
        recovered = [r for r in by_run[run] if r["outcome"] == "recovered"]
        assert sorted(r["index"] for r in recovered) == [0, 1], by_run[run]
    assert {r["campaignUid"] for r in rows} == {first["metadata"]["uid"]}
    # Run 2's kills all come after run 1's.
    assert min(r["startedAtUnix"] for r in by_run[2]) > max(r["finishedAtUnix"] for r in by_run[1])

    latest = _aftershock(op, "report", "again", "-n", namespace, "--format", "json")
    earlier = _aftershock(op, "report", "again", "-n", namespace, "--run", "1", "--format", "json")
    assert (latest["campaign"]["run"], earlier["campaign"]["run"]) == (2, 1)
    assert latest["campaign"]["runToken"] == "second"
    assert [t["index"] for t in earlier["trials"] if t["outcome"] == "recovered"] == [0, 1]
