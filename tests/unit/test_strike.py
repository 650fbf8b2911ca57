"""The kill and when it took effect: the API server's answer to the first delete, and no answer
where the commit may have come earlier, unseen; the recovery counts from the first sign (ADR 0008)."""

from __future__ import annotations

import time

import pytest
from tests.unit.fakes import FakeCluster, RealClock, Stop

from aftershock.engine import strike
from aftershock.errors import TransientApiError
from aftershock.model import AttemptRecord, Milestone, Outcome, Victim


def plan(*victims: Victim) -> strike.KillPlan:
    return strike.KillPlan("db", victims, grace_period_seconds=0, retry_budget=5.0)


def victims(cluster: FakeCluster, n: int) -> list[Victim]:
    return [Victim(p.name, p.uid) for p in cluster.add_statefulset(replicas=3)[:n]]


async def test_the_disruption_begins_at_the_first_answer() -> None:
    cluster = FakeCluster()
    cluster.recreate = False
    committed: list[float] = []
    cluster.after_delete = lambda: committed.append(time.monotonic())
    sent = time.monotonic()
    result = await strike.kill(plan(*victims(cluster, 2)), cluster, RealClock(), Stop())
    assert result.error is None
    assert len(cluster.deleted) == 2
    assert result.first_acked is not None
    acked_mono, acked_wall = result.first_acked
    # After the first deletion was committed, before the second one was.
    assert sent <= committed[0] <= acked_mono <= committed[1]
    assert acked_wall > 0


async def test_a_lost_answer_leaves_no_answer_to_start_from() -> None:
    cluster = FakeCluster()
    cluster.recreate = False
    # The first delete goes through, its answer is lost; the retry finds the pod gone.
    cluster.fail_after_delete.append(TransientApiError("connection reset", None))
    result = await strike.kill(plan(*victims(cluster, 1)), cluster, RealClock(), Stop())
    assert result.error is None
    assert len(cluster.delete_calls) == 2
    assert result.first_acked is None


async def test_a_refused_kill_has_no_start() -> None:
    cluster = FakeCluster()
    (victim,) = victims(cluster, 1)
    result = await strike.kill(plan(Victim(victim.name, "another-uid")), cluster, RealClock(), Stop())
    assert result.error is not None
    assert "replaced before the kill" in result.error
    assert result.first_acked is None
    assert cluster.deleted == []


def attempt(**offsets: float) -> AttemptRecord:
    return AttemptRecord(
        campaign_uid="u",
        trial_index=0,
        attempt=1,
        victims=(),
        victim_seed="s",
        started_at=0.0,
        outcome=Outcome.RECOVERED,
        milestones={name: Milestone(1000.0 + off, off) for name, off in offsets.items()},
    )


@pytest.mark.parametrize(
    ("offsets", "recovery"),
    [
        # The answer first: from the answer.
        ({"kill_sent": 0.0, "kill_acked": 0.25, "first_unhealthy": 0.5, "recovered": 3.0}, 2.75),
        # The watch showed the victim going before the answer came: from the watch.
        ({"kill_sent": 0.0, "kill_acked": 0.5, "first_unhealthy": 0.125, "recovered": 3.0}, 2.875),
        # A lost answer: from the watch alone.
        ({"kill_sent": 0.0, "first_unhealthy": 0.125, "recovered": 3.0}, 2.875),
        # No sign at all (an old record): from the request, never shorter than the truth.
        ({"kill_sent": 0.0, "recovered": 3.0}, 3.0),
    ],
)
def test_recovery_counts_from_the_first_sign_the_kill_took_effect(
    offsets: dict[str, float], recovery: float
) -> None:
    assert attempt(**offsets).recovery_seconds == recovery


async def test_no_retry_and_no_next_victim_once_the_lock_lapsed() -> None:
    """A delete that failed transiently is retried only while the subject lock is fresh: after
    its renew deadline, a retry could land after another Campaign took the subject."""
    cluster = FakeCluster()
    cluster.recreate = False
    cluster.fail_before_delete.append(TransientApiError("connection refused", None))
    fresh = [True]

    def held() -> bool:
        answer = fresh[0]
        fresh[0] = False  # the first try is sent while fresh; the lease lapses before the retry
        return answer

    result = await strike.kill(plan(*victims(cluster, 2)), cluster, RealClock(), Stop(), held=held)
    assert result.error is not None
    assert "the subject lock lapsed" in result.error
    assert len(cluster.delete_calls) == 1
    assert cluster.deleted == []
