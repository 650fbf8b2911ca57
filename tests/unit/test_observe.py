"""RecoveryTracker: a trial's milestones from hand-written observation sequences.

Times are given by hand: the kill is sent at monotonic 100.0 (wall 1000.0), so a milestone's
offset is the monotonic time of the observation minus 100.
"""

from __future__ import annotations

import dataclasses

import pytest
from tests.unit.fakes import make_pod

from aftershock.engine.observe import RecoveryTracker
from aftershock.model import PodState, ProbeResult, Victim
from aftershock.subjects.tikv import RECOVERY_PROBE_INTERVAL, StoreRecovery

KILL_MONO = 100.0
KILL_WALL = 1000.0


def at(offset: float) -> tuple[float, float]:
    """(mono, wall) `offset` seconds after the kill."""
    return KILL_MONO + offset, KILL_WALL + offset


def cluster(n: int = 3) -> list[PodState]:
    return [make_pod(f"tikv-{i}", node=f"node-{i}") for i in range(n)]


def victim(pod: PodState) -> Victim:
    return Victim(name=pod.name, uid=pod.uid, node=pod.node)


def tracker(pods: list[PodState], victims: list[PodState], *, probe: bool = False) -> RecoveryTracker:
    chosen = [victim(v) for v in victims]
    return RecoveryTracker(
        victims=chosen,
        initial_pods=pods,
        kill_sent_mono=KILL_MONO,
        kill_sent_wall=KILL_WALL,
        expected_pods=len(pods),
        judge=StoreRecovery(chosen, {p.name: 500 for p in pods}) if probe else None,
    )


def offsets(t: RecoveryTracker) -> dict[str, float]:
    return {name: round(m.offset, 6) for name, m in t.milestones.items()}


def replacement(old: PodState, uid: str, *, node: str | None = None, ready: bool = False) -> PodState:
    return dataclasses.replace(old, uid=uid, node=node, ready=ready, phase="Running" if ready else "Pending")


def statefulset_recovery(t: RecoveryTracker, old: PodState, uid: str, start: float) -> PodState:
    """The usual StatefulSet sequence for `old`, from `start` seconds after the kill:
    marked for deletion, gone, re-created, scheduled, Ready (0.1 s apart)."""
    t.observe_pod("MODIFIED", dataclasses.replace(old, deleting=True), *at(start))
    t.observe_pod("DELETED", dataclasses.replace(old, deleting=True), *at(start + 0.1))
    new = replacement(old, uid)
    t.observe_pod("ADDED", new, *at(start + 0.2))
    new = dataclasses.replace(new, node="node-9")
    t.observe_pod("MODIFIED", new, *at(start + 0.3))
    new = dataclasses.replace(new, ready=True, phase="Running")
    t.observe_pod("MODIFIED", new, *at(start + 0.4))
    return new


def healthy_probe(pods: list[PodState], starts: dict[str, int], *, healthy: bool = True) -> ProbeResult:
    return ProbeResult(
        healthy=healthy,
        reasons=() if healthy else ("PD: 1 region has a down peer",),
        restarts=starts,
        up={p.name: True for p in pods},
    )


# --- one victim --------------------------------------------------------------------------------------


def test_single_victim_milestones_follow_the_statefulset_sequence() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]])
    t.mark_acked(*at(0.05))

    statefulset_recovery(t, pods[0], "uid-new", 0.5)

    assert offsets(t) == {
        "kill_acked": 0.05,
        "first_unhealthy": 0.5,  # marked for deletion: the subject is down one pod
        "victim_gone": 0.6,
        "replacement_created": 0.7,
        "replacement_scheduled": 0.8,
        "replacement_ready": 0.9,
        "recovered": 0.9,
    }
    assert t.recovered
    assert t.milestones["recovered"].wall == pytest.approx(KILL_WALL + 0.9)
    assert t.pending() == []


