"""Subject Leases as client-go holds its lock (ADR 0016): expiry by the contender's own monotonic
time since it last saw the record change, never by the holder's renewTime against a wall clock;
`held` from the last successful renewal; one Lease per controller of the pods a kill disturbs.

The API is an in-memory Lease store with resourceVersions (a 409 on a stale write, as the API
server answers); each process has its own monotonic and wall clocks, set by the test."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from tests.unit.fakes import make_pod

from aftershock.engine.holds import subject_keys
from aftershock.kube.client import LeaseRecord
from aftershock.kube.errors import KubeConflictError, KubeError, KubeNotFoundError, KubeUnavailableError
from aftershock.kube.lease import (
    Holder,
    LeaseClocks,
    LeaseLock,
    LeaseTiming,
    SubjectLeases,
    subject_lease_name,
)

TIMING = LeaseTiming(duration=30, renew_deadline=20.0, retry=5.0)
NS = "db"
CAMPAIGN = "db/c1/uid-1"


@dataclass
class LeaseStore:
    """The API server's Leases: writes carry the resourceVersion they read."""

    leases: dict[str, LeaseRecord] = field(default_factory=dict)
    rv: int = 0
    #: Errors raised by the next writes (then the write goes through as usual).
    fail_writes: list[KubeError] = field(default_factory=list)

    def _next(self, holder: str | None, duration: int, now: float) -> LeaseRecord:
        self.rv += 1
        return LeaseRecord(
            holder=holder, renew_time=now, duration_seconds=duration, resource_version=str(self.rv)
        )

    async def get_lease(self, namespace: str, name: str) -> LeaseRecord | None:
        return self.leases.get(name)

    async def create_lease(
        self, namespace: str, name: str, holder: str, duration: int, now: float, labels: Mapping[str, str]
    ) -> LeaseRecord:
        if self.fail_writes:
            raise self.fail_writes.pop(0)
        if name in self.leases:
            raise KubeConflictError("already exists", 409)
        self.leases[name] = self._next(holder, duration, now)
        return self.leases[name]

    async def replace_lease(
        self,
        namespace: str,
        name: str,
        holder: str | None,
        duration: int,
        now: float,
        labels: Mapping[str, str],
        resource_version: str,
    ) -> LeaseRecord:
        if self.fail_writes:
            raise self.fail_writes.pop(0)
        current = self.leases.get(name)
        if current is None:
            raise KubeNotFoundError("not found", 404)
        if current.resource_version != resource_version:
            raise KubeConflictError("the object has been modified", 409)
        self.leases[name] = self._next(holder, duration, now)
        return self.leases[name]


