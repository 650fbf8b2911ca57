"""The alert receiver: an Alertmanager-compatible webhook endpoint, on a port of its own.

``POST /api/v1/alerts`` takes Alertmanager's webhook notification (``webhook_configs`` with
``http_config.authorization.credentials_file`` holding the token). Every request must carry
``Authorization: Bearer <token>``, the token the operator reads from a file (a Secret mounted
into its pod; re-read when the file changes, so a rotated Secret takes effect without a
restart). Answers: 200 with what was recorded, 401 without the token, 400 for a body that is no
webhook notification (its reason), 413 over `MAX_BODY`, 5xx when the ledger could not record
it (Alertmanager retries). What an alert may reach is decided behind this, by its namespace
label (`aftershock.engine.alerts`): the token proves the sender, not the alert's namespace.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from aiohttp import web

from aftershock.alerting import Alert, PayloadError, parse_notification

log = logging.getLogger(__name__)

#: Where Alertmanager's webhook_configs url points (path; the host is the operator's Service).
PATH = "/api/v1/alerts"
#: Largest body taken: 1,000 alerts of a few labels each fit well below.
MAX_BODY = 4 * 1024 * 1024


class Delivered(Protocol):
    def as_json(self) -> Mapping[str, int]: ...


Deliver = Callable[[Sequence[Alert]], Awaitable[Delivered]]


class TokenError(ValueError):
    """The token file cannot be used; says why."""


class TokenFile:
    """The bearer token, read from a file and read again whenever the file changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._token = b""
        self.current()  # fail at start, naming the file, rather than at the first request

    def current(self) -> bytes:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise TokenError(f"alert receiver token file {self.path}: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            token = self.path.read_bytes().strip()
            if len(token) < 16:
                raise TokenError(
                    f"alert receiver token file {self.path}: the token must be at least 16 characters"
                )
            self._token, self._stamp = token, stamp
        return self._token

    def accepts(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), self.current())


def build_app(deliver: Deliver, token: TokenFile) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        if not token.accepts(request.headers.get("Authorization")):
            raise web.HTTPUnauthorized(
                text="a bearer token is required (Authorization: Bearer <token>)\n",
                headers={"WWW-Authenticate": 'Bearer realm="aftershock alert receiver"'},
            )
        try:
            body = json.loads(await request.read())
            alerts = parse_notification(body)
        except (ValueError, PayloadError) as exc:
            raise web.HTTPBadRequest(text=f"not an Alertmanager webhook notification: {exc}\n") from None
        delivered = await deliver(alerts)
        return web.json_response(dict(delivered.as_json()))

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(PATH, receive)
    return app


async def serve(deliver: Deliver, token: TokenFile, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    runner = web.AppRunner(build_app(deliver, token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("alert receiver on %s:%d%s (bearer token from %s)", host, port, PATH, token.path)
    return runner
