"""kopf adapters only: configure kopf, decode the Campaign, hand it to the engine.

No business logic lives here. One daemon per Campaign runs `CampaignRunner`; kopf restarts
the daemons on every operator start, and the runner resumes from the ledger. Finished
Campaigns are filtered out so a restart does not re-run them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from aftershock import metrics, model, receiver
from aftershock.engine import lifecycle, retention, runs, sweeper
from aftershock.engine.actions import AuditInbox
from aftershock.engine.alerts import AlertInbox
from aftershock.engine.podwatch import PodWatches, Scope
from aftershock.engine.ports import StopSignal
from aftershock.engine.queue import CampaignQueue, QueuedLock
from aftershock.engine.runner import CampaignRunner, RunnerSettings
from aftershock.engine.schedule import ScheduleClock, ScheduledCampaign, WallScheduleClock
from aftershock.errors import SpecError
from aftershock.kube import Kube
from aftershock.kube.lease import Holder, SubjectLeases
from aftershock.kube.proxy import api_server_proxy
from aftershock.kube.remediators import AnnotatingScaler, KubeSweepApi
from aftershock.ledger import Ledger, RunRow
from aftershock.metrics import Metrics
from aftershock.model import GROUP, PLURAL, VERSION, CampaignRef, CampaignSpec, Phase, parse_campaign_spec
from aftershock.subjects import registry
from aftershock.subjects.base import Subject, SubjectResources
from aftershock.subjects.pd import PdClients

log = logging.getLogger("aftershock")

ANNOTATION_PREFIX = "aftershock.dev"
FINALIZER = model.FINALIZER


@dataclass
class OperatorConfig:
    """What `aftershock run` decided; carried to the handlers in kopf's memo."""

    db_path: str
    #: What every Campaign's runner is given: protected namespaces, loopback PD, intervals.
    runner: RunnerSettings
    kubeconfig: str | None = None
    metrics_port: int = 0
    #: ``--alert-receiver-port`` (0: no receiver) and the file holding its bearer token.
    alert_receiver_port: int = 0
    alert_receiver_token_file: str | None = None
    #: ``--audit-receiver-port`` (0: none), the address it binds, and its bearer token's file.
    audit_receiver_port: int = 0
    audit_receiver_host: str = "0.0.0.0"
    audit_receiver_token_file: str | None = None
    #: (certificate, key) PEM files: the audit receiver serves HTTPS; None: plain HTTP.
    audit_receiver_tls: tuple[str, str] | None = None
    #: ``--max-concurrent-campaigns``: Campaigns running at once, operator-wide (0: no bound).
    max_concurrent_campaigns: int = 0
    #: ``--sweep-interval``: seconds between sweeps of what gone Campaigns left (0: only at start).
    sweep_interval: float = 300.0
    #: ``--keep-runs-days``: runs finished longer ago are pruned to a summary row (0: never).
    keep_runs_days: float = 0.0
    #: The watched namespaces (empty: all), where the sweeper looks for scaled-down remediators.
    namespaces: tuple[str, ...] = ()
    #: ``--pod-watch-scope``, resolved: one pod watch per namespace, or one for the cluster.
    pod_watch_scope: Scope = "namespace"
    #: This operator process, in the subject Lease's holder with the ledger's id: two operators
    #: (an in-cluster one and a forgotten local one, say) must never both run one Campaign.
    instance: str = "local"
    #: The clock scheduled Campaigns' cron is read against (``--schedule-clock``: faster, for tests).
    schedule_clock: ScheduleClock = field(default_factory=WallScheduleClock)


class _Clock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class _Stop:
    """kopf's `stopped` flag as the engine's StopSignal."""

    def __init__(self, stopped: kopf.DaemonStopped) -> None:
        self._stopped = stopped

    def is_set(self) -> bool:
        return self._stopped.is_set()

    @property
    def deleted(self) -> bool:
        reason = self._stopped.reason
        return reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in reason

    async def wait(self, timeout: float | None = None) -> bool:
        await self._stopped.wait(timeout)
        return self._stopped.is_set()


