"""A remediator scaled down by a baseline trial carries the replicas to restore on itself.

`AnnotatingScaler` is the engine's `ScaleApi` with one addition: before it scales a workload
to 0 it records, on the workload, the replicas it had and which Campaign scaled it
(annotations ``aftershock.dev/original-replicas`` and ``aftershock.dev/scaled-down-by``, label
``aftershock.dev/scaled-down=true`` so the sweeper can list them), and scaling it back up
removes them. A remediator left at 0 (its Campaign deleted while the operator was down, a
restore that failed) is then found and restored by the sweeper, even without the ledger.

`pods_gone` is how a baseline trial knows the remediator has stopped: its pods deleted, not only
marked for deletion (a terminating pod runs until its containers exit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from aftershock.kube.client import Kube
from aftershock.kube.errors import KubeError, KubeGoneError, KubeUnavailableError

ORIGINAL_REPLICAS = "aftershock.dev/original-replicas"
SCALED_DOWN_BY = "aftershock.dev/scaled-down-by"
SCALED_DOWN_LABEL = "aftershock.dev/scaled-down"
SCALED_DOWN_SELECTOR = f"{SCALED_DOWN_LABEL}=true"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


class AnnotatingScaler:
    """The `ScaleApi` port over `Kube`; `holder` is the Campaign (``namespace/name/uid``)."""

    def __init__(self, kube: Kube, holder: str) -> None:
        self._kube = kube
        self._holder = holder

    async def get_replicas(self, kind: str, namespace: str, name: str) -> tuple[int, int]:
        return await self._kube.get_replicas(kind, namespace, name)

    async def set_replicas(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        if replicas == 0:
            desired, _ = await self._kube.get_replicas(kind, namespace, name)
            if desired > 0:  # already 0 (a retry): the first scale-down's record stands
                await self._kube.patch_workload_metadata(
                    kind,
                    namespace,
                    name,
                    labels={SCALED_DOWN_LABEL: "true"},
                    annotations={ORIGINAL_REPLICAS: str(desired), SCALED_DOWN_BY: self._holder},
                )
        await self._kube.set_replicas(kind, namespace, name, replicas)
        if replicas > 0:
            await clear_record(self._kube, kind, namespace, name)

    async def pods_gone(self, kind: str, namespace: str, name: str, timeout: float) -> int:
        """Wait until none of the workload's pods exist, terminating ones included; the number
        still there after `timeout` seconds (0: all gone).

        The scale subresource's ``status.replicas`` does not count a pod once it is marked for
        deletion, yet that pod's containers run on through their grace period (all of it when
        the process ignores SIGTERM, or has not installed its handler yet): a remediator that
        could still act. So its pods are listed by the workload's own selector and watched
        until the last one is deleted."""
        selector = await self._kube.get_pod_selector(kind, namespace, name)
        if not selector:
            raise KubeError(f"{kind} {namespace}/{name} reports no pod selector yet (status.selector)")
        left: set[str] = set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    # Consistent, not from the cache: the pod a restore created a moment ago
                    # (the case that made this wait necessary) must be in the list.
                    pods, version = await self._kube.list_pods(namespace, selector, consistent=True)
                    left = {p.uid for p in pods}
                    if not left:
                        return 0
                    try:
                        async for event in self._kube.watch_pods(namespace, selector, version):
                            if event.type == "DELETED":
                                left.discard(event.pod.uid)
                            elif event.type in ("ADDED", "MODIFIED"):
                                left.add(event.pod.uid)
                            if not left:
                                return 0
                    except (KubeGoneError, KubeUnavailableError):
                        await asyncio.sleep(0.5)  # listed again: the watch cannot resume
        return len(left)


async def clear_record(kube: Kube, kind: str, namespace: str, name: str) -> None:
    await kube.patch_workload_metadata(
        kind,
        namespace,
        name,
        labels={SCALED_DOWN_LABEL: None},
        annotations={ORIGINAL_REPLICAS: None, SCALED_DOWN_BY: None},
    )


class KubeSweepApi:
    """The sweeper's `SweepApi` port over `Kube`."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def find_campaign(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await self._kube.find_campaign(namespace, name)

    async def list_scaled_down(
        self, kind: str, namespace: str | None
    ) -> list[tuple[str, str, Mapping[str, str]]]:
        return await self._kube.list_workloads(kind, namespace, SCALED_DOWN_SELECTOR)

    async def restore(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        await self._kube.set_replicas(kind, namespace, name, replicas)
        await clear_record(self._kube, kind, namespace, name)
