"""What happens to a Campaign around its trials: its deletion, and a spec change after it
finished. Plain functions over the ledger and the status; no kopf, no API client."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aftershock.engine.ports import LedgerPort, StopSignal
from aftershock.engine.status import acknowledge_generation
from aftershock.model import CampaignRef, Phase

__all__ = [
    "DELETED_MID_ATTEMPT",
    "NAMESPACE_DELETED_MID_ATTEMPT",
    "STOPPED_MID_ATTEMPT",
    "acknowledge_generation",
    "finished_generation_lags",
    "interrupted_reason",
    "record_deletion",
]

log = logging.getLogger(__name__)

#: The error of an attempt cut short by the Campaign's deletion (or its namespace's).
DELETED_MID_ATTEMPT = "the Campaign was deleted during this attempt; it is not run again"
#: The same, seen first as the namespace's deletion (its pods go before its Campaigns).
NAMESPACE_DELETED_MID_ATTEMPT = (
    "the Campaign was deleted during this attempt (its namespace is being deleted); it is not run again"
)
#: The error of an attempt cut short by the operator stopping: its trial runs again at the next start.
STOPPED_MID_ATTEMPT = "the operator stopped during this attempt; its trial runs again at the next start"


def interrupted_reason(stop: StopSignal) -> str:
    """Why an attempt that `stop` cut short is recorded ``interrupted``: the ledger tells a
    deletion (nothing runs again) from the operator stopping (the trial runs again)."""
    return DELETED_MID_ATTEMPT if stop.deleted else STOPPED_MID_ATTEMPT


async def record_deletion(ledger: LedgerPort, ref: CampaignRef, now: float) -> None:
    """The Campaign is being deleted: the ledger says so, with the time, and any attempt still in
    flight becomes ``interrupted`` (it measured nothing about the subject). Idempotent: the
    runner calls it before the finalizer goes, the DELETED watch event again after."""
    for lost in await ledger.mark_deleted(ref.uid, DELETED_MID_ATTEMPT, now):
        log.info(
            "campaign %s/%s deleted: trial %d attempt %d recorded as interrupted",
            ref.namespace,
            ref.name,
            lost.trial_index + 1,
            lost.attempt,
        )


def finished_generation_lags(status: Mapping[str, Any], generation: int) -> bool:
    """A finished Campaign whose spec changed since (only ``spec.suspend`` can): its status still
    names the older generation, so GitOps tools would see it in progress for ever."""
    finished = status.get("phase") in (Phase.SUCCEEDED.value, Phase.FAILED.value)
    return finished and status.get("observedGeneration") != generation
