"""The steady-state gate: wait until the subject has been healthy, without a break, for
``steadyState.stableSeconds``, judged on the pods (from the watch) and the subject's own API.

The gate passes on one picture: the pods as they are after the subject's answer was read, so a
kill never rests on a picture older than the answer it is combined with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aftershock.engine.outcomes import Gate, look_jitter
from aftershock.engine.ports import Clock, ProbeUnavailableError, StopSignal, SubjectProbe
from aftershock.engine.publisher import StatusPublisher
from aftershock.engine.status import STEADY_STATE
from aftershock.engine.view import PodView, next_observation
from aftershock.model import CampaignSpec, PodState, ProbeResult


def pod_reasons(
    pods: Sequence[PodState], spec: CampaignSpec, namespace: str, expected: int | None
) -> list[str]:
    """Why the pods are not a healthy subject (empty: they are)."""
    if not pods:
        return [f"selector {spec.subject.selector.to_query()!r} matches no pods in namespace {namespace!r}"]
    reasons = [f"{p.name} is being deleted" for p in pods if p.deleting]
    reasons += [f"{p.name} is not Ready" for p in pods if not p.ready and not p.deleting]
    if expected is not None and len(pods) != expected:
        reasons.append(f"{len(pods)} pods, expected {expected}")
    return reasons


@dataclass
class _Look:
    """What the last look at the subject's API said; it stands until the next look. Until the
    subject has answered healthy, it is not healthy."""

    result: ProbeResult | None
    reasons: list[str]
    failed: bool = False


async def _look(probe: SubjectProbe, view: PodView, clock: Clock) -> _Look:
    try:
        result = await probe.check(view.pods(), clock.wall())
    except ProbeUnavailableError as exc:
        return _Look(None, [f"{probe.api_name} unavailable: {exc}"], failed=True)
    reasons = list(result.reasons)
    if not result.healthy and not reasons:
        reasons = [f"{probe.api_name} reports the subject unhealthy"]
    return _Look(result, reasons)


async def wait_for_steady_state(
    *,
    spec: CampaignSpec,
    view: PodView,
    probe: SubjectProbe | None,
    stop: StopSignal,
    publisher: StatusPublisher,
    probe_interval: float,
    expected_pods: int | None,
) -> Gate:
    clock = publisher.clock
    start = clock.monotonic()
    deadline = start + spec.steady_state_timeout_seconds
    stable = spec.steady_state_stable_seconds
    healthy_since: float | None = None
    last_reasons: tuple[str, ...] = ()
    look = _Look(None, [f"{probe.api_name} not checked yet"] if probe is not None else [])
    next_probe = start
    with view.subscribe() as queue:
        await view.wait_synced(spec.steady_state_timeout_seconds)
        while True:
            if probe is not None and clock.monotonic() >= next_probe:
                next_probe = clock.monotonic() + probe_interval * look_jitter()
                look = await _look(probe, view, clock)
            # The pods as they are now, after any await above.
            pods = view.pods()
            reasons = pod_reasons(pods, spec, publisher.ref.namespace, expected_pods) + look.reasons
            if view.error and not view.synced:
                reasons.append(f"pod watch: {view.error}")
            now = clock.monotonic()
            if not reasons:
                healthy_since = now if healthy_since is None else healthy_since
                if now - healthy_since >= stable:
                    publisher.conditions.set(
                        STEADY_STATE, True, "Stable", f"healthy for {stable:g}s", clock.wall()
                    )
                    return Gate(True, tuple(pods), look.result, now, clock.wall())
            else:
                healthy_since = None
                if tuple(reasons) != last_reasons:
                    last_reasons = tuple(reasons)
                    publisher.conditions.set(
                        STEADY_STATE, False, "NotHealthy", "; ".join(reasons)[:1000], clock.wall()
                    )
                    await publisher.publish()
            if now >= deadline:
                return Gate(False, tuple(pods), look.result, reasons=tuple(reasons), probe_failed=look.failed)
            if stop.is_set():
                return Gate(False, tuple(pods), look.result, reasons=("stopping",))
            wake = deadline if healthy_since is None else min(deadline, healthy_since + stable)
            if probe is not None:
                wake = min(wake, next_probe)
            # Wait for the next pod change (or the next moment something is due); cap the
            # wait so a stop request is noticed within a second.
            obs = await next_observation(queue, min(wake - clock.monotonic(), 1.0))
            while obs is not None and not queue.empty():
                obs = queue.get_nowait()
