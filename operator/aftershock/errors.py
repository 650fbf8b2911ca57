"""Error kinds shared across layers, so the engine can decide by kind without importing an
adapter: an adapter's errors subclass these."""

from __future__ import annotations


class ApiError(Exception):
    """A call to an outside API failed. `status` is the HTTP status when there was one;
    `transient` says whether retrying later may succeed (an infrastructure error, never the
    subject's fault)."""

    transient: bool = False

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientApiError(ApiError):
    transient = True


class ProbeUnavailableError(TransientApiError):
    """The subject's own health API (PD for TiKV) could not be asked or answered nonsense:
    an infrastructure error, never the subject's failure."""
