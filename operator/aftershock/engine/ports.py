"""What the engine needs from the world: Protocols where tests pass fakes (adapters live in
`aftershock.kube`), and the real types where they do not (the subject, the ledger)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from aftershock import stats
from aftershock.authz import Author, Right
from aftershock.endpoints import ServiceInfo
from aftershock.errors import ProbeUnavailableError
from aftershock.ledger import Judgement, Ledger
from aftershock.model import (
    AttemptRecord,
    CampaignRef,
    ClusterEvent,
    EphemeralState,
    ExecResult,
    NodeState,
    Phase,
    PodState,
    ProbeResult,
)
from aftershock.subjects.base import Subject

__all__ = [
    "AccessApi",
    "Clock",
    "EventSink",
    "LedgerPort",
    "NullRecorder",
    "PodApi",
    "PodEventLike",
    "ProbeResult",
    "ProbeUnavailableError",
    "Recorder",
    "RemediatorActivity",
    "ScaleApi",
    "ServiceApi",
    "StatusSink",
    "StopSignal",
    "SubjectLock",
    "SubjectProbe",
    "VolumeApi",
    "WorkloadApi",
]


class Clock(Protocol):
    def wall(self) -> float:
        """Unix seconds, for people: may step."""

    def monotonic(self) -> float:
        """For durations: never steps."""


class StopSignal(Protocol):
    """Set when the Campaign is deleted or the operator exits (kopf's `stopped` fits)."""

    def is_set(self) -> bool: ...

    @property
    def deleted(self) -> bool:
        """Set because the Campaign (or its namespace) is being deleted, not because the
        operator exits: the ledger then records the deletion, and nothing runs again."""

    async def wait(self, timeout: float | None = None) -> bool: ...


class PodEventLike(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def pod(self) -> PodState: ...

    @property
    def resource_version(self) -> str: ...


class PodApi(Protocol):
    """Pods: `namespace=None` lists and watches every namespace; `selector=""` every pod."""

    async def list_pods(self, namespace: str | None, selector: str) -> tuple[list[PodState], str]: ...

    def watch_pods(
        self, namespace: str | None, selector: str, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[PodEventLike]: ...

    async def delete_pod(self, namespace: str, name: str, uid: str, grace_period_seconds: int) -> None: ...

    async def exec_in_pod(
        self, namespace: str, pod: str, container: str, command: Sequence[str], timeout: float
    ) -> ExecResult:
        """Run `command` in the container (``pods/exec``): the container-level chaos kinds'."""

    async def get_node(self, name: str) -> NodeState:
        """A node (node-level chaos kinds: cluster-scoped ``get nodes``)."""

    async def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None]) -> None:
        """Set (a string) or remove (None) a node's annotations (``patch nodes``)."""

    async def add_ephemeral_container(
        self, namespace: str, pod: str, uid: str, container: Mapping[str, Any]
    ) -> None:
        """Add an ephemeral container to the pod with `uid` (network_partition's)."""

    async def ephemeral_containers(self, namespace: str, pod: str) -> tuple[EphemeralState, ...] | None:
        """The pod's ephemeral containers; None: no such pod."""


class VolumeApi(Protocol):
    """The subject's PersistentVolumeClaims, for the Recreate reset."""

    async def claim_templates(self, namespace: str, statefulset: str) -> list[str]:
        """The names of the StatefulSet's volumeClaimTemplates."""

    async def get_claim(self, namespace: str, name: str) -> str | None:
        """The claim's UID; None when there is none or it is being deleted."""

    async def delete_claim(self, namespace: str, name: str, uid: str) -> None:
        """Delete exactly this claim (UID precondition)."""


class AccessApi(Protocol):
    """Access questions: may a Campaign's author, or the operator itself, do something in a
    namespace; a namespace's labels (the opt-in)."""

    async def author_may(self, namespace: str, right: Right, author: Author) -> bool: ...

    async def operator_may(self, namespace: str, right: Right) -> bool: ...

    async def namespace_labels(self, namespace: str) -> Mapping[str, str]: ...


class NamespaceApi(Protocol):
    """Whether a namespace is being deleted: asked when the subject's pods start going during a
    recovery, which is how a namespace deletion first shows (its pods go first)."""

    async def namespace_deleting(self, namespace: str) -> bool:
        """True when the namespace is being deleted or gone; `ApiError` when it cannot be
        told (the namespaced install may not read namespaces)."""


class EventApi(Protocol):
    """Kubernetes Events of a namespace: where a remediator reports what it does."""

    async def list_events(self, namespace: str) -> tuple[list[ClusterEvent], str]: ...

    def watch_events(
        self, namespace: str, resource_version: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[tuple[str, ClusterEvent, str]]: ...


class RemediatorActivity(Protocol):
    """Where the remediator's actions are seen as they happen: what the quiet wait at a trial's
    end asks (`aftershock.engine.recovery.QuietWait`). Each source of actions implements it (the
    remediator's Events: `aftershock.engine.signals.SignalWatch`; its writes:
    `aftershock.engine.actions.CampaignActions`; both: `aftershock.engine.actions.Either`);
    the actions themselves reach the ledger as `aftershock.records.RemediatorAction` values
    when the trial ends."""

    def last_action_mono(self) -> float | None:
        """The monotonic time (the engine's `Clock`) the latest action was seen at; None when
        none has been seen yet. Called once a second at most, on the event loop: no I/O."""


class ServiceApi(Protocol):
    """Services of the Campaign's namespace: what the subject's URLs name (ExternalName refused)."""

    async def get_service(self, namespace: str, name: str) -> ServiceInfo | None: ...


class ScaleApi(Protocol):
    async def get_replicas(self, kind: str, namespace: str, name: str) -> tuple[int, int]:
        """(desired, current) replicas of a Deployment or StatefulSet."""

    async def set_replicas(self, kind: str, namespace: str, name: str, replicas: int) -> None: ...

    async def pods_gone(self, kind: str, namespace: str, name: str, timeout: float) -> int:
        """Wait until none of the workload's pods exist, terminating ones included; how many are
        left after `timeout` seconds."""


class WorkloadApi(Protocol):
    async def service_account(self, kind: str, namespace: str, name: str) -> str:
        """The ServiceAccount a Deployment's or StatefulSet's pod template runs as."""


class StatusSink(Protocol):
    async def publish(self, status: Mapping[str, Any]) -> None: ...


class EventSink(Protocol):
    async def emit(self, type_: str, reason: str, message: str) -> None: ...


class SubjectLock(Protocol):
    """Mutual exclusion on what a kill disturbs (Leases, ADR 0016): two Campaigns never disturb
    the same pods at once. Keys name the pods' controllers (`holds.subject_keys`)."""

    @property
    def held(self) -> bool:
        """Some key is held (and fresh)."""

    def holds(self, keys: Collection[str]) -> bool:
        """Every one of `keys` is held and fresh (renewed within the renew deadline)."""

    @property
    def holder(self) -> str | None:
        """Who holds it when we do not (for the condition message)."""

    @property
    def wait_reason(self) -> tuple[str, str] | None:
        """(reason, message) when the last `try_acquire` failed for a reason other than another
        holder (waiting in the operator's queue of Campaigns); None otherwise."""

    async def try_acquire(self, keys: Collection[str]) -> bool:
        """Hold exactly `keys`, all of them or none. Never waits."""

    async def release(self) -> None: ...


#: The subject's own API, as the engine uses it (`aftershock.subjects.base.Subject`).
SubjectProbe = Subject


#: The ledger itself, not a Protocol restating its methods: the engine's tests run the real
#: one on a temporary file (no fake), so a second list of its signatures would only be a copy to
#: keep in step.
LedgerPort = Ledger


class Recorder(Protocol):
    """Where the engine reports what metrics are made of (`aftershock.metrics` implements it)."""

    def attempt_finished(self, ref: CampaignRef, record: AttemptRecord) -> None: ...

    def replay(self, ref: CampaignRef, records: Iterable[AttemptRecord]) -> None:
        """The attempts the ledger already held when this process took the campaign up."""

    def campaign_phase(self, ref: CampaignRef, phase: Phase) -> None: ...

    def ledger_write(self, seconds: float) -> None: ...

    def status_patched(self, ref: CampaignRef) -> None: ...

    def run_judged(
        self, ref: CampaignRef, run: int, summary: stats.RecoverySummary, judgements: Iterable[Judgement]
    ) -> None:
        """A run of the Campaign finished: its numbers, and how it compared with earlier runs."""


class NullRecorder:
    def attempt_finished(self, ref: CampaignRef, record: AttemptRecord) -> None:
        pass

    def replay(self, ref: CampaignRef, records: Iterable[AttemptRecord]) -> None:
        pass

    def campaign_phase(self, ref: CampaignRef, phase: Phase) -> None:
        pass

    def ledger_write(self, seconds: float) -> None:
        pass

    def status_patched(self, ref: CampaignRef) -> None:
        pass

    def run_judged(
        self, ref: CampaignRef, run: int, summary: stats.RecoverySummary, judgements: Iterable[Judgement]
    ) -> None:
        pass
