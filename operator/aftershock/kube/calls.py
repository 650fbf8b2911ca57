"""One API request as aftershock makes it: the payload read as plain JSON, errors mapped to
`aftershock.kube.errors` kinds, counted by verb. The base of `Kube` and of its mixins, so a
mixin (`aftershock.kube.volumes`) calls the same `_json` without restating it."""

from __future__ import annotations

import collections
import json
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from aftershock.kube import errors
from aftershock.kube.errors import KubeNotFoundError

_REQUEST_TIMEOUT = 15.0


class Calls:
    #: Non-watch requests made, by verb: a cheap way for benchmarks and metrics to see how many
    #: API calls a trial costs.
    requests: collections.Counter[str]

    async def _json(self, verb: str, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        self.requests[verb] += 1
        try:
            resp = await call(*args, _preload_content=False, _request_timeout=_REQUEST_TIMEOUT, **kwargs)
            async with resp:
                body = await resp.read()
                status = resp.status
        except ApiException as exc:
            raise errors.map_error(exc, what) from exc
        except errors.TRANSPORT_ERRORS as exc:
            raise errors.map_error(exc, what) from exc
        # With _preload_content=False the generated client returns every response, error
        # statuses included: judging the status is our job.
        if not 200 <= status <= 299:
            raise errors.error_for_status(status, body, what)
        return json.loads(body) if body else None

    async def _get_if_present(self, kind: str, read: Any, namespace: str, name: str) -> Any:
        """A namespaced object by name, or None when there is none: for the callers that take
        absence as an answer, not an error."""
        try:
            return await self._json("get", f"get {kind} {namespace}/{name}", read, name, namespace)
        except KubeNotFoundError:
            return None
