"""The end of a Campaign: its verdict, conditions, ledger state and final status; the early
stop when the SLO can no longer be met whatever the remaining trials measure; and the end of
one whose spec cannot run."""

from __future__ import annotations

from dataclasses import dataclass

from aftershock import stats
from aftershock.engine.outcomes import REASON_CAMPAIGN_DONE
from aftershock.engine.publisher import StatusPublisher
from aftershock.engine.status import SPEC_VALID
from aftershock.engine.tally import Tally
from aftershock.model import CampaignSpec, Phase, Verdict


@dataclass(frozen=True)
class Stop:
    """Why the campaign ends early (None reason: it ran to the end)."""

    reason: str | None = None
    verdict: Verdict = Verdict.NONE
    #: The conditions' and the Event's reason, when the stop has a name of its own.
    name: str | None = None


async def finish(
    *,
    out: StatusPublisher,
    spec: CampaignSpec,
    stop: Stop,
) -> Phase:
    """End the campaign. Phase says whether it ran to the end (Succeeded) or was stopped
    (Failed); the verdict says what the measurements mean. Ready is True only for a run
    that ended with Pass (or a dry run): a Fail verdict stalls, so GitOps health checks and
    kstatus turn red on it, which is what a pipeline gating on a campaign needs."""
    now = out.clock.wall()
    tally = out.tally
    verdict = stats.verdict_of_counts(
        requested_trials=spec.trials,
        counts=tally.counts,
        recoveries=tally.recoveries,
        stopped_on_unrecovered=stop.verdict is Verdict.HARD_FAIL,
        aborted_on_infra_error=stop.verdict is Verdict.INFRA_ERROR,
        slo_p95_seconds=spec.slo_p95_recovery_seconds,
        stopped_on_slo=stop.verdict is Verdict.FAIL,
    )
    out.phase = Phase.FAILED if stop.reason is not None else Phase.SUCCEEDED
    out.verdict, out.completed_at = verdict, now
    message = stop.reason if stop.reason is not None else _summary_message(spec, tally, verdict)
    ok = out.phase is Phase.SUCCEEDED and verdict in (Verdict.PASS, Verdict.NONE)
    reason = stop.name or ("Succeeded" if ok else verdict.value or "Stopped")
    out.finished(ok, reason, message)
    await out.ledger.set_campaign_state(out.ref.uid, out.phase, verdict, now, finished=True)
    await out.publish_final()
    await out.emit("Normal" if ok else "Warning", stop.name or REASON_CAMPAIGN_DONE, message)
    return out.phase


async def fail_spec(out: StatusPublisher, field_path: str, reason: str, message: str) -> Phase:
    """End a Campaign whose spec cannot run (invalid, or in a protected namespace): SpecValid
    false with the field to fix, phase Failed, a Warning Event. Nothing was recorded or killed."""
    text = f"{field_path}: {message}" if field_path else message
    out.conditions.set(SPEC_VALID, False, reason, text, out.clock.wall())
    out.phase = Phase.FAILED
    out.completed_at = out.clock.wall()
    out.finished(False, reason, text)
    await out.publish()
    await out.emit("Warning", reason, text)
    return out.phase


def _summary_message(spec: CampaignSpec, tally: Tally, verdict: Verdict) -> str:
    if spec.dry_run:
        return f"dry run: {tally.completed} trial(s) resolved victims, nothing was killed"
    summary = stats.summarize(tally.recoveries)
    p50 = "-" if summary.p50 is None else f"{summary.p50:.3f}s"
    p95 = "-" if summary.p95 is None else f"{summary.p95:.3f}s"
    return f"{tally.completed}/{spec.trials} trials; p50 {p50}, p95 {p95}; verdict {verdict.value}"


def slo_out_of_reach(spec: CampaignSpec, tally: Tally) -> str | None:
    if spec.slo_p95_recovery_seconds is None or spec.dry_run:
        return None
    remaining = spec.trials - tally.completed
    if remaining <= 0:
        return None
    if stats.slo_unreachable(tally.slo_values(), remaining, spec.slo_p95_recovery_seconds):
        return (
            f"stopped early: p95 recovery can no longer be <= {spec.slo_p95_recovery_seconds:g}s "
            f"whatever the remaining {remaining} trial(s) measure"
        )
    return None
