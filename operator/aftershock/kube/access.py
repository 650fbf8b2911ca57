"""Access questions of `Kube`: may this user (a Campaign's author) or the operator itself do
something in a namespace (SubjectAccessReview, SelfSubjectAccessReview), a namespace's labels
(the cluster-wide install's opt-in) and whether it is being deleted. A mixin, as `aftershock.kube.volumes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client as k8s

from aftershock.authz import Author, Right
from aftershock.errors import NotFoundError
from aftershock.kube.calls import Calls


def build_resource_attributes(namespace: str, right: Right) -> dict[str, str]:
    attrs = {
        "namespace": namespace,
        "verb": right.verb,
        "group": right.group,
        "resource": right.resource,
    }
    if right.subresource:
        attrs["subresource"] = right.subresource
    if right.name:
        attrs["name"] = right.name
    if right.cluster:
        # A cluster-scoped resource (nodes): asked with no namespace, so a Role in the
        # Campaign's namespace that names it (which grants nothing) never passes.
        del attrs["namespace"]
    return attrs


def build_access_review(namespace: str, right: Right, author: Author) -> dict[str, Any]:
    """A SubjectAccessReview asking whether `author`, as the API server authenticated them (name,
    uid and groups: rights often come through a group), holds `right` in `namespace`."""
    spec: dict[str, Any] = {
        "resourceAttributes": build_resource_attributes(namespace, right),
        "user": author.username,
        "groups": list(author.groups),
    }
    if author.uid:
        spec["uid"] = author.uid
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


class _Access(Calls):
    _core: k8s.CoreV1Api
    _authorization: k8s.AuthorizationV1Api

    async def author_may(self, namespace: str, right: Right, author: Author) -> bool:
        """Whether `author` holds `right` in `namespace` (RBAC: create subjectaccessreviews)."""
        data = await self._json(
            "create",
            f"ask whether {author.username} may {right.describe()} in {namespace}",
            self._authorization.create_subject_access_review,
            build_access_review(namespace, right, author),
        )
        return bool(((data or {}).get("status") or {}).get("allowed"))

    async def operator_may(self, namespace: str, right: Right) -> bool:
        """Whether the operator itself holds `right` in `namespace` (every user may ask this)."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": build_resource_attributes(namespace, right)},
        }
        data = await self._json(
            "create",
            f"ask whether aftershock may {right.describe()} in {namespace}",
            self._authorization.create_self_subject_access_review,
            body,
        )
        return bool(((data or {}).get("status") or {}).get("allowed"))

    async def namespace_deleting(self, namespace: str) -> bool:
        """Whether the namespace is being deleted, or is gone (RBAC: get namespaces)."""
        try:
            data = await self._json("get", f"get namespace {namespace}", self._core.read_namespace, namespace)
        except NotFoundError:
            return True
        return bool(((data or {}).get("metadata") or {}).get("deletionTimestamp"))

    async def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """The namespace's labels (RBAC: get namespaces)."""
        data = await self._json("get", f"get namespace {namespace}", self._core.read_namespace, namespace)
        return dict(((data or {}).get("metadata") or {}).get("labels") or {})
