"""Who may make the operator do what: the rights a Campaign borrows from its author.

A Campaign makes the operator delete pods, delete claims or scale a workload in its namespace,
with the operator's rights. So that creating a Campaign is never a way around RBAC (a confused
deputy), whoever creates one must hold, in that namespace, the rights of everything the
Campaign would make the operator do (`required_rights`). Two places check it, from this one
list (docs/adr/0012-campaign-authors.md):

- the API server, at admission: the ValidatingAdmissionPolicy ``aftershock-campaigns``
  (manifests/admission/, generated from `RIGHTS` by hack/admission/generate.py) asks CEL's
  ``authorizer`` about the requesting user;
- the operator, before a run starts: a SubjectAccessReview for the Campaign's author, as the
  MutatingAdmissionPolicy ``aftershock-author`` recorded it at creation in the annotation
  `AUTHOR_ANNOTATION` (`parse_author`), for clusters where the validating policy is not bound.

Pure: no I/O. The SubjectAccessReviews are `aftershock.kube`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aftershock.model import CampaignSpec, RemediatorKind, ResetMode

__all__ = [
    "AUTHOR_ANNOTATION",
    "OTHER_RIGHTS",
    "Author",
    "AuthorError",
    "ChaosRights",
    "ConditionalRight",
    "Right",
    "conditional_rights",
    "parse_author",
    "required_rights",
]

#: Who created the Campaign, as the API server authenticated them: written by the
#: MutatingAdmissionPolicy ``aftershock-author`` on create (whatever the request carried), kept
#: unchanged afterwards by the ValidatingAdmissionPolicy ``aftershock-campaigns``. JSON:
#: ``{"username": ..., "uid": ..., "groups": [...]}``.
AUTHOR_ANNOTATION = "aftershock.dev/author"


@dataclass(frozen=True)
class Right:
    """One Kubernetes permission, as RBAC and a SubjectAccessReview name it. `name` empty: any
    object of the resource in the namespace."""

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    name: str = ""
    #: Cluster-scoped (nodes): held cluster-wide (a ClusterRoleBinding), asked with no namespace.
    cluster: bool = False

    def describe(self) -> str:
        """As a person would ask for it: ``delete pods``, ``patch deployments/scale tikv-ctl``."""
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        scope = " (cluster-wide)" if self.cluster else ""
        return f"{self.verb} {what}" + (f" {self.name}" if self.name else "") + scope


@dataclass(frozen=True)
class ConditionalRight:
    """A right a Campaign needs when `cel` (over ``object.spec``) is true; `why` says what the
    operator does with it, for the refusal's message. Rendered into the admission policy."""

    right: Right
    #: CEL over the Campaign (``object``), true when the right is needed. Dry runs never need one.
    cel: str
    why: str
    #: CEL giving the object's name when the right is on one named object (else the right's own).
    cel_name: str = ""
    #: CEL giving the resource when it depends on the spec (else the right's own).
    cel_resource: str = ""


DELETE_PODS = Right("delete", "pods")
DELETE_CLAIMS = Right("delete", "persistentvolumeclaims")

#: What each chaos kind makes the operator do to its victims, per ``chaos.type``: the rights each
#: kind declares (`aftershock.chaos.registry.authz_rights`, a layer above this one, passes them in),
#: so a new kind needs no edit here.
ChaosRights = Mapping[str, Sequence[Right]]

_REMEDIATOR_RESOURCES: Mapping[RemediatorKind, str] = {
    RemediatorKind.DEPLOYMENT: "deployments",
    RemediatorKind.STATEFULSET: "statefulsets",
}

_LIVE = "!object.spec.?dryRun.orValue(false)"
_RESET = "object.spec.?reset.?mode.orValue('None')"

#: Every right a Campaign may need and when, besides its chaos kind's.
OTHER_RIGHTS: tuple[ConditionalRight, ...] = (
    ConditionalRight(
        DELETE_PODS,
        f"{_LIVE} && {_RESET} != 'None'",
        "spec.reset makes aftershock delete the subject's pods before each trial",
    ),
    ConditionalRight(
        DELETE_CLAIMS,
        f"{_LIVE} && {_RESET} == 'Recreate'",
        "spec.reset.mode Recreate makes aftershock delete the subject's PersistentVolumeClaims",
    ),
    ConditionalRight(
        Right("patch", "deployments", "apps", "scale"),
        f"{_LIVE} && object.spec.?baseline.orValue(false) && has(object.spec.remediator)",
        "spec.baseline makes aftershock scale the remediator to 0 and back",
        cel_name="object.spec.remediator.name",
        cel_resource="object.spec.remediator.kind == 'StatefulSet' ? 'statefulsets' : 'deployments'",
    ),
)


