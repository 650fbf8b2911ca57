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
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from aftershock import stats
from aftershock.chaos import registry as chaos_registry
from aftershock.endpoints import ServiceInfo, resolve_service_name, service_names
from aftershock.engine import admit, heal, holds, lifecycle, resume, trend, verdict, watches
from aftershock.engine.actions import AuditHorizon, AuditInbox, CampaignActions, activity_of
from aftershock.engine.alerts import AlertInbox, CampaignAlerts
from aftershock.engine.outcomes import REASON_INVALID, RunnerSettings, TrialResult
from aftershock.engine.podwatch import PodWatches
from aftershock.engine.ports import (
    AccessApi,
    Clock,
    EventApi,
    EventSink,
    LedgerPort,
    NamespaceApi,
    NullRecorder,
    PodApi,
    Recorder,
    ScaleApi,
    ServiceApi,
    StatusSink,
    StopSignal,
    SubjectLock,
    SubjectProbe,
    VolumeApi,
    WorkloadApi,
)
from aftershock.engine.publisher import StatusPublisher
from aftershock.engine.remediator import RemediatorScaler
from aftershock.engine.status import SPEC_VALID, Conditions
from aftershock.engine.trial import Trials
from aftershock.engine.view import PodView
from aftershock.errors import ApiError, SpecError
from aftershock.ledger import RunRow
from aftershock.model import (
    AttemptRecord,
    CampaignRef,
    CampaignSpec,
    Outcome,
    Phase,
    RemediatorIdentities,
    Verdict,
    check_endpoint_namespace,
    parse_campaign_spec,
    read_suspend,
    requested_trials,
)

__all__ = ["CampaignRunner", "RunnerSettings"]

log = logging.getLogger(__name__)

ProbeFactory = Callable[[CampaignSpec, str], SubjectProbe | None]


