"""One Campaign from start to verdict: the trial loop.

The order of a trial is the safety argument, so it is kept in one readable function
(`CampaignRunner._trial`): steady-state gate -> choose victims -> write the attempt to the
ledger -> re-check every guard -> kill -> observe -> commit. Nothing is killed unless the
gate passed moments before, the lock is held, the victim still matches the selector in the
Campaign's own namespace, and the namespace is not protected.

Restart semantics: attempts left in flight by a crash become `interrupted` (not counted);
their trial index runs again. The ledger's primary key on completed trial indexes makes a
duplicate impossible even if this logic were wrong.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aftershock import stats
from aftershock.chaos import node_kill
from aftershock.engine import lifecycle
from aftershock.engine.observe import RecoveryTracker
from aftershock.engine.ports import (
    Clock,
    EventSink,
    NullRecorder,
    PodApi,
    ProbeResult,
    ProbeUnavailableError,
    Recorder,
    ScaleApi,
    StatusSink,
    StopSignal,
    SubjectLock,
    SubjectProbe,
)
from aftershock.engine.status import (
    PD_CONFIGURED,
    READY,
    RECONCILING,
    SPEC_VALID,
    STALLED,
    STEADY_STATE,
    SUBJECT_LOCKED,
    Conditions,
    build_status,
)
from aftershock.engine.view import Observation, PodView, next_observation
from aftershock.errors import ApiError
from aftershock.ledger import Ledger
from aftershock.model import (
    AttemptRecord,
    CampaignRef,
    CampaignSpec,
    Milestone,
    Outcome,
    Phase,
    PodState,
    SpecError,
    Verdict,
    Victim,
    check_pd_namespace,
    parse_campaign_spec,
)

log = logging.getLogger(__name__)

# Event reasons (what `kubectl describe campaign` and `kubectl get events` show).
REASON_TRIAL_RECOVERED = "TrialRecovered"
REASON_TRIAL_UNRECOVERED = "TrialUnrecovered"
REASON_TRIAL_INFRA = "TrialInfraError"
REASON_TRIAL_INTERRUPTED = "TrialInterrupted"
REASON_TRIAL_DRY_RUN = "TrialDryRun"
REASON_CAMPAIGN_DONE = "CampaignFinished"
REASON_INVALID = "InvalidSpec"
#: The selector matched no pod for the whole steady-state timeout: the user's mistake (labels,
#: namespace), not the cluster's, so not `InfraError`.
REASON_SELECTOR_MATCHES_NOTHING = "SelectorMatchesNothing"


@dataclass(frozen=True)
class RunnerSettings:
    protected_namespaces: frozenset[str]
    allow_loopback_pd: bool = False
    #: How often PD is asked during gate and recovery. PD has no watch; this bounds the
    #: precision of the store_up moment, so it is short but not a hot loop.
    probe_interval: float = 0.5
    #: How often a Campaign waiting for the subject lock looks again.
    lock_retry_interval: float = 5.0
    #: Consecutive infrastructure errors before the campaign gives up (verdict InfraError).
    max_consecutive_infra_errors: int = 5
    infra_backoff_initial: float = 1.0
    infra_backoff_max: float = 60.0
    #: How long a delete is retried on transient API errors before the attempt is an
    #: infrastructure error.
    kill_retry_budget: float = 30.0


@dataclass
class _TrialResult:
    outcome: Outcome | None  # None: no attempt was made (gate failed, selection refused)
    record: AttemptRecord | None = None
    stop_reason: str | None = None  # set when the campaign must not go on
    stop_verdict: Verdict = Verdict.NONE
    stall_reason: str | None = None
    stall_name: str | None = None  # the conditions' reason for the stall, when it has a name
    interrupted: bool = False


@dataclass
class _Gate:
    passed: bool
    pods: list[PodState] = field(default_factory=list)
    probe: ProbeResult | None = None
    mono: float = 0.0
    wall: float = 0.0
    reasons: tuple[str, ...] = ()
    probe_failed: bool = False


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.transient


def _status_code(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, ApiError) else None


class CampaignRunner:
    def __init__(
        self,
        *,
        ref: CampaignRef,
        generation: int,
        spec_source: Callable[[], Mapping[str, Any]],
        generation_source: Callable[[], int] | None = None,
        existing_status: Mapping[str, Any],
        ledger: Ledger,
        pods: PodApi,
        probe_factory: Callable[[CampaignSpec, str], SubjectProbe | None],
        lock: SubjectLock,
        status: StatusSink,
        events: EventSink,
        clock: Clock,
        settings: RunnerSettings,
        recorder: Recorder | None = None,
        scaler: ScaleApi | None = None,
    ) -> None:
        self.ref = ref
        self._scaler = scaler
        self._recorder: Recorder = recorder or NullRecorder()
        self._generation = generation
        self._spec_source = spec_source
        self._generation_source = generation_source
        self._ledger = ledger
        self._pods = pods
        self._probe_factory = probe_factory
        self._lock = lock
        self._status = status
        self._events = events
        self._clock = clock
        self._settings = settings
        self._conditions = Conditions(existing_status.get("conditions"), generation)
        self._phase = Phase.PENDING
        self._verdict = Verdict.NONE
        self._message = ""
        self._health_source = "pods"
        self._started_at: float | None = None
        self._completed_at: float | None = None
        self._expected_pods: int | None = None
        self._last_published: dict[str, Any] | None = None

    # -- status ------------------------------------------------------------------------------

    def _read_spec(self) -> Mapping[str, Any]:
        """The spec to act on, and (read with it, no await between) the generation it belongs
        to: every status published after acting on it carries that generation, so kstatus,
        Flux and Argo CD see a `suspend` change as observed once it is acted on."""
        raw = self._spec_source()
        if self._generation_source is not None:
            self._generation = self._generation_source()
            self._conditions.observe(self._generation)
        return raw

    async def _publish(self, attempts: Sequence[AttemptRecord] | None = None) -> None:
        if attempts is None:
            attempts = await self._ledger.attempts(self.ref.uid)
        spec_raw = self._spec_source()
        requested = spec_raw.get("trials", 10) if isinstance(spec_raw.get("trials"), int) else 10
        body = build_status(
            requested=requested,
            attempts=attempts,
            phase=self._phase,
            verdict=self._verdict,
            conditions=self._conditions,
            generation=self._generation,
            health_source=self._health_source,
            started_at=self._started_at,
            completed_at=self._completed_at,
            message=self._message,
        )
        if body == self._last_published:
            return  # nothing new: spare the API server a patch
        try:
            await self._status.publish(body)
            self._last_published = body
            self._recorder.status_patched(self.ref)
            self._recorder.campaign_phase(self.ref, self._phase)
        except Exception as exc:
            # Status is a projection: the next publish carries the same facts.
            log.warning("publishing status of %s/%s failed: %s", self.ref.namespace, self.ref.name, exc)

    async def _publish_final(self, attempts: Sequence[AttemptRecord]) -> None:
        """The last status of a campaign has no later publish to carry it: retry it (bounded,
        with backoff) so the status does not stay Running over a finished ledger. If it still
        fails, the next operator start republishes it from the ledger."""
        delay = 0.5
        for _ in range(8):  # ~2 minutes in all
            await self._publish(attempts)
            if self._last_published is not None and self._last_published.get("phase") == self._phase.value:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 30.0)
        log.error("the final status of %s/%s could not be published", self.ref.namespace, self.ref.name)

    def _set_running_conditions(self, now: float, message: str) -> None:
        self._conditions.set(READY, False, "TrialsRunning", message, now)
        self._conditions.set(RECONCILING, True, "TrialsRunning", message, now)
        self._conditions.set(STALLED, False, "Progressing", "", now)

    def _set_finished_conditions(self, now: float, ok: bool, reason: str, message: str) -> None:
        self._conditions.set(READY, ok, reason, message, now)
        self._conditions.set(RECONCILING, False, reason, message, now)
        self._conditions.set(STALLED, not ok, reason, message if not ok else "", now)

    async def _emit(self, type_: str, reason: str, message: str) -> None:
        try:
            await self._events.emit(type_, reason, message)
        except Exception as exc:
            log.warning("emitting event %s failed: %s", reason, exc)

    async def _fail_spec(self, field_path: str, reason: str, message: str) -> Phase:
        now = self._clock.wall()
        text = f"{field_path}: {message}" if field_path else message
        self._conditions.set(SPEC_VALID, False, reason, text, now)
        self._phase = Phase.FAILED
        self._message = text
        self._completed_at = now
        self._set_finished_conditions(now, False, reason, text)
        await self._publish([])
        await self._emit("Warning", reason, text)
        return self._phase

    # -- the campaign ------------------------------------------------------------------------

    async def run(self, stop: StopSignal) -> Phase:
        raw = self._read_spec()
        try:
            spec = parse_campaign_spec(raw, allow_loopback_pd=self._settings.allow_loopback_pd)
            if spec.subject.pd_url is not None:
                check_pd_namespace(spec.subject.pd_url, self.ref.namespace)
        except SpecError as exc:
            return await self._fail_spec(exc.field, REASON_INVALID, exc.reason)
        if self.ref.namespace in self._settings.protected_namespaces:
            return await self._fail_spec(
                "metadata.namespace",
                "ProtectedNamespace",
                f"namespace {self.ref.namespace!r} is protected: aftershock never disturbs it",
            )
        now = self._clock.wall()
        self._conditions.set(SPEC_VALID, True, "Valid", "", now)
        seed = str(spec.seed) if spec.seed is not None else self.ref.uid
        await self._ledger.ensure_campaign(self.ref, dict(raw), spec.trials, seed, now)
        row = await self._ledger.get_campaign(self.ref.uid)
        if row is not None:
            self._started_at = row.started_at
            self._completed_at = row.finished_at
            if row.phase in (Phase.SUCCEEDED.value, Phase.FAILED.value):
                self._phase = Phase(row.phase)
                self._verdict = Verdict(row.verdict or "")
                ok = self._phase is Phase.SUCCEEDED
                self._message = self._message or f"finished: {self._phase.value}"
                self._set_finished_conditions(now, ok, "Finished" if ok else "Failed", self._message)
                await self._publish()
                return self._phase

        for lost in await self._ledger.interrupt_inflight(
            self.ref.uid, "the operator stopped during this attempt; the trial index runs again", now
        ):
            remediator = lost.initial_state.get("remediator")
            if isinstance(remediator, Mapping):
                await self._restore_remediator(remediator)
            await self._emit(
                "Warning",
                REASON_TRIAL_INTERRUPTED,
                f"trial {lost.trial_index + 1}: attempt {lost.attempt} interrupted by an operator restart; "
                "it runs again",
            )

        self._recorder.replay(self.ref, [a for a in await self._ledger.attempts(self.ref.uid) if a.outcome])

        if spec.subject.pd_url is not None:
            self._health_source = "pods+pd"
            self._conditions.set(PD_CONFIGURED, True, "PDConfigured", spec.subject.pd_url, now)
        else:
            self._conditions.set(
                PD_CONFIGURED,
                False,
                "HealthFromPodsOnly",
                "no subject.pdURL: health is judged from pod readiness alone",
                now,
            )

        view = PodView(self._pods, self.ref.namespace, spec.subject.selector.to_query(), self._clock)
        view_task = asyncio.create_task(view.run(), name=f"podview-{self.ref.namespace}/{self.ref.name}")
        probe = self._probe_factory(spec, self.ref.namespace)
        try:
            phase = await self._loop(spec, seed, view, probe, stop)
            if stop.is_set() and stop.deleted:
                # Before the lock is released and the finalizer goes: once the object is gone,
                # nothing would tell the ledger.
                await lifecycle.record_deletion(self._ledger, self.ref, self._clock.wall())
                phase = phase if phase.finished else Phase.DELETED
                self._recorder.campaign_phase(self.ref, phase)
            return phase
        finally:
            view_task.cancel()
            await asyncio.gather(view_task, return_exceptions=True)
            if probe is not None:
                await probe.close()
            await self._lock.release()

    async def _loop(
        self, spec: CampaignSpec, seed: str, view: PodView, probe: SubjectProbe | None, stop: StopSignal
    ) -> Phase:
        infra_streak = 0
        while not stop.is_set():
            attempts = await self._ledger.attempts(self.ref.uid)
            completed = [a for a in attempts if a.outcome is not None and a.outcome.completes_trial]
            if len(completed) >= spec.trials:
                return await self._finish(spec, attempts, None, Verdict.NONE)

            if bool(self._read_spec().get("suspend", False)):
                await self._suspend(attempts, stop)
                continue

            if not await self._acquire_lock(attempts, stop):
                continue

            now = self._clock.wall()
            if self._started_at is None:
                self._started_at = now
                await self._ledger.set_campaign_state(
                    self.ref.uid, Phase.RUNNING, Verdict.NONE, now, started=True
                )
            self._phase = Phase.RUNNING
            index = await self._ledger.next_trial_index(self.ref.uid)
            self._message = f"trial {index + 1}/{spec.trials}: waiting for steady state"
            self._set_running_conditions(now, self._message)
            await self._publish(attempts)

            result = await self._trial(spec, seed, index, attempts, view, probe, stop)

            if result.stall_reason is not None:
                return await self._finish(
                    spec,
                    await self._ledger.attempts(self.ref.uid),
                    result.stall_reason,
                    result.stop_verdict,
                    stall_name=result.stall_name,
                )
            if result.interrupted:
                break
            attempts = await self._ledger.attempts(self.ref.uid)
            if result.outcome is Outcome.INFRA_ERROR:
                infra_streak += 1
                if infra_streak >= self._settings.max_consecutive_infra_errors:
                    return await self._finish(
                        spec,
                        attempts,
                        f"{infra_streak} consecutive infrastructure errors; last: "
                        f"{result.record.error if result.record else 'unknown'}",
                        Verdict.INFRA_ERROR,
                    )
                delay = min(
                    self._settings.infra_backoff_initial * 2 ** (infra_streak - 1),
                    self._settings.infra_backoff_max,
                ) * random.uniform(0.5, 1.5)
                await self._publish(attempts)
                await stop.wait(delay)
                continue
            infra_streak = 0
            if result.stop_reason is not None:
                return await self._finish(spec, attempts, result.stop_reason, result.stop_verdict)
            early = self._slo_out_of_reach(spec, attempts)
            if early is not None:
                return await self._finish(spec, attempts, early, Verdict.FAIL)
            await self._publish(attempts)
            done = sum(1 for a in attempts if a.outcome is not None and a.outcome.completes_trial)
            if done < spec.trials and spec.interval_seconds > 0:
                await stop.wait(spec.interval_seconds)

        # Stopped: the Campaign was deleted or the operator is exiting. Nothing is finished;
        # the next start picks up where the ledger says.
        return self._phase

    async def _suspend(self, attempts: Sequence[AttemptRecord], stop: StopSignal) -> None:
        now = self._clock.wall()
        await self._lock.release()
        self._conditions.set(SUBJECT_LOCKED, False, "Suspended", "released while suspended", now)
        self._phase = Phase.SUSPENDED
        self._message = "suspended: set spec.suspend to false to resume"
        self._conditions.set(READY, False, "Suspended", self._message, now)
        self._conditions.set(RECONCILING, False, "Suspended", self._message, now)
        self._conditions.set(STALLED, False, "Suspended", "", now)
        await self._ledger.set_campaign_state(self.ref.uid, Phase.SUSPENDED, Verdict.NONE, now)
        await self._publish(attempts)
        # The spec is a live view kept current by the operator's watch: this reads memory,
        # not the API server.
        while not stop.is_set() and bool(self._read_spec().get("suspend", False)):
            await stop.wait(1.0)

    async def _acquire_lock(self, attempts: Sequence[AttemptRecord], stop: StopSignal) -> bool:
        if self._lock.held:
            return True
        try:
            got = await self._lock.try_acquire()
        except Exception as exc:
            if not _is_transient(exc):
                raise
            got = False
            log.warning("acquiring the subject lock failed: %s", exc)
        now = self._clock.wall()
        if got:
            self._conditions.set(SUBJECT_LOCKED, True, "LockAcquired", "this Campaign holds the subject", now)
            return True
        self._phase = Phase.PENDING
        holder = self._lock.holder or "unknown"
        reason, self._message = self._lock.wait_reason or (
            "SubjectBusy",
            f"waiting for the subject: another Campaign ({holder}) is running against it",
        )
        self._conditions.set(SUBJECT_LOCKED, False, reason, self._message, now)
        self._conditions.set(RECONCILING, True, reason, self._message, now)
        self._conditions.set(READY, False, reason, self._message, now)
        await self._publish(attempts)
        await stop.wait(self._settings.lock_retry_interval)
        return False

    def _slo_out_of_reach(self, spec: CampaignSpec, attempts: Sequence[AttemptRecord]) -> str | None:
        if spec.slo_p95_recovery_seconds is None or spec.dry_run:
            return None
        completed = [a for a in attempts if a.outcome is not None and a.outcome.completes_trial]
        remaining = spec.trials - len(completed)
        if remaining <= 0:
            return None
        values = [a.recovery_seconds if a.recovery_seconds is not None else float("inf") for a in completed]
        if stats.slo_unreachable(values, remaining, spec.slo_p95_recovery_seconds):
            return (
                f"stopped early: p95 recovery can no longer be <= {spec.slo_p95_recovery_seconds:g}s "
                f"whatever the remaining {remaining} trial(s) measure"
            )
        return None

    async def _finish(
        self,
        spec: CampaignSpec,
        attempts: Sequence[AttemptRecord],
        stop_reason: str | None,
        stop_verdict: Verdict,
        *,
        stall_name: str | None = None,
    ) -> Phase:
        """End the campaign. Phase says whether it ran to the end (Succeeded) or was stopped
        (Failed); the verdict says what the measurements mean. Ready is True only for a run
        that ended with Pass (or a dry run): a Fail verdict stalls, so GitOps health checks and
        kstatus turn red on it, which is what a pipeline gating on a campaign needs."""
        now = self._clock.wall()
        completed = [a for a in attempts if a.outcome is not None and a.outcome.completes_trial]
        verdict = stats.verdict(
            requested_trials=spec.trials,
            completed=completed,
            stopped_on_unrecovered=stop_verdict is Verdict.HARD_FAIL,
            aborted_on_infra_error=stop_verdict is Verdict.INFRA_ERROR,
            slo_p95_seconds=spec.slo_p95_recovery_seconds,
            stopped_on_slo=stop_verdict is Verdict.FAIL,
        )
        self._phase = Phase.FAILED if stop_reason is not None else Phase.SUCCEEDED
        self._verdict = verdict
        self._completed_at = now
        summary = stats.summarize([r for a in completed if (r := a.recovery_seconds) is not None])
        if stop_reason is not None:
            self._message = stop_reason
        elif spec.dry_run:
            self._message = f"dry run: {len(completed)} trial(s) resolved victims, nothing was killed"
        else:
            p50 = "-" if summary.p50 is None else f"{summary.p50:.3f}s"
            p95 = "-" if summary.p95 is None else f"{summary.p95:.3f}s"
            self._message = (
                f"{len(completed)}/{spec.trials} trials; p50 {p50}, p95 {p95}; verdict {verdict.value}"
            )
        ok = self._phase is Phase.SUCCEEDED and verdict in (Verdict.PASS, Verdict.NONE)
        if stall_name is not None:
            reason = stall_name
        elif ok:
            reason = "Succeeded"
        elif verdict is not Verdict.NONE:
            reason = verdict.value
        else:
            reason = "Stopped"
        self._set_finished_conditions(now, ok, reason, self._message)
        await self._ledger.set_campaign_state(self.ref.uid, self._phase, verdict, now, finished=True)
        await self._publish_final(attempts)
        await self._emit("Normal" if ok else "Warning", stall_name or REASON_CAMPAIGN_DONE, self._message)
        return self._phase

    # -- one trial ---------------------------------------------------------------------------

    async def _steady_state(
        self, spec: CampaignSpec, view: PodView, probe: SubjectProbe | None, stop: StopSignal
    ) -> _Gate:
        clock = self._clock
        start = clock.monotonic()
        deadline = start + spec.steady_state_timeout_seconds
        healthy_since: float | None = None
        last_reasons: tuple[str, ...] = ()
        probe_result: ProbeResult | None = None
        probe_failed = False
        # What the last look at PD said; it stands until the next look. Until PD has answered
        # healthy, the subject is not healthy.
        probe_reasons: list[str] = ["PD not checked yet"] if probe is not None else []
        next_probe = start
        with view.subscribe() as queue:
            await view.wait_synced(spec.steady_state_timeout_seconds)
            while True:
                now = clock.monotonic()
                if probe is not None and now >= next_probe:
                    next_probe = now + self._settings.probe_interval
                    try:
                        probe_result = await probe.check(view.pods(), clock.wall())
                        probe_failed = False
                        probe_reasons = list(probe_result.reasons)
                        if not probe_result.healthy and not probe_reasons:
                            probe_reasons = ["PD reports the subject unhealthy"]
                    except ProbeUnavailableError as exc:
                        probe_result = None
                        probe_failed = True
                        probe_reasons = [f"PD unavailable: {exc}"]
                # The pods as they are now, after any await above: a gate must never pass on
                # a picture older than the PD answer it is combined with.
                pods = view.pods()
                reasons = list(self._pod_reasons(pods, spec))
                reasons.extend(probe_reasons)
                if view.error and not view.synced:
                    reasons.append(f"pod watch: {view.error}")
                now = clock.monotonic()
                if not reasons:
                    if healthy_since is None:
                        healthy_since = now
                    if now - healthy_since >= spec.steady_state_stable_seconds:
                        self._conditions.set(
                            STEADY_STATE,
                            True,
                            "Stable",
                            f"healthy for {spec.steady_state_stable_seconds:g}s",
                            clock.wall(),
                        )
                        return _Gate(True, pods, probe_result, now, clock.wall())
                else:
                    healthy_since = None
                    if tuple(reasons) != last_reasons:
                        last_reasons = tuple(reasons)
                        self._conditions.set(
                            STEADY_STATE, False, "NotHealthy", "; ".join(reasons)[:1000], clock.wall()
                        )
                        await self._publish()
                if now >= deadline:
                    return _Gate(False, pods, probe_result, reasons=tuple(reasons), probe_failed=probe_failed)
                if stop.is_set():
                    return _Gate(False, pods, probe_result, reasons=("stopping",))
                wake = deadline
                if healthy_since is not None:
                    wake = min(wake, healthy_since + spec.steady_state_stable_seconds)
                if probe is not None:
                    wake = min(wake, next_probe)
                # Wait for the next pod change (or the next moment something is due); cap the
                # wait so a stop request is noticed within a second.
                obs = await next_observation(queue, min(wake - clock.monotonic(), 1.0))
                while obs is not None and not queue.empty():
                    obs = queue.get_nowait()

    def _pod_reasons(self, pods: Sequence[PodState], spec: CampaignSpec) -> list[str]:
        if not pods:
            return [
                f"selector {spec.subject.selector.to_query()!r} matches no pods in namespace "
                f"{self.ref.namespace!r}"
            ]
        reasons = [f"{p.name} is being deleted" for p in pods if p.deleting]
        reasons += [f"{p.name} is not Ready" for p in pods if not p.ready and not p.deleting]
        if self._expected_pods is not None and len(pods) != self._expected_pods:
            reasons.append(f"{len(pods)} pods, expected {self._expected_pods}")
        return reasons

    async def _trial(
        self,
        spec: CampaignSpec,
        seed: str,
        index: int,
        attempts: Sequence[AttemptRecord],
        view: PodView,
        probe: SubjectProbe | None,
        stop: StopSignal,
    ) -> _TrialResult:
        if self._expected_pods is None:
            for a in reversed(attempts):
                expected = a.initial_state.get("expectedPods")
                if isinstance(expected, int):
                    self._expected_pods = expected
                    break
        gate = await self._steady_state(spec, view, probe, stop)
        if stop.is_set():
            return _TrialResult(None, interrupted=True)
        if not gate.passed:
            why = "; ".join(gate.reasons) or "unknown"
            if not gate.pods and view.synced:
                return _TrialResult(
                    None,
                    stall_reason=f"spec.subject.selector {spec.subject.selector.to_query()!r} matches no "
                    f"pods in namespace {self.ref.namespace!r} "
                    f"(waited {spec.steady_state_timeout_seconds:g}s): check the labels and the namespace",
                    stall_name=REASON_SELECTOR_MATCHES_NOTHING,
                )
            if gate.probe_failed:
                return _TrialResult(
                    None,
                    stall_reason=f"steady state not reached in {spec.steady_state_timeout_seconds:g}s "
                    f"(infrastructure): {why}",
                    stop_verdict=Verdict.INFRA_ERROR,
                )
            return _TrialResult(
                None,
                stall_reason=f"steady state not reached in {spec.steady_state_timeout_seconds:g}s: {why}",
                stop_verdict=Verdict.INFRA_ERROR if index == 0 else Verdict.NONE,
            )
        if self._expected_pods is None:
            self._expected_pods = len(gate.pods)

        attempt_no = 1 + sum(1 for a in attempts if a.trial_index == index)
        victim_seed = node_kill.victim_seed(seed, index, attempt_no)
        try:
            chosen = node_kill.choose_victims(gate.pods, spec.chaos, node_kill.rng_for(victim_seed))
        except node_kill.VictimSelectionError as exc:
            return _TrialResult(
                None, stall_reason=f"victim selection refused: {exc}", stop_verdict=Verdict.NONE
            )
        store_ids: Mapping[str, int] = {}
        starts: Mapping[str, int] = {}
        if gate.probe is not None:
            store_ids = {k: int(v) for k, v in (gate.probe.summary.get("storeIds") or {}).items()}
            starts = dict(gate.probe.restarts)
        victims = tuple(node_kill.to_victim(p, store_ids.get(p.name)) for p in chosen)
        remediator: dict[str, Any] | None = None
        if spec.baseline and spec.remediator is not None and not spec.dry_run:
            try:
                remediator = await self._read_remediator(spec)
            except ApiError as exc:
                if exc.transient:
                    return _TrialResult(None)  # try the trial again after the loop's pause
                return _TrialResult(
                    None,
                    stall_reason=f"spec.remediator: {spec.remediator.kind} {spec.remediator.name}: {exc}",
                )
        initial_state = {
            "remediator": remediator,
            "expectedPods": self._expected_pods,
            "pods": [_pod_json(p) for p in gate.pods],
            "probe": dict(gate.probe.summary) if gate.probe is not None else None,
        }
        now = self._clock.wall()
        attempt_id = await self._ledger.begin_attempt(
            self.ref.uid,
            index,
            victims=victims,
            victim_seed=victim_seed,
            initial_state=initial_state,
            # Recorded with the attempt, before any kill: the ledger proves every kill had a
            # passed gate even when the attempt is cut short. The offset is provisional (from
            # now, a few ms before the kill) until the attempt ends with the exact one.
            gate_passed=Milestone(gate.wall, gate.mono - self._clock.monotonic()),
            now=now,
        )
        names = ", ".join(v.name for v in victims)

        if spec.dry_run:
            record = await self._finish_attempt(
                attempt_id,
                Outcome.DRY_RUN,
                milestones={"gate_passed": Milestone(gate.wall, 0.0)},
                final_state={},
                error=None,
                now=self._clock.wall(),
            )
            await self._emit(
                "Normal",
                REASON_TRIAL_DRY_RUN,
                f"trial {index + 1}/{spec.trials}: would kill {names} (dry run)",
            )
            return _TrialResult(Outcome.DRY_RUN, record)

        # The last guards, right before the kill: every one of them must still hold.
        refusal = self._guard(spec, victims, view, gate, probe is not None)
        if refusal is not None:
            await self._finish_attempt(
                attempt_id,
                Outcome.INTERRUPTED,
                milestones={},
                final_state={},
                error=f"not killed: {refusal}",
                now=self._clock.wall(),
            )
            if not self._lock.held:
                return _TrialResult(None)  # lost the lock: go back and wait for it
            return _TrialResult(None, stall_reason=f"refused to kill: {refusal}", stop_verdict=Verdict.NONE)

        if remediator is not None:
            error = await self._scale_down_remediator(remediator)
            if error is not None:
                await self._restore_remediator(remediator)
                record = await self._finish_attempt(
                    attempt_id,
                    Outcome.INFRA_ERROR,
                    milestones={},
                    final_state={},
                    error=error,
                    now=self._clock.wall(),
                )
                return _TrialResult(Outcome.INFRA_ERROR, record)
        try:
            return await self._kill_and_observe(
                spec, index, attempt_id, victims, names, gate, starts, view, probe, stop
            )
        finally:
            if remediator is not None:
                await self._restore_remediator(remediator)

    async def _kill_and_observe(
        self,
        spec: CampaignSpec,
        index: int,
        attempt_id: int,
        victims: tuple[Victim, ...],
        names: str,
        gate: _Gate,
        starts: Mapping[str, int],
        view: PodView,
        probe: SubjectProbe | None,
        stop: StopSignal,
    ) -> _TrialResult:
        assert self._expected_pods is not None
        self._message = f"trial {index + 1}/{spec.trials}: killed {names}, observing recovery"
        with view.subscribe() as queue:
            kill_mono = self._clock.monotonic()
            kill_wall = self._clock.wall()
            tracker = RecoveryTracker(
                victims=victims,
                initial_pods=gate.pods,
                kill_sent_mono=kill_mono,
                kill_sent_wall=kill_wall,
                expected_pods=self._expected_pods,
                probe_enabled=probe is not None,
                initial_store_starts=starts,
            )
            kill_error = await self._kill(spec, victims, stop)
            acked_mono, acked_wall = self._clock.monotonic(), self._clock.wall()
            kill_sent = Milestone(kill_wall, 0.0)
            if kill_error is not None:
                record = await self._finish_attempt(
                    attempt_id,
                    Outcome.INFRA_ERROR,
                    milestones={"gate_passed": Milestone(gate.wall, gate.mono - kill_mono)},
                    final_state={},
                    error=kill_error,
                    now=self._clock.wall(),
                )
                await self._emit("Warning", REASON_TRIAL_INFRA, f"trial {index + 1}: {kill_error}")
                return _TrialResult(Outcome.INFRA_ERROR, record)
            tracker.mark_acked(acked_mono, acked_wall)
            await self._ledger.mark_kill_sent(attempt_id, kill_sent, tracker.milestones.get("kill_acked"))
            await self._publish()
            outcome, error = await self._observe(spec, tracker, queue, view, probe, stop)

        milestones = dict(tracker.milestones)
        milestones["gate_passed"] = Milestone(gate.wall, gate.mono - kill_mono)
        milestones["kill_sent"] = kill_sent
        final_state = {
            "pods": [_pod_json(p) for p in view.pods()],
            "probe": dict(tracker.probe.summary) if tracker.probe is not None else None,
            "milestoneSources": dict(tracker.sources),
            "clockOffsetSeconds": tracker.clock_offset,
        }
        record = await self._finish_attempt(
            attempt_id,
            outcome,
            milestones=milestones,
            final_state=final_state,
            error=error,
            now=self._clock.wall(),
        )
        result = _TrialResult(outcome, record)
        label = f"trial {index + 1}/{spec.trials} ({names})"
        if outcome is Outcome.RECOVERED:
            await self._emit(
                "Normal", REASON_TRIAL_RECOVERED, f"{label}: recovered in {record.recovery_seconds or 0:.3f}s"
            )
        elif outcome is Outcome.UNRECOVERED:
            await self._emit("Warning", REASON_TRIAL_UNRECOVERED, f"{label}: {error}")
            if spec.stop_on_unrecovered:
                result.stop_reason = f"{label} did not recover: {error}"
                result.stop_verdict = Verdict.HARD_FAIL
        elif outcome is Outcome.INFRA_ERROR:
            await self._emit("Warning", REASON_TRIAL_INFRA, f"{label}: {error}")
        else:
            await self._emit("Warning", REASON_TRIAL_INTERRUPTED, f"{label}: {error}")
            result.interrupted = True
        return result

    # -- the remediator (baseline trials) ---------------------------------------------------

    async def _read_remediator(self, spec: CampaignSpec) -> dict[str, Any]:
        assert self._scaler is not None
        assert spec.remediator is not None
        desired, _ = await self._scaler.get_replicas(
            spec.remediator.kind.value, self.ref.namespace, spec.remediator.name
        )
        return {"kind": spec.remediator.kind.value, "name": spec.remediator.name, "replicas": desired}

    async def _scale_down_remediator(self, remediator: Mapping[str, Any]) -> str | None:
        """Scale to zero and wait until its pods are gone (the scale subresource's status).
        Checked every 0.25 s for at most 60 s: a bounded wait on a rare step, not a hot loop."""
        assert self._scaler is not None
        kind, name = str(remediator["kind"]), str(remediator["name"])
        try:
            await self._scaler.set_replicas(kind, self.ref.namespace, name, 0)
            deadline = self._clock.monotonic() + 60
            while self._clock.monotonic() < deadline:
                _, current = await self._scaler.get_replicas(kind, self.ref.namespace, name)
                if current == 0:
                    return None
                await asyncio.sleep(0.25)
        except ApiError as exc:
            return f"scaling the remediator {kind} {name} to 0 failed: {exc}"
        return f"the remediator {kind} {name} still has pods 60s after scaling it to 0"

    async def _restore_remediator(self, remediator: Mapping[str, Any]) -> None:
        if self._scaler is None:
            return
        kind, name, replicas = str(remediator["kind"]), str(remediator["name"]), int(remediator["replicas"])
        for attempt in range(5):
            try:
                await self._scaler.set_replicas(kind, self.ref.namespace, name, replicas)
                return
            except ApiError as exc:
                if not exc.transient:
                    log.error("restoring the remediator %s %s to %d failed: %s", kind, name, replicas, exc)
                    return
                await asyncio.sleep(0.5 * 2**attempt)
        log.error("restoring the remediator %s %s to %d failed after retries", kind, name, replicas)

    async def _finish_attempt(
        self,
        attempt_id: int,
        outcome: Outcome,
        *,
        milestones: Mapping[str, Milestone],
        final_state: Mapping[str, Any],
        error: str | None,
        now: float,
    ) -> AttemptRecord:
        started = self._clock.monotonic()
        record = await self._ledger.finish_attempt(
            attempt_id, outcome, milestones=milestones, final_state=final_state, error=error, now=now
        )
        self._recorder.ledger_write(self._clock.monotonic() - started)
        self._recorder.attempt_finished(self.ref, record)
        return record

    def _guard(
        self, spec: CampaignSpec, victims: Sequence[Victim], view: PodView, gate: _Gate, probed: bool
    ) -> str | None:
        if self.ref.namespace in self._settings.protected_namespaces:
            return f"namespace {self.ref.namespace} is protected"
        if not gate.passed:
            return "the steady-state gate did not pass"
        if probed and (gate.probe is None or not gate.probe.healthy):
            return "PD did not confirm a healthy subject at the gate"
        if not self._lock.held:
            return "the subject lock is no longer held"
        now_unhealthy = self._pod_reasons(view.pods(), spec)
        if now_unhealthy:
            return f"the subject is no longer healthy: {'; '.join(now_unhealthy)}"
        current = {p.uid: p for p in view.pods()}
        for v in victims:
            pod = current.get(v.uid)
            if pod is None:
                return f"{v.name} ({v.uid}) is gone since the gate passed"
            if pod.namespace != self.ref.namespace:
                return f"{v.name} is in namespace {pod.namespace}, not {self.ref.namespace}"
            if not spec.subject.selector.matches(pod.labels):
                return f"{v.name} no longer matches the selector"
            if not pod.ready or pod.deleting:
                return f"{v.name} is no longer healthy"
        return None

    async def _kill(self, spec: CampaignSpec, victims: Sequence[Victim], stop: StopSignal) -> str | None:
        """Delete every victim (UID precondition). Returns an error text or None."""
        for v in victims:
            deadline = self._clock.monotonic() + self._settings.kill_retry_budget
            backoff = 0.2
            tries = 0
            while True:
                tries += 1
                try:
                    await self._pods.delete_pod(
                        self.ref.namespace, v.name, v.uid, spec.chaos.grace_period_seconds
                    )
                    break
                except Exception as exc:
                    code = _status_code(exc)
                    if code in (404, 409):
                        if tries > 1:
                            break  # an earlier try went through; the answer was lost
                        return f"{v.name} was already gone or replaced before the kill ({code})"
                    if not _is_transient(exc) or self._clock.monotonic() > deadline or stop.is_set():
                        return f"deleting {v.name} failed: {exc}"
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                    backoff = min(backoff * 2, 5.0)
        return None

    async def _observe(
        self,
        spec: CampaignSpec,
        tracker: RecoveryTracker,
        queue: asyncio.Queue[Observation],
        view: PodView,
        probe: SubjectProbe | None,
        stop: StopSignal,
    ) -> tuple[Outcome, str | None]:
        clock = self._clock
        deadline = tracker.kill_sent_mono + spec.recovery_timeout_seconds
        next_probe = clock.monotonic()
        probe_error: str | None = None
        while True:
            obs: Observation | None = None
            while not queue.empty():
                obs = queue.get_nowait()
                tracker.observe_pod(obs.type, obs.pod, obs.mono, obs.wall)
            if (
                probe is not None
                and clock.monotonic() >= next_probe
                and "replacement_ready" in tracker.milestones
            ):
                # PD only matters once the pods are back; asking earlier only costs requests.
                next_probe = clock.monotonic() + self._settings.probe_interval
                try:
                    result = await probe.check(view.pods(), clock.wall())
                    tracker.observe_probe(result, clock.monotonic(), clock.wall())
                    probe_error = None
                except ProbeUnavailableError as exc:
                    probe_error = str(exc)
            now = clock.monotonic()
            settle_end: float | None = None
            if tracker.recovered:
                # Keep watching for the settle window: a relapse is recorded, never a success.
                if tracker.relapsed:
                    return Outcome.UNRECOVERED, _relapse_error(tracker)
                seen = tracker.recovered_seen_mono
                settle_end = (now if seen is None else seen) + spec.recovery_settle_seconds
                if now >= settle_end:
                    return Outcome.RECOVERED, None
            elif now >= deadline:
                pending = "; ".join(tracker.pending()) or "unknown"
                if (
                    probe_error is not None
                    and "replacement_ready" in tracker.milestones
                    and tracker.pods_healthy()
                ):
                    return Outcome.INFRA_ERROR, f"PD unavailable until the recovery timeout: {probe_error}"
                return Outcome.UNRECOVERED, (
                    f"not recovered within {spec.recovery_timeout_seconds:g}s: {pending}"
                )
            if stop.is_set():
                return Outcome.INTERRUPTED, "the operator stopped or the Campaign was deleted mid-trial"
            wake = deadline if settle_end is None else settle_end
            if probe is not None and "replacement_ready" in tracker.milestones:
                wake = min(wake, next_probe)
            obs = await next_observation(queue, min(wake - clock.monotonic(), 1.0))
            if obs is not None:
                tracker.observe_pod(obs.type, obs.pod, obs.mono, obs.wall)


def _relapse_error(tracker: RecoveryTracker) -> str:
    relapsed, recovered = tracker.milestones["relapsed"], tracker.milestones["recovered"]
    return (
        f"relapsed {relapsed.offset - recovered.offset:.3f}s after recovering "
        f"({relapsed.offset:.3f}s after the kill): {tracker.relapse_reason}"
    )


def _pod_json(p: PodState) -> dict[str, Any]:
    return {
        "name": p.name,
        "uid": p.uid,
        "node": p.node,
        "ready": p.ready,
        "restartCount": p.restart_count,
        "phase": p.phase,
    }
