"""Two Campaigns on one subject never disturb it at the same time (a Lease per subject)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    # A 2 s settle window (the default is 15 s): six trials one after another, on a loaded
    # machine, took longer than the wait below.
    quick = {"timeoutSeconds": 60, "settleSeconds": 2}
    cluster.apply(campaign("first", namespace, subject.pd_url, trials=3, intervalSeconds=1, recovery=quick))
    cluster.apply(campaign("second", namespace, subject.pd_url, trials=3, intervalSeconds=1, recovery=quick))

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

    testbed.wait_for(both_done, 180, interval=0.1, what="both campaigns finished")
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
        # Every victim an attempt recorded before its kill, whether or not the kill's
        # acknowledgement made it to the ledger: stopping the operators at the end can cut an
        # attempt between the DELETE and `kill_sent` (the reliability invariants match the same way).
        victims |= {v["name"] for t in report["trials"] for v in t["victims"]}
    deletes = [d for d in audit.pod_deletes(namespace) if d.by_operator]
    assert deletes
    assert {d.name for d in deletes} <= victims


def _audit() -> Any:
    from tests.reliability.watchers import AuditLog

    audit = AuditLog(Path(testbed.run([str(testbed.TESTBED / "cluster.sh"), "audit-log"]).stdout.strip()))
    audit.mark()
    return audit


def test_two_selectors_over_the_same_pods_take_turns(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    """Two Campaigns name the same StatefulSet's pods differently (other labels, one with a
    pdURL, one without): the lock is on what is killed, so they never run at once. Witness: the
    audit log's DELETEs, each inside one Campaign's kill-to-recovery window, and the windows of
    the two never overlapping (about 40 s; it failed before ADR 0016: two Leases, kills at once)."""
    audit = _audit()
    op = start_operator()
    by_app = campaign("by-app", namespace, subject.pd_url, trials=1, intervalSeconds=0)
    other_words = {
        "matchLabels": {"app.kubernetes.io/instance": "e2e"},
        "matchExpressions": [{"key": "statefulset.kubernetes.io/pod-name", "operator": "Exists"}],
    }
    by_name = campaign("by-name", namespace, None, trials=1, intervalSeconds=0)
    by_name["spec"]["subject"]["selector"] = other_words
    cluster.apply(by_app)
    cluster.apply(by_name)
    for name in ("by-app", "by-name"):
        obj = wait_phase(cluster, namespace, name, {"Succeeded", "Failed"}, timeout=180, op=op)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
    spans = {
        name: [(_epoch_wall(a), _epoch_wall(b)) for a, b in _windows(op, namespace, name)]
        for name in ("by-app", "by-name")
    }
    assert all(len(w) == 1 for w in spans.values()), spans
    firsts = sorted((min(a for a, _ in w), max(b for _, b in w)) for w in spans.values())
    (_, first_end), (second_start, _) = firsts
    assert first_end <= second_start, f"the two Campaigns ran at once: {spans}"
    deletes = [d for d in audit.pod_deletes(namespace) if d.by_operator and d.effective]
    assert len(deletes) == 2, deletes
    windows = [w for ws in spans.values() for w in ws]
    for d in deletes:
        inside = [w for w in windows if w[0] - 1.0 <= d.received <= w[1]]
        assert len(inside) == 1, (d, windows)


def test_a_second_operator_on_the_same_ledger_is_refused_and_touches_nothing(
    cluster: testbed.Cluster, namespace: str, subject: Subject, start_operator: StartOperator
) -> None:
    """One operator per ledger (ADR 0016): a second `aftershock run` on the same file exits at
    once with code 3 and a line naming the holder, before it opens the ledger or asks the API
    server anything. The first one's Campaign goes on untouched: no attempt interrupted, the
    file sound, and every DELETE in the audit log one of its recorded victims (about 40 s)."""
    audit = _audit()
    first = start_operator()
    cluster.apply(campaign("one", namespace, subject.pd_url, trials=2, intervalSeconds=0))
    testbed.wait_for(
        lambda: (get_campaign(cluster, namespace, "one").get("status") or {}).get("phase") == "Running",
        60,
        what="the first operator running the Campaign",
    )
    second = start_operator(db=first.db)
    assert second.proc is not None
    code = second.proc.wait(60)
    assert code == 3, second.log_text()
    assert "is in use by another aftershock operator" in second.log_text()
    assert "one operator per ledger" in second.log_text()
    obj = wait_phase(cluster, namespace, "one", {"Succeeded", "Failed"}, timeout=120, op=first)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    first.stop()
    report = json.loads(
        testbed.run(
            [
                str(testbed.REPO / ".venv" / "bin" / "aftershock"),
                "report",
                "one",
                "-n",
                namespace,
                "--db",
                str(first.db),
                "--format",
                "json",
            ]
        ).stdout
    )
    outcomes = [t["outcome"] for t in report["trials"]]
    # Nothing interrupted (the second operator never took the Campaign up), nothing twice. An
    # infra_error is the simulator's (kwok deletes a pod by itself now and then, ADR 0005).
    assert "interrupted" not in outcomes, outcomes
    assert sorted(t["index"] for t in report["trials"] if t["outcome"] == "recovered") == [0, 1]
    import sqlite3

    assert sqlite3.connect(first.db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    victims = {v["name"] for t in report["trials"] for v in t["victims"]}
    deletes = [d for d in audit.pod_deletes(namespace) if d.by_operator and d.effective]
    assert len(deletes) == 2
    assert {d.name for d in deletes} <= victims
