"""The bench's audit-log ground truth (bench/audittruth.py) on a real API server's audit lines:
one pod kill on the real node (the operator's DELETE of etcd-2, the StatefulSet's replacement,
the kubelet's status patches), captured from the test bed into tests/data/audit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bench import audittruth

DATA = Path(__file__).parent.parent / "data" / "audit" / "pod-kill-real-node.log"
NS = "e2e-939397"


def _wall(hms: str) -> float:
    return dt.datetime.fromisoformat(f"2026-12-07T{hms}+00:00").timestamp()


def writes() -> list[audittruth.PodWrite]:
    parsed = [audittruth.parse(line, NS) for line in DATA.read_text().splitlines()]
    return sorted((w for w in parsed if w is not None), key=lambda w: w.completed)


def test_parse_keeps_completed_pod_writes_of_the_namespace_only() -> None:
    got = writes()
    assert [(w.verb, w.subresource) for w in got][:4] == [
        ("delete", ""),
        ("create", ""),
        ("create", "binding"),
        ("patch", "status"),
    ]
    assert all(w.name == "etcd-2" for w in got)
    assert got[0].user == "system:serviceaccount:aftershock-system:aftershock"
    assert got[0].received == _wall("00:39:36.898004")
    assert got[0].completed == _wall("00:39:36.928699")
    line = DATA.read_text().splitlines()[0]
    assert audittruth.parse(line, "another-namespace") is None
    assert audittruth.parse(line.replace("ResponseComplete", "RequestReceived"), NS) is None


def test_the_kill_is_the_delete_received_before_the_witness_saw_it() -> None:
    got = writes()
    kill = audittruth.kill_commit(got, "etcd-2", _wall("00:39:36.935"))
    assert kill is not None
    assert kill.verb == "delete"
    assert kill.completed == _wall("00:39:36.928699")
    # Seen before the request arrived: not this delete (a witness cannot see the future).
    assert audittruth.kill_commit(got, "etcd-2", _wall("00:39:36.890")) is None
    assert audittruth.kill_commit(got, "etcd-0", _wall("00:39:36.935")) is None


def test_the_ready_write_is_counted_from_the_replacement_s_create() -> None:
    got = writes()
    kill = audittruth.kill_commit(got, "etcd-2", _wall("00:39:36.935"))
    assert kill is not None
    # The replacement's events: ADDED (create), MODIFIED (binding), then one per status patch.
    # Ready on its 6th event (index 5): the 4th status patch, received 43.018456.
    ready = audittruth.ready_commit(got, "etcd-2", kill.received, 5, _wall("00:39:43.050"))
    assert ready is not None
    assert (ready.verb, ready.subresource) == ("patch", "status")
    assert ready.received == _wall("00:39:43.018456")
    assert ready.completed == _wall("00:39:43.025608")
    # The next patch came 13 ms later: the last write before a witness 25 ms late would be it.
    nxt = audittruth.ready_commit(got, "etcd-2", kill.received, 6, _wall("00:39:43.050"))
    assert nxt is not None
    assert nxt.received == _wall("00:39:43.031647")


def test_a_count_that_does_not_fit_gives_no_truth() -> None:
    got = writes()
    kill = audittruth.kill_commit(got, "etcd-2", _wall("00:39:36.935"))
    assert kill is not None
    # The counted write arrived after the witness's sight: the count is wrong, no answer.
    assert audittruth.ready_commit(got, "etcd-2", kill.received, 5, _wall("00:39:43.000")) is None
    # More events than writes.
    assert audittruth.ready_commit(got, "etcd-2", kill.received, 40, _wall("00:39:44")) is None
    # No create after the kill.
    assert audittruth.ready_commit(got, "etcd-2", _wall("00:39:40"), 1, _wall("00:39:44")) is None
