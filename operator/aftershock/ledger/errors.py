"""The ledger's errors. Each wraps the driver's error as ``__cause__`` and says what to do."""

from __future__ import annotations


class LedgerError(Exception):
    """The ledger cannot do what was asked: locked, full, corrupt, newer schema, bad call."""


class DuplicateTrialError(LedgerError):
    """A trial index that is already completed was completed (or started) again."""

    def __init__(self, campaign_uid: str, trial_index: int) -> None:
        super().__init__(
            f"trial {trial_index} of campaign {campaign_uid} is already completed in the ledger; "
            "a completed trial index is never run twice"
        )
        self.campaign_uid = campaign_uid
        self.trial_index = trial_index


class CampaignNotFoundError(LedgerError, LookupError):
    """No campaign in the ledger under that uid or namespace/name (also a `LookupError`)."""
