"""PersistentVolumeClaim calls of `Kube` (the Recreate reset), apart so client.py stays small.

A mixin: `Calls` provides `_json` (one request, its errors mapped to `KubeError` kinds), `Kube`
the typed API objects; these methods only name the calls.
"""

from __future__ import annotations

from kubernetes_asyncio import client as k8s

from aftershock.kube.calls import Calls


class _Volumes(Calls):
    _core: k8s.CoreV1Api
    _apps: k8s.AppsV1Api

    async def claim_templates(self, namespace: str, statefulset: str) -> list[str]:
        """The names of a StatefulSet's volumeClaimTemplates (its pods' claims are
        ``<template>-<pod>``)."""
        data = await self._json(
            "get",
            f"get statefulset {namespace}/{statefulset}",
            self._apps.read_namespaced_stateful_set,
            statefulset,
            namespace,
        )
        templates = (data.get("spec") or {}).get("volumeClaimTemplates") or []
        names = ((t.get("metadata") or {}).get("name") for t in templates)
        return [str(n) for n in names if n]

    async def get_claim(self, namespace: str, name: str) -> str | None:
        """The UID of a PersistentVolumeClaim, or None when there is none (or it is going)."""
        read = self._core.read_namespaced_persistent_volume_claim
        data = await self._get_if_present("persistentvolumeclaim", read, namespace, name)
        if data is None:
            return None
        meta = data.get("metadata") or {}
        if meta.get("deletionTimestamp") is not None:
            return None
        return str(meta.get("uid", "")) or None

    async def delete_claim(self, namespace: str, name: str, uid: str) -> None:
        """Delete exactly this claim: the UID precondition makes the API refuse (409) if the
        name now belongs to a new claim, so a retried delete never removes a fresh volume."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        await self._json(
            "delete",
            f"delete persistentvolumeclaim {namespace}/{name}",
            self._core.delete_namespaced_persistent_volume_claim,
            name,
            namespace,
            body=body,
        )