def conditional_rights(chaos_rights: ChaosRights) -> tuple[ConditionalRight, ...]:
    """Every right a Campaign may need and when: the one source of the admission policy's
    checks and the operator's (`required_rights` must agree; tests/unit/test_authz.py checks)."""
    return (
        *(
            ConditionalRight(
                right,
                f"{_LIVE} && object.spec.?chaos.?type.orValue('node_kill') == '{chaos}'",
                f"chaos type {chaos} makes aftershock {right.describe()} on its author's behalf",
            )
            for chaos, rights in chaos_rights.items()
            for right in rights
        ),
        *OTHER_RIGHTS,
    )


class AuthorError(ValueError):
    """The author, or the rights to check them for, cannot be known; the message says why."""


def required_rights(spec: CampaignSpec, chaos_rights: ChaosRights) -> tuple[Right, ...]:
    """What `spec` makes the operator do in its namespace, as rights its author must hold.
    Nothing for a dry run: it reads pods and records, nothing is changed."""
    if spec.dry_run:
        return ()
    chaos = chaos_rights.get(str(spec.chaos.type))
    if chaos is None:
        # Fail closed: a kind whose rights nobody declared is never run on someone's behalf.
        raise AuthorError(
            f"chaos type {spec.chaos.type} declares no rights (aftershock.chaos.registry): "
            "the operator cannot check its author may do what it does"
        )
    rights: list[Right] = list(chaos)
    if spec.reset.mode is not ResetMode.NONE:
        rights.append(DELETE_PODS)
    if spec.reset.mode is ResetMode.RECREATE:
        rights.append(DELETE_CLAIMS)
    if spec.baseline and spec.remediator is not None:
        resource = _REMEDIATOR_RESOURCES[spec.remediator.kind]
        rights.append(Right("patch", resource, "apps", "scale", spec.remediator.name))
    return tuple(dict.fromkeys(rights))


@dataclass(frozen=True)
class Author:
    """The user who created a Campaign, as the API server authenticated them."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()


def parse_author(annotations: Mapping[str, str] | None) -> Author:
    """The author `AUTHOR_ANNOTATION` records. Raises `AuthorError` when it is absent (the
    mutating policy did not run) or not the policy's JSON."""
    raw = (annotations or {}).get(AUTHOR_ANNOTATION)
    if raw is None:
        raise AuthorError(
            f"no author recorded (annotation {AUTHOR_ANNOTATION}): the MutatingAdmissionPolicy "
            "aftershock-author records who creates a Campaign; install manifests/admission/ "
            "(Kubernetes 1.36+, or 1.34+ with the beta API on) and create the Campaign again"
        )
    try:
        data = json.loads(raw)
        username = data["username"]
        groups = data.get("groups") or []
        uid = data.get("uid") or ""
        if not isinstance(username, str) or not username:
            raise TypeError("username")
        if not isinstance(uid, str) or not all(isinstance(g, str) for g in groups):
            raise TypeError("uid or groups")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AuthorError(
            f"annotation {AUTHOR_ANNOTATION} is not what the policy aftershock-author writes ({exc}); "
            "create the Campaign again"
        ) from None
    return Author(username=username, uid=uid, groups=tuple(groups))


# -- the admission policies' CEL, rendered from the same table -------------------------------

#: The author as the annotation holds it, from the admission request (JSON; `parse_author`).
AUTHOR_CEL = (
    "'{\"username\":' + strings.quote(request.userInfo.username)"
    " + ',\"uid\":' + strings.quote(request.userInfo.?uid.orValue(''))"
    " + ',\"groups\":[' + request.userInfo.?groups.orValue([]).map(g, strings.quote(g)).join(',') + ']}'"
)

