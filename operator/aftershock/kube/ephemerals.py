"""Ephemeral container calls of `Kube` (network_partition's container of ours in a victim pod),
apart so client.py stays small.

A mixin: `Calls` provides `_json` (one request, its errors mapped to `KubeError` kinds), `Kube`
the typed API objects; these methods only name the calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client as k8s

from aftershock.kube import decode
from aftershock.kube.calls import Calls
from aftershock.model import EphemeralState


class _Ephemerals(Calls):
    _core: k8s.CoreV1Api

    async def add_ephemeral_container(
        self, namespace: str, pod: str, uid: str, container: Mapping[str, Any]
    ) -> None:
        """Add `container` to the pod (``pods/ephemeralcontainers``, a strategic merge by
        name). The pod's UID in the patch is a precondition: a pod replaced under the name
        since the gate is refused (409), never given our container."""
        body = {"metadata": {"uid": uid}, "spec": {"ephemeralContainers": [dict(container)]}}
        await self._json(
            "patch",
            f"add ephemeral container {container.get('name')} to pod {namespace}/{pod}",
            self._core.patch_namespaced_pod_ephemeralcontainers,
            pod,
            namespace,
            body,
            _content_type="application/strategic-merge-patch+json",
        )

    async def ephemeral_containers(self, namespace: str, pod: str) -> tuple[EphemeralState, ...] | None:
        """The pod's ephemeral containers as its status shows them; None: no such pod."""
        raw = await self._get_if_present("pod", self._core.read_namespaced_pod, namespace, pod)
        return None if raw is None else decode.decode_ephemerals(raw)
