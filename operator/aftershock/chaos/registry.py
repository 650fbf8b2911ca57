"""The kinds of fault aftershock can inject: one line per kind.

Adding a kind is a module beside `node_kill` (its `ChaosKindInfo` as ``KIND``) and a line
here; the engine asks this registry and never names a kind. The CRD's ``chaos.type`` enum and
the per-kind RBAC rules are generated from `KINDS` (``make crd``; ``make verify-crd`` checks
them). docs/chaos.md says how to add one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from aftershock import authz
from aftershock.chaos import container_kill, network_partition, node_failure, node_kill
from aftershock.chaos.base import ChaosKindInfo, Right
from aftershock.errors import SpecError
from aftershock.model import ChaosSpec

KINDS: Mapping[str, ChaosKindInfo] = MappingProxyType(
    {k.type: k for k in (node_kill.KIND, container_kill.KIND, network_partition.KIND, node_failure.KIND)}
)


def kind_of(chaos: ChaosSpec) -> ChaosKindInfo:
    """The Campaign's chaos kind; raises `SpecError` for a type or field it cannot run."""
    info = KINDS.get(chaos.type)
    if info is None:
        kinds = ", ".join(map(repr, KINDS))
        raise SpecError("chaos.type", f"must be one of {kinds}, got {chaos.type!r}")
    wrong = info.check(chaos)
    if wrong is not None:
        raise SpecError(*wrong)
    return info


def authz_rights() -> dict[str, tuple[authz.Right, ...]]:
    """Per kind, its rights as `aftershock.authz` checks them (admission policy, the
    operator's SubjectAccessReviews for a Campaign's author)."""
    return {
        info.type: tuple(
            authz.Right(r.verb, r.resource, r.group, r.subresource, cluster=r.cluster) for r in info.rights
        )
        for info in KINDS.values()
    }


def milestone_descriptions() -> dict[str, str]:
    """Every kind-specific milestone any kind records, with what it means."""
    return {name: text for info in KINDS.values() for name, text in info.milestones}


def rights() -> dict[str, list[dict[str, str]]]:
    """Per kind, the rights it exercises (verb, resource, subresource, apiGroup): what an
    admission policy checks the Campaign's author holds."""
    return {info.type: [r.as_json() for r in info.rights] for info in KINDS.values()}


__all__ = ["KINDS", "ChaosKindInfo", "Right", "authz_rights", "kind_of", "milestone_descriptions", "rights"]