#: The mutation of the MutatingAdmissionPolicy ``aftershock-author``: on create, the requester;
#: on update, the value the object had (a client that writes the whole object back without it,
#: `kubectl replace`, must not drop it); nothing when it had none.
_KEEP = "oldObject.metadata.?annotations[?'" + AUTHOR_ANNOTATION + "']"
AUTHOR_MUTATION_CEL = (
    "request.operation == 'CREATE'"
    f" ? Object{{metadata: Object.metadata{{annotations: {{'{AUTHOR_ANNOTATION}': variables.author}}}}}}"
    f" : ({_KEEP}.hasValue()"
    f" ? Object{{metadata: Object.metadata{{annotations: {{'{AUTHOR_ANNOTATION}': {_KEEP}.value()}}}}}}"
    " : Object{})"
)

#: True when the request makes the operator start work: a new Campaign, a suspended one
#: resumed, or a new run asked for (annotation ``aftershock.dev/run``). Other updates (the
#: operator's finalizer and progress, a suspend) need no rights.
STARTS_CEL = (
    "request.operation == 'CREATE'"
    " || (oldObject.spec.?suspend.orValue(false) && !object.spec.?suspend.orValue(false))"
    " || oldObject.metadata.?annotations[?'aftershock.dev/run'].orValue('')"
    " != object.metadata.?annotations[?'aftershock.dev/run'].orValue('')"
)

_AUTHOR_OF = "{}.metadata.?annotations[?'" + AUTHOR_ANNOTATION + "'].orValue('')"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_cel(c: ConditionalRight) -> str:
    r = c.right
    call = f"authorizer.group({_quote(r.group)}).resource({c.cel_resource or _quote(r.resource)})"
    if r.subresource:
        call += f".subresource({_quote(r.subresource)})"
    if not r.cluster:
        call += ".namespace(request.namespace)"
    if c.cel_name:
        call += f".name({c.cel_name})"
    return f"!variables.starts || !({c.cel}) || {call}.check({_quote(r.verb)}).allowed()"


def _message_cel(c: ConditionalRight) -> str:
    r = c.right
    resource = f"({c.cel_resource})" if c.cel_resource else _quote(r.resource)
    what = f"{_quote(r.verb + ' ')} + {resource}"
    if r.subresource:
        what += f" + {_quote('/' + r.subresource)}"
    if c.cel_name:
        what += f" + ' ' + {c.cel_name}"
    where = "' cluster-wide'" if r.cluster else "' in namespace ' + request.namespace"
    return (
        f"'Campaign refused: ' + variables.user + ' may not ' + {what} + {where}"
        f" + ', and ' + {_quote(c.why)}"
        " + '; a Campaign may only make aftershock do what its author may do (ask for that right, or have"
        " someone who holds it create the Campaign)'"
    )


def campaign_policy_validations(chaos_rights: ChaosRights) -> list[dict[str, str]]:
    """The checks of the ValidatingAdmissionPolicy ``aftershock-campaigns`` that do not depend
    on the install (the protected namespaces do): the author annotation, then every right."""
    author_kept = (
        "request.operation == 'CREATE'"
        f" ? ({_AUTHOR_OF.format('object')} == '' || {_AUTHOR_OF.format('object')} == variables.author)"
        f" : {_AUTHOR_OF.format('object')} == {_AUTHOR_OF.format('oldObject')}"
    )
    checks = [
        {
            "expression": author_kept,
            "message": (
                f"annotation {AUTHOR_ANNOTATION} is written by the API server (MutatingAdmissionPolicy "
                "aftershock-author) when a Campaign is created, and never changed: "
                "remove it from the manifest"
            ),
            "reason": "Forbidden",
        }
    ]
    for c in conditional_rights(chaos_rights):
        checks.append(
            {"expression": _check_cel(c), "messageExpression": _message_cel(c), "reason": "Forbidden"}
        )
    return checks


def protected_namespaces_validation(namespaces: list[str]) -> dict[str, str]:
    listed = ", ".join(_quote(n) for n in namespaces)
    return {
        "expression": f"!variables.starts || !(request.namespace in [{listed}])",
        "messageExpression": (
            "'Campaign refused: namespace ' + request.namespace"
            " + ' is protected: aftershock never disturbs it'"
        ),
        "reason": "Forbidden",
    }


def campaign_policy_variables() -> list[dict[str, str]]:
    return [
        {"name": "user", "expression": "request.userInfo.username"},
        {"name": "author", "expression": AUTHOR_CEL},
        {"name": "starts", "expression": STARTS_CEL},
    ]