def test_a_milestone_keeps_its_first_moment() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]])
    t.mark_acked(*at(0.05))
    t.mark_acked(*at(0.5))
    new = statefulset_recovery(t, pods[0], "uid-new", 1.0)

    # The replacement flaps afterwards: nothing recorded moves.
    t.observe_pod("MODIFIED", dataclasses.replace(new, ready=False), *at(3.0))
    t.observe_pod("MODIFIED", new, *at(4.0))

    assert offsets(t)["kill_acked"] == 0.05
    assert offsets(t)["replacement_ready"] == pytest.approx(1.4)
    assert offsets(t)["recovered"] == pytest.approx(1.4)


def test_recovered_waits_for_every_pod_not_only_the_replacement() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]])
    # Another pod lost readiness meanwhile (the kill hurt it too).
    t.observe_pod("MODIFIED", dataclasses.replace(pods[1], ready=False), *at(0.2))
    statefulset_recovery(t, pods[0], "uid-new", 0.5)

    assert "replacement_ready" in t.milestones
    assert not t.recovered
    assert t.pending() == ["2/3 pods Ready"]

    t.observe_pod("MODIFIED", pods[1], *at(2.0))
    assert t.recovered
    assert offsets(t)["recovered"] == 2.0
    assert offsets(t)["first_unhealthy"] == 0.2


def test_recovered_waits_for_the_expected_number_of_pods() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]])
    # A non-victim pod vanished: the replacement is Ready, but the subject is a pod short.
    t.observe_pod("DELETED", pods[2], *at(0.1))
    statefulset_recovery(t, pods[0], "uid-new", 0.5)

    assert not t.recovered
    assert "2/3 pods Ready" in t.pending()


def test_a_replacement_of_the_replacement_is_followed() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]])
    t.observe_pod("DELETED", pods[0], *at(0.1))
    first = replacement(pods[0], "uid-r1", node="node-9")
    t.observe_pod("ADDED", first, *at(0.2))
    # The first replacement is deleted before it got Ready; a second one takes its place.
    t.observe_pod("DELETED", dataclasses.replace(first, deleting=True), *at(0.5))
    second = replacement(pods[0], "uid-r2")
    t.observe_pod("ADDED", second, *at(0.6))
    assert not t.recovered
    t.observe_pod("MODIFIED", dataclasses.replace(second, node="node-8", ready=True), *at(1.0))

    assert t.recovered
    assert offsets(t)["replacement_created"] == 0.2
    assert offsets(t)["replacement_ready"] == 1.0
    assert offsets(t)["recovered"] == 1.0


def test_a_deployment_style_replacement_under_a_new_name_counts() -> None:
    pods = [make_pod(n, node="node-a") for n in ("web-aaa", "web-bbb", "web-ccc")]
    t = tracker(pods, [pods[1]])
    t.observe_pod("DELETED", pods[1], *at(0.1))
    new = make_pod("web-zzz", uid="uid-zzz", node=None, ready=False)
    t.observe_pod("ADDED", new, *at(0.2))
    t.observe_pod("MODIFIED", dataclasses.replace(new, node="node-b", ready=True), *at(0.3))

    assert offsets(t)["replacement_created"] == 0.2
    assert offsets(t)["replacement_scheduled"] == 0.3
    assert offsets(t)["recovered"] == 0.3


def test_the_replacement_of_another_pod_is_not_taken_for_the_victims() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]])
    t.observe_pod("DELETED", pods[0], *at(0.1))
    # tikv-1 (not a victim) is replaced by its StatefulSet meanwhile, and gets Ready first.
    t.observe_pod("DELETED", pods[1], *at(0.2))
    other = replacement(pods[1], "uid-tikv-1-new", node="node-1", ready=True)
    t.observe_pod("ADDED", other, *at(0.3))

    assert "replacement_created" not in t.milestones
    assert "replacement_ready" not in t.milestones

    statefulset_recovery(t, pods[0], "uid-new", 1.0)
    assert offsets(t)["replacement_created"] == pytest.approx(1.2)
    assert offsets(t)["replacement_ready"] == pytest.approx(1.4)


