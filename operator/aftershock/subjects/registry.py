"""The kinds of subject aftershock can run Campaigns against: one line per kind.

Adding a kind is a module beside `tikv` and `etcd` (its `SubjectKindInfo` as ``KIND``) and a
line here; the engine, the ledger and the reports take what they need from it. The kinds and
the roles are listed nowhere else: the CRD's ``subject.kind`` and ``chaos.target`` enums are
generated from `KINDS` (``make crd``; ``make verify-crd`` checks them).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from aftershock.errors import SpecError
from aftershock.model import ANY_TARGET, CampaignSpec
from aftershock.subjects import etcd, tikv
from aftershock.subjects.base import Subject, SubjectKindInfo, SubjectResources

KINDS: Mapping[str, SubjectKindInfo] = MappingProxyType({k.kind: k for k in (tikv.KIND, etcd.KIND)})


def open_subject(
    spec: CampaignSpec, namespace: str, resources: SubjectResources | None = None
) -> Subject | None:
    """The Campaign's subject, opened (None: health from pods alone). Raises `SpecError` for a
    spec its kind cannot run."""
    return check_spec(spec, namespace).open(spec, namespace, resources)


def check_spec(spec: CampaignSpec, namespace: str) -> SubjectKindInfo:
    """The spec's kind, after its rules passed (raises `SpecError` naming the field): what the
    operator checks before opening the subject, and `aftershock validate` offline."""
    info = KINDS.get(spec.subject.kind)
    if info is None:
        kinds = ", ".join(map(repr, KINDS))
        raise SpecError("subject.kind", f"must be one of {kinds}, got {spec.subject.kind!r}")
    targets = (ANY_TARGET, *info.roles)
    if spec.chaos.target not in targets:
        allowed = ", ".join(map(repr, targets))
        raise SpecError(
            "chaos.target",
            f"must be one of {allowed} for {info.kind} (its members' roles), got {spec.chaos.target!r}",
        )
    info.check(spec, namespace)
    return info


def milestone_descriptions() -> dict[str, str]:
    """Every subject-specific milestone any kind records, with what it means."""
    return {name: text for info in KINDS.values() for name, text in info.milestones}
