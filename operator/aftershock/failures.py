"""Why attempts failed: unrecovered, infra-error and interrupted attempts grouped by their
normalised error and ranked by what they cost. Pure: over attempts."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from aftershock.model import AttemptRecord, Outcome

#: Outcomes that cost time without completing a measurement; `failure_reasons` ranks them.
FAILED_OUTCOMES: Final = (Outcome.UNRECOVERED, Outcome.INFRA_ERROR, Outcome.INTERRUPTED)
NO_ERROR: Final = "(no error recorded)"


@dataclass(frozen=True)
class FailureReason:
    """Attempts that failed the same way: ``reason`` is their normalised error."""

    outcome: Outcome
    reason: str
    seconds_lost: float  # wall time from start to finish of those attempts, summed
    attempts: tuple[tuple[int, int], ...]  # (trial index, attempt number)

    @property
    def count(self) -> int:
        return len(self.attempts)

    @property
    def impact(self) -> float:
        """count x time lost: what the ranking sorts by. A reason that strikes often and costs
        much ranks first; one frequent but instant, or one slow but once, ranks below."""
        return self.count * self.seconds_lost


_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)
_IP = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
_HEX = re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.IGNORECASE)
_HTTP_STATUS = re.compile(r"^[45]\d\d$")
_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(?:\.\d+)?")
_MAX_REASON: Final = 160


def normalise_error(text: str | None) -> str:
    """The error with what differs between occurrences of the same failure replaced, so they group.

    UUIDs become ``<uid>``, IP addresses ``<ip>``, long hex ids ``<id>``, and numbers ``N``
    (pod ordinals, store ids, seconds), except HTTP error statuses (400-599), which tell
    failures apart. Whitespace is collapsed and the result cut at 160 characters.
    """
    if text is None or not text.strip():
        return NO_ERROR
    flat = " ".join(text.split())
    flat = _UUID.sub("<uid>", flat)
    flat = _IP.sub("<ip>", flat)
    flat = _HEX.sub("<id>", flat)
    flat = _NUMBER.sub(lambda m: m.group(0) if _HTTP_STATUS.match(m.group(0)) else "N", flat)
    return flat if len(flat) <= _MAX_REASON else flat[: _MAX_REASON - 3] + "..."


def failure_reasons(attempts: Iterable[AttemptRecord]) -> tuple[FailureReason, ...]:
    """Unrecovered, infra-error and interrupted attempts grouped by outcome and normalised error.

    Ranked by count x time lost (time lost: wall time from each attempt's start to its end,
    summed), ties by count, then time lost: the first rows are where fixing something pays most.
    """
    groups: dict[tuple[Outcome, str], list[AttemptRecord]] = {}
    for a in attempts:
        if a.outcome in FAILED_OUTCOMES:
            groups.setdefault((a.outcome, normalise_error(a.error)), []).append(a)
    reasons = [
        FailureReason(
            outcome=outcome,
            reason=reason,
            seconds_lost=math.fsum(max(0.0, (a.finished_at or a.started_at) - a.started_at) for a in members),
            attempts=tuple((a.trial_index, a.attempt) for a in members),
        )
        for (outcome, reason), members in groups.items()
    ]
    return tuple(
        sorted(reasons, key=lambda r: (-r.impact, -r.count, -r.seconds_lost, r.outcome.value, r.reason))
    )
