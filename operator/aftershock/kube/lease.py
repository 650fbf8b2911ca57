"""The per-subject lock: a coordination.k8s.io Lease in the subject's namespace.

One Lease per subject *instance*: its kind, selector and endpoint (``pdURL``), hashed into
the name (``aftershock-subject-tikv-<hash>``, `subject_lease_name`), so two TiKV clusters in
one namespace are measured in parallel while two Campaigns on one cluster never overlap. The
hash is of a canonical form (labels and expressions sorted), so the same selector written in
another order is the same subject. Two different selectors over overlapping pods are two
subjects: the lock cannot see that, keep one cluster's Campaigns on one selector. The holder
is the Campaign and the operator process that runs it (``namespace/name/uid@instance``): two
operators watching one Campaign (an in-cluster one and a forgotten local one, seen on the test
bed's real node: both killed a pod within 40 ms) can never both hold it. An operator that stops
releases the lease; a crashed one's expires after `duration` seconds, and its successor waits
that long before it resumes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from aftershock.kube.client import Kube
from aftershock.kube.errors import KubeConflictError, KubeError, KubeNotFoundError

log = logging.getLogger(__name__)

LEASE_LABELS = {"app.kubernetes.io/managed-by": "aftershock"}


def _canonical_selector(selector: Mapping[str, Any]) -> dict[str, Any]:
    labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    return {
        "matchLabels": sorted((str(k), str(v)) for k, v in dict(labels).items()),
        "matchExpressions": sorted(
            (str(e.get("key", "")), str(e.get("operator", "")), sorted(str(v) for v in e.get("values") or []))
            for e in expressions
            if isinstance(e, Mapping)
        ),
    }


def subject_lease_name(subject_kind: str, selector: Mapping[str, Any], pd_url: str | None) -> str:
    """The Lease of one subject instance: a stable hash of kind, selector and pdURL.

    Stable across operator versions and restarts (sha256 of sorted JSON), and a valid name
    whatever the kind (lower-cased, at most 63 characters)."""
    canonical = json.dumps(
        {"kind": subject_kind, "selector": _canonical_selector(selector), "pdURL": pd_url or ""},
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return f"aftershock-subject-{subject_kind.lower()[:30]}-{digest}"


class LeaseLock:
    def __init__(self, kube: Kube, namespace: str, name: str, holder: str, *, duration: int = 30) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
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
    def wait_reason(self) -> tuple[str, str] | None:
        return None

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
