"""What a trial leaves behind: its outcome, milestones, victims, and the pods and probe looks it
was judged on. Pure values: no I/O, no parsing (the ledger and the engine build them).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload


class Outcome(enum.StrEnum):
    """How one attempt of a trial ended. Only `RECOVERED` and `UNRECOVERED` are measurements."""

    RECOVERED = "recovered"
    UNRECOVERED = "unrecovered"
    INTERRUPTED = "interrupted"
    INFRA_ERROR = "infra_error"
    DRY_RUN = "dry_run"

    @property
    def completes_trial(self) -> bool:
        """Whether this outcome fills the trial's index (the index is not run again)."""
        return self in (Outcome.RECOVERED, Outcome.UNRECOVERED, Outcome.DRY_RUN)


# --- Trials -------------------------------------------------------------------------------

#: The engine's moments of one trial, whatever the subject, in the order a recovery normally
#: passes them. Each is recorded as a wall-clock time (for people) and as an offset in seconds
#: from `kill_sent` measured on the monotonic clock (for durations: a wall-clock step during a
#: trial does not bend them). A subject adds its own between them (TiKV's ``store_up``, etcd's
#: ``leader_elected``: `aftershock.subjects.base.SubjectKindInfo.milestones`).
MILESTONES: tuple[str, ...] = (
    "gate_passed",  # steady state held for stableSeconds; negative offset
    "kill_sent",  # the delete request left (offset 0 by definition)
    "kill_acked",  # the API server answered the first delete: the deletion is committed
    "first_unhealthy",  # first observation of the subject not healthy
    "victim_gone",  # the victim pod object is gone (DELETED event)
    "replacement_created",  # a new pod (new UID) took the victim's place
    "replacement_scheduled",  # ... bound to a node
    "replacement_ready",  # ... Ready
    "recovered",  # the whole subject healthy again: the recovery time
    "relapsed",  # unhealthy again within the settle window after "recovered": not a recovery
)

#: The signs that a kill took effect; a recovery counts from the first of them (ADR 0008).
DISRUPTION_SIGNS: tuple[str, ...] = ("kill_acked", "first_unhealthy")

#: Who stamped a milestone, as ``final_state["milestoneSources"]`` records it: the subject's own
#: clock (PD's ``last_heartbeat``, placed on the operator's clock by their offset), or the moment
#: the operator noticed (a pod watch event, a probe poll).
SOURCE_PD_HEARTBEAT = "pd_heartbeat"
SOURCE_OBSERVED = "observed"


@dataclass(frozen=True)
class Milestone:
    wall: float  # unix seconds
    offset: float  # seconds since kill_sent, monotonic


@dataclass(frozen=True)
class Victim:
    name: str
    uid: str
    node: str | None = None
    restart_count: int = 0
    #: The subject's own id for the member (TiKV: its store id in PD), from the look that passed
    #: the gate; None when the subject gives none (etcd: a member keeps its id across restarts).
    #: Called ``store_id`` before ledger schema 6 (ADR 0010).
    member_id: int | None = None
    #: The member's role when it was chosen (etcd: Leader or Follower); None without roles.
    role: str | None = None


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt at one trial index, as the ledger holds it."""

    campaign_uid: str
    trial_index: int  # 0-based
    attempt: int  # 1-based, per trial index
    victims: tuple[Victim, ...]
    victim_seed: str
    started_at: float  # unix seconds
    outcome: Outcome | None = None  # None while in flight
    milestones: Mapping[str, Milestone] = field(default_factory=dict)
    initial_state: Mapping[str, Any] = field(default_factory=dict)
    final_state: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    finished_at: float | None = None

    @property
    def recovery_seconds(self) -> float | None:
        """The disruption's start -> subject healthy, monotonic; None unless recovered.

        The disruption starts at the first sign that the kill took effect: the API server's
        answer to the delete (``kill_acked``: the deletion is committed by then) or the
        subject seen unhealthy (``first_unhealthy``: the pod watch showed the victim going),
        whichever the operator had first. Not when the request left (``kill_sent``): its
        round trip, 10-150 ms on a loaded control plane, is the API server's latency, not the
        subject's recovery (ADR 0008). Without either sign (records from before they were
        kept) from ``kill_sent``: longer, never shorter, than the truth."""
        m = self.milestones.get("recovered")
        if m is None or self.outcome is not Outcome.RECOVERED:
            return None
        return m.offset - self.disruption_offset

    @property
    def disruption_offset(self) -> float:
        """When the kill took effect, seconds after ``kill_sent`` (see `recovery_seconds`)."""
        signs = [m.offset for name in DISRUPTION_SIGNS if (m := self.milestones.get(name)) is not None]
        return max(0.0, min(signs, default=0.0))


@dataclass(frozen=True)
class NodeState:
    """One node as the node-level chaos kinds read it."""

    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    #: Taint keys (any effect).
    taints: tuple[str, ...]
    #: The Ready condition: True, False or Unknown (None: no condition yet).
    ready: str | None


@dataclass(frozen=True)
class ExecResult:
    """What a command run in a container printed, and how it ended."""

    stdout: str
    stderr: str
    #: None: exit status 0. Otherwise why it failed, as the API server said (exit status,
    #: ``executable file not found``, ...).
    error: str | None = None


@dataclass(frozen=True)
class EphemeralState:
    """One ephemeral container of a pod, as the pod's spec and status show it."""

    #: The pod's UID now (a pod replaced under the same name has another).
    pod_uid: str
    #: ``waiting`` (in the spec, not started yet), ``running``, ``terminated``; ``gone`` when
    #: the pod is.
    state: str
    #: The exit code, once terminated.
    exit_code: int | None = None
    #: The container's last words (its termination message, or the runtime's reason).
    message: str = ""
    name: str = ""