@dataclass
class Process:
    """One operator process: its own clocks. `wall` may be skewed or stepped at will."""

    store: LeaseStore
    process: str
    ledger: str = "ledger-a"
    campaign: str = CAMPAIGN
    mono: float = 1000.0
    wall: float = 1_800_000_000.0
    owns_ledger: bool = True

    def lock(self, name: str = "aftershock-subject-statefulset-tikv") -> LeaseLock:
        return LeaseLock(
            self.store,
            NS,
            name,
            Holder(self.campaign, self.ledger, self.process),
            timing=TIMING,
            # Renewals are driven by the test (`renew_once`).
            clocks=LeaseClocks(monotonic=lambda: self.mono, wall=lambda: self.wall, sleep=_never),
            owns_ledger=self.owns_ledger,
        )

    def leases(self) -> SubjectLeases:
        return SubjectLeases(
            self.store,
            NS,
            Holder(self.campaign, self.ledger, self.process),
            timing=TIMING,
            clocks=LeaseClocks(monotonic=lambda: self.mono, wall=lambda: self.wall, sleep=_never),
            owns_ledger=self.owns_ledger,
        )

    def tick(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


async def _never(_seconds: float) -> None:
    await asyncio.Event().wait()


async def hold_and_renew(holder: Process, lock: LeaseLock, contender: Process, seconds: float) -> None:
    """`seconds` pass for both; the holder renews every `retry` seconds."""
    for _ in range(int(seconds / TIMING.retry)):
        holder.tick(TIMING.retry)
        contender.tick(TIMING.retry)
        assert await lock.renew_once()


# --- expiry is local and monotonic -------------------------------------------------------------


@pytest.mark.parametrize("holder_skew", [-3600.0, -31.0, 0.0, 31.0, 3600.0])
async def test_a_live_holder_keeps_the_lease_whatever_its_clock_says(holder_skew: float) -> None:
    """The holder's wall clock is off by up to an hour either way (its renewTime looks stale by
    an hour, or an hour in the future): a renewing holder is never taken over."""
    store = LeaseStore()
    a = Process(store, "host-a/1", wall=1_800_000_000.0 + holder_skew)
    b = Process(store, "host-b/2", campaign="db/c2/uid-2")
    held = a.lock()
    assert await held.try_acquire()
    contender = b.lock()
    for _ in range(12):  # a minute: two lease durations
        await hold_and_renew(a, held, b, TIMING.retry)
        assert not await contender.try_acquire()
        assert held.held
    assert contender.other == Holder(CAMPAIGN, "ledger-a", "host-a/1").text()


@pytest.mark.parametrize("holder_skew", [-3600.0, 0.0, 3600.0])
async def test_a_silent_holder_is_taken_over_a_duration_after_the_last_change_seen(
    holder_skew: float,
) -> None:
    store = LeaseStore()
    a = Process(store, "host-a/1", wall=1_800_000_000.0 + holder_skew)
    b = Process(store, "host-b/2", campaign="db/c2/uid-2")
    held = a.lock()
    assert await held.try_acquire()
    contender = b.lock()
    assert not await contender.try_acquire()  # first sight: the clock starts now
    await hold_and_renew(a, held, b, 10.0)  # two renewals, both seen
    assert not await contender.try_acquire()
    # The holder stops (crashed, cut off): no change from here on.
    b.tick(TIMING.duration - 0.5)
    assert not await contender.try_acquire()
    b.tick(0.5)
    assert await contender.try_acquire()
    assert contender.held


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
async def test_a_wall_clock_step_changes_nothing(step: float) -> None:
    """Either side's wall clock jumps an hour forward or back mid-hold (the reliability suite's
    libfaketime step): the contender neither takes a live lease nor waits longer for a dead one."""
    store = LeaseStore()
    a = Process(store, "host-a/1")
    b = Process(store, "host-b/2", campaign="db/c2/uid-2")
    held, contender = a.lock(), b.lock()
    assert await held.try_acquire()
    assert not await contender.try_acquire()
    a.wall += step
    await hold_and_renew(a, held, b, 10.0)
    b.wall += step
    assert not await contender.try_acquire()
    a.wall -= step
    await hold_and_renew(a, held, b, 10.0)
    assert not await contender.try_acquire()
    b.wall -= step
    assert held.held
    b.tick(TIMING.duration)
    assert await contender.try_acquire()


# --- held: from the last successful renewal ---------------------------------------------------


async def test_held_lapses_at_the_renew_deadline_when_renewals_fail() -> None:
    """The API server is down: renewals fail (not conflicts). `held` turns false at the renew
    deadline, before any contender may take the Lease (the duration)."""
    store = LeaseStore()
    a = Process(store, "host-a/1")
    lock = a.lock()
    assert await lock.try_acquire()
    for _ in range(3):
        a.tick(TIMING.retry)
        store.fail_writes.append(KubeUnavailableError("connection refused", None))
        assert await lock.renew_once()  # not lost: nobody else wrote
        assert lock.held
    a.tick(TIMING.renew_deadline - 3 * TIMING.retry - 0.01)
    assert lock.held
    a.tick(0.01)
    assert not lock.held  # the strike's last check refuses from here on
    assert TIMING.renew_deadline < TIMING.duration
    # The API server is back and nobody took the Lease: the next renewal holds it again.
    assert await lock.renew_once()
    assert lock.held


async def test_a_renewal_that_meets_a_conflict_loses_the_lease_at_once() -> None:
    store = LeaseStore()
    a = Process(store, "host-a/1")
    b = Process(store, "host-b/2", campaign="db/c2/uid-2")
    lock = a.lock()
    assert await lock.try_acquire()
    taker = b.lock()
    assert not await taker.try_acquire()
    b.tick(TIMING.duration)
    assert await taker.try_acquire()  # a's renewals never reached the API server
    a.tick(1.0)
    assert lock.held  # a cannot know yet...
    assert not await lock.renew_once()  # ...until its next renewal meets the 409
    assert not lock.held


# --- who may take over at once ---------------------------------------------------------------


async def test_the_same_ledgers_successor_takes_over_at_once() -> None:
    """Restarted after a SIGKILL: the new process holds the ledger (the old one is dead), so the
    Lease its predecessor held for this Campaign is its own to take, without waiting."""
    store = LeaseStore()
    old = Process(store, "host/100")
    assert await old.lock().try_acquire()
    new = Process(store, "host/200")
    assert await new.lock().try_acquire()


@pytest.mark.parametrize(
    ("ledger", "campaign", "owns_ledger"),
    [
        ("ledger-b", CAMPAIGN, True),  # another operator (another ledger) runs this Campaign
        ("ledger-a", "db/c2/uid-2", True),  # another Campaign of this ledger
        ("ledger-a", CAMPAIGN, False),  # a process that does not hold the ledger proves nothing
    ],
)
async def test_anyone_else_waits_the_duration(ledger: str, campaign: str, owns_ledger: bool) -> None:
    store = LeaseStore()
    assert await Process(store, "host/100").lock().try_acquire()
    other = Process(store, "host/200", ledger=ledger, campaign=campaign, owns_ledger=owns_ledger)
    lock = other.lock()
    assert not await lock.try_acquire()
    other.tick(TIMING.duration - 1)
    assert not await lock.try_acquire()
    other.tick(1)
    assert await lock.try_acquire()


async def test_a_released_lease_is_free_at_once() -> None:
    store = LeaseStore()
    a = Process(store, "host-a/1")
    lock = a.lock()
    assert await lock.try_acquire()
    await lock.release()
    assert not lock.held
    assert await Process(store, "host-b/2", campaign="db/c2/uid-2").lock().try_acquire()


# --- what is locked: the controllers of the pods a kill disturbs ------------------------------


def test_two_selectors_over_one_statefulset_are_one_subject() -> None:
    pods = [
        dataclasses.replace(make_pod(f"tikv-{i}", labels={"app": "tikv", "zone": f"z{i}"}), owner_name="tikv")
        for i in range(3)
    ]
    by_app = subject_keys(pods)  # selector app=tikv
    one_zone = subject_keys([p for p in pods if p.labels["zone"] == "z1"])  # selector zone=z1
    assert by_app == one_zone == frozenset({"StatefulSet/tikv"})
    bare = dataclasses.replace(make_pod("lonely"), owner_kind=None)
    assert subject_keys([bare]) == frozenset({"Pod/lonely"})


def test_lease_names_are_readable_and_valid() -> None:
    assert subject_lease_name("StatefulSet/tikv") == "aftershock-subject-statefulset-tikv"
    long = subject_lease_name("ReplicaSet/" + "x" * 300)
    assert len(long) <= 253
    assert long.startswith("aftershock-subject-replicaset-x")
    assert long != subject_lease_name("ReplicaSet/" + "x" * 299)


async def test_all_or_none_two_campaigns_never_wait_on_each_other() -> None:
    """A needs {sts/a, sts/b}; B holds sts/b: A takes nothing (sts/a is released), so B, which
    needs sts/a too, can go on."""
    store = LeaseStore()
    a = Process(store, "host/1", campaign="db/a/uid-a").leases()
    b = Process(store, "host/1", campaign="db/b/uid-b").leases()
    assert await b.try_acquire({"StatefulSet/b"})
    assert not await a.try_acquire({"StatefulSet/a", "StatefulSet/b"})
    assert not a.held
    assert a.holder == Holder("db/b/uid-b", "ledger-a", "host/1").text()
    assert await b.try_acquire({"StatefulSet/a", "StatefulSet/b"})
    assert b.holds({"StatefulSet/a", "StatefulSet/b"})
    # Asking for fewer keys gives back the others.
    assert await b.try_acquire({"StatefulSet/b"})
    assert b.keys == frozenset({"StatefulSet/b"})
    await b.release()
    await a.release()
