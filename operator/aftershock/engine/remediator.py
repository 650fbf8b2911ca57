"""The remediator scaler: for baseline trials, scale the workload that heals the subject to
zero before the kill and back after, to measure what it adds.

What it scaled to is recorded with the attempt (``initial_state["remediator"]``) before the
kill, so an operator restart mid-trial restores it from the ledger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aftershock.engine.ports import Clock, ScaleApi
from aftershock.errors import ApiError
from aftershock.model import Remediator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemediatorScaler:
    scaler: ScaleApi | None
    namespace: str
    clock: Clock

    async def read(self, remediator: Remediator) -> dict[str, Any]:
        """The workload and its desired replicas now: what to restore."""
        assert self.scaler is not None
        desired, _ = await self.scaler.get_replicas(remediator.kind.value, self.namespace, remediator.name)
        return {"kind": remediator.kind.value, "name": remediator.name, "replicas": desired}

    async def scale_down(self, remediator: Mapping[str, Any]) -> str | None:
        """Scale to zero and wait until its pods are gone (the scale subresource's status).
        Checked every 0.25 s for at most 60 s: a bounded wait on a rare step, not a hot loop.
        Returns an error text or None."""
        assert self.scaler is not None
        kind, name = str(remediator["kind"]), str(remediator["name"])
        try:
            await self.scaler.set_replicas(kind, self.namespace, name, 0)
            deadline = self.clock.monotonic() + 60
            while self.clock.monotonic() < deadline:
                _, current = await self.scaler.get_replicas(kind, self.namespace, name)
                if current == 0:
                    return None
                await asyncio.sleep(0.25)
        except ApiError as exc:
            return f"scaling the remediator {kind} {name} to 0 failed: {exc}"
        return f"the remediator {kind} {name} still has pods 60s after scaling it to 0"

    async def restore(self, remediator: Mapping[str, Any]) -> None:
        if self.scaler is None:
            return
        kind, name, replicas = str(remediator["kind"]), str(remediator["name"]), int(remediator["replicas"])
        for attempt in range(5):
            try:
                await self.scaler.set_replicas(kind, self.namespace, name, replicas)
                return
            except ApiError as exc:
                if not exc.transient:
                    log.error("restoring the remediator %s %s to %d failed: %s", kind, name, replicas, exc)
                    return
                await asyncio.sleep(0.5 * 2**attempt)
        log.error("restoring the remediator %s %s to %d failed after retries", kind, name, replicas)
