"""What a Campaign waits on before a trial: the subject lock (another Campaign may hold the
subject) and a suspension (``spec.suspend``). Both release nothing they did not take.

The lock is on what a kill disturbs, not on how a Campaign names it: `subject_keys` are the
controllers of the selected pods (ADR 0016), so two selectors over the same pods are one subject.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable

from aftershock.engine.ports import StopSignal, SubjectLock
from aftershock.engine.publisher import StatusPublisher
from aftershock.engine.status import SUBJECT_LOCKED
from aftershock.errors import ApiError
from aftershock.model import Phase, PodState, Verdict

log = logging.getLogger(__name__)


def subject_keys(pods: Iterable[PodState]) -> frozenset[str]:
    """What killing these pods disturbs: each pod's controller (``StatefulSet/tikv``), or the
    pod itself when it has none (``Pod/name``). Killing any pod of a StatefulSet disturbs the
    whole set, so the controller, not the pod, is the unit of the lock."""
    return frozenset(
        f"{p.owner_kind}/{p.owner_name}" if p.owner_kind and p.owner_name else f"Pod/{p.name}" for p in pods
    )


async def suspend(
    *,
    out: StatusPublisher,
    lock: SubjectLock,
    still: Callable[[], bool],
    stop: StopSignal,
) -> None:
    """Release the subject and wait while `still()` says suspended."""
    now = out.clock.wall()
    await lock.release()
    out.conditions.set(SUBJECT_LOCKED, False, "Suspended", "released while suspended", now)
    out.phase = Phase.SUSPENDED
    out.waiting("Suspended", "suspended: set spec.suspend to false to resume", reconciling=False)
    await out.ledger.set_campaign_state(out.ref.uid, Phase.SUSPENDED, Verdict.NONE, now)
    await out.publish()
    # The spec is a live view kept current by the operator's watch: this reads memory,
    # not the API server.
    while not stop.is_set() and still():
        await stop.wait(1.0)


async def acquire_lock(
    *,
    out: StatusPublisher,
    lock: SubjectLock,
    keys: frozenset[str],
    retry: float,
    stop: StopSignal,
) -> bool:
    """True when this Campaign holds every one of `keys` (the subject's controllers now); else
    say who holds the subject, and wait `retry` seconds. No keys (no pod matches yet): nothing
    to lock; the trial's gate waits for pods, and the lock is taken before anything is touched."""
    if keys and lock.holds(keys):
        return True
    try:
        got = await lock.try_acquire(keys)
    except ApiError as exc:
        if not exc.transient:
            raise
        got = False
        log.warning("acquiring the subject lock failed: %s", exc)
    now = out.clock.wall()
    if got:
        if keys:
            message = f"this Campaign holds the subject ({', '.join(sorted(keys))})"
            out.conditions.set(SUBJECT_LOCKED, True, "LockAcquired", message, now)
        else:
            message = "no pod matches the selector yet: the subject is locked once one does"
            out.conditions.set(SUBJECT_LOCKED, False, "NoPods", message, now)
        return True
    out.phase = Phase.PENDING
    # The lock says why when it is not another holder (the operator's queue of Campaigns).
    reason, message = lock.wait_reason or (
        "SubjectBusy",
        f"waiting for the subject: another Campaign ({lock.holder or 'unknown'}) is running against it",
    )
    out.conditions.set(SUBJECT_LOCKED, False, reason, message, now)
    out.waiting(reason, message, reconciling=True)
    await out.publish()
    # Jittered (0.5-1.5 x): Campaigns that started together would otherwise all ask at the same
    # moment, every `retry` seconds, and the subject would sit free for half of it on average.
    await stop.wait(retry * random.uniform(0.5, 1.5))
    return False
