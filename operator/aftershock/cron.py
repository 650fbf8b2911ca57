"""Cron schedules in a time zone, as a CronJob reads them: ``spec.schedule.cron`` and
``spec.schedule.timeZone``.

The arithmetic is cronsim's (a small, maintained library written for Healthchecks.io's cron
checks), not ours. It follows Debian cron across daylight saving time, which is also what
robfig/cron (the CronJob controller's library) does for the common cases:

- a tick in the hour that does not exist (clocks go forward, 02:30 on a spring-forward day in
  Europe) happens at the first moment that does (03:00); a schedule of every N minutes simply
  has no ticks in the missing hour;
- a tick in the hour that happens twice (clocks go back) happens once, the first time, when the
  expression names a fixed hour; a schedule of every N minutes ticks through both hours, as the
  wall clock of the zone does.

Times in and out are Unix seconds (floats): the engine's clocks speak them. Rule: no I/O.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Final

from cronsim import CronSim, CronSimError

__all__ = ["CronError", "CronSchedule", "parse", "zone"]

#: CronJob's macros (robfig/cron's descriptors), spelled out for cronsim.
MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class CronError(ValueError):
    """An expression or time zone that cannot make a schedule; the message says what to fix."""


@dataclass(frozen=True)
class CronSchedule:
    """A five-field cron expression (or a macro) read in an IANA time zone."""

    expression: str
    time_zone: str
    _zone: dt.tzinfo
    _fields: str

    def next_after(self, t: float) -> float:
        """The first tick strictly after `t`."""
        start = dt.datetime.fromtimestamp(t, self._zone)
        return next(CronSim(self._fields, start)).timestamp()

    def latest_at_or_before(self, t: float) -> float | None:
        """The last tick at or before `t` (None when there is none within cronsim's 50 years)."""
        # Reverse iteration starts strictly before its start: a second past `t`, floored, so a
        # tick exactly at `t` counts.
        start = dt.datetime.fromtimestamp(int(t) + 1, self._zone)
        try:
            return next(CronSim(self._fields, start, reverse=True)).timestamp()
        except StopIteration:
            return None


def parse(expression: str, time_zone: str = "UTC") -> CronSchedule:
    """`expression` in `time_zone`, checked; raises `CronError` naming what is wrong."""
    text = " ".join(expression.split())
    if text.upper().startswith(("TZ=", "CRON_TZ=")):
        raise CronError("a time zone inside the expression is not supported: use spec.schedule.timeZone")
    fields = MACROS.get(text.lower(), text)
    if fields.startswith("@"):
        raise CronError(f"unknown macro {text!r}; known: {', '.join(sorted(MACROS))}")
    if len(fields.split()) != 5:
        raise CronError(
            f"{text!r} has {len(fields.split())} fields; a schedule has five "
            "(minute hour day-of-month month day-of-week), as a CronJob's"
        )
    tz = zone(time_zone)
    try:
        # Parsing happens in the constructor; one tick also catches expressions that never fire
        # (30 February).
        next(CronSim(fields, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
    except CronSimError as exc:
        raise CronError(f"{text!r}: {exc}") from None
    except StopIteration:
        raise CronError(f"{text!r} never fires") from None
    return CronSchedule(expression=text, time_zone=time_zone, _zone=tz, _fields=fields)


def zone(name: str) -> dt.tzinfo:
    """The IANA time zone `name` (tzdata: the system's, else the `tzdata` package's)."""
    if name in ("UTC", "Etc/UTC"):
        return dt.UTC
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise CronError(f"{name!r} is not an IANA time zone name (such as Europe/Berlin)")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin") from None
