"""Alert notifications: what Alertmanager delivered for a Campaign's trials, in the order
received, and the detection milestones derived from them (one transaction each)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aftershock.alerting import Alert
from aftershock.ledger import sql
from aftershock.ledger.connection import Connection
from aftershock.model import Milestone


@dataclass(frozen=True)
class AlertNotice:
    """One alert of one notification, as recorded for a trial."""

    seq: int
    attempt_id: int
    #: The attempt's trial index (0-based) and attempt number, as `AttemptRecord` names them.
    trial_index: int
    attempt: int
    alert: Alert
    #: When the receiver got the notification (unix seconds), and seconds after the kill.
    received_at: float
    offset: float

    def as_json(self) -> dict[str, Any]:
        return {**self.alert.as_json(), "receivedAt": self.received_at, "offset": self.offset}


_COLUMNS = (
    "n.seq, n.attempt_id, a.trial_index, a.attempt, n.fingerprint, n.status, n.labels, n.starts_at, "
    'n.ends_at, n.received_at, n."offset"'
)


def _notice(r: tuple[Any, ...]) -> AlertNotice:
    return AlertNotice(
        seq=int(r[0]),
        attempt_id=int(r[1]),
        trial_index=int(r[2]),
        attempt=int(r[3]),
        alert=Alert(
            fingerprint=str(r[4]),
            firing=r[5] == "firing",
            labels=json.loads(r[6]),
            starts_at=float(r[7]),
            ends_at=None if r[8] is None else float(r[8]),
        ),
        received_at=float(r[9]),
        offset=float(r[10]),
    )


class Alerts(Connection):
    """The ledger's alert queries (a part of `aftershock.ledger.store.Ledger`)."""

    async def record_alert(
        self,
        attempt_id: int,
        campaign_uid: str,
        alert: Alert,
        *,
        received_at: float,
        offset: float,
        milestones: dict[str, Milestone],
    ) -> None:
        """The notification, and the milestones it reached (a milestone already recorded for
        the attempt is kept: the first notification to reach it wins)."""
        async with self._transaction("recording an alert notification") as tx:
            await tx.execute(
                "INSERT INTO alert_notifications (attempt_id, campaign_uid, fingerprint, alertname, "
                'status, labels, starts_at, ends_at, received_at, "offset") '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt_id,
                    campaign_uid,
                    alert.fingerprint,
                    alert.name,
                    "firing" if alert.firing else "resolved",
                    sql.dumps(dict(alert.labels)),
                    alert.starts_at,
                    alert.ends_at,
                    received_at,
                    offset,
                ),
            )
            await tx.executemany(
                'INSERT OR IGNORE INTO subject_milestones (attempt_id, name, wall, "offset") '
                "VALUES (?, ?, ?, ?)",
                [(attempt_id, name, m.wall, m.offset) for name, m in milestones.items()],
            )

    async def alert_notices(self, campaign_uid: str) -> list[AlertNotice]:
        """Every alert notification recorded for a Campaign run, in the order received."""
        async with self._read("reading alert notifications") as db:
            found = await sql.rows(
                db,
                f"SELECT {_COLUMNS} FROM alert_notifications n JOIN attempts a ON a.id = n.attempt_id "
                "WHERE n.campaign_uid = ? ORDER BY n.seq",
                (campaign_uid,),
            )
        return [_notice(r) for r in found]