@dataclass(frozen=True)
class ContainerState:
    """One container of a pod as its status shows it (the container-level chaos kinds read it)."""

    name: str
    #: The runtime's id (``containerd://...``) of the container now; None before one started.
    container_id: str | None
    ready: bool
    restart_count: int
    #: When the current container started running (``state.running.startedAt``), unix seconds.
    started_at: float | None = None


@dataclass(frozen=True)
class ManagedEntry:
    """One managedFields entry of an object: who last wrote which fields, and when (whole
    seconds: the API server's managedFields time has no finer resolution)."""

    manager: str
    operation: str  # Apply or Update
    subresource: str  # "" for the object itself, "status", ...
    time: float | None  # unix seconds
    #: The field paths it owns, from fieldsV1, to a bounded depth (``metadata.labels.x``).
    fields: tuple[str, ...] = ()

    @property
    def time_text(self) -> str:
        if self.time is None:
            return "unset"
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time))


class ManagedFields(Sequence[ManagedEntry]):
    """A pod's managedFields as the API sent them, decoded on first read, or never (ADR 0025).

    Why: every event of the shared pod watch decodes a `PodState` (every pod of the watched
    namespaces, for every Campaign), but only a Campaign that names a field manager
    (``spec.remediator.identities.fieldManagers``, ADR 0022) reads the entries, and only while a
    trial of it runs (`aftershock.engine.actions.CampaignActions.pod_changed`). Decoding them
    eagerly was most of the decode's cost per event; keeping them raw for later costs ~4x the
    memory of the decoded entries per pod (bench/decode_cost.py, docs/performance.md). So the
    pod watch settles each pod it keeps (`settle`): decoded now where some Campaign of its
    namespace reads them, released (nothing kept) everywhere else.

    A released value is *unknown*, not empty: it reads as no entries, `known` is False, and it
    equals any managedFields (no one compares what no one keeps). `pod_changed` then cannot diff
    against it and falls back to the entries' own times.

    The raw list is the client's parsed JSON, used for nothing else and never changed after."""

    __slots__ = ("_decode_fn", "_entries", "_raw")

    def __init__(self, raw: Any, decode: Callable[[Any], tuple[ManagedEntry, ...]]) -> None:
        self._raw: Any = raw
        self._decode_fn: Callable[[Any], tuple[ManagedEntry, ...]] | None = decode
        self._entries: tuple[ManagedEntry, ...] | None = None

    @property
    def decoded(self) -> bool:
        """Whether the entries were decoded (tests and benchmarks check it stays False)."""
        return self._entries is not None

    @property
    def known(self) -> bool:
        """False once released unread: what the entries were is not kept."""
        return self._entries is not None or self._decode_fn is not None

    def settle(self, keep: bool) -> None:
        """Decode now (`keep`), or drop the raw entries unless already decoded: either way the
        raw JSON is no longer held."""
        if keep:
            self._read()
        elif self._entries is None:
            self._raw = self._decode_fn = None

    def _read(self) -> tuple[ManagedEntry, ...]:
        if self._entries is None:
            if self._decode_fn is None:
                return ()  # released: stays unknown
            self._entries = self._decode_fn(self._raw)
            self._raw = self._decode_fn = None
        return self._entries

    @overload
    def __getitem__(self, index: int) -> ManagedEntry: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[ManagedEntry, ...]: ...
    def __getitem__(self, index: int | slice) -> ManagedEntry | tuple[ManagedEntry, ...]:
        return self._read()[index]

    def __len__(self) -> int:
        return len(self._read())

    def __iter__(self) -> Iterator[ManagedEntry]:
        return iter(self._read())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ManagedFields):
            if not (self.known and other.known):
                return True
            if self._entries is None and other._entries is None:
                return bool(self._raw == other._raw)  # a relist compares every pod: no decoding
            return self._read() == other._read()
        if isinstance(other, Sequence):
            return not self.known or self._read() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal by contents, which are not hashable

    def __repr__(self) -> str:
        if self._entries is not None:
            return f"ManagedFields({self._entries!r})"
        if not self.known:
            return "ManagedFields(released)"
        count = len(self._raw) if isinstance(self._raw, list) else 0
        return f"ManagedFields({count} raw entries, not decoded)"


