"""One Campaign from start to verdict: a short runner that only sequences the steps.

Parse the spec once -> resume from the ledger -> loop: suspended? lock -> a trial
(`aftershock.engine.trial`) -> pause -> until the trials are done or the campaign must stop ->
finish with a verdict. Status goes out through the `StatusPublisher`.

Restart semantics: attempts left in flight by a crash become `interrupted` (not counted);
their trial index runs again. The ledger's primary key on completed trial indexes makes a
duplicate impossible even if this logic were wrong.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aftershock.engine import holds, lifecycle, resume, verdict
from aftershock.engine.outcomes import (
    REASON_INVALID,
    RunnerSettings,
    TrialResult,
    completed,
)
from aftershock.engine.ports import (
    Clock,
    EventApi,
    EventSink,
    LedgerPort,
    NullRecorder,
    PodApi,
    Recorder,
    ScaleApi,
    StatusSink,
    StopSignal,
    SubjectLock,
    SubjectProbe,
    VolumeApi,
)
from aftershock.engine.publisher import StatusPublisher
from aftershock.engine.remediator import RemediatorScaler
from aftershock.engine.signals import SignalWatch
from aftershock.engine.status import SPEC_VALID, Conditions
from aftershock.engine.trial import Trials
from aftershock.engine.view import PodView
from aftershock.errors import SpecError
from aftershock.model import (
    AttemptRecord,
    CampaignRef,
    CampaignSpec,
    Outcome,
    Phase,
    Verdict,
    check_endpoint_namespace,
    parse_campaign_spec,
    read_suspend,
    requested_trials,
)

__all__ = ["CampaignRunner", "RunnerSettings"]

log = logging.getLogger(__name__)

#: How long a Campaign waits for its Event watch's first list before its first trial.
SIGNALS_SYNC_SECONDS = 10.0

ProbeFactory = Callable[[CampaignSpec, str], SubjectProbe | None]


class CampaignRunner:
    def __init__(  # noqa: PLR0913 - one keyword per port, named where the runner is built
        self,
        *,
        ref: CampaignRef,
        generation: int,
        spec_source: Callable[[], Mapping[str, Any]],
        generation_source: Callable[[], int] | None = None,
        existing_status: Mapping[str, Any],
        ledger: LedgerPort,
        pods: PodApi,
        probe_factory: ProbeFactory,
        lock: SubjectLock,
        status: StatusSink,
        events: EventSink,
        clock: Clock,
        settings: RunnerSettings,
        recorder: Recorder | None = None,
        scaler: ScaleApi | None = None,
        event_api: EventApi | None = None,
        volumes: VolumeApi | None = None,
    ) -> None:
        self.ref = ref
        self._spec_source = spec_source
        self._generation_source = generation_source
        self._ledger = ledger
        self._pods = pods
        self._event_api = event_api
        self._volumes = volumes
        self._probe_factory = probe_factory
        self._lock = lock
        self._clock = clock
        self._settings = settings
        self._recorder: Recorder = recorder or NullRecorder()
        self._remediator = RemediatorScaler(scaler, ref.namespace, clock)
        self._out = StatusPublisher(
            ref=ref,
            conditions=Conditions(existing_status.get("conditions"), generation),
            generation=generation,
            requested=requested_trials(spec_source()),
            ledger=ledger,
            status=status,
            events=events,
            recorder=self._recorder,
            clock=clock,
        )

    def _suspended(self) -> bool:
        """`spec.suspend` now, and (read with it, no await between) the generation it belongs
        to: every status published after acting on it carries that generation, so kstatus,
        Flux and Argo CD see a `suspend` change as observed once it is acted on."""
        raw = self._spec_source()
        if self._generation_source is not None:
            self._out.observe_generation(self._generation_source())
        return read_suspend(raw)

    async def _fail_spec(self, field_path: str, reason: str, message: str) -> Phase:
        out = self._out
        text = f"{field_path}: {message}" if field_path else message
        out.conditions.set(SPEC_VALID, False, reason, text, self._clock.wall())
        out.phase = Phase.FAILED
        out.completed_at = self._clock.wall()
        out.finished(False, reason, text)
        await out.publish([])
        await out.emit("Warning", reason, text)
        return out.phase

    def _parse(self) -> tuple[Mapping[str, Any], CampaignSpec, SubjectProbe | None]:
        raw = self._spec_source()
        if self._generation_source is not None:
            self._out.observe_generation(self._generation_source())
        spec = parse_campaign_spec(raw, allow_loopback_pd=self._settings.allow_loopback_pd)
        if spec.subject.pd_url is not None:
            check_endpoint_namespace(spec.subject.pd_url, self.ref.namespace)
        return raw, spec, self._probe_factory(spec, self.ref.namespace)

    # -- the campaign ------------------------------------------------------------------------

    async def run(self, stop: StopSignal) -> Phase:
        try:
            raw, spec, probe = self._parse()
        except SpecError as exc:
            return await self._fail_spec(exc.field, REASON_INVALID, exc.reason)
        try:
            return await self._run(raw, spec, probe, stop)
        finally:
            if probe is not None:
                await probe.close()

    async def _run(
        self, raw: Mapping[str, Any], spec: CampaignSpec, probe: SubjectProbe | None, stop: StopSignal
    ) -> Phase:
        if self.ref.namespace in self._settings.protected_namespaces:
            return await self._fail_spec(
                "metadata.namespace",
                "ProtectedNamespace",
                f"namespace {self.ref.namespace!r} is protected: aftershock never disturbs it",
            )
        out = self._out
        out.conditions.set(SPEC_VALID, True, "Valid", "", self._clock.wall())
        seed = str(spec.seed) if spec.seed is not None else self.ref.uid
        if await resume.resume(
            out=out,
            ledger=self._ledger,
            remediator=self._remediator,
            recorder=self._recorder,
            raw=raw,
            spec=spec,
            seed=seed,
        ):
            return out.phase
        resume.health_condition(out, spec, probe)
        view = PodView(self._pods, self.ref.namespace, spec.subject.selector.to_query(), self._clock)
        view_task = asyncio.create_task(view.run(), name=f"podview-{self.ref.namespace}/{self.ref.name}")
        watch = self._signal_watch(spec)
        tasks = [view_task]
        if watch is not None:
            tasks.append(
                asyncio.create_task(watch.run(), name=f"signals-{self.ref.namespace}/{self.ref.name}")
            )
        trials = Trials(
            spec=spec,
            seed=seed,
            settings=self._settings,
            ledger=self._ledger,
            pods=self._pods,
            view=view,
            probe=probe,
            lock=self._lock,
            publisher=out,
            recorder=self._recorder,
            remediator=self._remediator,
            signals=watch,
            volumes=self._volumes,
        )
        try:
            # The first kill must not come before the Event watch's first list: the remediator's
            # Events of trial 1 would be taken for what happened before the Campaign.
            if watch is not None and not await watch.wait_synced(SIGNALS_SYNC_SECONDS):
                log.warning(
                    "%s/%s: no list of Events after %.0f s; the remediator's signals of the first "
                    "trials may be missed",
                    self.ref.namespace,
                    self.ref.name,
                    SIGNALS_SYNC_SECONDS,
                )
            phase = await self._loop(spec, trials, stop)
            if stop.is_set() and stop.deleted:
                # Before the lock is released and the finalizer goes: once the object is gone,
                # nothing would tell the ledger.
                await lifecycle.record_deletion(self._ledger, self.ref, self._clock.wall())
                phase = phase if phase.finished else Phase.DELETED
                self._recorder.campaign_phase(self.ref, phase)
            return phase
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._lock.release()

    def _signal_watch(self, spec: CampaignSpec) -> SignalWatch | None:
        """One Event watch for the Campaign, when its remediator says how it reports."""
        rem = spec.remediator
        if rem is None or rem.signals is None or self._event_api is None:
            return None
        return SignalWatch(self._event_api, self.ref.namespace, rem.signals, self._clock)

    async def _loop(self, spec: CampaignSpec, trials: Trials, stop: StopSignal) -> Phase:
        infra_streak = 0
        out = self._out
        while not stop.is_set():
            attempts = await self._ledger.attempts(self.ref.uid)
            if len(completed(attempts)) >= spec.trials:
                return await self._finish(spec, attempts, verdict.Stop())
            if self._suspended():
                await holds.suspend(
                    out=out,
                    ledger=self._ledger,
                    lock=self._lock,
                    attempts=attempts,
                    still=self._suspended,
                    stop=stop,
                )
                continue
            if not await holds.acquire_lock(
                out=out,
                lock=self._lock,
                attempts=attempts,
                retry=self._settings.lock_retry_interval,
                stop=stop,
            ):
                continue
            await self._start_trial(spec, attempts)
            index = await self._ledger.next_trial_index(self.ref.uid)
            out.running(f"trial {index + 1}/{spec.trials}: waiting for steady state")
            await out.publish(attempts)
            result = await trials.run(index, attempts, stop)
            if result.stall_reason is not None:
                attempts = await self._ledger.attempts(self.ref.uid)
                stall = verdict.Stop(result.stall_reason, result.stop_verdict, result.stall_name)
                return await self._finish(spec, attempts, stall)
            if result.interrupted:
                break
            attempts = await self._ledger.attempts(self.ref.uid)
            if result.outcome is Outcome.INFRA_ERROR:
                infra_streak += 1
                ended = await self._after_infra_error(spec, attempts, result, infra_streak, stop)
                if ended is not None:
                    return ended
                continue
            infra_streak = 0
            if result.stop_reason is not None:
                return await self._finish(
                    spec, attempts, verdict.Stop(result.stop_reason, result.stop_verdict)
                )
            early = verdict.slo_out_of_reach(spec, attempts)
            if early is not None:
                return await self._finish(spec, attempts, verdict.Stop(early, Verdict.FAIL))
            await out.publish(attempts)
            if len(completed(attempts)) < spec.trials and spec.interval_seconds > 0:
                await stop.wait(spec.interval_seconds)
        # Stopped: the Campaign was deleted or the operator is exiting. Nothing is finished;
        # the next start picks up where the ledger says.
        return out.phase

    async def _start_trial(self, spec: CampaignSpec, attempts: Sequence[AttemptRecord]) -> None:
        out = self._out
        if out.started_at is None:
            out.started_at = self._clock.wall()
            await self._ledger.set_campaign_state(
                self.ref.uid, Phase.RUNNING, Verdict.NONE, out.started_at, started=True
            )
        out.phase = Phase.RUNNING

    async def _after_infra_error(
        self,
        spec: CampaignSpec,
        attempts: Sequence[AttemptRecord],
        result: TrialResult,
        streak: int,
        stop: StopSignal,
    ) -> Phase | None:
        settings = self._settings
        if streak >= settings.max_consecutive_infra_errors:
            last = result.record.error if result.record else "unknown"
            why = f"{streak} consecutive infrastructure errors; last: {last}"
            return await self._finish(spec, attempts, verdict.Stop(why, Verdict.INFRA_ERROR))
        delay = min(settings.infra_backoff_initial * 2 ** (streak - 1), settings.infra_backoff_max)
        await self._out.publish(attempts)
        await stop.wait(delay * random.uniform(0.5, 1.5))
        return None

    async def _finish(
        self, spec: CampaignSpec, attempts: Sequence[AttemptRecord], stop: verdict.Stop
    ) -> Phase:
        return await verdict.finish(
            out=self._out, ledger=self._ledger, spec=spec, attempts=attempts, stop=stop
        )
