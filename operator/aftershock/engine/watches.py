"""The watches a Campaign keeps open while its trials run: its pods (`PodView`, always, fed by
the operator's shared pod watch) and its remediator's Events (`SignalWatch`, when the
remediator says how it reports)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aftershock.engine.podwatch import PodWatches
from aftershock.engine.ports import Clock, EventApi
from aftershock.engine.signals import SignalWatch
from aftershock.engine.view import PodView
from aftershock.model import CampaignRef, CampaignSpec

log = logging.getLogger(__name__)

#: How long a Campaign waits for its Event watch's first list before its first trial.
SIGNALS_SYNC_SECONDS = 10.0


@contextlib.asynccontextmanager
async def campaign_watches(
    *,
    ref: CampaignRef,
    spec: CampaignSpec,
    pod_watches: PodWatches,
    events: EventApi | None,
    clock: Clock,
) -> AsyncIterator[tuple[PodView, SignalWatch | None]]:
    """Both watches running for the block, cancelled when it ends however it ends. The block
    starts only once the Event watch listed what is there: the first kill must not come before,
    or the remediator's Events of trial 1 would be taken for what happened before the Campaign."""
    where = f"{ref.namespace}/{ref.name}"
    view = PodView(pod_watches, ref.namespace, spec.subject.selector)
    tasks = [asyncio.create_task(view.run(), name=f"podview-{where}")]
    rem = spec.remediator
    signals = None
    if rem is not None and rem.signals is not None and events is not None:
        signals = SignalWatch(events, ref.namespace, rem.signals, clock)
        tasks.append(asyncio.create_task(signals.run(), name=f"signals-{where}"))
    try:
        if signals is not None and not await signals.wait_synced(SIGNALS_SYNC_SECONDS):
            log.warning(
                "%s: no list of Events after %.0f s; the remediator's signals of the first "
                "trials may be missed",
                where,
                SIGNALS_SYNC_SECONDS,
            )
        yield view, signals
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
