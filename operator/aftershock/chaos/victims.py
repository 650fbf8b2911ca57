"""Victims: which pods of the subject one trial disturbs, for every chaos kind. Pure; what is
done to them is the kind's (`aftershock.chaos.registry`).

The choice is deterministic for a seed (`victim_seed` -> `rng_for` -> `choose_victims`), so a trial
can be re-run, or explained afterwards, with the same victims whatever order the API listed the
pods in.

Refusals (`VictimSelectionError`) are blast-radius protection, not bugs: never the whole subject,
never the operator itself.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from aftershock.model import ANY_TARGET, OPERATOR_POD_LABEL, ChaosMode, ChaosSpec, PodState, Victim


class VictimSelectionError(Exception):
    """No safe set of victims exists for this chaos spec and these pods. The message says why."""


def victim_count(chaos: ChaosSpec, candidates: int) -> int:
    """How many pods `chaos` asks to kill out of `candidates` live pods (before safety checks)."""
    if chaos.mode is ChaosMode.ONE:
        return 1
    if chaos.value is None:
        raise VictimSelectionError(f"chaos mode {chaos.mode.value!r} needs a value")
    if chaos.mode is ChaosMode.FIXED:
        return chaos.value
    if chaos.mode is ChaosMode.FIXED_PERCENT:
        return max(1, math.floor(candidates * chaos.value / 100))
    raise VictimSelectionError(f"unknown chaos mode {chaos.mode!r}")


def choose_victims(
    pods: Sequence[PodState],
    chaos: ChaosSpec,
    rng: random.Random,
    *,
    roles: Mapping[str, str] | None = None,
) -> tuple[PodState, ...]:
    """The pods to kill, sorted by name.

    With ``chaos.target`` other than Any, victims are drawn only from the pods whose role (from
    `roles`, the subject's own view at the gate) is the target; the count is still judged
    against every live pod, so "at least one stays up" holds for the subject as a whole.

    Candidates are the pods not already being deleted, sorted by name (then uid) before sampling,
    so the same `rng` state picks the same pods for any listing order. ``fixed-percent`` is a
    percentage of the candidates, rounded down, at least one.

    Raises `VictimSelectionError` when there is no candidate, when the count would take down every
    candidate (the subject must keep at least one pod up), or when any pod carries the operator's
    own label: a selector that reaches the operator is refused as a whole, not filtered.
    """
    key, value = OPERATOR_POD_LABEL
    own = sorted(p.name for p in pods if p.labels.get(key) == value)
    if own:
        raise VictimSelectionError(
            f"the selector matches the operator's own pods ({', '.join(own)} carry {key}={value}); refused"
        )
    candidates = sorted((p for p in pods if not p.deleting), key=lambda p: (p.name, p.uid))
    if not candidates:
        if pods:
            raise VictimSelectionError(f"all {len(pods)} selected pods are already being deleted")
        raise VictimSelectionError("the selector matches no pods")
    count = victim_count(chaos, len(candidates))
    if count >= len(candidates):
        raise VictimSelectionError(
            f"chaos would kill {count} of {len(candidates)} live pods; at least one must stay up"
        )
    if chaos.nodes:
        # Only members on the nodes the Campaign names (a node-level kind fails their nodes).
        on = [p for p in candidates if p.node in chaos.nodes]
        if len(on) < count:
            raise VictimSelectionError(
                f"chaos.nodes {', '.join(chaos.nodes)}: {len(on)} live member(s) run there, "
                f"{count} needed (members on: {', '.join(sorted({str(p.node) for p in candidates}))})"
            )
        candidates = on
    if chaos.target != ANY_TARGET:
        known = roles or {}
        candidates = [p for p in candidates if known.get(p.name) == chaos.target]
        if len(candidates) < count:
            raise VictimSelectionError(
                f"chaos.target {chaos.target}: {len(candidates)} pod(s) with that role at the gate, "
                f"{count} needed (roles seen: {dict(sorted(known.items())) or 'none'})"
            )
    chosen = rng.sample(candidates, count)
    return tuple(sorted(chosen, key=lambda p: (p.name, p.uid)))


def victim_seed(campaign_seed: str, trial_index: int, attempt: int) -> str:
    """The seed of one attempt: recorded with it, so its choice can be reproduced."""
    return f"{campaign_seed}/trial-{trial_index}/attempt-{attempt}"


def rng_for(seed: str) -> random.Random:
    """A generator that gives the same sequence for `seed` in every process.

    `random.Random` seeds from a str through SHA-512, not `hash()`, so PYTHONHASHSEED plays no part.
    """
    return random.Random(seed)


def to_victim(pod: PodState, member_id: int | None, role: str | None = None) -> Victim:
    return Victim(
        name=pod.name,
        uid=pod.uid,
        node=pod.node,
        restart_count=pod.restart_count,
        member_id=member_id,
        role=role,
    )
