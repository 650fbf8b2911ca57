"""The operator-wide queue of Campaigns (``--max-concurrent-campaigns``) and the per-subject
Lease name: what a user sees while Campaigns wait, and which Campaigns may run together."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.unit.fakes import FakeCluster, FakeLock, ListSink, RealClock, Stop
from tests.unit.test_engine_runner import SETTINGS, campaign, cond

from aftershock.engine.queue import CampaignQueue, QueuedLock
from aftershock.engine.runner import CampaignRunner
from aftershock.ledger import Ledger
from aftershock.model import CampaignRef, Phase

# --- the queue ------------------------------------------------------------------------------------


def test_without_a_bound_every_campaign_gets_a_slot() -> None:
    q = CampaignQueue(0)
    assert [q.take(f"ns/c{i}/u") for i in range(50)] == [None] * 50


def test_a_bound_of_two_runs_two_and_lines_up_the_rest_in_arrival_order() -> None:
    q = CampaignQueue(2)
    assert q.take("a") is None
    assert q.take("b") is None
    c, d = q.take("c"), q.take("d")
    assert c is not None
    assert d is not None
    assert (c.position, c.waiting, c.running, c.limit) == (1, 1, 2, 2)
    assert d.position == 2
    assert "waiting for one of 2 campaign slots" in d.message()
    assert d.message() == c.message()  # a place that moves would patch every waiter's status
    # d asks first after a slot frees, but c is ahead of it.
    q.leave("a")
    assert q.take("d") is not None
    assert q.take("c") is None
    assert q.take("d") is not None
    q.leave("b")
    assert q.take("d") is None
    assert q.running == {"c", "d"}


def test_a_campaign_whose_subject_is_busy_hands_its_slot_back_and_does_not_hold_up_the_line() -> None:
    q = CampaignQueue(1)
    assert q.take("a") is None
    assert q.take("b") is not None
    assert q.take("c") is not None
    q.leave("a")
    assert q.take("b") is None  # b's turn ...
    q.give_back("b")  # ... but its subject is busy
    assert q.take("c") is None  # so c runs
    assert q.running == {"c"}
    place = q.take("b")
    assert place is not None
    assert place.position == 1


KEYS = frozenset({"StatefulSet/tikv"})


def test_leaving_frees_the_place_in_line() -> None:
    q = CampaignQueue(1)
    q.take("a")
    q.take("b")
    q.take("c")
    q.leave("b")
    place = q.take("c")
    assert place is not None
    assert (place.position, place.waiting) == (1, 1)


def test_a_negative_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        CampaignQueue(-1)


async def test_a_queued_lock_never_asks_for_the_subject_without_a_slot() -> None:
    q = CampaignQueue(1)
    first, second = FakeLock(), FakeLock()
    a, b = QueuedLock(q, "a", first), QueuedLock(q, "b", second)
    assert await a.try_acquire(KEYS)
    assert not await b.try_acquire(KEYS)
    assert second.acquire_calls == 0
    assert b.wait_reason is not None
    assert b.wait_reason[0] == "Queued"
    await a.release()
    assert await b.try_acquire(KEYS)
    assert b.wait_reason is None


async def test_a_busy_subject_gives_the_slot_back() -> None:
    q = CampaignQueue(1)
    busy = QueuedLock(q, "a", FakeLock(busy=True))
    assert not await busy.try_acquire(KEYS)
    assert busy.wait_reason is None  # the subject's holder explains the wait, not the queue
    assert q.running == frozenset()
    assert await QueuedLock(q, "b", FakeLock()).try_acquire(KEYS)


# --- what a user sees: a queued Campaign says so, and runs when a slot frees ------------------------


async def test_a_campaign_over_the_bound_is_pending_with_its_place_and_runs_after_the_first(
    tmp_path: Path,
) -> None:
    queue = CampaignQueue(1)
    async with await Ledger.open(tmp_path / "ledger.db") as ledger:
        cluster = FakeCluster()
        cluster.add_statefulset("tikv", 3)
        sinks = [ListSink(), ListSink()]
        stop = Stop()
        refs = [CampaignRef("db", f"c{i}", f"uid-{i}") for i in range(2)]
        runners = [
            CampaignRunner(
                ref=ref,
                generation=1,
                spec_source=lambda: campaign(trials=2),
                existing_status={},
                ledger=ledger,
                pods=cluster,
                probe_factory=lambda _s, _n: None,
                lock=QueuedLock(queue, f"{ref.namespace}/{ref.name}/{ref.uid}", FakeLock()),
                status=sink,
                events=sink,
                clock=RealClock(),
                settings=SETTINGS,
            )
            for ref, sink in zip(refs, sinks, strict=True)
        ]
        first = asyncio.create_task(runners[0].run(stop))
        await sinks[0].wait_for(lambda s: s["phase"] == "Running")
        second = asyncio.create_task(runners[1].run(stop))
        queued = await sinks[1].wait_for(lambda s: s["phase"] == "Pending")
        assert cond(queued, "SubjectLocked")["reason"] == "Queued"
        assert cond(queued, "Reconciling")["status"] == "True"
        assert "queued: waiting for one of 1 campaign slots" in queued["message"]

        assert await asyncio.wait_for(first, 10) is Phase.SUCCEEDED
        assert await asyncio.wait_for(second, 10) is Phase.SUCCEEDED
        # Never both running: the second's first kill comes after the first's last trial ended.
        first_kills = [a.started_at for a in await ledger.attempts("uid-0")]
        second_kills = [a.started_at for a in await ledger.attempts("uid-1")]
        first_done = max(a.finished_at or 0.0 for a in await ledger.attempts("uid-0"))
        assert first_kills
        assert second_kills
        assert min(second_kills) >= first_done
        assert queue.running == frozenset()
        assert queue.waiting == ()
        await cluster.close()