def test_events_of_pods_outside_the_trial_do_not_make_milestones() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]])
    # Non-victim pods change without the victim going anywhere.
    t.observe_pod("MODIFIED", dataclasses.replace(pods[1], restart_count=1), *at(0.1))
    t.observe_pod("MODIFIED", dataclasses.replace(pods[0], restart_count=4), *at(0.2))

    assert t.milestones == {}
    assert not t.recovered
    assert t.pending() == ["tikv-0: victim not gone"]


# --- several victims -------------------------------------------------------------------------------


def test_with_two_victims_each_milestone_is_when_the_last_victim_reached_it() -> None:
    pods = cluster(4)
    t = tracker(pods, [pods[0], pods[2]])

    t.observe_pod("DELETED", pods[0], *at(0.1))
    assert "victim_gone" not in t.milestones  # one of two
    t.observe_pod("DELETED", pods[2], *at(0.3))
    a = replacement(pods[0], "uid-a")
    t.observe_pod("ADDED", a, *at(0.4))
    t.observe_pod("MODIFIED", dataclasses.replace(a, node="n", ready=True), *at(1.0))
    assert "replacement_created" not in t.milestones
    assert "replacement_ready" not in t.milestones
    assert not t.recovered
    assert t.pending() == ["tikv-2: no replacement pod", "3/4 pods Ready"]

    c = replacement(pods[2], "uid-c")
    t.observe_pod("ADDED", c, *at(2.0))
    t.observe_pod("MODIFIED", dataclasses.replace(c, node="n"), *at(3.0))
    t.observe_pod("MODIFIED", dataclasses.replace(c, node="n", ready=True), *at(5.0))

    assert offsets(t) == {
        "first_unhealthy": 0.1,
        "victim_gone": 0.3,
        "replacement_created": 2.0,
        "replacement_scheduled": 3.0,
        "replacement_ready": 5.0,
        "recovered": 5.0,
    }


# --- PD ------------------------------------------------------------------------------------------------


def test_with_pd_the_store_must_come_back_up_with_a_new_start_timestamp() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]], probe=True)
    new = statefulset_recovery(t, pods[0], "uid-new", 0.5)
    live = [new, pods[1], pods[2]]
    assert "replacement_ready" in t.milestones
    assert not t.recovered  # the pods alone are not enough
    assert t.pending() == ["tikv-0: store not back Up with a new start timestamp"]

    # PD still shows the old store start: the store has not restarted yet.
    t.observe_probe(healthy_probe(live, {p.name: 500 for p in live}), *at(1.0))
    assert "store_up" not in t.milestones
    # A new start, but not Up yet.
    down = dataclasses.replace(
        healthy_probe(live, {"tikv-0": 777, "tikv-1": 500, "tikv-2": 500}, healthy=False),
        up={"tikv-0": False, "tikv-1": True, "tikv-2": True},
    )
    t.observe_probe(down, *at(1.5))
    assert "store_up" not in t.milestones
    assert not t.recovered

    t.observe_probe(healthy_probe(live, {"tikv-0": 777, "tikv-1": 500, "tikv-2": 500}), *at(2.0))
    assert offsets(t)["store_up"] == 2.0
    assert offsets(t)["recovered"] == 2.0


def test_pd_is_asked_often_only_between_the_replacement_ready_and_the_store_up() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]], probe=True)
    judge = t.judge
    assert judge is not None
    # Pods not back: PD at the usual pace (a look between the kill and the new process's first
    # heartbeat tells that heartbeat from the dead process's last).
    assert judge.probe_interval(False, 0.2) == 0.2
    new = statefulset_recovery(t, pods[0], "uid-new", 0.5)
    assert judge.probe_interval(True, 0.2) == RECOVERY_PROBE_INTERVAL < 0.2
    assert judge.probe_interval(True, 0.01) == 0.01  # never slower than asked
    live = [new, pods[1], pods[2]]
    t.observe_probe(healthy_probe(live, {"tikv-0": 777, "tikv-1": 500, "tikv-2": 500}), *at(2.0))
    assert "store_up" in t.milestones
    assert judge.probe_interval(True, 0.2) == 0.2  # the settle window: back to the usual pace


