"""The trial ledger: every attempt and every completed trial, durably, on one SQLite file.

Rule: the only package that holds SQL or imports a SQLite driver. Everything it returns is a
model value (`AttemptRecord`, `CampaignRow`, ...), never a row. The ledger is the source of
truth for trials; a Campaign's status is a projection of it. Schema and reasons: ADR 0002.
"""

from aftershock.ledger.errors import CampaignNotFoundError, DuplicateTrialError, LedgerError
from aftershock.ledger.history import Judgement, RunSummary, TickAction, TickRow
from aftershock.ledger.schema import SCHEMA_VERSION
from aftershock.ledger.store import CampaignRow, Ledger, RunRow

__all__ = [
    "SCHEMA_VERSION",
    "CampaignNotFoundError",
    "CampaignRow",
    "DuplicateTrialError",
    "Judgement",
    "Ledger",
    "LedgerError",
    "RunRow",
    "RunSummary",
    "TickAction",
    "TickRow",
]
