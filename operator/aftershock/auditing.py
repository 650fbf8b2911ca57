"""The API server's audit webhook batches, read once into typed values. Pure: no I/O here.

The API server's webhook backend (``--audit-webhook-config-file``) POSTs an
``audit.k8s.io/v1`` ``EventList``: the audit events of one batch, each with its ``stage``
(RequestReceived, ResponseStarted, ResponseComplete, Panic), the authenticated ``user``, the
``verb``, the ``objectRef`` (resource, subresource, namespace, name, apiGroup), the
``responseStatus``, and two MicroTime stamps: ``requestReceivedTimestamp`` (when the request
reached the API server) and ``stageTimestamp`` (when this stage was reached). At policy level
Request or RequestResponse the request's body (``requestObject``) is there too: for a patch,
the patch itself, which is the change.

Only writes that completed are kept here (`WRITE_VERBS`, stage ResponseComplete); reads and the
other stages are dropped while parsing: a busy API server sends thousands of them per batch.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The writes that are a remediator's actions.
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
#: Audit events one batch may carry: the API server's ``--audit-webhook-batch-max-size`` is
#: 400 by default; a body with more is refused rather than read.
MAX_EVENTS = 50_000
#: How much of a patch body is kept as the action's change.
MAX_CHANGE = 500
COMPLETE = "ResponseComplete"


class AuditPayloadError(ValueError):
    """The body is not an audit.k8s.io/v1 EventList; says what is wrong."""


@dataclass(frozen=True)
class AuditEvent:
    """One completed write, as the API server audited it."""

    audit_id: str
    username: str
    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str  # "" for a cluster-scoped object (a Node)
    name: str
    code: int | None  # responseStatus.code
    received: float  # requestReceivedTimestamp, unix seconds (µs resolution)
    completed: float  # stageTimestamp of ResponseComplete, unix seconds (µs resolution)
    #: The request body at level Request/RequestResponse (a patch: the change); None at Metadata.
    request: Mapping[str, Any] | None = None
    user_agent: str = ""

    @property
    def succeeded(self) -> bool:
        return self.code is not None and 200 <= self.code < 300

    @property
    def target(self) -> str:
        """``resource[/subresource] [namespace/]name``, as an action names its object."""
        what = self.resource + (f"/{self.subresource}" if self.subresource else "")
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{what} {where}"

    def change(self) -> str:
        """What the write changed, as far as the event tells: the patch body (level Request),
        the response code otherwise."""
        parts = []
        if self.request is not None and self.verb in ("patch", "update", "create"):
            body = dict(self.request)
            if self.verb == "patch":
                text = json.dumps(body, sort_keys=True, separators=(",", ":"))
            else:
                # A whole object: its kind and the top-level keys it carries, not its spec.
                text = f"{body.get('kind', 'object')} with {', '.join(sorted(body)) or 'nothing'}"
            parts.append(text if len(text) <= MAX_CHANGE else text[: MAX_CHANGE - 3] + "...")
        parts.append(f"HTTP {self.code}" if self.code is not None else "no response status")
        return "; ".join(parts)


def _time(raw: Any, path: str) -> float:
    if not isinstance(raw, str) or not raw:
        raise AuditPayloadError(f"{path}: expected an RFC 3339 time, got {raw!r}")
    try:
        parsed = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise AuditPayloadError(f"{path}: {raw!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise AuditPayloadError(f"{path}: {raw!r} has no time zone")
    return parsed.timestamp()


def _str(raw: Mapping[str, Any], key: str, path: str) -> str:
    value = raw.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AuditPayloadError(f"{path}.{key}: expected a string, got {type(value).__name__}")
    return value


def _mapping(raw: Any, path: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise AuditPayloadError(f"{path}: expected an object, got {type(raw).__name__}")
    return raw


def parse_event(raw: Any, path: str) -> AuditEvent | None:
    """One audit event; None when it is no completed write (the webhook sends every request)."""
    ev = _mapping(raw, path)
    if _str(ev, "stage", path) != COMPLETE or _str(ev, "verb", path) not in WRITE_VERBS:
        return None
    ref = _mapping(ev.get("objectRef"), f"{path}.objectRef")
    if not ref:
        return None  # a write with no object (none of ours)
    user = _mapping(ev.get("user"), f"{path}.user")
    status = _mapping(ev.get("responseStatus"), f"{path}.responseStatus")
    code = status.get("code")
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        raise AuditPayloadError(f"{path}.responseStatus.code: expected an integer, got {code!r}")
    request = ev.get("requestObject")
    return AuditEvent(
        audit_id=_str(ev, "auditID", path),
        username=_str(user, "username", f"{path}.user"),
        verb=_str(ev, "verb", path),
        api_group=_str(ref, "apiGroup", f"{path}.objectRef"),
        resource=_str(ref, "resource", f"{path}.objectRef"),
        subresource=_str(ref, "subresource", f"{path}.objectRef"),
        namespace=_str(ref, "namespace", f"{path}.objectRef"),
        name=_str(ref, "name", f"{path}.objectRef"),
        code=code,
        received=_time(ev.get("requestReceivedTimestamp"), f"{path}.requestReceivedTimestamp"),
        completed=_time(ev.get("stageTimestamp"), f"{path}.stageTimestamp"),
        request=request if isinstance(request, Mapping) else None,
        user_agent=_str(ev, "userAgent", path),
    )


@dataclass(frozen=True)
class AuditBatch:
    """The completed writes of one webhook batch, in the order sent, and the newest
    stageTimestamp in it (reads included): how far the API server's delivery has reached."""

    writes: Sequence[AuditEvent]
    newest: float | None


def parse_event_list(body: Any) -> AuditBatch:
    """One webhook batch."""
    if not isinstance(body, Mapping):
        raise AuditPayloadError(f"expected a JSON object, got {type(body).__name__}")
    if body.get("kind") != "EventList" or body.get("apiVersion") != "audit.k8s.io/v1":
        raise AuditPayloadError(
            f"expected kind EventList of apiVersion audit.k8s.io/v1, got kind {body.get('kind')!r} "
            f"of {body.get('apiVersion')!r} (set the webhook's --audit-webhook-version to audit.k8s.io/v1)"
        )
    items = body.get("items")
    if items is None:
        return AuditBatch((), None)
    if not isinstance(items, list):
        raise AuditPayloadError(f"items: expected a list, got {type(items).__name__}")
    if len(items) > MAX_EVENTS:
        raise AuditPayloadError(f"items: {len(items)} events, more than {MAX_EVENTS} in one batch")
    found = []
    newest: float | None = None
    for i, raw in enumerate(items):
        event = parse_event(raw, f"items[{i}]")
        if event is not None:
            found.append(event)
    if items:
        # The batch is in the order the API server audited; its last event is the newest.
        last = _mapping(items[-1], f"items[{len(items) - 1}]")
        newest = _time(last.get("stageTimestamp"), f"items[{len(items) - 1}].stageTimestamp")
    return AuditBatch(tuple(found), newest)
