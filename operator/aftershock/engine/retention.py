"""Retention: old runs pruned from the ledger to one summary row each (ADR 0015).

Three ways in: a scheduled Campaign's ``spec.schedule.historyLimit`` after each of its runs
(`aftershock.engine.schedule`), the operator's ``--keep-runs-days`` at start and every sweep
interval, and ``aftershock prune`` by hand. All of them go through `prune`, which never prunes
the newest run, the run named by the Campaign's ``spec.trend.baselineRun``, or a run that has
not finished. Plain functions over the ledger; no kopf, no API client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aftershock.engine.ports import LedgerPort

log = logging.getLogger(__name__)

DAY = 86_400.0


async def prune(
    ledger: LedgerPort, campaign_uid: str, *, keep: int, finished_before: float | None, now: float
) -> list[int]:
    """Prune one Campaign's runs beyond its `keep` newest (and, with `finished_before`, only
    those finished before it); the baseline run its latest spec names is kept whole."""
    runs = await ledger.run_summaries(campaign_uid)
    latest = await ledger.get_campaign(runs[-1].run_uid) if runs else None
    trend = latest.spec.get("trend") if latest is not None else None
    baseline = trend.get("baselineRun") if isinstance(trend, dict) else None
    return await ledger.prune_runs(
        campaign_uid,
        keep=keep,
        protect=(baseline,) if isinstance(baseline, int) else (),
        finished_before=finished_before,
        now=now,
    )


async def prune_older_than(ledger: LedgerPort, days: float, now: float) -> dict[str, list[int]]:
    """Every Campaign's runs that finished more than `days` ago (each keeps its newest run)."""
    pruned: dict[str, list[int]] = {}
    for uid in await ledger.campaign_uids(min_runs=2):
        found = await prune(ledger, uid, keep=1, finished_before=now - days * DAY, now=now)
        if found:
            pruned[uid] = found
    return pruned


async def prune_forever(ledger: LedgerPort, days: float, interval: float, clock: Callable[[], float]) -> None:
    """``--keep-runs-days``: prune now, then every `interval` seconds, until cancelled."""
    while True:
        try:
            pruned = await prune_older_than(ledger, days, clock())
            for uid, runs in pruned.items():
                log.info("retention: campaign %s runs %s pruned to their summaries", uid, runs)
        except Exception:
            log.exception("retention: pruning failed")
        if interval <= 0:
            return
        await asyncio.sleep(interval)
