"""Letting go of every Campaign when the operator is uninstalled (the chart's pre-delete hook).

The operator's finalizer holds each Campaign's deletion until the operator has recorded it. An
operator uninstalled for good would leave that finalizer on every Campaign, and a namespace
deleted later would stay Terminating on it. So, in order:

1. the operator's Deployment is scaled to 0 and its pods are awaited: a graceful stop records
   the trials in flight as interrupted and heals their faults (a remediator held at 0 is
   restored), exactly as on any shutdown;
2. then, with no operator left to add it back, the finalizer is removed from every Campaign it
   served (a JSON patch that tests the list first, so a concurrent change is not overwritten).

The Campaigns stay: installing the operator again resumes the unfinished ones from the ledger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aftershock.kube.client import Kube
from aftershock.kube.errors import KubeConflictError, KubeNotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Released:
    """What the hook did: the Campaigns it let go (namespace/name)."""

    operator_pods_waited: int
    campaigns: tuple[str, ...]


async def stop_operator(
    kube: Kube,
    namespace: str,
    deployment: str,
    pod_selector: str,
    *,
    timeout: float,
    monotonic: Callable[[], float],
) -> int:
    """Scale the operator to 0 and wait until none of its pods is left; the pods waited for."""
    try:
        await kube.set_replicas("Deployment", namespace, deployment, 0)
    except KubeNotFoundError:
        log.info("no Deployment %s/%s: nothing to stop", namespace, deployment)
    deadline = monotonic() + timeout
    pods, _ = await kube.list_pods(namespace, pod_selector)
    waited = len(pods)
    while pods:
        if monotonic() > deadline:
            names = ", ".join(p.name for p in pods)
            raise TimeoutError(f"the operator's pods are still there after {timeout:.0f} s: {names}")
        await asyncio.sleep(1.0)
        pods, _ = await kube.list_pods(namespace, pod_selector)
    return waited


async def release_campaigns(kube: Kube, namespaces: Sequence[str], finalizer: str) -> list[str]:
    """Remove `finalizer` from every Campaign in `namespaces` (empty: in every namespace)."""
    released: list[str] = []
    scopes: list[str | None] = list(namespaces) or [None]
    for where in scopes:
        for listed in await kube.list_campaigns(where):
            obj = listed
            for _ in range(3):  # a Campaign changed since it was read is read again
                meta = obj.get("metadata") or {}
                finalizers = list(meta.get("finalizers") or [])
                ns, name = str(meta.get("namespace")), str(meta.get("name"))
                if finalizer not in finalizers:
                    break
                try:
                    await kube.set_campaign_finalizers(
                        ns, name, str(meta.get("resourceVersion")), [f for f in finalizers if f != finalizer]
                    )
                    released.append(f"{ns}/{name}")
                    break
                except KubeNotFoundError:
                    break  # gone meanwhile
                except KubeConflictError:
                    obj = await kube.get_campaign(ns, name)
    return released
