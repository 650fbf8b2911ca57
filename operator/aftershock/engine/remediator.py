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

#: How long a baseline trial waits for the scaled-down remediator's pods to be gone: the
#: default 30 s grace period of a process that ignores SIGTERM, with room to spare.
STOP_WAIT_S = 90.0


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
        """Scale to zero and wait until its pods are gone, terminating ones included (a pod
        marked for deletion runs, and may act, until its containers exit), for at most
        `STOP_WAIT_S`. Returns an error text or None."""
        assert self.scaler is not None
        kind, name = str(remediator["kind"]), str(remediator["name"])
        started = self.clock.monotonic()
        try:
            await self.scaler.set_replicas(kind, self.namespace, name, 0)
            left = await self.scaler.pods_gone(kind, self.namespace, name, STOP_WAIT_S)
        except ApiError as exc:
            return f"scaling the remediator {kind} {name} to 0 failed: {exc}"
        if left:
            return (
                f"the remediator {kind} {name} still has {left} pod(s) {STOP_WAIT_S:g}s after scaling "
                "it to 0: make it exit on SIGTERM or shorten its terminationGracePeriodSeconds"
            )
        log.info(
            "remediator %s %s stopped (no pod left) %.1fs after scaling it to 0",
            kind,
            name,
            self.clock.monotonic() - started,
        )
        return None

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
