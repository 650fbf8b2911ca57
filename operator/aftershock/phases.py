"""A recovery as phases, milestone to milestone: TiKV's fixed chain, or the chain of whatever
milestones a subject recorded; and the write probe's numbers per trial. Pure: over attempts."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aftershock import model, stats
from aftershock.model import AttemptRecord, Outcome


@dataclass(frozen=True)
class RecoveryPhase:
    """One step of a recovery: from one milestone to the next."""

    header: str  # table column
    key: str  # JSON key; the export's ``<key>Seconds`` column
    start: str  # milestone
    end: str  # milestone
    label: str  # for people (legends)


#: The recovery, kill to healthy, as consecutive phases; their durations add up to the recovery
#: time when every milestone was seen.
PHASES: Final = (
    RecoveryPhase("kill->gone", "killToGone", "kill_sent", "victim_gone", "kill \u2192 victim gone"),
    RecoveryPhase(
        "gone->created",
        "goneToCreated",
        "victim_gone",
        "replacement_created",
        "gone \u2192 replacement created",
    ),
    RecoveryPhase(
        "created->scheduled",
        "createdToScheduled",
        "replacement_created",
        "replacement_scheduled",
        "created \u2192 scheduled",
    ),
    RecoveryPhase(
        "scheduled->ready",
        "scheduledToReady",
        "replacement_scheduled",
        "replacement_ready",
        "scheduled \u2192 Ready",
    ),
    RecoveryPhase(
        "ready->storeUp", "readyToStoreUp", "replacement_ready", "store_up", "Ready \u2192 store Up"
    ),
    RecoveryPhase("storeUp->healthy", "storeUpToHealthy", "store_up", "recovered", "store Up \u2192 healthy"),
)


#: What TiKV's chain is made of: the engine's milestones and ``store_up``.
_TIKV_CHAIN: Final = frozenset({*model.MILESTONES, *(p.end for p in PHASES)})


def phase_seconds(attempt: AttemptRecord, phase: RecoveryPhase) -> float | None:
    """How long the phase took; None unless both its milestones were seen."""
    a, b = attempt.milestones.get(phase.start), attempt.milestones.get(phase.end)
    return None if a is None or b is None else b.offset - a.offset


#: Milestones that are not steps of the recovery chain (before the kill, beside it, after it).
_OFF_CHAIN: Final = frozenset(
    {
        "gate_passed",
        "kill_acked",
        "first_unhealthy",
        "relapsed",
        "writes_failed",
        "writes_restored",
        # What the remediator said: beside the recovery, not a step of it.
        model.REMEDIATOR_DETECTED,
        model.REMEDIATOR_RESOLVED,
        # What the alerting chain said: detection, beside the recovery.
        model.ALERT_FIRING,
        model.ALERT_RESOLVED,
    }
)


def camel(snake: str) -> str:
    """``leader_elected`` -> ``leaderElected`` (JSON keys and export columns)."""
    head, *rest = snake.split("_")
    return head + "".join(word.capitalize() for word in rest)


#: ``final_state`` key: the attempt's milestone names in the order the operator recorded them.
#: One look at the subject can show two moments at once (etcd's leader lost and a new one
#: elected): their offsets are then equal, and only the recording order says which came first.
MILESTONE_ORDER: Final = "milestoneOrder"


def _recorded_at(attempt: AttemptRecord) -> dict[str, int]:
    order = attempt.final_state.get(MILESTONE_ORDER)
    if not isinstance(order, list):
        return {}
    return {str(name): i for i, name in enumerate(order)}


def recovery_milestones(attempt: AttemptRecord) -> list[str]:
    """The milestones this attempt reached on its way from the kill to healthy, in the order
    they happened (by offset; equal offsets in the order they were recorded): whatever its
    subject or chaos kind named (TiKV's ``store_up``, etcd's ``leader_elected``), without
    those before the kill, beside the recovery or after it."""
    recorded = _recorded_at(attempt)
    names = [n for n in attempt.milestones if n != "kill_sent" and n not in _OFF_CHAIN]
    return sorted(
        names, key=lambda n: (attempt.milestones[n].offset, n == "recovered", recorded.get(n, len(recorded)))
    )


def phases_for(attempts: Iterable[AttemptRecord]) -> tuple[RecoveryPhase, ...]:
    """The recovery's phases: TiKV's fixed chain, or, when the subject named milestones of its
    own (etcd's election), the chain of every milestone seen, in the order they were reached."""
    recovered = [a for a in attempts if a.outcome is Outcome.RECOVERED]
    names = {n for a in recovered for n in a.milestones} - _OFF_CHAIN
    if names <= _TIKV_CHAIN:
        return PHASES
    chain = in_recovery_order(recovered, names)
    return tuple(
        RecoveryPhase(f"{a}->{b}", camel(f"{a}_to_{b}"), a, b, f"{a} \u2192 {b}")
        for a, b in itertools.pairwise(chain)
    )


def in_recovery_order(attempts: Sequence[AttemptRecord], names: Iterable[str]) -> list[str]:
    """`names` by their median offset over `attempts` (``recovered`` last among equals; other
    equals by their median place in the order the operator recorded them, then by name for
    records older than that order): the order a recovery passes them, whoever named them."""
    median = {
        n: stats.percentile([m.offset for a in attempts if (m := a.milestones.get(n)) is not None], 50) or 0.0
        for n in names
    }
    places = [_recorded_at(a) for a in attempts]
    place = {n: stats.percentile([float(p[n]) for p in places if n in p], 50) or float("inf") for n in names}
    return sorted(median, key=lambda n: (median[n], n == "recovered", place[n], n))


def phase_medians(attempts: Iterable[AttemptRecord]) -> dict[str, float | None]:
    """Per phase key, the median duration over the recovered attempts that saw both milestones."""
    recovered = [a for a in attempts if a.outcome is Outcome.RECOVERED]
    return {
        p.key: stats.percentile([s for a in recovered if (s := phase_seconds(a, p)) is not None], 50)
        for p in phases_for(recovered)
    }


def write_unavailability(
    attempts: Iterable[AttemptRecord], key: str = "unavailableSeconds"
) -> stats.RecoverySummary | None:
    """Per recovered trial, how long writes failed (`key` ``unavailableSeconds``) or the
    slowest write (``slowestSeconds``), for subjects with a write probe; summarised."""
    seconds = [
        float(w[key])
        for a in attempts
        if a.outcome is Outcome.RECOVERED
        and isinstance(w := a.final_state.get("writes"), Mapping)
        and isinstance(w.get(key), int | float)
    ]
    return stats.summarize(seconds) if seconds else None
