"""The kill guard and the kill: the last checks right before a delete, and the delete itself.

Every guard must hold moments before the kill: the namespace is not protected, the gate passed
(with the subject's own API confirming it, when there is one), the subject lock is held, the
subject is still healthy, and each victim is still there, in the Campaign's namespace, matching
the selector, Ready. The delete carries the victim's UID as a precondition, so a pod replaced
in the meantime is never the one killed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aftershock.engine.gate import pod_reasons
from aftershock.engine.holds import subject_keys
from aftershock.engine.outcomes import Gate
from aftershock.engine.ports import Clock, PodApi, StopSignal, SubjectLock
from aftershock.engine.view import PodView
from aftershock.errors import ApiError, ConflictError, NotFoundError
from aftershock.model import CampaignSpec, Victim


@dataclass(frozen=True)
class GuardInputs:
    spec: CampaignSpec
    namespace: str
    protected_namespaces: frozenset[str]
    expected_pods: int | None
    #: Whether the subject's own API judged the gate (it must then have said healthy).
    probed: bool


def lock_covers(victims: Sequence[Victim], view: PodView, lock: SubjectLock) -> bool:
    """The lock is held, fresh, for what killing these victims disturbs (their controllers)."""
    current = {p.uid: p for p in view.pods()}
    pods = [current[v.uid] for v in victims if v.uid in current]
    return bool(victims) and lock.holds(subject_keys(pods)) and lock.held


def refusal(
    inputs: GuardInputs, victims: Sequence[Victim], view: PodView, gate: Gate, lock: SubjectLock
) -> str | None:
    """Why the kill must not happen now, or None when every guard holds."""
    namespace = inputs.namespace
    if namespace in inputs.protected_namespaces:
        return f"namespace {namespace} is protected"
    if not gate.passed:
        return "the steady-state gate did not pass"
    if inputs.probed and (gate.probe is None or not gate.probe.healthy):
        return "the subject's API did not confirm a healthy subject at the gate"
    if not lock_covers(victims, view, lock):
        return "the subject lock is no longer held for the victims' pods"
    now_unhealthy = pod_reasons(view.pods(), inputs.spec, namespace, inputs.expected_pods)
    if now_unhealthy:
        return f"the subject is no longer healthy: {'; '.join(now_unhealthy)}"
    current = {p.uid: p for p in view.pods()}
    for v in victims:
        pod = current.get(v.uid)
        if pod is None:
            return f"{v.name} ({v.uid}) is gone since the gate passed"
        if pod.namespace != namespace:
            return f"{v.name} is in namespace {pod.namespace}, not {namespace}"
        if not inputs.spec.subject.selector.matches(pod.labels):
            return f"{v.name} no longer matches the selector"
        if not pod.ready or pod.deleting:
            return f"{v.name} is no longer healthy"
    return None


@dataclass(frozen=True)
class KillPlan:
    namespace: str
    victims: tuple[Victim, ...]
    grace_period_seconds: int
    #: How long a delete is retried on transient API errors.
    retry_budget: float


@dataclass(frozen=True)
class KillResult:
    """What the kill did: an error text (None: every victim deleted) and when the disruption
    began, by the API server's answer to the first delete."""

    error: str | None
    #: (monotonic, wall) of the first delete's answer; None when no answer can stand for the
    #: commit (an error, or a retry after a lost answer: the commit then came earlier, unseen).
    first_acked: tuple[float, float] | None


async def _delete_one(
    plan: KillPlan, victim: Victim, pods: PodApi, clock: Clock, stop: StopSignal, held: Callable[[], bool]
) -> tuple[str | None, tuple[float, float] | None]:
    """Delete one victim; the error text (or None) and when the API server answered."""
    deadline = clock.monotonic() + plan.retry_budget
    backoff = 0.2
    tries = 0
    while True:
        tries += 1
        if not held():
            # A retry (or the next victim) comes after the lock's renew deadline: not ours to send.
            return f"not deleting {victim.name}: the subject lock lapsed", None
        try:
            await pods.delete_pod(plan.namespace, victim.name, victim.uid, plan.grace_period_seconds)
            # The answer comes after the deletion is committed: from here the pod is going.
            return None, (clock.monotonic(), clock.wall())
        except (NotFoundError, ConflictError) as exc:
            if tries > 1:
                return None, None  # an earlier try went through; the answer was lost
            code = exc.status if exc.status is not None else type(exc).__name__
            return f"{victim.name} was already gone or replaced before the kill ({code})", None
        except Exception as exc:
            transient = isinstance(exc, ApiError) and exc.transient
            if not transient or clock.monotonic() > deadline or stop.is_set():
                return f"deleting {victim.name} failed: {exc}", None
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 5.0)


async def kill(
    plan: KillPlan, pods: PodApi, clock: Clock, stop: StopSignal, held: Callable[[], bool] = lambda: True
) -> KillResult:
    """Delete every victim (UID precondition), one after another; each delete, and each retry
    of one, only while `held()` (the subject lock, fresh) says so."""
    first: tuple[float, float] | None = None
    for i, victim in enumerate(plan.victims):
        error, acked = await _delete_one(plan, victim, pods, clock, stop, held)
        if error is not None:
            return KillResult(error, None)
        if i == 0:
            first = acked
    return KillResult(None, first)
