"""Subject locks: coordination.k8s.io Leases in the Campaign's namespace, held the way
client-go's leader election holds its lock (ADR 0016).

**What is locked is what is killed.** One Lease per *controller of the pods a kill disturbs*
(`subject_keys` in the engine: ``StatefulSet/tikv``, ``ReplicaSet/web-5d9f``, or ``Pod/x`` for a
pod without one), named ``aftershock-subject-<kind>-<name>``. Two Campaigns whose selectors
differ but pick pods of the same StatefulSet, or one with a pdURL and one without, take the
same Lease and never run at once; two TiKV clusters in one namespace are two StatefulSets and
run in parallel. A Campaign takes every Lease its pods need, or none (`SubjectLeases`).

**Time is local and monotonic.** Nothing compares another process's ``renewTime`` with this
process's wall clock, so a skewed or stepped clock on either side changes nothing:

- A contender remembers when (by its own monotonic clock) it last saw the Lease record change
  (its resourceVersion). The Lease is free once it has seen no change for
  ``leaseDurationSeconds``: the holder stopped renewing. A contender that has just started
  has seen nothing yet, so it waits a full duration.
- The holder renews every `LeaseTiming.retry` seconds. It holds the Lease for
  `LeaseTiming.renew_deadline` (< duration) after the *sending* of its last successful
  renewal: `held` is derived from that, so a renewal that keeps failing (the API server down,
  not a conflict) turns `held` false on time and the last check before a kill refuses. The gap
  between the deadline and the duration is the margin for clock-rate differences and a request
  in flight.
- Every write carries the resourceVersion it read (optimistic concurrency): of a late renewal
  and a takeover, exactly one succeeds, and the loser sees a conflict.

**A crashed predecessor on the same ledger is taken over at once.** The holder identity is
``<namespace>/<name>/<uid>@<ledger id>/<process>``. `aftershock run` holds its ledger
exclusively (`aftershock.ledger.owner`): a process that holds ledger L and finds a Lease held
for the same Campaign by another process of ledger L knows that process is gone, and takes the
Lease without waiting out its duration. Anyone else waits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from aftershock.kube.client import LeaseRecord
from aftershock.kube.errors import KubeConflictError, KubeError, KubeNotFoundError

log = logging.getLogger(__name__)

LEASE_LABELS = {"app.kubernetes.io/managed-by": "aftershock"}
_PREFIX = "aftershock-subject-"
_NAME_MAX = 253  # a Lease's name is a DNS subdomain


class LeaseApi(Protocol):
    """The Lease calls of `aftershock.kube.client.Kube`."""

    async def get_lease(self, namespace: str, name: str) -> LeaseRecord | None: ...

    async def create_lease(
        self, namespace: str, name: str, holder: str, duration: int, now: float, labels: Mapping[str, str]
    ) -> LeaseRecord: ...

    async def replace_lease(
        self,
        namespace: str,
        name: str,
        holder: str | None,
        duration: int,
        now: float,
        labels: Mapping[str, str],
        resource_version: str,
    ) -> LeaseRecord: ...


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's three numbers, in seconds (its defaults are 15 / 10 / 2; a Campaign's trial
    is slower than a controller's reconcile, so fewer renewals do)."""

    #: ``leaseDurationSeconds``: how long a contender waits, after it last saw the record change.
    duration: int = 30
    #: How long the holder trusts its last successful renewal (from when it was sent).
    renew_deadline: float = 20.0
    #: How often the holder renews.
    retry: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.duration:
            raise ValueError("lease timing needs 0 < retry < renew_deadline < duration")


