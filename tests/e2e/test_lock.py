"""Two Campaigns on one subject never disturb it at the same time (a Lease per subject)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

from tests.e2e import testbed
from tests.e2e.operator import OperatorProcess, Subject, campaign, condition, get_campaign, wait_phase

StartOperator = Callable[..., OperatorProcess]


def _windows(op: OperatorProcess, namespace: str, name: str) -> list[tuple[float, float]]:
    proc = testbed.run(
        [
            str(testbed.REPO / ".venv" / "bin" / "aftershock"),
            "report",
            name,
            "-n",
            namespace,
            "--db",
            str(op.db),
            "--format",
            "json",
        ]
    )
    trials = json.loads(proc.stdout)["trials"]
    return [
        (t["timings"]["kill_sent"]["wall"], t["timings"]["recovered"]["wall"])
        for t in trials
        if t["outcome"] == "recovered"
    ]


def _epoch(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_two_campaigns_on_one_subject_never_overlap(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    op = start_operator()
    cluster.apply(campaign("first", namespace, subject.pd_url, trials=3, intervalSeconds=1))
    cluster.apply(campaign("second", namespace, subject.pd_url, trials=3, intervalSeconds=1))

    seen_busy: list[str] = []

    def both_done() -> bool:
        done = 0
        for name in ("first", "second"):
            obj = get_campaign(cluster, namespace, name)
            locked = condition(obj, "SubjectLocked")
            if locked is not None and locked["reason"] == "SubjectBusy":
                seen_busy.append(name)
            done += (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        return done == 2

    testbed.wait_for(both_done, 120, interval=0.1, what="both campaigns finished")
    for name in ("first", "second"):
        obj = wait_phase(cluster, namespace, name, {"Succeeded"}, timeout=5, op=op)
        assert obj["status"]["progress"] == "3/3"
    print("first", _windows(op, namespace, "first"))
    print("second", _windows(op, namespace, "second"))
    assert seen_busy, "the waiting Campaign never said it waits for the subject"

    windows = sorted(
        [(_epoch_wall(w[0]), _epoch_wall(w[1]), "first") for w in _windows(op, namespace, "first")]
        + [(_epoch_wall(w[0]), _epoch_wall(w[1]), "second") for w in _windows(op, namespace, "second")]
    )
    # One campaign's whole run (first kill to last recovery) lies outside the other's.
    spans: dict[str, tuple[float, float]] = {}
    for start, end, name in windows:
        lo, hi = spans.get(name, (start, end))
        spans[name] = (min(lo, start), max(hi, end))
    (_, a1), (b0, _) = sorted(spans.values())
    assert a1 <= b0, f"campaign runs overlap: {spans}"


def _epoch_wall(value: str | float) -> float:
    return value if isinstance(value, float | int) else _epoch(value)


def test_two_operators_on_one_campaign_never_kill_at_the_same_time(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator, tmp_path: Path
) -> None:
    """An in-cluster operator and a forgotten local one (each with its own ledger) both see the
    Campaign: the subject Lease names the operator process, so only one of them kills at a time,
    and every pod either one deleted is a victim one of them recorded."""
    from tests.reliability.watchers import AuditLog

    audit = AuditLog(Path(testbed.run([str(testbed.TESTBED / "cluster.sh"), "audit-log"]).stdout.strip()))
    audit.mark()
    ops = [start_operator(db=tmp_path / "a.db"), start_operator(db=tmp_path / "b.db")]
    cluster.apply(campaign("twice", namespace, subject.pd_url, trials=3, intervalSeconds=0.5))
    wait_phase(cluster, namespace, "twice", {"Succeeded", "Failed"}, timeout=180, op=ops[0])
    for op in ops:
        op.stop()
    windows = sorted(
        (_epoch_wall(start), _epoch_wall(end))
        for op in ops
        for start, end in _windows(op, namespace, "twice")
    )
    assert len(windows) >= 3
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert end <= start, f"two kills overlapped: {windows}"
    victims: set[str] = set()
    for op in ops:
        report = json.loads(
            testbed.run(
                [
                    str(testbed.REPO / ".venv" / "bin" / "aftershock"),
                    "report",
                    "twice",
                    "-n",
                    namespace,
                    "--db",
                    str(op.db),
                    "--format",
                    "json",
                ]
            ).stdout
        )
        victims |= {v["name"] for t in report["trials"] if "kill_sent" in t["timings"] for v in t["victims"]}
    deletes = [d for d in audit.pod_deletes(namespace) if d.by_operator]
    assert deletes
    assert {d.name for d in deletes} <= victims
