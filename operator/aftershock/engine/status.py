"""The Campaign's status, built as a projection of the ledger plus the runner's conditions.

Pure: the runner hands in what the ledger holds (its `Tally` of the attempts) and what it is
doing; this module turns it into the ``status`` object. Rebuilding it after a restart from the
same ledger gives the same numbers, which is what "status is a projection" means.

Conditions follow the Kubernetes API conventions and kstatus (Flux): ``Reconciling`` True
while trials run, ``Ready`` True only when the campaign finished as Succeeded, ``Stalled``
True when it cannot progress without a person (invalid spec, protected namespace, a hard
failure). Argo CD reads the same through the health check in the README.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aftershock import stats
from aftershock.engine.tally import Tally
from aftershock.model import Phase, Verdict

# Condition types (documented in the CRD and README).
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
SPEC_VALID = "SpecValid"
SUBJECT_LOCKED = "SubjectLocked"
STEADY_STATE = "SteadyState"
SUBJECT_API_CONFIGURED = "SubjectAPIConfigured"
#: The latest run against the previous and the baseline run (`aftershock.engine.trend`).
REGRESSED = "Regressed"
#: Types an older operator wrote that mean nothing now: dropped when the status is next published
#: (``PDConfigured`` became `SUBJECT_API_CONFIGURED`, ADR 0010).
RETIRED = frozenset({"PDConfigured"})


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Condition:
    type: str
    status: str
    reason: str
    message: str
    last_transition: str
    observed_generation: int


class Conditions:
    """Conditions keyed by type; lastTransitionTime moves only when status changes."""

    def __init__(self, existing: Sequence[Mapping[str, Any]] | None, generation: int) -> None:
        self.generation = generation
        self._items: dict[str, _Condition] = {}
        for c in existing or ():
            if c.get("type") in RETIRED:
                continue
            try:
                self._items[str(c["type"])] = _Condition(
                    type=str(c["type"]),
                    status=str(c.get("status", "Unknown")),
                    reason=str(c.get("reason", "Unknown")),
                    message=str(c.get("message", "")),
                    last_transition=str(c.get("lastTransitionTime") or iso(0.0)),
                    observed_generation=int(c.get("observedGeneration") or generation),
                )
            except (KeyError, TypeError, ValueError):
                continue  # a hand-edited, malformed condition is simply replaced

    def observe(self, generation: int) -> None:
        """The spec at `generation` has been acted on: every condition now speaks for it.

        A status is published as a whole, judged against one spec, so each condition's
        observedGeneration is that spec's generation, not the one it had when it last changed
        (a condition left at an older generation reads as out of date to GitOps tools)."""
        self.generation = generation
        for c in self._items.values():
            c.observed_generation = generation

    def set(self, type_: str, status: bool | None, reason: str, message: str, now: float) -> None:
        value = "Unknown" if status is None else ("True" if status else "False")
        old = self._items.get(type_)
        transition = old.last_transition if old is not None and old.status == value else iso(now)
        self._items[type_] = _Condition(type_, value, reason, message, str(transition), self.generation)

    def get(self, type_: str) -> str | None:
        c = self._items.get(type_)
        return None if c is None else c.status

    def reason(self, type_: str) -> str | None:
        c = self._items.get(type_)
        return None if c is None else c.reason

    def to_list(self) -> list[dict[str, Any]]:
        order = [
            READY,
            RECONCILING,
            STALLED,
            SPEC_VALID,
            SUBJECT_LOCKED,
            STEADY_STATE,
            SUBJECT_API_CONFIGURED,
            REGRESSED,
        ]
        keys = sorted(self._items, key=lambda k: (order.index(k) if k in order else len(order), k))
        return [
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": c.last_transition,
                "observedGeneration": c.observed_generation,
            }
            for c in (self._items[k] for k in keys)
        ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _clocks(tally: Tally) -> dict[str, Any]:
    """Time to detect and to the remediator's first action, p50/p95 over the completed trials
    that had one (`aftershock.clocks`); time to recover is ``recovery``."""
    found: dict[str, Any] = {}
    for key in ("detect", "firstAction"):
        values = tally.clocks[key]
        found[f"{key}Trials"] = len(values)
        found[f"{key}P50Seconds"] = _round(stats.percentile(values, 50))
        found[f"{key}P95Seconds"] = _round(stats.percentile(values, 95))
    return found


def build_status(  # noqa: PLR0913 - a pure projection of these facts, each by name
    *,
    requested: int,
    tally: Tally,
    phase: Phase,
    verdict: Verdict,
    conditions: Conditions,
    generation: int,
    health_source: str,
    started_at: float | None,
    completed_at: float | None,
    message: str,
) -> dict[str, Any]:
    """The whole status object. `tally` holds what the ledger's attempts for the campaign add
    up to (`Tally.of` over every attempt gives the same status as the tally kept by the runner)."""
    summary = stats.summarize(tally.recoveries)
    counts = tally.counts
    status: dict[str, Any] = {
        "phase": phase.value,
        "progress": f"{tally.completed}/{requested}",
        "trials": {
            "requested": requested,
            "completed": tally.completed,
            "failed": counts.unrecovered,
            "interrupted": counts.interrupted,
            "infraErrors": counts.infra_error,
        },
        "recovery": {
            "p50Seconds": _round(summary.p50),
            "p95Seconds": _round(summary.p95),
            "maxSeconds": _round(summary.max),
            "meanSeconds": _round(summary.mean),
        },
        "clocks": _clocks(tally),
        "verdict": verdict.value,
        "healthSource": health_source,
        "startedAt": iso(started_at),
        "completedAt": iso(completed_at),
        "observedGeneration": generation,
        "message": message,
        "conditions": conditions.to_list(),
    }
    last = tally.last
    if last is not None and last.outcome is not None:
        status["lastTrial"] = {
            "index": last.trial_index,
            "outcome": last.outcome.value,
            "victims": [v.name for v in last.victims],
            "recoverySeconds": _round(last.recovery_seconds),
            "finishedAt": iso(last.finished_at),
        }
        relapsed = last.milestones.get("relapsed")
        if relapsed is not None:
            status["lastTrial"]["relapsedSeconds"] = _round(relapsed.offset)
    return status


def acknowledge_generation(status: Mapping[str, Any], generation: int) -> dict[str, Any]:
    """The status patch that marks `generation` as observed, and changes nothing else.

    For a finished Campaign whose ``spec.suspend`` changed afterwards: nothing is left to act
    on, so the spec at `generation` is observed as soon as it is seen. The conditions are
    carried over as they are, each stamped with `generation` (a merge patch replaces the list
    whole)."""
    existing = status.get("conditions") or ()
    conditions = [{**c, "observedGeneration": generation} for c in existing if isinstance(c, Mapping)]
    return {"observedGeneration": generation, "conditions": conditions}
