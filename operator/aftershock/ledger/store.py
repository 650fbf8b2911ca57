"""`Ledger`: the trial ledger on one SQLite file, and the only code that speaks SQL.

Durability: the file lives on the operator's PVC, in WAL mode with ``synchronous=FULL``, and
every write is one explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``. An attempt is committed before
its pod is killed and its outcome is committed in the same transaction as the completed
trial, so after a crash or a power loss the ledger holds either the whole trial or an
in-flight attempt that `Ledger.interrupt_inflight` turns into ``interrupted``, never half.

Concurrency: one `Ledger` is one connection, shared by coroutines; an `asyncio.Lock` keeps
their transactions from interleaving on it. Another process holding the write lock makes a
write wait up to ``busy_timeout`` and then fail with a `LedgerError` saying so.
"""

from __future__ import annotations

from aftershock.ledger.alerts import AlertNotice, Alerts
from aftershock.ledger.attempts import Attempts
from aftershock.ledger.campaigns import CampaignRow, Campaigns, RunRow
from aftershock.ledger.faults import FaultRow, Faults
from aftershock.ledger.history import History
from aftershock.ledger.sql import BUSY_TIMEOUT_MS

__all__ = ["BUSY_TIMEOUT_MS", "AlertNotice", "CampaignRow", "FaultRow", "Ledger", "RunRow"]


class Ledger(Campaigns, Attempts, History, Faults, Alerts):
    """The trial ledger. Open with `Ledger.open`; close with `close` or ``async with``.

    Its queries live by what they hold: campaigns and runs in `aftershock.ledger.campaigns`,
    attempts and trials in `aftershock.ledger.attempts`, ticks, trends and retention in
    `aftershock.ledger.history`, faults that stay until healed in `aftershock.ledger.faults`,
    alert notifications in `aftershock.ledger.alerts`, the connection, its migrations and
    its transactions in `aftershock.ledger.connection`.
    """