@dataclass(frozen=True)
class LeaseClocks:
    """The clocks a lock reads: monotonic for every decision, wall only for the ``renewTime``
    it writes (for people; nobody compares it), and the sleep between renewals."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


def subject_lease_name(key: str) -> str:
    """The Lease of one subject key (``Kind/name``): readable when it fits, else hashed."""
    kind, _, name = key.partition("/")
    readable = re.sub(r"[^a-z0-9.-]", "-", f"{kind.lower()}-{name.lower()}").strip("-.")
    candidate = f"{_PREFIX}{readable}"
    if len(candidate) <= _NAME_MAX and readable:
        return candidate
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{_PREFIX}{readable[: _NAME_MAX - len(_PREFIX) - 17].rstrip('-.')}-{digest}"


@dataclass(frozen=True)
class Holder:
    """Who holds a subject Lease: a Campaign, run from one ledger by one process."""

    campaign: str  # namespace/name/uid
    ledger: str  # the ledger's id (`Ledger.ledger_id`)
    process: str  # the pod's name, or host/pid

    def text(self) -> str:
        return f"{self.campaign}@{self.ledger}/{self.process}"

    @classmethod
    def parse(cls, text: str | None) -> Holder | None:
        if not text or "@" not in text:
            return None
        campaign, _, rest = text.rpartition("@")
        ledger, _, process = rest.partition("/")
        if not campaign or not ledger or not process:
            return None
        return cls(campaign, ledger, process)

    def succeeds(self, other: Holder | None) -> bool:
        """`other` is this Campaign run from this ledger by another process: the process that
        holds the ledger exclusively (this one) knows that one is gone."""
        return (
            other is not None
            and other.campaign == self.campaign
            and other.ledger == self.ledger
            and other.process != self.process
        )


class LeaseLock:
    """One Lease, taken and kept as client-go's leader election does (see the module doc)."""

    def __init__(
        self,
        kube: LeaseApi,
        namespace: str,
        name: str,
        holder: Holder,
        *,
        timing: LeaseTiming | None = None,
        clocks: LeaseClocks | None = None,
        owns_ledger: bool = True,
    ) -> None:
        self._kube = kube
        clocks = clocks or LeaseClocks()
        self._sleep = clocks.sleep
        self._namespace = namespace
        self._name = name
        self._holder = holder
        self._identity = holder.text()
        self._timing = timing or LeaseTiming()
        self._monotonic = clocks.monotonic
        self._wall = clocks.wall
        #: Whether this process holds its ledger exclusively (`aftershock run` always does).
        self._owns_ledger = owns_ledger
        #: The record last seen, and when (monotonic) it was first seen so.
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        #: Who holds it when we do not (for the condition message).
        self.other: str | None = None
        self._rv: str | None = None
        #: When the last successful write of ours was sent (monotonic); None: not ours.
        self._renewed_at: float | None = None
        self._renewer: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def held(self) -> bool:
        """Ours, and renewed (sent) less than the renew deadline ago."""
        renewed = self._renewed_at
        return renewed is not None and self._monotonic() - renewed < self._timing.renew_deadline

    def _observe(self, record: LeaseRecord, now: float) -> None:
        if self._observed is None or record.resource_version != self._observed.resource_version:
            self._observed, self._observed_at = record, now

    def _free(self, record: LeaseRecord, now: float) -> bool:
        if record.holder is None or record.holder == self._identity:
            return True
        if self._owns_ledger and self._holder.succeeds(Holder.parse(record.holder)):
            return True
        duration = record.duration_seconds or self._timing.duration
        return now - self._observed_at >= duration

    async def try_acquire(self) -> bool:
        """Take the Lease if it is free, released, expired (by what this process saw) or ours.
        Never waits."""
        if self.held:
            return True
        record = await self._kube.get_lease(self._namespace, self._name)
        sent = self._monotonic()
        try:
            if record is None:
                record = await self._kube.create_lease(
                    self._namespace,
                    self._name,
                    self._identity,
                    self._timing.duration,
                    self._wall(),
                    LEASE_LABELS,
                )
            else:
                self._observe(record, sent)
                if not self._free(record, sent):
                    self.other = record.holder
                    return False
                record = await self._kube.replace_lease(
                    self._namespace,
                    self._name,
                    self._identity,
                    self._timing.duration,
                    self._wall(),
                    LEASE_LABELS,
                    record.resource_version,
                )
        except KubeConflictError:
            # Somebody else created or changed it between our read and write.
            return False
        self._took(record, sent)
        return True

    def _took(self, record: LeaseRecord, sent: float) -> None:
        self._rv = record.resource_version
        self._observed, self._observed_at = record, sent
        self._renewed_at = sent
        self.other = None
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever(), name=f"lease-renew-{self._name}")

    async def _renew_forever(self) -> None:
        while self._renewed_at is not None:
            await self._sleep(self._timing.retry)
            if not await self.renew_once():
                return

    async def renew_once(self) -> bool:
        """One renewal; False once the Lease is no longer ours (released, taken, deleted)."""
        if self._renewed_at is None:
            return False
        sent = self._monotonic()
        try:
            record = await self._kube.replace_lease(
                self._namespace,
                self._name,
                self._identity,
                self._timing.duration,
                self._wall(),
                LEASE_LABELS,
                self._rv or "",
            )
        except (KubeConflictError, KubeNotFoundError):
            # Someone took it over (we had not renewed for its whole duration) or deleted
            # it: ours no more. The last check before a kill reads `held`.
            log.warning("lost the subject lease %s/%s", self._namespace, self._name)
            self._renewed_at = None
            return False
        except KubeError as exc:
            # Not a conflict: nobody else took it (yet). `held` turns false by itself once
            # the renew deadline passes; a later renewal that succeeds holds it again (its
            # resourceVersion proves nobody wrote in between).
            left = self._timing.renew_deadline - (self._monotonic() - (self._renewed_at or 0.0))
            log.warning(
                "renewing lease %s/%s failed (%.1fs left before it is no longer trusted): %s",
                self._namespace,
                self._name,
                max(left, 0.0),
                exc,
            )
            return True
        self._rv = record.resource_version
        self._observed, self._observed_at = record, sent
        if self._renewed_at is not None:
            self._renewed_at = sent
        return self._renewed_at is not None

    async def release(self) -> None:
        was_ours = self._renewed_at is not None
        self._renewed_at = None
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        if not was_ours:
            return
        try:
            record = await self._kube.get_lease(self._namespace, self._name)
            if record is not None and record.holder == self._identity:
                await self._kube.replace_lease(
                    self._namespace,
                    self._name,
                    None,
                    self._timing.duration,
                    self._wall(),
                    LEASE_LABELS,
                    record.resource_version,
                )
        except KubeError as exc:
            # Contenders take it once they have seen it unchanged for its duration.
            log.warning("releasing lease %s/%s failed: %s", self._namespace, self._name, exc)


