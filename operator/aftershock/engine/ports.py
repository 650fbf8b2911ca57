"""What the engine needs from the world, as Protocols. Adapters live in `aftershock.kube`,
`aftershock.subjects` and `aftershock.ledger`; tests pass fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aftershock.model import PodState


class Clock(Protocol):
    def wall(self) -> float:
        """Unix seconds, for people: may step."""

    def monotonic(self) -> float:
        """For durations: never steps."""


class StopSignal(Protocol):
    """Set when the Campaign is deleted or the operator exits (kopf's `stopped` fits)."""

    def is_set(self) -> bool: ...

    async def wait(self, timeout: float | None = None) -> bool: ...


class PodEventLike(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def pod(self) -> PodState: ...

    @property
    def resource_version(self) -> str: ...


class PodApi(Protocol):
    async def list_pods(self, namespace: str, selector: str) -> tuple[list[PodState], str]: ...

    def watch_pods(
        self, namespace: str, selector: str, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[PodEventLike]: ...

    async def delete_pod(self, namespace: str, name: str, uid: str, grace_period_seconds: int) -> None: ...


class StatusSink(Protocol):
    async def publish(self, status: Mapping[str, Any]) -> None: ...


class EventSink(Protocol):
    async def emit(self, type_: str, reason: str, message: str) -> None: ...


class SubjectLock(Protocol):
    """A per-subject mutual exclusion (a Lease): two Campaigns never disturb one subject."""

    @property
    def held(self) -> bool: ...

    @property
    def holder(self) -> str | None:
        """Who holds it when we do not (for the condition message)."""

    async def try_acquire(self) -> bool: ...

    async def release(self) -> None: ...


@dataclass(frozen=True)
class ProbeResult:
    """One look at the subject's own view of its health (PD for TiKV)."""

    healthy: bool
    reasons: tuple[str, ...] = ()
    #: Per pod name: the store's start timestamp, so a restart is seen even when PD never
    #: showed the store as anything but Up.
    restarts: Mapping[str, int] = field(default_factory=dict)
    #: Per pod name: whether its store is Up with a fresh heartbeat.
    up: Mapping[str, bool] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)


class ProbeUnavailableError(Exception):
    """The probe could not look (PD unreachable, malformed answer): an infrastructure error."""


class SubjectProbe(Protocol):
    """The subject's health beyond pod readiness. None of it for a Campaign without pdURL."""

    async def check(self, pods: Sequence[PodState], now: float) -> ProbeResult: ...

    async def close(self) -> None: ...