@dataclass(kw_only=True, eq=False)
class CampaignRunner:
    """One Campaign's runner (a thing with a life, not a value: no equality): the handler names
    each port it is built with; `run` does the rest."""

    ref: CampaignRef
    #: The Campaign's generation and status when the runner was built.
    generation: InitVar[int]
    existing_status: InitVar[Mapping[str, Any]]
    #: The spec now (kopf's live view: reading it costs nothing).
    spec_source: Callable[[], Mapping[str, Any]]
    #: The generation now, read with the spec; None: the generation is taken as it was built.
    generation_source: Callable[[], int] | None = None
    ledger: LedgerPort
    pods: PodApi
    probe_factory: ProbeFactory
    lock: SubjectLock
    status: StatusSink
    events: EventSink
    clock: Clock
    settings: RunnerSettings
    recorder: Recorder = field(default_factory=NullRecorder)
    scaler: ScaleApi | None = None
    event_api: EventApi | None = None
    volumes: VolumeApi | None = None
    #: The operator's shared pod watches; None: this runner watches its namespace by itself.
    pod_watches: PodWatches | None = None
    #: Which run of its Campaign this is: a run after the first is judged against the previous
    #: run and the baseline run when it ends (`aftershock.engine.trend`). None: not judged.
    run_row: RunRow | None = None
    #: Whether the Campaign's namespace is being deleted (None: never asked).
    namespaces: NamespaceApi | None = None
    #: The namespace's Services, to judge what the subject's URLs name before any connection
    #: (`aftershock.endpoints.resolve_service_name`); None: the URLs are taken as written
    #: (tests whose subjects are stand-ins on loopback, which names no Service anyway).
    services: ServiceApi | None = None
    #: Access questions before a run starts (`aftershock.engine.admit`); None: none asked.
    access: AccessApi | None = None
    #: The Campaign's annotations now (the author the admission policy recorded).
    annotations_source: Callable[[], Mapping[str, str]] = dict
    #: The operator's alert receiver's inbox (`spec.detection`); None: no receiver runs.
    alert_inbox: AlertInbox | None = None
    #: The operator's audit receiver's inbox (the remediator's writes); None: no receiver runs.
    audit_inbox: AuditInbox | None = None
    #: The remediator workload's ServiceAccount, its default identity; None: not asked.
    workloads: WorkloadApi | None = None
    _out: StatusPublisher = field(init=False)
    _remediator: RemediatorScaler = field(init=False)

    def __post_init__(self, generation: int, existing_status: Mapping[str, Any]) -> None:
        self._remediator = RemediatorScaler(self.scaler, self.ref.namespace, self.clock)
        self._out = StatusPublisher(
            ref=self.ref,
            conditions=Conditions(existing_status.get("conditions"), generation),
            generation=generation,
            requested=requested_trials(self.spec_source()),
            ledger=self.ledger,
            status=self.status,
            events=self.events,
            recorder=self.recorder,
            clock=self.clock,
        )

    @contextlib.asynccontextmanager
    async def _alerts(self, spec: CampaignSpec) -> AsyncIterator[CampaignAlerts | None]:
        """The Campaign's claim on delivered alerts while it runs (`spec.detection`)."""
        if spec.detection is None or self.alert_inbox is None:
            if spec.detection is not None:
                log.warning(
                    "campaign %s/%s: spec.detection is set but this operator runs no alert receiver "
                    "(--alert-receiver-port): no alert milestones will be recorded",
                    self.ref.namespace,
                    self.ref.name,
                )
            yield None
            return
        with self.alert_inbox.listen(self.ref, spec.detection) as alerts:
            yield alerts

    @contextlib.asynccontextmanager
    async def _actions(self, spec: CampaignSpec, view: PodView) -> AsyncIterator[CampaignActions | None]:
        """The remediator's writes while the Campaign runs (`spec.remediator`): its identities'
        audited writes and its field managers' managedFields on the subject's pods."""
        rem = spec.remediator
        if rem is None:
            yield None
            return
        namespace = self.ref.namespace
        ids = rem.identities or RemediatorIdentities()
        if not ids.service_accounts and self.workloads is not None:
            # No ServiceAccount named: the one the remediator workload runs as.
            try:
                sa = await self.workloads.service_account(rem.kind.value, namespace, rem.name)
                ids = dataclasses.replace(ids, service_accounts=(sa,))
            except ApiError as exc:
                log.warning(
                    "campaign %s/%s: cannot read the remediator %s %s's ServiceAccount (%s): its "
                    "writes are not recorded; name it in spec.remediator.identities.serviceAccounts",
                    namespace,
                    self.ref.name,
                    rem.kind.value,
                    rem.name,
                    exc,
                )
        usernames, managers = ids.usernames(namespace), frozenset(ids.field_managers)
        if self.audit_inbox is None:
            actions = CampaignActions(self.ref, frozenset(), managers, self.clock, AuditHorizon())
            view.on_change, view.reads_managed_fields = actions.pod_changed, bool(managers)
            try:
                yield actions
            finally:
                view.on_change, view.reads_managed_fields = None, False
            return
        with self.audit_inbox.listen(self.ref, usernames, managers) as actions:
            view.on_change, view.reads_managed_fields = actions.pod_changed, bool(managers)
            try:
                yield actions
            finally:
                view.on_change, view.reads_managed_fields = None, False

    def _spec_now(self) -> Mapping[str, Any]:
        """The spec now, and (read with it, no await between) the generation it belongs to:
        every status published after acting on it carries that generation, so kstatus, Flux
        and Argo CD see a change (`suspend`, say) as observed once it is acted on."""
        raw = self.spec_source()
        if self.generation_source is not None:
            self._out.observe_generation(self.generation_source())
        return raw

    def _suspended(self) -> bool:
        return read_suspend(self._spec_now())

    def _parse(self) -> tuple[Mapping[str, Any], CampaignSpec]:
        raw = self._spec_now()
        spec = parse_campaign_spec(raw, allow_loopback_pd=self.settings.allow_loopback_pd)
        chaos_registry.kind_of(spec.chaos)  # a type no kind has, or a field its kind refuses
        for path, url in spec.subject.api_url_fields:
            check_endpoint_namespace(url, self.ref.namespace, path)
        return raw, spec

    async def _resolve_services(self, spec: CampaignSpec) -> CampaignSpec:
        """The spec with each subject URL's host qualified to the Service it names in the
        Campaign's namespace, as the API server describes it (one GET per Service named)."""
        if self.services is None:
            return spec
        services, namespace = self.services, self.ref.namespace
        seen: dict[str, ServiceInfo | None] = {}

        async def resolve(path: str, url: str) -> str:
            for name in service_names(url, namespace, path):
                if name.service not in seen:
                    try:
                        seen[name.service] = await services.get_service(namespace, name.service)
                    except ApiError as exc:
                        if exc.status != 403:
                            raise
                        # An install whose RBAC predates the lookup: say what to grant, do not
                        # connect to a name nobody could check.
                        raise SpecError(
                            path,
                            f"cannot read Service {name.service!r} in namespace {namespace!r} to check what "
                            "it names: the operator needs `get` on services there (its Role or "
                            "ClusterRole, docs/adr/0004-rbac-and-scoping.md)",
                        ) from exc
            return resolve_service_name(url, namespace, seen, path)

        subject = spec.subject
        pd_url = await resolve("subject.pdURL", subject.pd_url) if subject.pd_url is not None else None
        endpoints = [await resolve(f"subject.endpoints[{i}]", u) for i, u in enumerate(subject.endpoints)]
        return dataclasses.replace(
            spec, subject=dataclasses.replace(subject, pd_url=pd_url, endpoints=tuple(endpoints))
        )

    # -- the campaign ------------------------------------------------------------------------

    async def run(self, stop: StopSignal) -> Phase:
        try:
            raw, spec = self._parse()
            spec = await self._resolve_services(spec)
            probe = self.probe_factory(spec, self.ref.namespace)
        except SpecError as exc:
            return await verdict.fail_spec(self._out, exc.field, REASON_INVALID, exc.reason)
        try:
            return await self._run(raw, spec, probe, stop)
        finally:
            if probe is not None:
                await probe.close()

    async def _run(
        self, raw: Mapping[str, Any], spec: CampaignSpec, probe: SubjectProbe | None, stop: StopSignal
    ) -> Phase:
        ref, out = self.ref, self._out
        if ref.namespace in self.settings.protected_namespaces:
            return await verdict.fail_spec(
                out,
                "metadata.namespace",
                "ProtectedNamespace",
                f"namespace {ref.namespace!r} is protected: aftershock never disturbs it",
            )
        refused = await self._admit(spec, stop)
        if refused is not None:
            return await verdict.fail_spec(out, refused.field, refused.reason, refused.message)
        if stop.is_set():
            return out.phase
        out.conditions.set(SPEC_VALID, True, "Valid", "", self.clock.wall())
        seed = str(spec.seed) if spec.seed is not None else ref.uid
        attempts = await resume.resume(out=out, raw=raw, spec=spec, seed=seed)
        if attempts is None:
            return out.phase
        resume.health_condition(out, spec, probe)
        try:
            async with (
                watches.campaign_watches(
                    ref=ref,
                    spec=spec,
                    pod_watches=self.pod_watches or PodWatches(self.pods, self.clock),
                    events=self.event_api,
                    clock=self.clock,
                ) as (view, signals),
                self._alerts(spec) as alerts,
                self._actions(spec, view) as actions,
            ):
                trials = Trials(
                    spec=spec,
                    seed=seed,
                    settings=self.settings,
                    pods=self.pods,
                    view=view,
                    probe=probe,
                    lock=self.lock,
                    publisher=out,
                    remediator=self._remediator,
                    signals=signals,
                    activity=activity_of(signals, actions),
                    alerts=alerts,
                    actions=actions,
                    volumes=self.volumes,
                    namespaces=self.namespaces,
                )
                phase = await self._loop(spec, trials, attempts, stop)
            if not phase.finished and not stop.is_set() and await self._namespace_deleting():
                # Its pods go first; this Campaign is deleted (and `stop` set) once they are
                # gone. Nothing can run here meanwhile: let the subject go and wait for it.
                log.info(
                    "campaign %s/%s: its namespace is being deleted; trials stopped, waiting "
                    "for the Campaign's deletion",
                    ref.namespace,
                    ref.name,
                )
                await self.lock.release()
                await stop.wait()
            if stop.is_set() and stop.deleted:
                log.info(
                    "campaign %s/%s is being deleted (or its namespace): trials stopped, "
                    "recording the deletion, then its finalizer goes",
                    ref.namespace,
                    ref.name,
                )
                # Before the lock is released and the finalizer goes: once the object is gone,
                # nothing would tell the ledger.
                await lifecycle.record_deletion(self.ledger, ref, self.clock.wall())
                phase = phase if phase.finished else Phase.DELETED
                self.recorder.campaign_phase(ref, phase)
            return phase
        finally:
            # Whatever ended the run (suspend, deletion, the operator exiting, an error), no
            # fault of it stays in place once the subject lock is let go.
            await asyncio.shield(self._heal("the Campaign's run stopped"))
            await self.lock.release()

    async def _admit(self, spec: CampaignSpec, stop: StopSignal) -> admit.Refusal | None:
        """The operator's own authorisation check, asked again at every start of a run (and
        resume). A transient API error is asked again; a permanent one (the operator may not
        create SubjectAccessReviews) refuses, saying so."""
        if self.access is None:
            return None
        while True:
            try:
                return await admit.refusal(
                    namespace=self.ref.namespace,
                    annotations=self.annotations_source(),
                    spec=spec,
                    settings=self.settings,
                    api=self.access,
                )
            except ApiError as exc:
                if not exc.transient:
                    return admit.Refusal(
                        "",
                        "AuthorizationCheckFailed",
                        f"aftershock could not check who may run this Campaign: {exc}; nothing was done",
                    )
                if await stop.wait(self.settings.lock_retry_interval):
                    return None

    async def _heal(self, why: str) -> None:
        try:
            await heal.heal_faults(
                self.ledger, self.pods, self.clock.wall, why=why, campaign_uid=self.ref.uid
            )
        except Exception:  # the lock must still be released; resume or the sweeper heal later
            log.exception("healing the faults of %s/%s failed", self.ref.namespace, self.ref.name)

    async def _loop(
        self, spec: CampaignSpec, trials: Trials, attempts: list[AttemptRecord], stop: StopSignal
    ) -> Phase:
        infra_streak = 0
        out, uid = self._out, self.ref.uid
        resumed = False
        while not stop.is_set():
            # The tally, not the ledger: it is what the ledger holds (seeded at resume, kept
            # as each attempt is committed) without reading every attempt back per trial.
            if out.tally.completed >= spec.trials:
                return await self._finish(spec, verdict.Stop())
            if self._suspended():
                await self._heal("the Campaign was suspended")
                await holds.suspend(out=out, lock=self.lock, still=self._suspended, stop=stop)
                continue
            if not trials.view.synced:
                # The keys are read from the pods: wait (a little) for the first list of them.
                await trials.view.wait_synced(self.settings.lock_retry_interval)
            if not await holds.acquire_lock(
                out=out,
                lock=self.lock,
                keys=holds.subject_keys(trials.view.pods()),
                retry=self.settings.lock_retry_interval,
                stop=stop,
            ):
                continue
            if not resumed:
                # Only now: what another process left in flight is this one's to close once it
                # holds the subject (and, since the start, the ledger).
                await resume.interrupt_left_in_flight(
                    out=out, remediator=self._remediator, attempts=attempts, faults=self.pods
                )
                resumed = True
            await self._start_trial()
            index = await self.ledger.next_trial_index(uid)
            out.running(f"trial {index + 1}/{spec.trials}: waiting for steady state")
            await out.publish()
            result = await trials.run(index, stop)
            if result.stall_reason is not None:
                stall = verdict.Stop(result.stall_reason, result.stop_verdict, result.stall_name)
                return await self._finish(spec, stall)
            if result.interrupted:
                break
            if result.outcome is Outcome.INFRA_ERROR:
                infra_streak += 1
                ended = await self._after_infra_error(spec, result, infra_streak, stop)
                if ended is not None:
                    return ended
                continue
            infra_streak = 0
            if result.stop_reason is not None:
                return await self._finish(spec, verdict.Stop(result.stop_reason, result.stop_verdict))
            early = verdict.slo_out_of_reach(spec, out.tally)
            if early is not None:
                return await self._finish(spec, verdict.Stop(early, Verdict.FAIL))
            await out.publish()
            if out.tally.completed < spec.trials and spec.interval_seconds > 0:
                await stop.wait(spec.interval_seconds)
        # Stopped: the Campaign was deleted or the operator is exiting. Nothing is finished;
        # the next start picks up where the ledger says.
        return out.phase

    async def _namespace_deleting(self) -> bool:
        if self.namespaces is None:
            return False
        try:
            return await self.namespaces.namespace_deleting(self.ref.namespace)
        except ApiError as exc:
            log.debug("cannot tell whether namespace %s is being deleted: %s", self.ref.namespace, exc)
            return False

    async def _start_trial(self) -> None:
        out = self._out
        if out.started_at is None:
            out.started_at = self.clock.wall()
            await self.ledger.set_campaign_state(
                self.ref.uid, Phase.RUNNING, Verdict.NONE, out.started_at, started=True
            )
        out.phase = Phase.RUNNING

    async def _after_infra_error(
        self,
        spec: CampaignSpec,
        result: TrialResult,
        streak: int,
        stop: StopSignal,
    ) -> Phase | None:
        backoff = self.settings.infra
        if streak >= backoff.max_consecutive:
            last = result.record.error if result.record else "unknown"
            why = f"{streak} consecutive infrastructure errors; last: {last}"
            return await self._finish(spec, verdict.Stop(why, Verdict.INFRA_ERROR))
        await self._out.publish()
        await stop.wait(backoff.delay(streak) * random.uniform(0.5, 1.5))
        return None

    async def _finish(self, spec: CampaignSpec, stop: verdict.Stop) -> Phase:
        await self._judge(spec)
        return await verdict.finish(out=self._out, spec=spec, stop=stop)

    async def _judge(self, spec: CampaignSpec) -> None:
        """The trend: this run against the previous one and the baseline run, into the
        ``Regressed`` condition (published with the final status) and the metrics."""
        run = self.run_row
        if run is None or spec.dry_run:
            return
        out = self._out
        judgements = await trend.judge_run(
            ledger=self.ledger,
            run=run,
            trend=spec.trend,
            recoveries=out.tally.recoveries,
            now=self.clock.wall(),
        )
        found = trend.condition(judgements)
        if found is not None:
            out.conditions.set(trend.REGRESSED, *found, self.clock.wall())
        self.recorder.run_judged(self.ref, run.run, stats.summarize(out.tally.recoveries), judgements)
