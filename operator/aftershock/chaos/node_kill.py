"""``node_kill``: delete the victim pods, like a node losing power when gracePeriodSeconds is 0.
The controller (a StatefulSet) replaces them; nothing of ours is left to heal.

Each delete carries the victim's UID as a precondition, so a pod replaced since the gate is
never the one killed; transient API errors are retried within the plan's budget.
"""

from __future__ import annotations

import asyncio
import random

from aftershock.chaos.base import ChaosKindInfo, Clock, FaultApi, Injection, Right, Stopping, Strike
from aftershock.errors import ApiError, ConflictError, NotFoundError
from aftershock.model import Victim


async def _delete_one(
    strike: Strike, victim: Victim, api: FaultApi, clock: Clock, stopping: Stopping
) -> tuple[str | None, tuple[float, float] | None]:
    """Delete one victim; the error text (or None) and when the API server answered."""
    deadline = clock.monotonic() + strike.retry_budget
    backoff = 0.2
    tries = 0
    while True:
        tries += 1
        if not strike.held():
            # A retry (or the next victim) comes after the lock's renew deadline: not ours to send.
            return f"not deleting {victim.name}: the subject lock lapsed", None
        try:
            await api.delete_pod(strike.namespace, victim.name, victim.uid, strike.chaos.grace_period_seconds)
            # The answer comes after the deletion is committed: from here the pod is going.
            return None, (clock.monotonic(), clock.wall())
        except (NotFoundError, ConflictError) as exc:
            if tries > 1:
                return None, None  # an earlier try went through; the answer was lost
            code = exc.status if exc.status is not None else type(exc).__name__
            return f"{victim.name} was already gone or replaced before the kill ({code})", None
        except Exception as exc:
            transient = isinstance(exc, ApiError) and exc.transient
            if not transient or clock.monotonic() > deadline or stopping():
                return f"deleting {victim.name} failed: {exc}", None
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 5.0)


async def inject(strike: Strike, api: FaultApi, clock: Clock, stopping: Stopping) -> Injection:
    """Delete every victim (UID precondition), one after another, each delete and each retry
    of one only while `Strike.held` says the subject lock is fresh. The first delete's answer
    is when the disruption began (None after a retry whose answer was lost: the commit then
    came earlier, unseen)."""
    first: tuple[float, float] | None = None
    for i, victim in enumerate(strike.victims):
        error, acked = await _delete_one(strike, victim, api, clock, stopping)
        if error is not None:
            return Injection(error)
        if i == 0:
            first = acked
    return Injection(None, first)


KIND = ChaosKindInfo(
    type="node_kill",
    summary="deletes the victim pods (like a node losing power when gracePeriodSeconds is 0); "
    "their controller replaces them",
    rights=(Right("delete", "pods", why="the victim pods, deleted with a UID precondition"),),
    milestones=(
        ("victim_gone", "the victim pod object is gone (DELETED event)"),
        ("replacement_created", "a new pod (new UID) took the victim's place"),
        ("replacement_scheduled", "the replacement is bound to a node"),
        ("replacement_ready", "the replacement is Ready"),
    ),
    back="replacement_ready",
    replaces_pods=True,
    needs_duration=False,
    inject=inject,
)
