"""The operator's receivers, each on a port of its own: the alert receiver (an
Alertmanager-compatible webhook endpoint) and the audit receiver (the API server's audit
webhook backend, `AUDIT_PATH`).

``POST /api/v1/alerts`` takes Alertmanager's webhook notification (``webhook_configs`` with
``http_config.authorization.credentials_file`` holding the token). Every request must carry
``Authorization: Bearer <token>``, the token the operator reads from a file (a Secret mounted
into its pod; re-read when the file changes, so a rotated Secret takes effect without a
restart). Answers: 200 with what was recorded, 401 without the token, 400 for a body that is no
webhook notification (its reason), 413 over `MAX_BODY`, 5xx when the ledger could not record
it (Alertmanager retries). What an alert may reach is decided behind this, by its namespace
label (`aftershock.engine.alerts`): the token proves the sender, not the alert's namespace.

``POST /audit`` takes the API server's ``audit.k8s.io/v1`` EventList batches (its webhook
kubeconfig's ``users[].user.token`` holding the token): 200 with how many writes it recorded,
401 without the token, 400 for a body that is no EventList (its reason; the API server logs it
and drops the batch), 413 over `MAX_AUDIT_BODY`. Which Campaign a write reaches is decided
behind this, by namespace and identity (`aftershock.engine.actions`).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from aiohttp import web

from aftershock.alerting import Alert, PayloadError, parse_notification
from aftershock.auditing import AuditBatch, AuditPayloadError, parse_event_list

log = logging.getLogger(__name__)

#: Where Alertmanager's webhook_configs url points (path; the host is the operator's Service).
PATH = "/api/v1/alerts"
#: Largest body taken: 1,000 alerts of a few labels each fit well below.
MAX_BODY = 4 * 1024 * 1024
#: Where the API server's audit webhook kubeconfig's server points (path).
AUDIT_PATH = "/audit"
#: Largest audit batch taken: 400 events (the API server's default batch) at level Request.
MAX_AUDIT_BODY = 32 * 1024 * 1024


class Delivered(Protocol):
    def as_json(self) -> Mapping[str, int]: ...


Deliver = Callable[[Sequence[Alert]], Awaitable[Delivered]]
DeliverAudit = Callable[[AuditBatch], Awaitable[Delivered]]


class TokenError(ValueError):
    """The token file cannot be used; says why."""


class TokenFile:
    """The bearer token, read from a file and read again whenever the file changes."""

    def __init__(self, path: str | Path, what: str = "alert receiver") -> None:
        self.path = Path(path)
        self.what = what
        self._stamp: tuple[int, int] | None = None
        self._token = b""
        self.current()  # fail at start, naming the file, rather than at the first request

    def current(self) -> bytes:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise TokenError(f"{self.what} token file {self.path}: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            token = self.path.read_bytes().strip()
            if len(token) < 16:
                raise TokenError(
                    f"{self.what} token file {self.path}: the token must be at least 16 characters"
                )
            self._token, self._stamp = token, stamp
        return self._token

    def accepts(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), self.current())


def _authenticate(request: web.Request, token: TokenFile) -> None:
    if not token.accepts(request.headers.get("Authorization")):
        raise web.HTTPUnauthorized(
            text="a bearer token is required (Authorization: Bearer <token>)\n",
            headers={"WWW-Authenticate": f'Bearer realm="aftershock {token.what}"'},
        )


def build_app(deliver: Deliver, token: TokenFile) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        _authenticate(request, token)
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


def build_audit_app(deliver: DeliverAudit, token: TokenFile) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        _authenticate(request, token)
        try:
            batch = parse_event_list(json.loads(await request.read()))
        except (ValueError, AuditPayloadError) as exc:
            raise web.HTTPBadRequest(text=f"not an audit.k8s.io/v1 EventList: {exc}\n") from None
        delivered = await deliver(batch)
        return web.json_response(dict(delivered.as_json()))

    app = web.Application(client_max_size=MAX_AUDIT_BODY)
    app.router.add_post(AUDIT_PATH, receive)
    return app


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server TLS context from PEM files (`ssl.SSLError`/`OSError` naming what failed)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def _serve(
    app: web.Application,
    what: str,
    path: str,
    token: TokenFile,
    port: int,
    host: str,
    tls: ssl.SSLContext | None = None,
) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls)
    await site.start()
    scheme = "https" if tls is not None else "http"
    log.info("%s on %s://%s:%d%s (bearer token from %s)", what, scheme, host, port, path, token.path)
    return runner


async def serve(deliver: Deliver, token: TokenFile, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    return await _serve(build_app(deliver, token), "alert receiver", PATH, token, port, host)


async def serve_audit(
    deliver: DeliverAudit,
    token: TokenFile,
    port: int,
    host: str = "0.0.0.0",
    tls: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """The audit receiver. The API server sends its webhook kubeconfig's token over TLS only
    (client-go drops a kubeconfig's credentials for a plain http server): serve it with `tls`,
    or behind something that terminates TLS and passes the Authorization header on."""
    return await _serve(build_audit_app(deliver, token), "audit receiver", AUDIT_PATH, token, port, host, tls)