def test_with_pd_recovered_also_needs_pd_to_call_the_subject_healthy() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]], probe=True)
    new = statefulset_recovery(t, pods[0], "uid-new", 0.5)
    live = [new, pods[1], pods[2]]
    starts = {"tikv-0": 777, "tikv-1": 500, "tikv-2": 500}

    t.observe_probe(healthy_probe(live, starts, healthy=False), *at(1.0))
    assert offsets(t)["store_up"] == 1.0  # the store is back ...
    assert not t.recovered  # ... but PD does not call the subject healthy yet
    assert t.pending() == ["PD: 1 region has a down peer"]

    t.observe_probe(healthy_probe(live, starts), *at(4.0))
    assert offsets(t)["recovered"] == 4.0


def bracket(t: RecoveryTracker) -> tuple[float, float]:
    b = t.recovery_bracket
    assert b is not None
    return round(b[0].offset, 6), round(b[1].offset, 6)


def test_a_recovery_seen_by_a_look_lies_between_the_last_look_that_did_not_see_it_and_its_answer() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]], probe=True)
    new = statefulset_recovery(t, pods[0], "uid-new", 0.5)
    live = [new, pods[1], pods[2]]
    starts = {"tikv-0": 777, "tikv-1": 500, "tikv-2": 500}
    assert t.recovery_bracket is None
    t.observe_probe(healthy_probe(live, starts, healthy=False), *at(1.0), asked=at(0.9))
    # A look held up by a slow answer: asked at 1.1, answered at 2.2, still not recovered.
    t.observe_probe(healthy_probe(live, starts, healthy=False), *at(2.2), asked=at(1.1))
    assert t.recovery_bracket is None
    assert t.unseen_why == "PD: 1 region has a down peer"
    t.observe_probe(healthy_probe(live, starts), *at(2.5), asked=at(2.3))
    assert offsets(t)["recovered"] == 2.5
    # Not before the slow look was asked: the subject may have recovered while it waited.
    assert bracket(t) == (1.1, 2.5)
    # Later looks change nothing.
    t.observe_probe(healthy_probe(live, starts), *at(3.0), asked=at(2.9))
    assert bracket(t) == (1.1, 2.5)


def replaced_not_ready(t: RecoveryTracker, old: PodState) -> PodState:
    """`old` deleted at 0.1 s, its replacement on node-9 at 0.2 s, not Ready yet."""
    t.observe_pod("DELETED", dataclasses.replace(old, deleting=True), *at(0.1))
    new = replacement(old, "uid-new", node="node-9")
    t.observe_pod("ADDED", new, *at(0.2))
    return new


def test_a_recovery_completed_by_the_pod_watch_ends_at_the_event() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]], probe=True)
    old = pods[0]
    new = replaced_not_ready(t, old)
    live = [new, pods[1], pods[2]]
    # PD already healthy, the store up with its new start, before the pod's Ready.
    t.observe_probe(
        healthy_probe(live, {"tikv-0": 777, "tikv-1": 500, "tikv-2": 500}), *at(1.0), asked=at(0.9)
    )
    assert not t.recovered
    t.observe_pod("MODIFIED", dataclasses.replace(new, ready=True, phase="Running"), *at(1.7))
    assert offsets(t)["recovered"] == 1.7
    assert bracket(t) == (1.7, 1.7)  # no Ready transition time in the event: at the event


