"""Taking a Campaign up (first sight, or again after an operator restart): record it in the
ledger, republish a finished one, and state where health is judged from; then, once the
Campaign holds its subject, turn attempts left in flight into ``interrupted`` (restoring a
remediator they had scaled down).

Attempts are interrupted only by the process that holds the ledger (taken at start, ADR 0016)
*and* the subject lock: a process that has neither has no say over another's trials."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aftershock.engine.outcomes import REASON_TRIAL_INTERRUPTED
from aftershock.engine.ports import SubjectProbe
from aftershock.engine.publisher import StatusPublisher
from aftershock.engine.remediator import RemediatorScaler
from aftershock.engine.status import SUBJECT_API_CONFIGURED
from aftershock.engine.tally import Tally
from aftershock.model import AttemptRecord, CampaignSpec, Phase, Verdict
from aftershock.subjects import registry


async def resume(
    *,
    out: StatusPublisher,
    raw: Mapping[str, Any],
    spec: CampaignSpec,
    seed: str,
) -> list[AttemptRecord] | None:
    """Record the campaign (first sight) or pick it up from the ledger. None: it had already
    finished, and its status is republished. Else its attempts so far: the publisher's tally is
    seeded from them, the one read of them in the Campaign's life unless some were left in
    flight (`interrupt_left_in_flight` reads them again after closing those)."""
    ref, now, ledger = out.ref, out.clock.wall(), out.ledger
    await ledger.ensure_campaign(ref, dict(raw), spec.trials, seed, now)
    row = await ledger.get_campaign(ref.uid)
    if row is not None:
        out.started_at, out.completed_at = row.started_at, row.finished_at
        if Phase(row.phase).finished:
            out.phase, out.verdict = Phase(row.phase), Verdict(row.verdict or "")
            ok = out.phase is Phase.SUCCEEDED
            out.finished(ok, "Finished" if ok else "Failed", out.message or f"finished: {out.phase.value}")
            out.tally = Tally.of(await ledger.attempts(ref.uid))
            await out.publish()
            return None
    attempts = await ledger.attempts(ref.uid)
    out.tally = Tally.of(attempts)
    return attempts


async def interrupt_left_in_flight(
    *, out: StatusPublisher, remediator: RemediatorScaler, attempts: list[AttemptRecord]
) -> None:
    """Attempts a stopped process left in flight become ``interrupted`` (their trial index runs
    again), and a remediator they scaled down is restored. Called once the subject lock is held;
    `attempts` are those `resume` read."""
    ref, now, ledger = out.ref, out.clock.wall(), out.ledger
    if all(a.outcome is not None for a in attempts):
        out.recorder.replay(ref, attempts)
        return
    for lost in await ledger.interrupt_inflight(
        ref.uid, "the operator stopped during this attempt; the trial index runs again", now
    ):
        scaled = lost.initial_state.get("remediator")
        if isinstance(scaled, Mapping):
            await remediator.restore(scaled)
        await out.emit(
            "Warning",
            REASON_TRIAL_INTERRUPTED,
            f"trial {lost.trial_index + 1}: attempt {lost.attempt} interrupted by an operator restart; "
            "it runs again",
        )
    attempts = await ledger.attempts(ref.uid)
    out.tally = Tally.of(attempts)
    out.recorder.replay(ref, [a for a in attempts if a.outcome])


def health_condition(out: StatusPublisher, spec: CampaignSpec, probe: SubjectProbe | None) -> None:
    """Where health is judged from: the subject's own API too (its endpoints named), or the
    pods alone. Worded for any kind: the registry names the spec field of the kind's API."""
    now = out.clock.wall()
    kind = spec.subject.kind
    if probe is not None:
        out.health_source = probe.health_source
        urls = ", ".join(spec.subject.api_urls)
        message = f"health from the pods and {kind}'s own API at {urls}"
        out.conditions.set(SUBJECT_API_CONFIGURED, True, "Configured", message, now)
    else:
        info = registry.KINDS.get(kind)
        field = f"subject.{info.api_field}" if info is not None else f"{kind} API"
        message = f"no {field}: health is judged from pod readiness alone"
        out.conditions.set(SUBJECT_API_CONFIGURED, False, "HealthFromPodsOnly", message, now)
