"""The kill guard: the last checks right before a fault is injected (the injecting itself is
the chaos kind's, `aftershock.chaos.registry`).

Every guard must hold moments before the kill: the namespace is not protected, the gate passed
(with the subject's own API confirming it, when there is one), the subject lock is held, the
subject is still healthy, and each victim is still there, in the Campaign's namespace, matching
the selector, Ready. These hold for every chaos kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aftershock.engine.gate import pod_reasons
from aftershock.engine.holds import subject_keys
from aftershock.engine.outcomes import Gate
from aftershock.engine.ports import SubjectLock
from aftershock.engine.view import PodView
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
