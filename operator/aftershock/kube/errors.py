"""The Kubernetes API's failures as one hierarchy, so callers decide by kind, not by status code.

`KubeUnavailableError` (connection trouble, timeouts, 429, 5xx: retry with backoff; an
infrastructure error, never the subject's fault), `KubeForbiddenError` (RBAC),
`KubeNotFoundError`, `KubeConflictError` (409, incl. a failed UID precondition),
`KubeGoneError` (410: a watch's resourceVersion is too old; re-list).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from aftershock.errors import ApiError, ConflictError, ForbiddenError, NotFoundError, TransientApiError


class KubeError(ApiError):
    """An API call failed; `status` is the HTTP status when there was one."""


class KubeUnavailableError(KubeError, TransientApiError):
    """Transient: the API server could not be reached or asked us to back off."""


class KubeForbiddenError(KubeError, ForbiddenError):
    """RBAC refused the call: a configuration problem a person has to fix."""


class KubeNotFoundError(KubeError, NotFoundError):
    pass


class KubeConflictError(KubeError, ConflictError):
    pass


class KubeGoneError(KubeError):
    """A watch asked for a resourceVersion the server no longer has: list again."""


def _message(body: Any) -> str:
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body)
            return str(data.get("message", body))
        except (ValueError, AttributeError):
            return str(body)[:300]
    return str(body)


def error_for_status(status: int, body: Any, what: str) -> KubeError:
    msg = f"{what}: {status} {_message(body)}"
    if status in {401, 403}:
        return KubeForbiddenError(msg, status)
    if status == 404:
        return KubeNotFoundError(msg, status)
    if status == 409:
        return KubeConflictError(msg, status)
    if status == 410:
        return KubeGoneError(msg, status)
    if status == 429 or status >= 500 or status == 0:
        return KubeUnavailableError(msg, status)
    return KubeError(msg, status)


def map_error(exc: BaseException, what: str) -> KubeError:
    if isinstance(exc, ApiException):
        return error_for_status(int(exc.status or 0), exc.body, what)
    return KubeUnavailableError(f"{what}: {type(exc).__name__}: {exc}")


#: What the transport raises when the API server cannot be reached: unavailable, retry.
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
