"""Healing faults that stay until undone: the one entry point for every place that must heal.

`heal_faults` heals what the ledger holds as not healed (of one Campaign run, or of every run)
through each fault's kind (`aftershock.chaos.registry`) and records each heal as it happens.
It is called:

- by the trial, after ``chaos.durationSeconds`` and whenever the trial ends (stop, error);
- by the runner when it stops (suspend, deletion of the Campaign or its namespace, operator
  exit), before it lets go of the subject lock;
- at resume, before anything else: what a crashed operator left in place;
- by the sweeper, for Campaign runs no runner will come back to.

A heal is idempotent (a kind's heal of a fault already undone finds nothing to do), so two
callers racing heal once and record once (`Ledger.mark_fault_healed` closes a row only once).
A heal that fails leaves its row open for the next caller, and says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aftershock.chaos import registry
from aftershock.chaos.base import Fault, FaultApi
from aftershock.engine.ports import StopSignal
from aftershock.errors import ApiError
from aftershock.ledger import FaultRow, Ledger
from aftershock.model import ChaosMode, ChaosSpec, PartitionDirection, Victim

log = logging.getLogger(__name__)


@dataclass
class HealReport:
    """What one call healed, and what it could not (each with the reason)."""

    healed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def chaos_json(chaos: ChaosSpec) -> dict[str, Any]:
    """The chaos spec as the ledger keeps it with a fault (what its heal needs)."""
    return {
        "type": chaos.type,
        "mode": chaos.mode.value,
        "value": chaos.value,
        "gracePeriodSeconds": chaos.grace_period_seconds,
        "target": chaos.target,
        "durationSeconds": chaos.duration_seconds,
        "container": chaos.container,
        "direction": None if chaos.direction is None else chaos.direction.value,
        "image": chaos.image,
        "nodes": list(chaos.nodes),
        "acknowledgeNodeFailure": chaos.acknowledge_node_failure,
    }


def _chaos_of(raw: Mapping[str, Any]) -> ChaosSpec:
    return ChaosSpec(
        type=str(raw.get("type")),
        mode=ChaosMode(str(raw.get("mode", "one"))),
        value=raw.get("value"),
        grace_period_seconds=int(raw.get("gracePeriodSeconds") or 0),
        target=str(raw.get("target", "Any")),
        duration_seconds=raw.get("durationSeconds"),
        container=raw.get("container"),
        direction=None if raw.get("direction") is None else PartitionDirection(str(raw["direction"])),
        image=raw.get("image"),
        nodes=tuple(raw.get("nodes") or ()),
        acknowledge_node_failure=bool(raw.get("acknowledgeNodeFailure", False)),
    )


def _label(row: FaultRow) -> str:
    names = ", ".join(v.name for v in row.victims)
    return f"{row.kind} of {row.namespace}/{names} (attempt {row.attempt_id})"


async def heal_one(
    ledger: Ledger, api: FaultApi, row: FaultRow, why: str, now: Callable[[], float]
) -> str | None:
    """Heal one fault and record it; None when healed, else why not (the row stays open)."""
    info = registry.KINDS.get(row.kind)
    if info is None:
        return f"{_label(row)}: no chaos kind {row.kind!r} in this operator to heal it"
    if info.heal is not None:
        fault = Fault(row.namespace, row.victims, _chaos_of(row.chaos), row.details)
        try:
            error = await info.heal(fault, api)
        except ApiError as exc:
            error = f"the API refused: {exc}"
        if error is not None:
            return f"{_label(row)}: {error}"
    await ledger.mark_fault_healed(row.attempt_id, why, now())
    return None


async def heal_faults(
    ledger: Ledger,
    api: FaultApi,
    now: Callable[[], float],
    *,
    why: str,
    campaign_uid: str | None = None,
) -> HealReport:
    """Heal every fault the ledger holds as not healed, of `campaign_uid` (a run's uid, as the
    ledger keys Campaigns) or of every run; `why` is recorded with each heal."""
    report = HealReport()
    for row in await ledger.open_faults(campaign_uid):
        failed = await heal_one(ledger, api, row, why, now)
        if failed is None:
            report.healed.append(_label(row))
            log.info("healed %s: %s", _label(row), why)
        else:
            report.failed.append(failed)
            log.warning("could not heal %s", failed)
    return report


@dataclass
class TrialFault:
    """One trial's fault, for a kind that heals (`ChaosKindInfo.heal`): the intent before the
    injection, the injection, the heal after ``chaos.durationSeconds`` (or sooner, when the
    trial ends for any reason), each in the ledger as it happens. For a kind the cluster heals
    every step is a no-op."""

    ledger: Ledger
    api: FaultApi
    heals: bool
    attempt_id: int
    campaign_uid: str
    namespace: str
    chaos: ChaosSpec
    victims: tuple[Victim, ...]
    wall: Callable[[], float]
    monotonic: Callable[[], float]
    #: (monotonic, wall) of the heal, once healed.
    healed: tuple[float, float] | None = None
    #: Why the last heal failed (the fault stays open in the ledger for the next caller).
    heal_error: str | None = None
    _recorded: bool = False

    async def intend(self) -> None:
        if not self.heals:
            return
        await self.ledger.record_fault(
            self.attempt_id,
            self.campaign_uid,
            kind=self.chaos.type,
            namespace=self.namespace,
            chaos=chaos_json(self.chaos),
            victims=self.victims,
            now=self.wall(),
        )
        self._recorded = True

    async def injected(self, details: Mapping[str, Any]) -> None:
        if not self._recorded:
            return
        now = self.wall()
        due = None if self.chaos.duration_seconds is None else now + self.chaos.duration_seconds
        await self.ledger.mark_fault_injected(self.attempt_id, details, due, now)

    async def heal(self, why: str) -> None:
        """Heal now, unless healed already; a failure is kept in `heal_error`."""
        if not self._recorded or self.healed is not None:
            return
        for row in await self.ledger.open_faults(self.campaign_uid):
            if row.attempt_id != self.attempt_id:
                continue
            failed = await heal_one(self.ledger, self.api, row, why, self.wall)
            if failed is not None:
                self.heal_error = failed
                log.warning("could not heal %s", failed)
                return
        self.healed = (self.monotonic(), self.wall())
        self.heal_error = None

    async def hold(self, stop: StopSignal, healed: Callable[[float, float], None] | None = None) -> None:
        """Hold the fault for ``chaos.durationSeconds`` (less if the trial is stopped), then heal;
        `healed(mono, wall)` is told the moment the heal is done (the trial's recovery counts
        the victims back from it)."""
        if not self._recorded:
            return
        await stop.wait(self.chaos.duration_seconds)
        await self.heal("held for chaos.durationSeconds" if not stop.is_set() else "the trial was stopped")
        if self.healed is not None and healed is not None:
            healed(*self.healed)


__all__ = ["HealReport", "TrialFault", "chaos_json", "heal_faults", "heal_one"]
