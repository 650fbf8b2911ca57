"""The sweeper: what a Campaign that is gone or finished left behind, put right.

At operator start and then periodically (``--sweep-interval``):

- attempts still in flight for a Campaign run that no runner will come back to (the Campaign
  object is gone or is another object now, the run was superseded by a newer run, or the run
  is recorded as finished) are closed as ``interrupted``, and the remediator their baseline
  trial had scaled down is scaled back to the replicas the attempt recorded;
- faults that stay until healed (a partition) which the ledger holds as not healed, of a run
  no runner will come back to, are healed through their chaos kind and recorded as healed;
- workloads labelled ``aftershock.dev/scaled-down=true`` whose Campaign (annotation
  ``aftershock.dev/scaled-down-by``) is gone or finished, with no attempt of it in flight, are
  scaled back to ``aftershock.dev/original-replicas`` and lose the record.

A Campaign that exists and is unfinished is never touched: its own runner closes its attempts
and restores its remediator when it starts. No kopf; the API through the `SweepApi` port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aftershock.chaos.base import FaultApi
from aftershock.engine import heal
from aftershock.errors import ApiError
from aftershock.ledger import CampaignRow, Ledger
from aftershock.model import Phase

log = logging.getLogger(__name__)

#: The record `aftershock.kube.remediators.AnnotatingScaler` leaves on a scaled-down workload.
ORIGINAL_REPLICAS = "aftershock.dev/original-replicas"
SCALED_DOWN_BY = "aftershock.dev/scaled-down-by"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")

SWEPT = "swept: its Campaign is gone or finished, no runner would close this attempt"


class SweepApi(Protocol):
    async def find_campaign(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    async def list_scaled_down(
        self, kind: str, namespace: str | None
    ) -> list[tuple[str, str, Mapping[str, str]]]:
        """(namespace, name, annotations) of the workloads marked as scaled down."""

    async def restore(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        """Scale to `replicas` and remove the scaled-down record."""


@dataclass
class SweepResult:
    interrupted: list[str] = field(default_factory=list)  # "namespace/name run N trial I"
    restored: list[str] = field(default_factory=list)  # "Kind namespace/name -> replicas"
    healed: list[str] = field(default_factory=list)  # faults healed


_FINISHED = {Phase.SUCCEEDED.value, Phase.FAILED.value}


def _object_finished(obj: Mapping[str, Any]) -> bool:
    return ((obj.get("status") or {}).get("phase")) in _FINISHED


async def _abandoned(ledger: Ledger, api: SweepApi, row: CampaignRow) -> bool:
    if row.phase.value in _FINISHED or row.phase is Phase.DELETED:
        return True
    obj = await api.find_campaign(row.namespace, row.name)
    if obj is None or (obj.get("metadata") or {}).get("uid") != row.object_uid:
        return True
    latest = await ledger.latest_run(row.object_uid)
    return latest is not None and latest.run_uid != row.uid


async def _heal_abandoned(ledger: Ledger, api: SweepApi, faults: FaultApi, result: SweepResult) -> None:
    """Heal the open faults of runs no runner will come back to (finished runs included: a
    fault must never outlive its trial)."""
    for run_uid in dict.fromkeys(f.campaign_uid for f in await ledger.open_faults()):
        row = await ledger.get_campaign(run_uid)
        try:
            if row is not None and not await _abandoned(ledger, api, row):
                continue
        except ApiError as exc:
            log.warning("sweeper: cannot tell whether run %s is gone: %s", run_uid, exc)
            continue
        report = await heal.heal_faults(
            ledger, faults, time.time, why="swept: its Campaign is gone or finished", campaign_uid=run_uid
        )
        result.healed.extend(report.healed)


async def sweep(
    ledger: Ledger, api: SweepApi, namespaces: Sequence[str], now: float, faults: FaultApi | None = None
) -> SweepResult:
    """One sweep; `namespaces` empty: every namespace. `faults`: the API the chaos kinds heal
    through (None: no fault is healed)."""
    result = SweepResult()
    if faults is not None:
        await _heal_abandoned(ledger, api, faults, result)
    busy_campaigns: set[str] = set()
    for row in await ledger.campaigns_in_flight():
        try:
            abandoned = await _abandoned(ledger, api, row)
        except ApiError as exc:
            log.warning("sweeper: cannot tell whether %s/%s is gone: %s", row.namespace, row.name, exc)
            busy_campaigns.add(row.object_uid)
            continue
        if not abandoned:
            busy_campaigns.add(row.object_uid)
            continue
        for lost in await ledger.interrupt_inflight(row.uid, SWEPT, now):
            result.interrupted.append(
                f"{row.namespace}/{row.name} run {row.run} trial {lost.trial_index + 1}"
            )
            remediator = lost.initial_state.get("remediator")
            if isinstance(remediator, Mapping):
                kind, name = str(remediator["kind"]), str(remediator["name"])
                replicas = int(remediator["replicas"])
                try:
                    await api.restore(kind, row.namespace, name, replicas)
                    result.restored.append(f"{kind} {row.namespace}/{name} -> {replicas}")
                except ApiError as exc:
                    log.warning("sweeper: restoring %s %s/%s failed: %s", kind, row.namespace, name, exc)
    for kind in WORKLOAD_KINDS:
        for namespace in namespaces or (None,):
            try:
                marked = await api.list_scaled_down(kind, namespace)
            except ApiError as exc:
                log.warning("sweeper: listing scaled-down %ss failed: %s", kind, exc)
                continue
            for ns, name, record in marked:
                await _sweep_workload(api, kind, ns, name, record, busy_campaigns, result)
    return result


async def _sweep_workload(
    api: SweepApi,
    kind: str,
    namespace: str,
    name: str,
    annotations: Mapping[str, str],
    busy_campaigns: set[str],
    result: SweepResult,
) -> None:
    holder = annotations.get(SCALED_DOWN_BY, "")
    c_namespace, _, rest = holder.partition("/")
    c_name, _, c_uid = rest.partition("/")
    try:
        replicas = int(annotations.get(ORIGINAL_REPLICAS, ""))
    except ValueError:
        log.warning(
            "sweeper: %s %s/%s has no readable %s; left alone", kind, namespace, name, ORIGINAL_REPLICAS
        )
        return
    if c_uid in busy_campaigns:
        return
    try:
        obj = await api.find_campaign(c_namespace, c_name) if c_name else None
        alive = (
            obj is not None and (obj.get("metadata") or {}).get("uid") == c_uid and not _object_finished(obj)
        )
        if alive:
            return
        await api.restore(kind, namespace, name, replicas)
    except ApiError as exc:
        log.warning("sweeper: restoring %s %s/%s failed: %s", kind, namespace, name, exc)
        return
    result.restored.append(f"{kind} {namespace}/{name} -> {replicas}")


async def sweep_forever(
    ledger: Ledger,
    api: SweepApi,
    namespaces: Sequence[str],
    interval: float,
    clock: Callable[[], float],
    faults: FaultApi | None = None,
) -> None:
    """Sweep now, then every `interval` seconds, until cancelled. A failed sweep is logged."""
    while True:
        try:
            result = await sweep(ledger, api, namespaces, clock(), faults)
            if result.interrupted or result.restored or result.healed:
                log.info(
                    "sweeper: closed %d attempts as interrupted (%s); restored %s; healed %s",
                    len(result.interrupted),
                    ", ".join(result.interrupted) or "-",
                    ", ".join(result.restored) or "nothing",
                    ", ".join(result.healed) or "nothing",
                )
        except Exception:
            log.exception("sweeper: the sweep failed")
        if interval <= 0:
            return  # only at start
        await asyncio.sleep(interval)


__all__ = ["SWEPT", "SweepApi", "SweepResult", "sweep", "sweep_forever"]
