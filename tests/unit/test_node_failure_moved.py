"""node_failure (victims keep their processes, frozen with their node): the victim is back when
its node is (the heal), or sooner when someone replaced it with a new pod elsewhere that is Ready
(a remediator's out-of-service taint, a force delete): ADR 0021."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from tests.unit.fakes import RealClock, Stop, make_pod

from aftershock.engine import recovery
from aftershock.engine.observe import RecoveryTracker
from aftershock.engine.view import Observation
from aftershock.model import Milestone, Outcome, PodState, ProbeResult, Victim, parse_campaign_spec
from aftershock.subjects.base import Look


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


# --- the loop looks at the subject when the pods did their part --------------------------------


class _Judge:
    """The subject's own part holds at the first look after the replacement was Ready."""

    def __init__(self) -> None:
        self._done: Milestone | None = None

    def probe_interval(self, replacement_ready: bool, normal: float) -> float | None:
        return normal

    def observe(self, look: Look) -> Mapping[str, Milestone]:
        if look.replacement_ready and self._done is None:
            self._done = look.answered
            return {"member_healthy": self._done}
        return {}

    @property
    def done(self) -> Milestone | None:
        return self._done

    @property
    def sources(self) -> Mapping[str, str]:
        return {}

    @property
    def clock_offset(self) -> float | None:
        return None

    def pending(self) -> Mapping[str, str]:
        return {}


class _Probe:
    def __init__(self, slow: float = 0.0) -> None:
        self.looks: list[float] = []
        self.answers: list[float] = []
        self.slow = slow  # every look after the first takes this long
        self.second_out = asyncio.Event()

    async def check(self, pods: Sequence[PodState], now: float) -> ProbeResult:
        self.looks.append(time.monotonic())
        if len(self.looks) > 1:
            self.second_out.set()
            await asyncio.sleep(self.slow)
        self.answers.append(time.time())
        return ProbeResult(healthy=True)


class _View:
    def pods(self) -> list[PodState]:
        return []


def _watch(probe: _Probe, probe_interval: float) -> recovery.Watch:
    """The recovery loop's inputs: looks every `probe_interval` (jittered), a 0.1 s settle window."""
    spec = parse_campaign_spec(
        {
            "subject": {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}},
            "chaos": {"type": "pod_kill"},
            "recovery": {"timeoutSeconds": 60, "settleSeconds": 0.1},
        }
    )
    return recovery.Watch(spec, cast(Any, _View()), cast(Any, probe), RealClock(), probe_interval)


async def test_the_replacement_ready_in_the_watch_is_looked_at_at_once_not_at_the_next_tick() -> None:
    """Looks every 20 s (never sooner than 10 s with the jitter): the replacement's Ready in the
    pod watch brings the look that completes the recovery at once (0.14 s late on the real node
    with 0.1 s looks when it waited for the tick)."""
    tracker, _ = _tracker()
    tracker.judge = _Judge()
    probe = _Probe()
    w = _watch(probe, 20.0)
    queue: asyncio.Queue[Observation] = asyncio.Queue()
    observing = asyncio.create_task(recovery.observe(w, tracker, queue, Stop()))
    await asyncio.sleep(0.1)
    assert len(probe.looks) == 1  # the first look, at once
    new = "uid-etcd-1-moved"
    for type_, pod in (
        ("MODIFIED", make_pod("etcd-1", node="real-1", ready=False)),
        ("DELETED", make_pod("etcd-1", node="real-1", ready=False)),
        ("ADDED", make_pod("etcd-1", uid=new, node="real-2", ready=False)),
    ):
        queue.put_nowait(Observation(type_, pod, time.monotonic(), time.time()))
    await asyncio.sleep(0.1)
    ready = time.monotonic()
    queue.put_nowait(Observation("MODIFIED", make_pod("etcd-1", uid=new, node="real-2"), ready, time.time()))
    outcome, _ = await asyncio.wait_for(observing, 30)
    assert outcome is Outcome.RECOVERED
    assert len(probe.looks) == 2, probe.looks
    assert probe.looks[1] - ready < 5.0  # not the tick's 10-30 s
    assert tracker.milestones["recovered"] == tracker.milestones["member_healthy"]


async def test_a_replacement_ready_while_a_look_is_out_counts_at_that_look() -> None:
    """The look's answer is judged with the pods as they are when it is in: a Ready that came
    while it was out completes the recovery at its answer, not one more look later."""
    tracker, _ = _tracker()
    tracker.judge = _Judge()
    probe = _Probe(slow=1.0)
    w = _watch(probe, 0.05)
    queue: asyncio.Queue[Observation] = asyncio.Queue()
    new = "uid-etcd-1-moved"
    for type_, pod in (
        ("DELETED", make_pod("etcd-1", node="real-1", ready=False)),
        ("ADDED", make_pod("etcd-1", uid=new, node="real-2", ready=False)),
    ):
        queue.put_nowait(Observation(type_, pod, time.monotonic(), time.time()))
    observing = asyncio.create_task(recovery.observe(w, tracker, queue, Stop()))
    await asyncio.wait_for(probe.second_out.wait(), 30)  # the second look is out (for a second)
    assert not probe.answers[1:]
    ready = make_pod("etcd-1", uid=new, node="real-2")
    queue.put_nowait(Observation("MODIFIED", ready, time.monotonic(), time.time()))
    outcome, _ = await asyncio.wait_for(observing, 30)
    assert outcome is Outcome.RECOVERED
    # Stamped as that answer was in (not the next look's, a second later).
    assert abs(tracker.milestones["member_healthy"].wall - probe.answers[1]) < 0.5, probe.answers
