"""node_failure (victims keep their processes, frozen with their node): the victim is back when
its node is (the heal), or sooner when someone replaced it with a new pod elsewhere that is Ready
(a remediator's out-of-service taint, a force delete): ADR 0021."""

from __future__ import annotations

import time

from tests.unit.fakes import make_pod

from aftershock.engine.observe import RecoveryTracker
from aftershock.model import Victim


def _tracker() -> tuple[RecoveryTracker, float]:
    pods = [make_pod(f"etcd-{i}", node=f"real-{i}") for i in range(3)]
    victim = pods[1]
    kill = time.monotonic()
    tracker = RecoveryTracker(
        victims=[Victim(victim.name, victim.uid, victim.node, victim.restart_count)],
        initial_pods=pods,
        kill_sent_mono=kill,
        kill_sent_wall=time.time(),
        expected_pods=3,
        back="fault_healed",
        replaces_pods=False,
        restarts=False,
        unready=True,
    )
    return tracker, kill


def test_a_frozen_victim_is_not_back_before_the_heal() -> None:
    tracker, kill = _tracker()
    tracker.observe_pod("MODIFIED", make_pod("etcd-1", node="real-1", ready=False), kill + 1, time.time())
    assert not tracker.recovered
    assert "the fault is not healed yet (fault_healed) and no victim was replaced" in tracker.pending()
    tracker.observe_pod("MODIFIED", make_pod("etcd-1", node="real-1"), kill + 2, time.time())
    assert not tracker.recovered  # Ready again in the API, but its node was not healed
    tracker.mark_back(kill + 3, time.time())
    assert tracker.recovered
    assert tracker.milestones["recovered"].offset == tracker.milestones["fault_healed"].offset


def test_a_victim_replaced_on_another_node_is_back_before_the_heal() -> None:
    tracker, kill = _tracker()
    tracker.observe_pod("MODIFIED", make_pod("etcd-1", node="real-1", ready=False), kill + 1, time.time())
    tracker.observe_pod("DELETED", make_pod("etcd-1", node="real-1", ready=False), kill + 2, time.time())
    new = "uid-etcd-1-moved"
    tracker.observe_pod("ADDED", make_pod("etcd-1", uid=new, node=None, ready=False), kill + 3, time.time())
    tracker.observe_pod(
        "MODIFIED", make_pod("etcd-1", uid=new, node="real-2", ready=False), kill + 4, time.time()
    )
    assert not tracker.recovered
    tracker.observe_pod("MODIFIED", make_pod("etcd-1", uid=new, node="real-2"), kill + 5, time.time())
    assert tracker.recovered
    assert "fault_healed" not in tracker.milestones
    assert tracker.milestones["recovered"].offset == tracker.milestones["replacement_ready"].offset
    assert tracker.milestones["recovered"].offset == 5