def test_a_recovery_completed_by_a_pods_ready_is_not_before_its_ready_transition() -> None:
    # The watch delivers late under load: the Ready condition's lastTransitionTime (to the second,
    # the kubelet's) is the earliest the pod can have turned Ready.
    pods = cluster()
    t = tracker(pods, [pods[0]], probe=False)
    old = pods[0]
    new = replaced_not_ready(t, old)
    ready = dataclasses.replace(new, ready=True, phase="Running", ready_at=KILL_WALL + 2.0)
    t.observe_pod("MODIFIED", ready, *at(2.35))
    assert offsets(t)["recovered"] == 2.35
    assert bracket(t) == (2.0, 2.35)
    # A Ready transition from before the kill says nothing about this recovery.
    t2 = tracker(pods, [pods[0]], probe=False)
    replaced_not_ready(t2, old)
    t2.observe_pod("MODIFIED", dataclasses.replace(ready, ready_at=KILL_WALL - 5), *at(2.35))
    assert bracket(t2) == (2.35, 2.35)


def test_without_a_look_before_it_the_recovery_is_not_before_the_kill() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]], probe=True)
    new = statefulset_recovery(t, pods[0], "uid-new", 0.5)
    live = [new, pods[1], pods[2]]
    t.observe_probe(
        healthy_probe(live, {"tikv-0": 777, "tikv-1": 500, "tikv-2": 500}), *at(1.2), asked=at(1.0)
    )
    assert offsets(t)["recovered"] == 1.2
    # The pod watch's part came at 0.9 (Ready); the subject's part somewhere before the answer.
    assert bracket(t) == (0.9, 1.2)


def test_without_pd_the_probe_is_not_waited_for() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]], probe=False)
    statefulset_recovery(t, pods[0], "uid-new", 0.5)

    assert t.recovered
    assert "store_up" not in t.milestones


def test_an_unhealthy_pd_answer_marks_the_first_unhealthy_moment() -> None:
    pods = cluster()
    t = tracker(pods, [pods[0]], probe=True)
    t.observe_probe(healthy_probe(pods, {p.name: 500 for p in pods}, healthy=False), *at(0.05))

    assert offsets(t) == {"first_unhealthy": 0.05}


def test_with_pd_each_of_two_victims_needs_its_own_store_back() -> None:
    pods = cluster(4)
    t = tracker(pods, [pods[0], pods[1]], probe=True)
    a = statefulset_recovery(t, pods[0], "uid-a", 0.1)
    b = statefulset_recovery(t, pods[1], "uid-b", 0.2)
    live = [a, b, pods[2], pods[3]]

    t.observe_probe(
        healthy_probe(live, {"tikv-0": 901, "tikv-1": 500, "tikv-2": 500, "tikv-3": 500}), *at(1.0)
    )
    assert "store_up" not in t.milestones
    assert not t.recovered
    assert t.pending() == ["tikv-1: store not back Up with a new start timestamp"]

    t.observe_probe(
        healthy_probe(live, {"tikv-0": 901, "tikv-1": 902, "tikv-2": 500, "tikv-3": 500}), *at(2.0)
    )
    assert offsets(t)["store_up"] == 2.0
    assert offsets(t)["recovered"] == 2.0


# --- what is still missing, in words -----------------------------------------------------------------


def test_pending_says_what_recovery_still_waits_for_at_each_step() -> None:
    pods = cluster()
    old = pods[0]
    t = tracker(pods, [old])
    assert t.pending() == ["tikv-0: victim not gone"]

    t.observe_pod("DELETED", old, *at(0.1))
    assert t.pending() == ["tikv-0: no replacement pod", "2/3 pods Ready"]

    new = replacement(old, "uid-new")
    t.observe_pod("ADDED", new, *at(0.2))
    assert t.pending() == ["tikv-0: replacement not scheduled", "2/3 pods Ready"]

    new = dataclasses.replace(new, node="node-9")
    t.observe_pod("MODIFIED", new, *at(0.3))
    assert t.pending() == ["tikv-0: replacement not Ready", "2/3 pods Ready"]

    t.observe_pod("MODIFIED", dataclasses.replace(new, ready=True), *at(0.4))
    assert t.pending() == []
