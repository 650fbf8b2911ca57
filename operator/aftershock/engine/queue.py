"""The operator-wide bound on running Campaigns (``--max-concurrent-campaigns``), first come
first served, in front of the per-subject lock.

A Campaign runs only while it holds both a *slot* (one of the operator's N) and its subject's
lock. The slot is asked for first and handed back at once when the subject turns out to be
busy, so a Campaign waiting for its subject never sits on a slot another subject could use.
Waiters keep their place in line; a waiter whose subject was busy at its last try is passed
over (its place kept) until it tries again, so one busy subject does not hold up the line.

Plain asyncio, in memory: the queue is the order this process saw the Campaigns ask, rebuilt
by the daemons asking again after a restart. No kopf, no API client.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from aftershock.engine.ports import SubjectLock

#: The reason of the conditions of a Campaign waiting for a slot.
REASON_QUEUED = "Queued"


@dataclass(frozen=True)
class QueuePlace:
    """Where a waiting Campaign stands: ``position`` 1 is next."""

    position: int
    waiting: int
    running: int
    limit: int

    def message(self) -> str:
        """What the waiting Campaign's status says. The same for every waiter and while it
        waits: a place in line in the message changed each waiter's status whenever anyone
        ahead started, one patch per waiter per start (1,000 Campaigns 20 at a time: ~70
        status patches per trial, enough to time out the operator's own API calls)."""
        return (
            f"queued: waiting for one of {self.limit} campaign slots "
            f"(--max-concurrent-campaigns {self.limit}), first come first served"
        )


class CampaignQueue:
    """Slots for running Campaigns, keyed by ``namespace/name/uid``. ``limit`` 0: no bound."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be 0 (no bound) or positive")
        self.limit = limit
        self._running: set[str] = set()
        #: Waiters in arrival order; True: its subject was busy at its last try (passed over).
        self._waiting: dict[str, bool] = {}

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._running)

    @property
    def waiting(self) -> tuple[str, ...]:
        return tuple(self._waiting)

    def take(self, key: str) -> QueuePlace | None:
        """A slot for `key` (None: taken, or already its), else its place in line."""
        if key in self._running:
            return None
        if self.limit == 0:
            self._running.add(key)
            return None
        self._waiting.setdefault(key, False)
        self._waiting[key] = False
        ahead = 0
        for other, passed_over in self._waiting.items():
            if other == key:
                break
            if not passed_over:
                ahead += 1
        if ahead < self.limit - len(self._running):
            del self._waiting[key]
            self._running.add(key)
            return None
        return QueuePlace(
            position=list(self._waiting).index(key) + 1,
            waiting=len(self._waiting),
            running=len(self._running),
            limit=self.limit,
        )

    def give_back(self, key: str) -> None:
        """`key` took a slot but its subject is busy: back in line at the front, passed over
        until it asks again."""
        self._running.discard(key)
        if self.limit:
            self._waiting = {key: True, **{k: v for k, v in self._waiting.items() if k != key}}

    def leave(self, key: str) -> None:
        """`key` stopped (finished, suspended, deleted, operator exiting): slot and place freed."""
        self._running.discard(key)
        self._waiting.pop(key, None)


class QueuedLock:
    """The `SubjectLock` port: a slot of `queue`, then `inner` (the subject's Lease)."""

    def __init__(self, queue: CampaignQueue, key: str, inner: SubjectLock) -> None:
        self._queue = queue
        self._key = key
        self._inner = inner
        self._place: QueuePlace | None = None

    @property
    def held(self) -> bool:
        return self._inner.held

    def holds(self, keys: Collection[str]) -> bool:
        return self._inner.holds(keys)

    @property
    def holder(self) -> str | None:
        return self._inner.holder

    @property
    def wait_reason(self) -> tuple[str, str] | None:
        if self._place is None:
            return None
        return REASON_QUEUED, self._place.message()

    async def try_acquire(self, keys: Collection[str]) -> bool:
        if self._inner.held and self._inner.holds(keys):
            return True
        self._place = self._queue.take(self._key)
        if self._place is not None:
            return False
        try:
            got = await self._inner.try_acquire(keys)
        except BaseException:
            self._queue.give_back(self._key)
            raise
        if not got:
            self._queue.give_back(self._key)
        return got

    async def release(self) -> None:
        try:
            await self._inner.release()
        finally:
            self._queue.leave(self._key)
            self._place = None
