"""The per-subject lock: a coordination.k8s.io Lease in the subject's namespace.

One Lease per namespace and subject kind (``aftershock-subject-tikv``): the subject lives in
the Campaign's namespace, and locking the whole namespace's subject of that kind is the
choice that can never let two Campaigns with overlapping selectors disturb one cluster at
once. The holder is the Campaign and the operator process that runs it
(``namespace/name/uid@instance``): two operators watching one Campaign (an in-cluster one and
a forgotten local one, seen on the test bed's real node: both killed a pod within 40 ms) can
never both hold it. An operator that stops releases the lease; a crashed one's expires after
`duration` seconds, and its successor waits that long before it resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aftershock.kube.client import Kube, KubeConflictError, KubeError, KubeNotFoundError

log = logging.getLogger(__name__)

LEASE_LABELS = {"app.kubernetes.io/managed-by": "aftershock"}


def lease_name(subject_kind: str) -> str:
    return f"aftershock-subject-{subject_kind.lower()}"


class LeaseLock:
    def __init__(
        self, kube: Kube, namespace: str, subject_kind: str, holder: str, *, duration: int = 30
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = lease_name(subject_kind)
        self._identity = holder
        self._duration = duration
        self._held = False
        self._holder: str | None = None
        self._rv: str | None = None
        self._renewer: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self._held

    @property
    def holder(self) -> str | None:
        return self._holder

    @property
    def name(self) -> str:
        return self._name

    async def try_acquire(self) -> bool:
        """Take the lease if free, expired, or already ours. Never waits."""
        now = time.time()
        record = await self._kube.get_lease(self._namespace, self._name)
        try:
            if record is None:
                record = await self._kube.create_lease(
                    self._namespace, self._name, self._identity, self._duration, now, LEASE_LABELS
                )
            else:
                expired = (
                    record.holder is None
                    or record.renew_time is None
                    or record.renew_time + record.duration_seconds < now
                )
                if record.holder != self._identity and not expired:
                    self._holder = record.holder
                    self._held = False
                    return False
                record = await self._kube.replace_lease(
                    self._namespace,
                    self._name,
                    self._identity,
                    self._duration,
                    now,
                    LEASE_LABELS,
                    record.resource_version,
                )
        except KubeConflictError:
            # Somebody else created or changed it between our read and write.
            self._held = False
            return False
        self._rv = record.resource_version
        self._held = True
        self._holder = self._identity
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever(), name=f"lease-renew-{self._name}")
        return True

    async def _renew_forever(self) -> None:
        interval = self._duration / 3
        while self._held:
            await asyncio.sleep(interval)
            if not self._held:
                return
            try:
                record = await self._kube.replace_lease(
                    self._namespace,
                    self._name,
                    self._identity,
                    self._duration,
                    time.time(),
                    LEASE_LABELS,
                    self._rv or "",
                )
                self._rv = record.resource_version
            except (KubeConflictError, KubeNotFoundError):
                # Lost it: someone took over an expired lease or deleted it. Stop claiming it;
                # the engine checks `held` right before every kill.
                log.warning("lost the subject lease %s/%s", self._namespace, self._name)
                self._held = False
                return
            except KubeError as exc:
                log.warning("renewing lease %s/%s failed, will retry: %s", self._namespace, self._name, exc)

    async def release(self) -> None:
        was_held = self._held
        self._held = False
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        if not was_held:
            return
        try:
            record = await self._kube.get_lease(self._namespace, self._name)
            if record is not None and record.holder == self._identity:
                await self._kube.replace_lease(
                    self._namespace,
                    self._name,
                    None,
                    self._duration,
                    time.time(),
                    LEASE_LABELS,
                    record.resource_version,
                )
        except KubeError as exc:
            # It expires on its own after `duration` seconds.
            log.warning("releasing lease %s/%s failed: %s", self._namespace, self._name, exc)