@dataclass(frozen=True)
class PodState:
    """What the engine needs to know of one subject pod, decoded from the API once."""

    name: str
    uid: str
    namespace: str
    labels: Mapping[str, str]
    node: str | None  # spec.nodeName: set once scheduled
    phase: str  # Pending, Running, ...
    ready: bool  # the Ready condition is True
    restart_count: int  # sum over containers
    created_at: float | None  # unix seconds (metadata.creationTimestamp)
    deleting: bool  # metadata.deletionTimestamp is set
    owner_kind: str | None = None  # e.g. StatefulSet
    ready_at: float | None = None  # lastTransitionTime of Ready, unix seconds
    owner_name: str | None = None  # the controller's name (e.g. the StatefulSet's)
    #: The pod's containers in spec order (status joined by name), for container-level kinds.
    containers: tuple[ContainerState, ...] = ()
    #: ``spec.shareProcessNamespace``: one PID namespace for the pod, the pause process its init.
    shares_process_namespace: bool = False
    #: ``status.podIP``: the pod's address on the pod network; None before it has one.
    ip: str | None = None
    #: ``spec.hostNetwork``: the pod uses the node's network namespace (a network fault in it
    #: would hit the node and every hostNetwork pod on it).
    host_network: bool = False
    #: Its managedFields entries (who wrote which fields): the remediator's actions by field
    #: manager (`aftershock.engine.actions`). From the API a `ManagedFields`: decoded on first
    #: read, or released unread (most pod events never need them).
    managed: Sequence[ManagedEntry] = ()

    def container(self, name: str | None) -> ContainerState | None:
        """The container named `name` (None: the first), or None when there is none."""
        if name is None:
            return self.containers[0] if self.containers else None
        return next((c for c in self.containers if c.name == name), None)


@dataclass(frozen=True)
class ProbeResult:
    """One look at the subject's own view of its health (PD for TiKV)."""

    healthy: bool
    reasons: tuple[str, ...] = ()
    #: Per pod name: the store's start timestamp, so a restart is seen even when PD never
    #: showed the store as anything but Up.
    restarts: Mapping[str, int] = field(default_factory=dict)
    #: Per pod name: whether its store is Up with a fresh heartbeat sent since its start.
    up: Mapping[str, bool] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)
    #: Per pod name: its store's last heartbeat, unix ns on the subject's (PD's) clock.
    heartbeats_ns: Mapping[str, int] = field(default_factory=dict)
    #: The subject's clock at this look as far as it shows (PD: its newest heartbeat), unix s;
    #: None if it shows nothing. Compared with the operator's clock to place `heartbeats_ns`.
    pd_now: float | None = None
    #: When the subject would best be looked at next (the operator's monotonic clock), if it
    #: says: PD halfway through the moments its next store heartbeat may arrive
    #: (`PdClock.next_look`), so that the look brackets PD's clock tighter. Only heeded while
    #: the engine looks anyway (`RecoveryJudge.probe_interval` not None).
    look_at: float | None = None
    #: Per pod name: its role in the subject now (etcd: Leader/Follower); empty without roles.
    roles: Mapping[str, str] = field(default_factory=dict)
    #: The subject's own typed view behind this look, for its `RecoveryJudge` only (never stored).
    detail: object = field(default=None, compare=False, repr=False)