class _StatusSink:
    """Publishes the runner's status, saying which run it is about (``status.run``)."""

    def __init__(self, kube: Kube, namespace: str, name: str, run: Mapping[str, Any]) -> None:
        self._kube, self._namespace, self._name, self._run = kube, namespace, name, run

    async def publish(self, status: Mapping[str, Any]) -> None:
        # A merge patch: `lastTrial` of the previous run goes until this run has one.
        body = {"lastTrial": None, **status, **self._run}
        await self._kube.patch_campaign_status(self._namespace, self._name, body)


class _EventSink:
    def __init__(self, kube: Kube, ref: CampaignRef) -> None:
        self._kube, self._ref = kube, ref

    async def emit(self, type_: str, reason: str, message: str) -> None:
        await self._kube.emit_event(
            namespace=self._ref.namespace,
            name=self._ref.name,
            uid=self._ref.uid,
            type_=type_,
            reason=reason,
            message=message,
            now=time.time(),
        )


async def login_through_api_server_proxy(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own login (the kubeconfig or the pod's ServiceAccount), reaching the API server
    through the proxy that `Kube` uses too: the environment's as kubectl reads it (ADR 0024)."""
    info = await kopf.login_via_async_client(**kwargs)
    if info is None:
        return None
    proxy = api_server_proxy(info.server, os.environ, info.proxy_url)
    return dataclasses.replace(info, proxy_url=proxy, trust_env=False)


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return await login_through_api_server_proxy(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own annotation prefix and finalizer, not kopf's defaults: users can tell whose
    # they are, and two kopf operators in one cluster do not step on each other.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    # The engine emits its own, meaningful Events; kopf's per-handler chatter would drown them.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    # On deletion, wait this long for the daemon to end on its own before kopf falls back to
    # its re-check cycle (cancellation_backoff later): the runner ends within about a second
    # of `stopped`, so the finalizer goes in the same cycle instead of after the backoff.
    settings.background.instant_exit_timeout = 2.0
    config: OperatorConfig = memo["config"]
    settings.scanning.disabled = not kopf_scans_namespaces(config.namespaces)
    if "kube" not in memo:  # this handler is retried until the CRD is there
        memo["kube"] = await Kube.connect(config.kubeconfig)
    if settings.scanning.disabled and not await memo["kube"].campaigns_served():
        # Without scanning, kopf would not notice the CRD installed later and serve nothing.
        raise kopf.TemporaryError(
            f"Campaigns ({PLURAL}.{GROUP}/{VERSION}) are not served: install the CRD "
            "(manifests/crd/); the operator starts once it is there",
            delay=10,
        )
    memo["ledger"] = await Ledger.open(config.db_path)
    # Named in every subject Lease this process holds (ADR 0016).
    memo["ledger_id"] = await memo["ledger"].ledger_id()
    memo["metrics"] = Metrics()
    memo["queue"] = CampaignQueue(config.max_concurrent_campaigns)
    # A scheduled Campaign's loop sleeps until its next tick; its watch events wake it early.
    memo["wakers"] = {}
    await memo["metrics"].replay_ledger(memo["ledger"])
    # One PD client per endpoint for the whole process, shared by its Campaigns.
    memo["pd_clients"] = PdClients()
    # One pod watch per namespace (or one cluster-wide) for all the Campaigns there.
    memo["pod_watches"] = PodWatches(memo["kube"], _Clock(), scope=config.pod_watch_scope)
    memo["loop_lag"] = metrics.LoopLagMeter(memo["metrics"].loop_lag).start()
    if config.metrics_port:
        memo["metrics_server"] = await metrics.serve(memo["metrics"], memo["ledger"], config.metrics_port)
    if config.alert_receiver_port and config.alert_receiver_token_file:
        memo["alert_inbox"] = AlertInbox(memo["ledger"], _Clock())
        memo["alert_receiver"] = await receiver.serve(
            memo["alert_inbox"].deliver,
            receiver.TokenFile(config.alert_receiver_token_file),
            config.alert_receiver_port,
        )
    if config.audit_receiver_port and config.audit_receiver_token_file:
        memo["audit_inbox"] = AuditInbox(_Clock())
        memo["audit_receiver"] = await receiver.serve_audit(
            memo["audit_inbox"].deliver,
            receiver.TokenFile(config.audit_receiver_token_file, "audit receiver"),
            config.audit_receiver_port,
            config.audit_receiver_host,
            receiver.tls_context(*config.audit_receiver_tls) if config.audit_receiver_tls else None,
        )
    memo["sweeper"] = asyncio.create_task(
        sweeper.sweep_forever(
            memo["ledger"],
            KubeSweepApi(memo["kube"]),
            config.namespaces,
            config.sweep_interval,
            time.time,
            faults=memo["kube"],
        ),
        name="sweeper",
    )
    if config.keep_runs_days > 0:
        memo["retention"] = asyncio.create_task(
            retention.prune_forever(memo["ledger"], config.keep_runs_days, config.sweep_interval, time.time),
            name="retention",
        )
    # What exists now lives as long as the process (modules, clients, settings: ~50-75k objects).
    # Moved out of the collector's reach, a full collection no longer walks them: such
    # collections took 50-100 ms on the test bed's 2 cores and stalled the event loop, so a
    # trial's kill or the pod events around it were stamped that much late (docs/performance.md).
    gc.collect()
    gc.freeze()
    log.info("aftershock started: ledger %s", config.db_path)


def kopf_scans_namespaces(namespaces: tuple[str, ...]) -> bool:
    """Whether kopf should watch Namespaces and CRDs to learn what to serve: only for a
    namespace glob, whose matches it cannot know otherwise.

    Scanning makes kopf stop serving Campaigns where they are being deleted, before their
    finalizers are off, so the deletion waits until the operator stops (issue 17):
    - Named namespaces: kopf drops a namespace's Campaign watch once the namespace looks
      deleted (marked for deletion, with conditions, none True). Kubernetes' ordered namespace
      deletion (on by default since 1.33) writes exactly that while it waits for the
      namespace's pods to go, before it deletes anything else: it sets every condition False
      before counting what remains. The Campaigns' deletion that follows is never seen.
    - Every namespace: kopf re-reads discovery when a CRD changes, and a terminating CRD loses
      `patch` from its verbs there, so kopf stops serving Campaigns when the CRD is deleted
      (an uninstall), with their finalizers on.
    Without scanning kopf watches the named namespaces (or the cluster) for the operator's
    whole life, deleted or not. The cost, a CRD installed after the start going unnoticed, is
    met in `configure`: the operator starts only once Campaigns are served.
    """
    return any(any(c in ns for c in "*?!,") for ns in namespaces)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in ("sweeper", "retention"):
        if task in memo:
            memo[task].cancel()
            await asyncio.gather(memo[task], return_exceptions=True)
    if "loop_lag" in memo:
        await memo["loop_lag"].stop()
    if "metrics_server" in memo:
        await memo["metrics_server"].cleanup()
    for server in ("alert_receiver", "audit_receiver"):
        if server in memo:
            await memo[server].cleanup()
    if "pd_clients" in memo:
        await memo["pd_clients"].aclose()
    if "ledger" in memo:
        await memo["ledger"].close()
    if "kube" in memo:
        await memo["kube"].close()


def _campaign_ref(meta: kopf.Meta) -> CampaignRef:
    """Which Campaign an event is about, read from kopf's view of its metadata."""
    namespace = meta.namespace
    assert namespace is not None  # Campaigns are namespaced (the CRD says so)
    return CampaignRef(namespace=namespace, name=str(meta.name), uid=str(meta.uid))


def _has_schedule(spec: Mapping[str, Any]) -> bool:
    return isinstance(spec.get("schedule"), Mapping)


def _unfinished(
    spec: Mapping[str, Any], status: Mapping[str, Any], annotations: Mapping[str, Any], **_: Any
) -> bool:
    # A finished Campaign whose `aftershock.dev/run` annotation changed asks for a new run; a
    # scheduled one is never done: its daemon sleeps until the next tick.
    return (
        status.get("phase") not in ("Succeeded", "Failed")
        or runs.asks_for_a_new_run(status, annotations)
        or _has_schedule(spec)
    )


def _created_at(meta: kopf.Meta) -> float:
    stamp = meta.get("creationTimestamp")
    if not isinstance(stamp, str):
        return time.time()
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


# When the Campaign finishes (the `when` filter stops matching), is deleted, or the operator
# exits, kopf sets `stopped`; the runner notices within a second, records the attempt in flight
# as interrupted (and, on deletion, the deletion) and returns on its own, well inside the
# instant-exit wait set in `configure`. The backoff is for a runner stuck in an API call: then
# kopf cancels it, and the deletion is still recorded from the DELETED watch event below. The
# finalizer never waits longer than backoff + timeout, whatever the namespace's state.
@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    when=_unfinished,
    cancellation_backoff=5.0,
    cancellation_timeout=5.0,
    backoff=5.0,
)
async def campaign(
    *,
    body: kopf.Body,
    meta: kopf.Meta,
    status: kopf.Status,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    kube: Kube = memo["kube"]
    ledger: Ledger = memo["ledger"]
    ref = _campaign_ref(meta)
    stop = _Stop(stopped)
    existing = dict(status)
    while True:
        if _has_schedule(body.get("spec") or {}):
            await _serve_schedule(body=body, meta=meta, ref=ref, memo=memo, stop=stop)
            if stopped.is_set():
                return
            # No valid schedule any more: the spec says how to go on (an invalid one fails below).
            existing = dict(body.get("status") or {})
        # `meta` is kopf's live view, kept current by its watch: reading it costs nothing.
        token = runs.run_token(meta.get("annotations") or {})
        run = await runs.resolve(ledger, ref, token)
        phase = await _run_once(
            body=body, meta=meta, ref=ref, run=run, existing=existing, memo=memo, stop=stop
        )
        # Cumulative for the process: with one Campaign it is that Campaign's cost (bench/ reads it).
        log.info(
            "campaign %s/%s run %d: ends in phase %s; API requests so far by verb: %s",
            ref.namespace,
            ref.name,
            run.run,
            phase.value,
            dict(sorted(kube.requests.items())),
        )
        # Finished: wait (reading memory only) until the run annotation changes or kopf stops
        # this daemon. Returning on our own would make kopf never start it again, not even for
        # a re-run; stopped by its filter, it is started again when the annotation changes.
        while (
            not stopped.is_set()
            and runs.run_token(meta.get("annotations") or {}) == token
            and not _valid_schedule(body, memo)
        ):
            await stopped.wait(1.0)
        if stopped.is_set():
            return
        existing = dict(body.get("status") or {})
        log.info("campaign %s/%s: the run annotation changed, a new run starts", ref.namespace, ref.name)


def _valid_schedule(body: kopf.Body, memo: kopf.Memo) -> bool:
    """The spec has a schedule the operator can run (an invalid one fails as any bad spec)."""
    spec = body.get("spec") or {}
    if not _has_schedule(spec):
        return False
    config: OperatorConfig = memo["config"]
    try:
        parse_campaign_spec(spec, allow_loopback_pd=config.runner.allow_loopback_pd)
    except SpecError:
        return False
    return True


async def _serve_schedule(
    *, body: kopf.Body, meta: kopf.Meta, ref: CampaignRef, memo: kopf.Memo, stop: _Stop
) -> None:
    """A scheduled Campaign: runs at its ticks (`aftershock.engine.schedule`) until it is
    deleted, the operator exits, or its spec has no valid schedule any more."""
    config: OperatorConfig = memo["config"]
    kube: Kube = memo["kube"]
    wakers: dict[str, asyncio.Event] = memo["wakers"]
    wake = wakers.setdefault(ref.uid, asyncio.Event())

    async def start_run(run: RunRow, run_stop: StopSignal) -> Phase:
        existing = dict(body.get("status") or {})
        return await _run_once(
            body=body, meta=meta, ref=ref, run=run, existing=existing, memo=memo, stop=run_stop
        )

    async def patch_status(patch: Mapping[str, Any]) -> None:
        await kube.patch_campaign_status(ref.namespace, ref.name, patch)

    try:
        await ScheduledCampaign(
            ref=ref,
            ledger=memo["ledger"],
            clock=config.schedule_clock,
            spec_source=lambda: dict(body.get("spec") or {}),
            token_source=lambda: runs.run_token(meta.get("annotations") or {}),
            generation_source=lambda: int(meta.get("generation") or 0),
            status_source=lambda: dict(body.get("status") or {}),
            created_at=_created_at(meta),
            start_run=start_run,
            patch_status=patch_status,
            events=_EventSink(kube, ref),
            wake=wake,
            allow_loopback_pd=config.runner.allow_loopback_pd,
        ).serve(stop)
    finally:
        wakers.pop(ref.uid, None)


async def _run_once(
    *,
    body: kopf.Body,
    meta: kopf.Meta,
    ref: CampaignRef,
    run: RunRow,
    existing: Mapping[str, Any],
    memo: kopf.Memo,
    stop: StopSignal,
) -> Phase:
    config: OperatorConfig = memo["config"]
    kube: Kube = memo["kube"]
    namespace, name, uid = ref.namespace, ref.name, ref.uid

    def spec_source() -> Mapping[str, Any]:
        # `body` is kopf's live view, kept current by its watch: reading it costs nothing.
        return dict(body.get("spec") or {})

    resources = SubjectResources(pd_clients=memo["pd_clients"])

    def open_subject(spec: CampaignSpec, ns: str) -> Subject | None:
        return registry.open_subject(spec, ns, resources)

    runner = CampaignRunner(
        ref=runs.run_ref(ref, run),
        generation=int(meta.get("generation") or 0),
        spec_source=spec_source,
        # `meta` is a live view too: read with the spec, it names the generation acted on.
        generation_source=lambda: int(meta.get("generation") or 0),
        existing_status=existing,
        ledger=memo["ledger"],
        pods=kube,
        probe_factory=open_subject,
        lock=QueuedLock(
            memo["queue"],
            f"{namespace}/{name}/{uid}",
            SubjectLeases(
                kube, namespace, Holder(f"{namespace}/{name}/{uid}", memo["ledger_id"], config.instance)
            ),
        ),
        status=_StatusSink(kube, namespace, name, runs.status_fields(run)),
        events=_EventSink(kube, ref),
        clock=_Clock(),
        recorder=memo["metrics"],
        scaler=AnnotatingScaler(kube, f"{namespace}/{name}/{uid}"),
        event_api=kube,
        volumes=kube,
        pod_watches=memo["pod_watches"],
        namespaces=kube,
        services=kube,
        settings=config.runner,
        run_row=run,
        access=kube,
        # kopf's live view: the author the admission policy recorded at creation.
        annotations_source=lambda: dict(meta.get("annotations") or {}),
        alert_inbox=memo.get("alert_inbox"),
        audit_inbox=memo.get("audit_inbox"),
        workloads=kube,
    )
    return await runner.run(stop)


def _wake_schedule(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> bool:
    """Every watch event of a scheduled Campaign wakes its loop (an annotation, the schedule or
    suspend may have changed): the filter does the waking and never lets the handler run, so
    kopf neither runs nor logs a handler for these events."""
    waker = memo.get("wakers", {}).get(str(meta.uid))
    if waker is not None:
        waker.set()
    return False


@kopf.on.event(GROUP, VERSION, PLURAL, when=_wake_schedule)
async def schedule_event(**_: Any) -> None:
    """Never called: see `_wake_schedule`."""


def _gone_or_finished_and_lagging(
    event: kopf.RawEvent, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> bool:
    # Every other event (each status patch makes one) is not this handler's: filtered here,
    # kopf neither runs nor logs it.
    if event.get("type") == "DELETED":
        return True
    return lifecycle.finished_generation_lags(status, int(meta.get("generation") or 0))


@kopf.on.event(GROUP, VERSION, PLURAL, when=_gone_or_finished_and_lagging)
async def campaign_event(
    *, event: kopf.RawEvent, meta: kopf.Meta, status: kopf.Status, memo: kopf.Memo, **_: Any
) -> None:
    """Raw watch events, for what no daemon is there to do: a Campaign gone (its deletion
    recorded in the ledger if its daemon could not: cancelled, or the operator was down while
    it was deleted), and a finished Campaign's `spec.suspend` changed (its observedGeneration
    follows, or GitOps tools would wait on it for ever)."""
    ref = _campaign_ref(meta)
    if event.get("type") == "DELETED":
        latest = await memo["ledger"].latest_run(ref.uid)
        if latest is not None:
            ref = runs.run_ref(ref, latest)
        await lifecycle.record_deletion(memo["ledger"], ref, time.time())
        memo["metrics"].forget(ref)
        return
    generation = int(meta.get("generation") or 0)
    if lifecycle.finished_generation_lags(status, generation):
        kube: Kube = memo["kube"]
        patch = lifecycle.acknowledge_generation(status, generation)
        await kube.patch_campaign_status(ref.namespace, ref.name, patch)
