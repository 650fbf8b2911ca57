"""What the operator serves, read-only, on its metrics port: Prometheus metrics and each
campaign's report. Metrics are a projection of the ledger like the status: when a campaign's
runner starts it replays the trials already in the ledger, so the histogram counts equal the
ledger's after a restart too.

Only GET routes exist; nothing here can change a campaign, and nothing but campaign results
(from the ledger) is exposed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from aftershock import report
from aftershock.ledger import Ledger
from aftershock.model import AttemptRecord, CampaignRef, Outcome, Phase

log = logging.getLogger(__name__)

#: Recovery phases as cumulative offsets from the kill (what the histogram's `phase` label means).
PHASES: tuple[str, ...] = (
    "victim_gone",
    "replacement_created",
    "replacement_scheduled",
    "replacement_ready",
    "store_up",
    "recovered",
)

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600)


class Metrics:
    """The engine's `Recorder`, backed by a private Prometheus registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.recovery = Histogram(
            "aftershock_recovery_seconds",
            "Seconds from the kill to each recovery phase, per recovered trial",
            ["namespace", "campaign", "phase"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.trials = Counter(
            "aftershock_trial_attempts_total",
            "Trial attempts by outcome (recovered, unrecovered, interrupted, infra_error, dry_run)",
            ["namespace", "campaign", "outcome"],
            registry=self.registry,
        )
        self.phase = Gauge(
            "aftershock_campaign_phase",
            "1 for the campaign's current phase, 0 for the others",
            ["namespace", "campaign", "phase"],
            registry=self.registry,
        )
        self.ledger_writes = Histogram(
            "aftershock_ledger_write_seconds",
            "Latency of ledger writes (each a committed transaction)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.status_patches = Counter(
            "aftershock_status_patches_total",
            "Status patches sent to the API server",
            ["namespace", "campaign"],
            registry=self.registry,
        )
        self._replayed: set[str] = set()

    # -- Recorder ------------------------------------------------------------------------------

    def attempt_finished(self, ref: CampaignRef, record: AttemptRecord) -> None:
        if record.outcome is None:
            return
        self.trials.labels(ref.namespace, ref.name, record.outcome.value).inc()
        if record.outcome is Outcome.RECOVERED:
            for name in PHASES:
                m = record.milestones.get(name)
                if m is not None:
                    self.recovery.labels(ref.namespace, ref.name, name).observe(max(m.offset, 0.0))

    def replay(self, ref: CampaignRef, records: Iterable[AttemptRecord]) -> None:
        """Count what the ledger already holds, once per campaign and process."""
        if ref.uid in self._replayed:
            return
        self._replayed.add(ref.uid)
        for record in records:
            self.attempt_finished(ref, record)

    async def replay_ledger(self, ledger: Ledger) -> None:
        """At start-up: every campaign the ledger holds, finished ones included."""
        for row in await ledger.list_campaigns():
            ref = CampaignRef(row.namespace, row.name, row.uid)
            self.replay(ref, [a for a in await ledger.attempts(row.uid) if a.outcome is not None])
            if row.phase:
                self.campaign_phase(ref, Phase(row.phase))

    def campaign_phase(self, ref: CampaignRef, phase: Phase) -> None:
        for p in Phase:
            self.phase.labels(ref.namespace, ref.name, p.value).set(1 if p is phase else 0)

    def ledger_write(self, seconds: float) -> None:
        self.ledger_writes.observe(seconds)

    def status_patched(self, ref: CampaignRef) -> None:
        self.status_patches.labels(ref.namespace, ref.name).inc()


def build_app(metrics: Metrics, ledger: Ledger) -> web.Application:
    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

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

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/campaigns", list_campaigns)
    app.router.add_get("/campaigns/{namespace}/{name}", campaign_report)
    return app


async def serve(metrics: Metrics, ledger: Ledger, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    runner = web.AppRunner(build_app(metrics, ledger), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("serving /metrics and /campaigns on %s:%d", host, port)
    return runner
