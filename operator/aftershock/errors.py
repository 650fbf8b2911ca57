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


class NotFoundError(ApiError):
    """The object asked for does not exist (any more). For a delete: already done."""


class ForbiddenError(ApiError):
    """RBAC refused the call: a right the operator was not given (a chaos kind left out)."""


class ConflictError(ApiError):
    """A precondition failed (another uid under the name, a stale resourceVersion)."""


class SpecError(ValueError):
    """A Campaign spec that cannot run. `field` is the dotted path a person has to fix."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"spec.{field_path}: {message}")
        self.field = f"spec.{field_path}"
        self.reason = message
