"""What the operator serves, read-only, on its metrics port: Prometheus metrics and each
campaign's report. Metrics are a projection of the ledger like the status: when a campaign's
runner starts it replays the trials already in the ledger, so the histogram counts equal the
ledger's after a restart too.

`/metrics` is served from memory: a scrape reads nothing from the ledger and renders only what
changed since the last one. Each Campaign's series are kept as plain numbers and their text is
cached per metric family, dropped when that family changes for that Campaign. Why: rendering
every series of a hundred Campaigns through prometheus_client took ~100 ms of the event loop per
scrape (bench/results/2026-11-21-scale-*.md), a stall every running trial shared; now a scrape
costs the few families that changed plus a join.

The event loop's own lag is measured here too (`LoopLagMeter`), from inside the process, and
exported as a histogram: the benchmark reads it from /metrics instead of timing an HTTP probe.

Only GET routes exist; nothing here can change a campaign, and nothing but campaign results
(from the ledger) is exposed. The reports (`/campaigns*`: specs, victims, results of every
namespace) are answered only to a client on loopback (`loopback_only`): inside the operator's pod
(`kubectl exec`) or through `kubectl port-forward`, both of which RBAC guards (``pods/exec``,
``pods/portforward`` in the operator's namespace). `/metrics` is for Prometheus, from anywhere
the NetworkPolicy lets in (docs/adr/0012-campaign-authors.md).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from aftershock import clocks, phases, report, stats
from aftershock.ledger import Judgement, Ledger
from aftershock.model import (
    REMEDIATOR_DETECTED,
    REMEDIATOR_RESOLVED,
    AttemptRecord,
    CampaignRef,
    Outcome,
    Phase,
    object_uid,
    remediator_actions,
)

log = logging.getLogger(__name__)

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600)

#: Loop lag: fine steps up to the 50 ms target, where the question is asked, coarse beyond.
LAG_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5,
)  # fmt: skip

RECOVERY = "aftershock_recovery_seconds"
ATTEMPTS = "aftershock_trial_attempts"
PHASE = "aftershock_campaign_phase"
PATCHES = "aftershock_status_patches"
REMEDIATOR = "aftershock_remediator_seconds"
REMEDIATOR_ACTIONS = "aftershock_remediator_actions"
LAST_RUN = "aftershock_last_run"
LAST_RUN_RECOVERY = "aftershock_last_run_recovery_seconds"
RUN_REGRESSED = "aftershock_run_regressed"
RUN_P_VALUE = "aftershock_run_regression_p_value"
CLOCK = "aftershock_trial_clock_seconds"
CLOCK_QUANTILE = "aftershock_trial_clock_quantile_seconds"

#: The remediator's signals (the `signal` label) and the milestone each is read from.
SIGNALS: tuple[tuple[str, str], ...] = (
    ("detected", REMEDIATOR_DETECTED),
    ("resolved", REMEDIATOR_RESOLVED),
)

#: Per-Campaign families, in exposition order: (name, type, help).
_FAMILIES: tuple[tuple[str, str, str], ...] = (
    (
        RECOVERY,
        "histogram",
        "Seconds from the kill taking effect to each recovery milestone its subject recorded "
        "(label milestone), per recovered trial",
    ),
    (
        ATTEMPTS,
        "counter",
        "Trial attempts by outcome (recovered, unrecovered, interrupted, infra_error, dry_run)",
    ),
    (PHASE, "gauge", "1 for the campaign's current phase, 0 for the others"),
    (PATCHES, "counter", "Status patches sent to the API server"),
    (
        REMEDIATOR,
        "histogram",
        "Seconds from the kill to the remediator's Event saying it detected / resolved the "
        "incident, per completed trial whose Campaign watches its signals",
    ),
    (REMEDIATOR_ACTIONS, "counter", "Events the remediator emitted inside trial windows"),
    (
        CLOCK,
        "histogram",
        "The three clocks of each completed trial (label clock): detect (fault -> first alert "
        "firing, else the remediator's 'detected' Event), firstAction (fault -> the remediator's "
        "first action), recover (the recovery time); a trial without one adds nothing to it",
    ),
    (
        CLOCK_QUANTILE,
        "gauge",
        "p50 and p95 (label quantile) of each clock (label clock) over the Campaign's completed "
        "trials that had one, as aftershock report computes them",
    ),
    (LAST_RUN, "gauge", "The number of the Campaign's latest finished run"),
    (
        LAST_RUN_RECOVERY,
        "gauge",
        "The latest finished run's recovery time percentiles over its recovered trials (label quantile)",
    ),
    (
        RUN_REGRESSED,
        "gauge",
        "1 when the latest finished run regressed against the run named by `against` (previous or "
        "baseline), by the test of aftershock compare; 0 otherwise",
    ),
    (RUN_P_VALUE, "gauge", "The p-value of that test (Mann-Whitney U, two-sided)"),
)


def _escape(value: str) -> str:
    """A label value as the text format wants it (backslash, quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


_LE = (*(_number(b) for b in _BUCKETS), "+Inf")


@dataclass
class _Histogram:
    """Counts per bucket (not cumulative; the last is +Inf) and the sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        # `le` is inclusive: a value equal to a bound counts in that bucket.
        self.counts[bisect.bisect_left(_BUCKETS, value)] += 1
        self.total += value


def _histogram_lines(lines: list[str], name: str, labels: str, hist: _Histogram) -> None:
    """A histogram's cumulative buckets, count and sum, appended to `lines`."""
    running = 0
    for le, count in zip(_LE, hist.counts, strict=True):
        running += count
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {_number(running)}')
    lines.append(f"{name}_count{{{labels}}} {_number(running)}")
    lines.append(f"{name}_sum{{{labels}}} {_number(hist.total)}")


class _CampaignSeries:
    """One Campaign's numbers, and the text of each family, cached until that family changes.

    Labelled with the Campaign object's uid as well as its name: a Campaign deleted and created
    again under the same name is another experiment, and Prometheus must see other series, not
    the old counters carrying on (its runs, re-run by annotation, are one object: one series)."""

    def __init__(self, namespace: str, name: str, uid: str) -> None:
        self.uid = uid
        self.labels = f'namespace="{_escape(namespace)}",campaign="{_escape(name)}",uid="{_escape(uid)}"'
        self.recovery: dict[str, _Histogram] = {}
        self.attempts: dict[str, int] = {}
        self.phase: Phase | None = None
        self.patches = 0
        self.remediator: dict[str, _Histogram] = {}
        self.remediator_actions: int | None = None  # None: no trial watched the signals
        self.clocks: dict[str, _Histogram] = {}
        self.clock_values: dict[str, list[float]] = {}
        self.last_run: int | None = None
        self.last_run_quantiles: dict[str, float] = {}
        #: by `against`: (regressed 1/0, p-value or None)
        self.regressed: dict[str, tuple[int, float | None]] = {}
        self.renders = 0  # family texts rendered rather than served from the cache
        self._text: dict[str, str] = {}

    def changed(self, family: str) -> None:
        self._text.pop(family, None)

    def text(self, family: str) -> str:
        cached = self._text.get(family)
        if cached is None:
            cached = self._text[family] = self._render(family)
            self.renders += 1
        return cached

    def _render(self, family: str) -> str:
        lines: list[str] = []
        if family == RECOVERY:
            for milestone, hist in self.recovery.items():
                _histogram_lines(lines, RECOVERY, f'{self.labels},milestone="{milestone}"', hist)
        elif family == REMEDIATOR:
            for signal, hist in self.remediator.items():
                _histogram_lines(lines, REMEDIATOR, f'{self.labels},signal="{signal}"', hist)
        elif family in (CLOCK, CLOCK_QUANTILE):
            self._render_clocks(family, lines)
        elif family == REMEDIATOR_ACTIONS and self.remediator_actions is not None:
            lines.append(f"{REMEDIATOR_ACTIONS}_total{{{self.labels}}} {_number(self.remediator_actions)}")
        elif family == ATTEMPTS:
            for outcome, count in self.attempts.items():
                lines.append(f'{ATTEMPTS}_total{{{self.labels},outcome="{outcome}"}} {_number(count)}')
        elif family == PHASE:
            if self.phase is not None:
                for p in Phase:
                    value = 1 if p is self.phase else 0
                    lines.append(f'{PHASE}{{{self.labels},phase="{p.value}"}} {_number(value)}')
        elif family == PATCHES and self.patches:
            lines.append(f"{PATCHES}_total{{{self.labels}}} {_number(self.patches)}")
        else:
            self._render_runs(family, lines)
        return "".join(line + "\n" for line in lines)

    def _render_clocks(self, family: str, lines: list[str]) -> None:
        """The three clocks (`aftershock.clocks`): histograms, and the p50/p95 report shows."""
        if family == CLOCK:
            for clock, hist in self.clocks.items():
                _histogram_lines(lines, CLOCK, f'{self.labels},clock="{clock}"', hist)
            return
        for clock, values in self.clock_values.items():
            for quantile, q in (("0.5", 50), ("0.95", 95)):
                value = stats.percentile(values, q)
                if value is not None:
                    labels = f'{self.labels},clock="{clock}",quantile="{quantile}"'
                    lines.append(f"{CLOCK_QUANTILE}{{{labels}}} {_number(value)}")

    def _render_runs(self, family: str, lines: list[str]) -> None:
        """The families about the latest finished run and its trend."""
        if family == LAST_RUN and self.last_run is not None:
            lines.append(f"{LAST_RUN}{{{self.labels}}} {_number(self.last_run)}")
        elif family == LAST_RUN_RECOVERY:
            for quantile, value in self.last_run_quantiles.items():
                lines.append(f'{LAST_RUN_RECOVERY}{{{self.labels},quantile="{quantile}"}} {_number(value)}')
        elif family == RUN_REGRESSED:
            for against, (value, _) in self.regressed.items():
                lines.append(f'{RUN_REGRESSED}{{{self.labels},against="{against}"}} {_number(value)}')
        elif family == RUN_P_VALUE:
            for against, (_, p_value) in self.regressed.items():
                if p_value is not None:
                    lines.append(f'{RUN_P_VALUE}{{{self.labels},against="{against}"}} {_number(p_value)}')


class Metrics:
    """The engine's `Recorder`. Per-Campaign series live in plain structures rendered by
    `render` (cached per Campaign and family); process-wide ones (ledger writes, loop lag) in
    a private prometheus_client registry, a handful of series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.ledger_writes = Histogram(
            "aftershock_ledger_write_seconds",
            "Latency of ledger writes (each a committed transaction)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.loop_lags = Histogram(
            "aftershock_event_loop_lag_seconds",
            "How much later than asked the operator's event loop woke a short sleep: the time "
            "every other task there waited too (measured from inside, every 0.1 s)",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.scrapes = Histogram(
            "aftershock_metrics_render_seconds",
            "Time to render this exposition, per scrape (event-loop time every scrape costs)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self._campaigns: dict[tuple[str, str], _CampaignSeries] = {}
        self._replayed: set[str] = set()

    def _series(self, ref: CampaignRef) -> _CampaignSeries:
        key = (ref.namespace, ref.name)
        series = self._campaigns.get(key)
        if series is None or series.uid != ref.object_uid:
            # None yet, or the name now belongs to another Campaign object (the old one was
            # deleted while this process did not see it go): that one's series end here.
            series = self._campaigns[key] = _CampaignSeries(ref.namespace, ref.name, ref.object_uid)
        return series

    def forget(self, ref: CampaignRef) -> None:
        """The Campaign object is gone: drop its series (every run's), so a deleted Campaign
        stops being exported and /metrics does not grow with every Campaign ever run."""
        key = (ref.namespace, ref.name)
        series = self._campaigns.get(key)
        if series is not None and series.uid == ref.object_uid:
            del self._campaigns[key]
        self._replayed = {uid for uid in self._replayed if object_uid(uid) != ref.object_uid}

    # -- Recorder ------------------------------------------------------------------------------

    def attempt_finished(self, ref: CampaignRef, record: AttemptRecord) -> None:
        if record.outcome is None:
            return
        series = self._series(ref)
        outcome = record.outcome.value
        series.attempts[outcome] = series.attempts.get(outcome, 0) + 1
        series.changed(ATTEMPTS)
        if record.outcome is Outcome.RECOVERED:
            # The `milestone` label is a milestone, in seconds from the kill taking effect (the start
            # `recoverySeconds` counts from, ADR 0008: `recovered` is the status's recovery
            # time): whichever the trial's subject recorded (TiKV's store_up, etcd's
            # leader_elected), not a fixed list.
            start = record.disruption_offset
            for name in phases.recovery_milestones(record):
                offset = record.milestones[name].offset - start
                series.recovery.setdefault(name, _Histogram()).observe(max(offset, 0.0))
            series.changed(RECOVERY)
        if record.outcome.completes_trial:
            for clock, values in clocks.clock_values([record]).items():
                for value in values:
                    series.clocks.setdefault(clock, _Histogram()).observe(max(value, 0.0))
                    bisect.insort(series.clock_values.setdefault(clock, []), value)
            series.changed(CLOCK)
            series.changed(CLOCK_QUANTILE)
        if record.outcome.completes_trial and "remediatorActions" in record.final_state:
            for signal, name in SIGNALS:
                m = record.milestones.get(name)
                if m is not None:
                    series.remediator.setdefault(signal, _Histogram()).observe(max(m.offset, 0.0))
            series.changed(REMEDIATOR)
            actions = len(remediator_actions(record.final_state))
            series.remediator_actions = (series.remediator_actions or 0) + actions
            series.changed(REMEDIATOR_ACTIONS)

    def replay(self, ref: CampaignRef, records: Iterable[AttemptRecord]) -> None:
        """Count what the ledger already holds, once per campaign and process."""
        if ref.uid in self._replayed:
            return
        self._replayed.add(ref.uid)
        for record in records:
            self.attempt_finished(ref, record)

    async def replay_ledger(self, ledger: Ledger) -> None:
        """At start-up: every campaign the ledger holds, finished ones included, but not those
        recorded deleted (their series were dropped when they went)."""
        for row in await ledger.list_campaigns():
            if row.deleted_at is not None:
                continue
            ref = CampaignRef(row.namespace, row.name, row.uid)
            self.replay(ref, [a for a in await ledger.attempts(row.uid) if a.outcome is not None])
            if row.phase:
                self.campaign_phase(ref, Phase(row.phase))
        # The latest finished run of every Campaign that ran more than once: its numbers and
        # judgements, as the runner reported them when it finished.
        rows = {row.uid: row for row in await ledger.list_campaigns()}
        for campaign_uid in await ledger.campaign_uids(min_runs=2):
            finished = [r for r in await ledger.run_summaries(campaign_uid) if r.phase.finished]
            if len(finished) < 2 or finished[-1].run_uid not in rows:
                continue
            if rows[finished[-1].run_uid].deleted_at is not None:
                continue  # its series were dropped when it went
            last, row = finished[-1], rows[finished[-1].run_uid]
            self.run_judged(
                CampaignRef(row.namespace, row.name, row.uid), last.run, last.summary, last.judgements
            )

    def campaign_phase(self, ref: CampaignRef, phase: Phase) -> None:
        series = self._series(ref)
        if series.phase is not phase:
            series.phase = phase
            series.changed(PHASE)

    def ledger_write(self, seconds: float) -> None:
        self.ledger_writes.observe(seconds)

    def run_judged(
        self, ref: CampaignRef, run: int, summary: stats.RecoverySummary, judgements: Iterable[Judgement]
    ) -> None:
        series = self._series(ref)
        series.last_run = run
        series.last_run_quantiles = {
            q: v for q, v in (("0.5", summary.p50), ("0.95", summary.p95)) if v is not None
        }
        series.regressed = {j.against: (1 if j.verdict == "Regressed" else 0, j.p_value) for j in judgements}
        for family in (LAST_RUN, LAST_RUN_RECOVERY, RUN_REGRESSED, RUN_P_VALUE):
            series.changed(family)

    def status_patched(self, ref: CampaignRef) -> None:
        series = self._series(ref)
        series.patches += 1
        series.changed(PATCHES)

    def loop_lag(self, seconds: float) -> None:
        self.loop_lags.observe(seconds)

    # -- Exposition ----------------------------------------------------------------------------

    @property
    def renders(self) -> int:
        """Family texts rendered so far rather than served from the cache (what a scrape costs)."""
        return sum(series.renders for series in self._campaigns.values())

    def render(self) -> bytes:
        """The Prometheus text exposition of every series, from memory. Its own cost is
        observed after it is rendered, so it shows in the next scrape."""
        started = time.perf_counter()
        parts = [generate_latest(self.registry).decode()]
        for name, kind, help_ in _FAMILIES:
            # The classic text format names a counter's family by its sample, `_total`
            # included (what prometheus_client writes and its parser reads back).
            header = f"{name}_total" if kind == "counter" else name
            parts.append(f"# HELP {header} {help_}\n# TYPE {header} {kind}\n")
            for series in self._campaigns.values():
                parts.append(series.text(name))
        body = "".join(parts).encode()
        self.scrapes.observe(time.perf_counter() - started)
        return body


class LoopLagMeter:
    """Measures the event loop's lag from inside the process: a task that sleeps `interval`
    again and again and reports, each time, how much later than asked it woke (`observe`).

    Any callback that holds the loop (a long render, a big JSON decode, a burst of watch events)
    delays this wake-up by as much as it delays every other task, so the overshoot is the lag
    the operator's trials saw. `clock` and `sleep` are the loop's by default; tests pass fakes.
    """

    def __init__(
        self,
        observe: Callable[[float], None],
        *,
        interval: float = 0.1,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._observe = observe
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    async def measure_once(self) -> float:
        clock = self._clock or asyncio.get_running_loop().time
        started = clock()
        await self._sleep(self.interval)
        # Never negative: a timer may fire a hair early (the loop's clock resolution).
        lag = max(0.0, clock() - started - self.interval)
        self._observe(lag)
        return lag

    async def run(self) -> None:
        while True:
            await self.measure_once()

    def start(self) -> LoopLagMeter:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="loop-lag-meter")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


REPORTS_REFUSED = (
    "campaign reports are served on loopback only: "
    "kubectl -n NAMESPACE port-forward deploy/aftershock PORT, or "
    "kubectl -n NAMESPACE exec deploy/aftershock -- aftershock report NAME -n CAMPAIGN_NAMESPACE\n"
)


def is_loopback(peer: str | None) -> bool:
    """Whether the connection came from this host (pod) itself."""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@web.middleware
async def loopback_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """`/campaigns*` to loopback clients only; the peer's address is the socket's (aiohttp reads
    no forwarding header for `remote`), so no header can claim it."""
    if request.path.startswith("/campaigns") and not is_loopback(request.remote):
        raise web.HTTPForbidden(text=REPORTS_REFUSED)
    return await handler(request)


def build_app(metrics: Metrics, ledger: Ledger) -> web.Application:
    async def get_metrics(_: web.Request) -> web.Response:
        # From memory only: a scrape never reads the ledger. Not gzipped although Prometheus
        # asks: tried at 100 Campaigns, compressing the ~0.5 MB in the loop made /metrics
        # slower (p50 20.5 ms against 9.1, p95 83.9 against 74.9; 2026-12-01-scale-*-gzip.md).
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def list_campaigns(_: web.Request) -> web.Response:
        rows = await ledger.list_campaigns()
        return web.json_response(
            [
                {
                    "namespace": r.namespace,
                    "name": r.name,
                    "uid": r.uid,
                    "phase": r.phase,
                    "verdict": r.verdict,
                }
                for r in rows
            ]
        )

    async def campaign_report(request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        try:
            data = await report.load_report(ledger, ns, name)
        except LookupError:
            raise web.HTTPNotFound(text=f"no campaign {ns}/{name} in the ledger\n") from None
        return web.Response(text=report.render_json(data), content_type="application/json")

    app = web.Application(middlewares=[loopback_only])
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/campaigns", list_campaigns)
    app.router.add_get("/campaigns/{namespace}/{name}", campaign_report)
    return app


async def serve(metrics: Metrics, ledger: Ledger, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    runner = web.AppRunner(build_app(metrics, ledger), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("serving /metrics on %s:%d, /campaigns to loopback clients only", host, port)
    return runner
