"""Before a run starts: may it? The operator's own check of what the admission policies check
(docs/adr/0012-campaign-authors.md), for clusters where they are not bound, and of its own rights:

1. the namespace opted in (``--namespace-label``, cluster-wide installs);
2. the Campaign's author, as the API server recorded them (annotation ``aftershock.dev/author``),
   holds every right the Campaign uses (`aftershock.authz.required_rights`), asked with a
   SubjectAccessReview each (``--author-check``);
3. the operator itself holds them there (SelfSubjectAccessReview): a Recreate in a namespace
   where it may not delete claims is refused up front, not found out mid-trial.

A refusal names what to fix; nothing was touched. No kopf, no API client: the `AccessApi` port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aftershock.authz import AUTHOR_ANNOTATION, AuthorError, Right, parse_author, required_rights
from aftershock.chaos import registry as chaos_registry
from aftershock.engine.outcomes import RunnerSettings
from aftershock.engine.ports import AccessApi
from aftershock.model import CampaignSpec

__all__ = ["Refusal", "refusal"]

REASON_NAMESPACE = "NamespaceNotEnabled"
REASON_AUTHOR_UNKNOWN = "AuthorUnknown"
REASON_UNAUTHORIZED = "Unauthorized"
REASON_OPERATOR = "OperatorNotPermitted"


@dataclass(frozen=True)
class Refusal:
    field: str
    reason: str
    message: str


def _listed(rights: list[Right]) -> str:
    return ", ".join(r.describe() for r in rights)


def _operator_hint(namespace: str, missing: list[Right], spec: CampaignSpec) -> str:
    kind = chaos_registry.KINDS.get(spec.chaos.type)
    if kind is not None and any(r.cluster for r in missing):
        # A chaos kind's cluster-scoped rights (node_failure's nodes): opt-in in every install.
        return kind.enable_hint()
    if any(r.resource == "persistentvolumeclaims" for r in missing):
        return (
            f"spec.reset.mode Recreate is allowed only where aftershock may delete claims: a cluster "
            f"administrator binds ClusterRole aftershock-reset-recreate in {namespace} "
            f"(kubectl -n {namespace} create rolebinding aftershock-reset-recreate "
            "--clusterrole aftershock-reset-recreate --serviceaccount aftershock-system:aftershock)"
        )
    return f"grant them to the operator's ServiceAccount in {namespace}, or run the Campaign elsewhere"


async def refusal(
    *,
    namespace: str,
    annotations: Mapping[str, str],
    spec: CampaignSpec,
    settings: RunnerSettings,
    api: AccessApi,
) -> Refusal | None:
    """Why this run must not start, or None. API errors propagate (the caller retries)."""
    if settings.namespace_label is not None:
        key, value = settings.namespace_label
        labels = await api.namespace_labels(namespace)
        if labels.get(key) != value:
            return Refusal(
                "metadata.namespace",
                REASON_NAMESPACE,
                f"namespace {namespace} has not opted in to aftershock: a cluster administrator labels it "
                f"(kubectl label namespace {namespace} {key}={value}); nothing was done",
            )
    try:
        rights = list(required_rights(spec, chaos_registry.authz_rights()))
    except AuthorError as exc:
        return Refusal("spec.chaos.type", REASON_UNAUTHORIZED, f"{exc}; nothing was done")
    if settings.author_check:
        field = f"metadata.annotations[{AUTHOR_ANNOTATION}]"
        try:
            author = parse_author(annotations)
        except AuthorError as exc:
            return Refusal(field, REASON_AUTHOR_UNKNOWN, f"{exc}; nothing was done")
        missing = [r for r in rights if not await api.author_may(namespace, r, author)]
        if missing:
            return Refusal(
                field,
                REASON_UNAUTHORIZED,
                f"the Campaign's author {author.username} may not {_listed(missing)} in namespace "
                f"{namespace}, which this Campaign would make aftershock do on their behalf: grant the "
                "author that (a Role in the namespace), or have someone who holds it create the Campaign; "
                "nothing was done",
            )
    own = [r for r in rights if not await api.operator_may(namespace, r)]
    if own:
        return Refusal(
            "spec",
            REASON_OPERATOR,
            f"aftershock itself may not {_listed(own)} in namespace {namespace}: "
            f"{_operator_hint(namespace, own, spec)}; nothing was done",
        )
    return None