# --- Detection: alerts from the user's Alertmanager -------------------------------------------

#: Milestones from the alert receiver (kept with the subject's own milestones): the first alert
#: matching the Campaign that fired after the kill, and the moment every such alert had resolved.
#: Times are when the receiver got Alertmanager's notification; Alertmanager's own startsAt/endsAt
#: are kept beside them in the ledger's alert notifications.
ALERT_FIRING = "alert_firing"
ALERT_RESOLVED = "alert_resolved"


# --- The remediator's signals ---------------------------------------------------------------

#: Milestones named from the remediator's Events (kept with the subject's own milestones).
REMEDIATOR_DETECTED = "remediator_detected"
REMEDIATOR_RESOLVED = "remediator_resolved"


@dataclass(frozen=True)
class ClusterEvent:
    """A Kubernetes Event, decoded once: who reported it (reporting controller, else the core/v1
    source component), why, and about what. `count` grows when the API folds a repeat into it."""

    uid: str
    reason: str
    message: str
    controller: str
    involved: str  # kind/name of the object it is about
    count: int = 1


#: Where a remediator action was read from (`RemediatorAction.source`).
ACTION_SOURCE_EVENT = "event"  # an Event it emitted (spec.remediator.signals)
ACTION_SOURCE_MANAGED_FIELDS = "managedFields"  # a write seen by a watch, its manager named
ACTION_SOURCE_AUDIT = "audit"  # the API server's audit webhook: who, what, when (µs)


@dataclass(frozen=True)
class RemediatorAction:
    """One action of the remediator inside a trial window: an Event it emitted, or a write its
    identities made to the objects around the subject (docs/remediator.md).

    `offset` is seconds after the fault was injected, `wall` unix seconds. Events: when the
    operator's watch saw them (core/v1 timestamps are whole seconds). managedFields: when the
    watch saw the change. Audit: the API server's ``stageTimestamp`` of the write (µs), placed
    on the operator's clock (offset = stageTimestamp - the kill's wall time; the API server's
    and the operator's clocks are the same host's on the test bed, NTP-close elsewhere)."""

    reason: str
    message: str
    involved: str  # kind/name (namespace/name for namespaced writes), the object acted on
    wall: float  # unix seconds
    offset: float  # seconds after the kill was sent (monotonic)
    source: str = ACTION_SOURCE_EVENT
    #: Who: the Event's controller, the field manager, or the API user (system:serviceaccount:..).
    identity: str = ""
    #: The API verb (create, update, patch, delete, deletecollection); "" for an Event.
    verb: str = ""
    #: What changed, as far as the source tells (the managed field paths; the patch body at
    #: audit level Request; the response code); "" when it does not.
    change: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "message": self.message,
            "object": self.involved,
            "wall": self.wall,
            "offset": self.offset,
            "source": self.source,
            "identity": self.identity,
            "verb": self.verb,
            "change": self.change,
        }


def remediator_actions(final_state: Mapping[str, Any]) -> tuple[RemediatorAction, ...]:
    """The actions an attempt's final state holds, in time order (none for attempts from
    before signals; those from before sources were Events)."""
    found = final_state.get("remediatorActions") or []
    actions = [
        RemediatorAction(
            reason=str(a.get("reason", "")),
            message=str(a.get("message", "")),
            involved=str(a.get("object", "")),
            wall=float(a.get("wall", 0.0)),
            offset=float(a.get("offset", 0.0)),
            source=str(a.get("source") or ACTION_SOURCE_EVENT),
            identity=str(a.get("identity", "")),
            verb=str(a.get("verb", "")),
            change=str(a.get("change", "")),
        )
        for a in found
        if isinstance(a, Mapping)
    ]
    return tuple(sorted(actions, key=lambda a: a.offset))


def after_recovery(action: RemediatorAction, recovered: Milestone | None) -> bool:
    """Whether the remediator took `action` after the subject had recovered (by offset from the
    fault): with ``spec.remediator.quietSeconds`` the trial waits for such actions; they are
    never part of the recovery, and say the remediator acted on a subject already healthy."""
    return recovered is not None and action.offset > recovered.offset


def actions_after_recovery(
    actions: tuple[RemediatorAction, ...], milestones: Mapping[str, Milestone]
) -> tuple[RemediatorAction, ...]:
    """Those of `actions` taken after the attempt's ``recovered`` milestone."""
    recovered = milestones.get("recovered")
    return tuple(a for a in actions if after_recovery(a, recovered))
