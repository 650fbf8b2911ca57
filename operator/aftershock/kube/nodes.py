"""Node calls of `Kube`: what node_failure and its node agent read and write. A mixin (see
`aftershock.kube.volumes`). Nodes are cluster-scoped: these rights come from a ClusterRole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from kubernetes_asyncio import client as k8s

from aftershock.kube.calls import Calls
from aftershock.model import NodeState


def decode_node(raw: Mapping[str, Any]) -> NodeState:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    ready = next(
        (str(c.get("status")) for c in status.get("conditions") or [] if c.get("type") == "Ready"), None
    )
    return NodeState(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        taints=tuple(str(t.get("key", "")) for t in spec.get("taints") or []),
        ready=ready,
    )


class _Nodes(Calls):
    _core: k8s.CoreV1Api
    _watch_core: k8s.CoreV1Api

    async def get_node(self, name: str) -> NodeState:
        data = await self._json("get", f"get node {name}", self._core.read_node, name)
        return decode_node(data)

    async def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None]) -> None:
        """Set (a string) or remove (None) annotations of a node, by a merge patch: only these
        keys change, whatever else the node's owners write meanwhile."""
        await self._json(
            "patch",
            f"patch annotations of node {name}",
            self._core.patch_node,
            name,
            {"metadata": {"annotations": dict(annotations)}},
            _content_type="application/merge-patch+json",
        )

    async def pods_on_node(self, node: str) -> list[tuple[str, str, str]]:
        """(namespace, name, uid) of every pod bound to `node`, in every namespace."""
        data = await self._json(
            "list",
            f"list pods on node {node}",
            self._core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
        )
        out = []
        for item in data.get("items") or []:
            meta = item.get("metadata") or {}
            out.append((str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta.get("uid", ""))))
        return out

    async def watch_node(self, name: str, *, timeout_seconds: int = 300) -> AsyncIterator[NodeState]:
        """The node now, then each change of it until the server ends the watch (the caller
        watches again); errors as `Kube.watch_pods`."""
        stream = self._watch(  # type: ignore[attr-defined]
            self._watch_core.list_node,
            None,
            f"watch node {name}",
            "",
            timeout_seconds,
            field_selector=f"metadata.name={name}",
        )
        async for etype, obj, _rv in stream:
            if etype in ("ADDED", "MODIFIED"):
                yield decode_node(obj)
