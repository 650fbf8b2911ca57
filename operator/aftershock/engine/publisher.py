"""The status publisher: the Campaign's conditions, phase and message, and their projection
onto the status (with the tally of the ledger's attempts) and into Events.

Publishing is best effort: the status is a projection of the ledger, so a failed patch is
carried by the next one; only the final status is retried, having no next one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from aftershock.engine.ports import Clock, EventSink, LedgerPort, Recorder, StatusSink
from aftershock.engine.status import READY, RECONCILING, STALLED, Conditions, build_status
from aftershock.engine.tally import Tally
from aftershock.model import CampaignRef, Phase, Verdict

log = logging.getLogger(__name__)


@dataclass
class StatusPublisher:
    ref: CampaignRef
    conditions: Conditions
    generation: int
    requested: int
    #: Where the steps beside the publisher record the Campaign's state (never read back here).
    ledger: LedgerPort
    status: StatusSink
    events: EventSink
    recorder: Recorder
    clock: Clock
    phase: Phase = Phase.PENDING
    verdict: Verdict = Verdict.NONE
    message: str = ""
    health_source: str = "pods"
    started_at: float | None = None
    completed_at: float | None = None
    #: The Campaign's attempts so far: seeded from the ledger when the runner takes the
    #: Campaign up, then kept as each attempt is committed; every publish is built from it.
    tally: Tally = field(default_factory=Tally)
    _last: dict[str, Any] | None = field(default=None, repr=False)

    def observe_generation(self, generation: int) -> None:
        self.generation = generation
        self.conditions.observe(generation)

    async def publish(self) -> None:
        body = build_status(
            requested=self.requested,
            tally=self.tally,
            phase=self.phase,
            verdict=self.verdict,
            conditions=self.conditions,
            generation=self.generation,
            health_source=self.health_source,
            started_at=self.started_at,
            completed_at=self.completed_at,
            message=self.message,
        )
        if body == self._last:
            return  # nothing new: spare the API server a patch
        try:
            await self.status.publish(body)
            self._last = body
            self.recorder.status_patched(self.ref)
            self.recorder.campaign_phase(self.ref, self.phase)
        except Exception as exc:
            # Status is a projection: the next publish carries the same facts.
            log.warning("publishing status of %s/%s failed: %s", self.ref.namespace, self.ref.name, exc)

    async def publish_final(self) -> None:
        """The last status of a campaign has no later publish to carry it: retry it (bounded,
        with backoff) so the status does not stay Running over a finished ledger. If it still
        fails, the next operator start republishes it from the ledger."""
        delay = 0.5
        for _ in range(8):  # ~2 minutes in all
            await self.publish()
            if self._last is not None and self._last.get("phase") == self.phase.value:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 30.0)
        log.error("the final status of %s/%s could not be published", self.ref.namespace, self.ref.name)

    def running(self, message: str) -> None:
        now = self.clock.wall()
        self.message = message
        self.conditions.set(READY, False, "TrialsRunning", message, now)
        self.conditions.set(RECONCILING, True, "TrialsRunning", message, now)
        self.conditions.set(STALLED, False, "Progressing", "", now)

    def finished(self, ok: bool, reason: str, message: str) -> None:
        now = self.clock.wall()
        self.message = message
        self.conditions.set(READY, ok, reason, message, now)
        self.conditions.set(RECONCILING, False, reason, message, now)
        self.conditions.set(STALLED, not ok, reason, message if not ok else "", now)

    def waiting(self, reason: str, message: str, *, reconciling: bool) -> None:
        """Not running trials for a reason a person may want to know (busy subject, suspended)."""
        now = self.clock.wall()
        self.message = message
        self.conditions.set(READY, False, reason, message, now)
        self.conditions.set(RECONCILING, reconciling, reason, message, now)
        if not reconciling:
            self.conditions.set(STALLED, False, reason, "", now)

    async def emit(self, type_: str, reason: str, message: str) -> None:
        try:
            await self.events.emit(type_, reason, message)
        except Exception as exc:
            log.warning("emitting event %s failed: %s", reason, exc)
