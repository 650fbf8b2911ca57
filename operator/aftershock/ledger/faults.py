"""Faults that stay until healed: the intent before injection, the injection, the heal.

A fault row is written (`record_fault`) before its kind injects anything, so a crash at any
moment after leaves a row that says what may be in place; `mark_fault_injected` adds what the
kind recorded (what its heal needs), `mark_fault_healed` closes it. `open_faults` is what is
left to heal: every row without ``healed_at``, injected or only intended (a heal of a fault
never injected finds nothing to undo).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aftershock.ledger import sql
from aftershock.ledger.connection import Connection
from aftershock.ledger.errors import LedgerError
from aftershock.model import Victim

_COLUMNS = (
    "attempt_id, campaign_uid, kind, namespace, chaos, victims, details, intended_at, "
    "injected_at, heal_due, healed_at, heal_note"
)


@dataclass(frozen=True)
class FaultRow:
    """One fault as the ledger holds it."""

    attempt_id: int
    campaign_uid: str
    kind: str
    namespace: str
    #: The Campaign's chaos spec as given (camelCase keys), for the kind's heal.
    chaos: Mapping[str, Any]
    victims: tuple[Victim, ...]
    #: What the kind recorded when it injected (what its heal undoes).
    details: Mapping[str, Any]
    intended_at: float
    injected_at: float | None
    #: When the heal is due (injected + chaos.durationSeconds), unix seconds.
    heal_due: float | None
    healed_at: float | None
    heal_note: str | None


def _row(r: tuple[Any, ...]) -> FaultRow:
    return FaultRow(
        attempt_id=int(r[0]),
        campaign_uid=str(r[1]),
        kind=str(r[2]),
        namespace=str(r[3]),
        chaos=json.loads(r[4]),
        victims=tuple(Victim(**v) for v in json.loads(r[5])),
        details=json.loads(r[6]),
        intended_at=float(r[7]),
        injected_at=r[8],
        heal_due=r[9],
        healed_at=r[10],
        heal_note=r[11],
    )


class Faults(Connection):
    """The ledger's fault queries (a part of `aftershock.ledger.store.Ledger`)."""

    async def record_fault(
        self,
        attempt_id: int,
        campaign_uid: str,
        *,
        kind: str,
        namespace: str,
        chaos: Mapping[str, Any],
        victims: Sequence[Victim],
        now: float,
    ) -> None:
        """The intent, committed before anything is injected."""
        async with self._transaction("recording a fault's intent") as tx:
            await tx.execute(
                "INSERT INTO faults (attempt_id, campaign_uid, kind, namespace, chaos, victims, intended_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt_id,
                    campaign_uid,
                    kind,
                    namespace,
                    sql.dumps(chaos),
                    sql.dumps([dataclasses.asdict(v) for v in victims]),
                    now,
                ),
            )

    async def mark_fault_injected(
        self, attempt_id: int, details: Mapping[str, Any], heal_due: float | None, now: float
    ) -> None:
        async with self._transaction("recording a fault injected") as tx:
            cursor = await tx.execute(
                "UPDATE faults SET injected_at = ?, details = ?, heal_due = ? WHERE attempt_id = ?",
                (now, sql.dumps(details), heal_due, attempt_id),
            )
            if cursor.rowcount == 0:
                raise LedgerError(f"no fault recorded for attempt {attempt_id}")

    async def mark_fault_healed(self, attempt_id: int, note: str, now: float) -> bool:
        """Close the fault; False when it was closed already (another heal came first)."""
        async with self._transaction("recording a fault healed") as tx:
            cursor = await tx.execute(
                "UPDATE faults SET healed_at = ?, heal_note = ? WHERE attempt_id = ? AND healed_at IS NULL",
                (now, note, attempt_id),
            )
            return cursor.rowcount > 0

    async def open_faults(self, campaign_uid: str | None = None) -> list[FaultRow]:
        """Faults not yet healed (of one Campaign run, or of all), oldest first."""
        where = "healed_at IS NULL" + ("" if campaign_uid is None else " AND campaign_uid = ?")
        params: tuple[Any, ...] = () if campaign_uid is None else (campaign_uid,)
        async with self._read("reading open faults") as db:
            found = await sql.rows(
                db, f"SELECT {_COLUMNS} FROM faults WHERE {where} ORDER BY attempt_id", params
            )
        return [_row(r) for r in found]

    async def faults(self, campaign_uid: str) -> list[FaultRow]:
        """Every fault of a Campaign run, healed or not, oldest first."""
        async with self._read("reading faults") as db:
            found = await sql.rows(
                db,
                f"SELECT {_COLUMNS} FROM faults WHERE campaign_uid = ? ORDER BY attempt_id",
                (campaign_uid,),
            )
        return [_row(r) for r in found]
