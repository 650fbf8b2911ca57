"""The kinds of subject aftershock can run Campaigns against: one line per kind.

Adding a kind is a module beside `tikv` and `etcd` (its `SubjectKindInfo` as ``KIND``) and a
line here; the engine, the ledger and the reports take what they need from it. The CRD's
``subject.kind`` enum is generated from `KINDS` (``make crd``; ``make verify-crd`` checks it).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from aftershock.errors import SpecError
from aftershock.model import CampaignSpec, Target
from aftershock.subjects import etcd, tikv
from aftershock.subjects.base import Subject, SubjectKindInfo, SubjectResources

KINDS: Mapping[str, SubjectKindInfo] = MappingProxyType({k.kind: k for k in (tikv.KIND, etcd.KIND)})


def open_subject(
    spec: CampaignSpec, namespace: str, resources: SubjectResources | None = None
) -> Subject | None:
    """The Campaign's subject, opened (None: health from pods alone). Raises `SpecError` for a
    spec its kind cannot run."""
    info = KINDS.get(spec.subject.kind.value)
    if info is None:
        raise SpecError("subject.kind", f"no subject of kind {spec.subject.kind.value!r} is registered")
    if spec.chaos.target is not Target.ANY and not info.roles:
        raise SpecError("chaos.target", f"{info.kind} members have no roles: use Any")
    return info.open(spec, namespace, resources)


def milestone_descriptions() -> dict[str, str]:
    """Every subject-specific milestone any kind records, with what it means."""
    return {name: text for info in KINDS.values() for name, text in info.milestones}
