"""Alertmanager's webhook notifications, read once into typed values. Pure: no I/O here.

Alertmanager POSTs a JSON body (``version: "4"``) with the alerts of one aggregation group:
each with its ``status`` (``firing`` or ``resolved``), ``labels``, ``startsAt``, ``endsAt``
and ``fingerprint`` (Alertmanager's hash of the labels). A firing alert's ``endsAt`` is either
Go's zero time or a time in the future (Prometheus sends one when it resends), so only a
resolved alert's ``endsAt`` is when it ended.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The webhook payload's version this receiver reads (Alertmanager 0.x has always sent "4").
WEBHOOK_VERSION = "4"
#: Alerts one notification may carry: Alertmanager's `max_alerts` is unbounded by default, but a
#: group larger than this is no single fault's detection.
MAX_ALERTS = 1000
_MAX_LABELS = 64
_MAX_LABEL_VALUE = 4096
_FINGERPRINT = re.compile(r"[0-9a-f]{1,32}")


class PayloadError(ValueError):
    """The body is not an Alertmanager webhook notification; says what is wrong."""


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, as Alertmanager sent it."""

    fingerprint: str
    firing: bool
    labels: Mapping[str, str]
    #: Alertmanager's startsAt: when Prometheus says the alert fired (unix seconds).
    starts_at: float
    #: When it ended, for a resolved alert (unix seconds); None while it fires.
    ends_at: float | None

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def as_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "status": "firing" if self.firing else "resolved",
            "labels": dict(self.labels),
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
        }


def parse_time(raw: Any, path: str) -> float | None:
    """An RFC 3339 time as unix seconds; None for Go's zero time (``0001-01-01T00:00:00Z``)."""
    if not isinstance(raw, str) or not raw:
        raise PayloadError(f"{path}: expected an RFC 3339 time, got {raw!r}")
    text = raw.strip()
    if text.startswith("0001-01-01"):
        return None
    # Python before 3.11 reads neither "Z" nor more than 6 fractional digits; Go writes 9.
    text = re.sub(r"[zZ]$", "+00:00", text)
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise PayloadError(f"{path}: {raw!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise PayloadError(f"{path}: {raw!r} has no time zone")
    return parsed.timestamp()


def _labels(raw: Any, path: str) -> dict[str, str]:
    if not isinstance(raw, Mapping) or len(raw) > _MAX_LABELS:
        raise PayloadError(f"{path}: expected an object of at most {_MAX_LABELS} labels")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(v) > _MAX_LABEL_VALUE:
            raise PayloadError(f"{path}: labels must be strings (values up to {_MAX_LABEL_VALUE} characters)")
        out[k] = v
    return out


def parse_notification(body: Any) -> tuple[Alert, ...]:
    """The alerts of one webhook notification; raises `PayloadError` naming what is wrong."""
    if not isinstance(body, Mapping):
        raise PayloadError("expected a JSON object (Alertmanager's webhook payload)")
    if str(body.get("version", "")) != WEBHOOK_VERSION:
        raise PayloadError(f"version: expected {WEBHOOK_VERSION!r}, got {body.get('version')!r}")
    raw_alerts = body.get("alerts")
    if not isinstance(raw_alerts, list) or len(raw_alerts) > MAX_ALERTS:
        raise PayloadError(f"alerts: expected a list of at most {MAX_ALERTS} alerts")
    alerts: list[Alert] = []
    for i, raw in enumerate(raw_alerts):
        path = f"alerts[{i}]"
        if not isinstance(raw, Mapping):
            raise PayloadError(f"{path}: expected an object")
        status = raw.get("status")
        if status not in ("firing", "resolved"):
            raise PayloadError(f"{path}.status: expected 'firing' or 'resolved', got {status!r}")
        fingerprint = raw.get("fingerprint")
        if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
            raise PayloadError(
                f"{path}.fingerprint: expected Alertmanager's hex fingerprint, got {fingerprint!r}"
            )
        starts_at = parse_time(raw.get("startsAt"), f"{path}.startsAt")
        if starts_at is None:
            raise PayloadError(f"{path}.startsAt: the zero time")
        firing = status == "firing"
        ends_at = parse_time(raw.get("endsAt"), f"{path}.endsAt")
        alerts.append(
            Alert(
                fingerprint=fingerprint,
                firing=firing,
                labels=_labels(raw.get("labels"), f"{path}.labels"),
                starts_at=starts_at,
                ends_at=None if firing else ends_at,
            )
        )
    return tuple(alerts)