class SubjectLeases:
    """The `SubjectLock` port: the Leases of a set of subject keys, all or none."""

    def __init__(
        self,
        kube: LeaseApi,
        namespace: str,
        holder: Holder,
        *,
        timing: LeaseTiming | None = None,
        clocks: LeaseClocks | None = None,
        owns_ledger: bool = True,
    ) -> None:
        def make(key: str) -> LeaseLock:
            return LeaseLock(
                kube,
                namespace,
                subject_lease_name(key),
                holder,
                timing=timing,
                clocks=clocks,
                owns_ledger=owns_ledger,
            )

        self._make = make
        #: Every key asked for so far, taken or not: what each lock saw is its clock of expiry.
        self._locks: dict[str, LeaseLock] = {}
        self._busy: LeaseLock | None = None

    @property
    def keys(self) -> frozenset[str]:
        """The keys held now."""
        return frozenset(k for k, lock in self._locks.items() if lock.held)

    @property
    def held(self) -> bool:
        return bool(self.keys)

    def holds(self, keys: Collection[str]) -> bool:
        return all(k in self._locks and self._locks[k].held for k in keys)

    @property
    def holder(self) -> str | None:
        return self._busy.other if self._busy is not None else None

    @property
    def wait_reason(self) -> tuple[str, str] | None:
        return None

    def _lock(self, key: str) -> LeaseLock:
        if key not in self._locks:
            self._locks[key] = self._make(key)
        return self._locks[key]

    async def try_acquire(self, keys: Collection[str]) -> bool:
        """Hold exactly `keys`: every one of them, or (releasing what it holds) none. Never
        waits; all or none, so two Campaigns that each need what the other holds cannot wait
        on each other for ever."""
        wanted = sorted(set(keys))
        self._busy = None
        for key in wanted:
            lock = self._lock(key)
            try:
                got = await lock.try_acquire()
            except BaseException:
                await self.release()
                raise
            if not got:
                self._busy = lock
                await self.release()
                return False
        for key, lock in self._locks.items():
            if key not in wanted and lock.held:
                await lock.release()  # pods of that controller are not the subject's any more
        return True

    async def release(self) -> None:
        for lock in self._locks.values():
            await lock.release()
