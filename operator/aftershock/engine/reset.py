"""The reset before a trial (`spec.reset`): restart every member, or re-create them on new,
empty volumes, then wait until the subject's pods are back and Ready.

It runs before the trial's steady-state gate, so its time is never part of a recovery: the
gate then waits for health as it always does. The same guards as the kill hold for every pod
and claim it touches: the namespace is not protected, the subject lock is held, each pod is
in the Campaign's namespace and matches the selector; the only claims deleted are those of
the selected pods, named by their StatefulSet's volumeClaimTemplates (``<template>-<pod>``).
Every delete carries the UID seen, so nothing created in the meantime is ever deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aftershock.engine.holds import subject_keys
from aftershock.engine.ports import Clock, PodApi, StopSignal, SubjectLock, VolumeApi
from aftershock.engine.view import PodView, next_observation
from aftershock.errors import ApiError, ConflictError, NotFoundError
from aftershock.model import CampaignSpec, PodState, ResetMode

STATEFULSET = "StatefulSet"


class ResetRefused(Exception):
    """A guard does not hold: nothing (more) is deleted."""


@dataclass(frozen=True)
class Claim:
    name: str
    pod: str
    uid: str


@dataclass
class ResetReport:
    """What was reset and how long it took: kept in the attempt's `finalState["reset"]`."""

    mode: ResetMode
    pods: list[PodState] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    new_pods: dict[str, str] = field(default_factory=dict)
    new_claims: dict[str, str] = field(default_factory=dict)
    seconds: float | None = None
    #: Wall clock when the reset ended: before the trial's gate, so never inside its recovery.
    finished_wall: float | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "seconds": None if self.seconds is None else round(self.seconds, 6),
            "finishedAt": self.finished_wall,
            "pods": [
                {"name": p.name, "oldUid": p.uid, "newUid": self.new_pods.get(p.name)} for p in self.pods
            ],
            "claims": [
                {"name": c.name, "pod": c.pod, "oldUid": c.uid, "newUid": self.new_claims.get(c.name)}
                for c in self.claims
            ],
            "error": self.error,
        }


@dataclass(frozen=True)
class ResetPlan:
    spec: CampaignSpec
    namespace: str
    protected_namespaces: frozenset[str]
    #: How often the claims are looked at while waiting for the new ones.
    poll_interval: float


def guard(plan: ResetPlan, pods: Sequence[PodState], lock: SubjectLock) -> str | None:
    """Why the reset must not touch these pods now, or None when every guard holds."""
    if plan.namespace in plan.protected_namespaces:
        return f"namespace {plan.namespace} is protected"
    if not lock.holds(subject_keys(pods)):
        return "the subject lock is not held for these pods"
    for pod in pods:
        if pod.namespace != plan.namespace:
            return f"{pod.name} is in namespace {pod.namespace}, not {plan.namespace}"
        if not plan.spec.subject.selector.matches(pod.labels):
            return f"{pod.name} does not match the selector"
        if plan.spec.reset.mode is ResetMode.RECREATE and (
            pod.owner_kind != STATEFULSET or not pod.owner_name
        ):
            return (
                f"{pod.name} is not a StatefulSet's pod (owner {pod.owner_kind or 'none'}): "
                "spec.reset.mode Recreate needs volumeClaimTemplates to know the pod's claims"
            )
    return None


async def _claims_of(plan: ResetPlan, pods: Sequence[PodState], volumes: VolumeApi) -> list[Claim]:
    templates: dict[str, list[str]] = {}
    found: list[Claim] = []
    for pod in pods:
        owner = pod.owner_name or ""
        if owner not in templates:
            templates[owner] = await volumes.claim_templates(plan.namespace, owner)
        for template in templates[owner]:
            name = f"{template}-{pod.name}"
            uid = await volumes.get_claim(plan.namespace, name)
            if uid is not None:
                found.append(Claim(name, pod.name, uid))
    return found


async def _delete(call: Any, *args: Any) -> None:
    # 404 or 409: already gone, or the name is a new object's: nothing of ours is left to delete.
    with contextlib.suppress(NotFoundError, ConflictError):
        await call(*args)


def _pods_back(report: ResetReport, view: PodView) -> bool:
    old = {p.uid for p in report.pods}
    now = view.pods()
    if any(p.uid in old for p in now) or len(now) < len(report.pods):
        return False
    if not all(p.ready and not p.deleting for p in now):
        return False
    report.new_pods = {p.name: p.uid for p in now}
    return True


async def _claims_back(report: ResetReport, plan: ResetPlan, volumes: VolumeApi) -> bool:
    for claim in report.claims:
        uid = await volumes.get_claim(plan.namespace, claim.name)
        if uid is None or uid == claim.uid:
            return False
        report.new_claims[claim.name] = uid
    return True


async def reset_subject(
    *,
    plan: ResetPlan,
    view: PodView,
    pods: PodApi,
    volumes: VolumeApi | None,
    lock: SubjectLock,
    clock: Clock,
    stop: StopSignal,
) -> ResetReport | None:
    """Reset the subject as `spec.reset` says (None: nothing to do). Raises `ResetRefused`
    when a guard fails before anything is deleted; API errors while deleting or waiting end
    in the report's `error`."""
    mode = plan.spec.reset.mode
    if mode is ResetMode.NONE:
        return None
    timeout = plan.spec.steady_state_timeout_seconds
    await view.wait_synced(timeout)
    current = view.pods()
    if not current:
        return None  # nothing to reset: the gate says the selector matches nothing
    refused = guard(plan, current, lock)
    if refused is not None:
        raise ResetRefused(refused)
    if mode is ResetMode.RECREATE and volumes is None:
        raise ResetRefused("spec.reset.mode Recreate: this operator has no access to claims")
    report = ResetReport(mode, pods=list(current))
    start = clock.monotonic()
    try:
        if mode is ResetMode.RECREATE:
            assert volumes is not None
            report.claims = await _claims_of(plan, current, volumes)
            # Checked again after the reads: the lock may have gone while they ran.
            if (refused := guard(plan, current, lock)) is not None:
                raise ResetRefused(refused)
            for claim in report.claims:
                # The claim stays (pvc-protection) until its pod is gone; the new pod then
                # gets a new claim from the template.
                await _delete(volumes.delete_claim, plan.namespace, claim.name, claim.uid)
        grace = plan.spec.chaos.grace_period_seconds
        for pod in current:
            await _delete(pods.delete_pod, plan.namespace, pod.name, pod.uid, grace)
        deadline = start + timeout
        with view.subscribe() as queue:
            while True:
                if _pods_back(report, view) and (
                    volumes is None
                    or mode is not ResetMode.RECREATE
                    or await _claims_back(report, plan, volumes)
                ):
                    break
                if stop.is_set():
                    report.error = "stopped before the subject was back"
                    break
                if clock.monotonic() >= deadline:
                    report.error = f"the subject was not back {timeout:g}s after the reset"
                    break
                await next_observation(queue, min(plan.poll_interval, deadline - clock.monotonic()))
    except ApiError as exc:
        report.error = f"reset: {exc}"
    report.seconds = clock.monotonic() - start
    report.finished_wall = clock.wall()
    return report
