"""What a Campaign waits on before a trial: the subject lock (another Campaign may hold the
subject) and a suspension (``spec.suspend``). Both release nothing they did not take."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aftershock.engine.ports import StopSignal, SubjectLock
from aftershock.engine.publisher import StatusPublisher
from aftershock.engine.status import SUBJECT_LOCKED
from aftershock.errors import ApiError
from aftershock.model import Phase, Verdict

log = logging.getLogger(__name__)


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
    retry: float,
    stop: StopSignal,
) -> bool:
    """True when this Campaign holds the subject; else say who does, and wait `retry` seconds."""
    if lock.held:
        return True
    try:
        got = await lock.try_acquire()
    except ApiError as exc:
        if not exc.transient:
            raise
        got = False
        log.warning("acquiring the subject lock failed: %s", exc)
    now = out.clock.wall()
    if got:
        out.conditions.set(SUBJECT_LOCKED, True, "LockAcquired", "this Campaign holds the subject", now)
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
    await stop.wait(retry)
    return False
