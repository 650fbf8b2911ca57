"""The chaos-kind protocol: what a kind of fault supplies so the engine can inject it, watch the
victims come back and heal it, without knowing which fault it is.

A kind (`ChaosKindInfo`, listed once in `aftershock.chaos.registry`) declares:

- how it **injects** (`ChaosKindInfo.inject`): given the victims and the API calls it may make
  (`FaultApi`, which `aftershock.kube` implements), it disturbs them and says what it did
  (`Injection`), or refuses before doing anything when its method cannot work for this
  subject (`Injection.refused`: the Campaign stops with a condition that says what to fix);
- how it **heals** (`ChaosKindInfo.heal`): None for a fault the cluster undoes by itself (a
  deleted pod is replaced, a killed container restarted by the kubelet);
- the **rights** it needs (`Right`: verb, resource, subresource), rendered per kind into the
  RBAC manifests and the chart (``make crd``), so a user can leave a kind out, and readable as
  data by an admission policy that checks the Campaign's author holds them;
- the **milestones** only it can see, in the order a recovery passes them, and the one at
  which every victim is back (`ChaosKindInfo.back`);
- whether it needs a **fault duration** (`chaos.durationSeconds`);
- whether the cluster still shows the fault after the heal (`ChaosKindInfo.settled`): a
  baseline trial's remediator is restored only once it does not.

Rule: no Kubernetes client here (the engine hands `FaultApi` in); no clock but the one handed in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aftershock.model import ChaosSpec, EphemeralState, ExecResult, NodeState, PodState, Victim


@dataclass(frozen=True)
class Right:
    """One right a kind exercises, as RBAC names it (``pods/exec`` create: resource ``pods``,
    subresource ``exec``, verb ``create``)."""

    verb: str
    resource: str
    subresource: str = ""
    group: str = ""
    #: Why the kind needs it, for the rendered manifests' comments.
    why: str = ""
    #: A cluster-scoped resource (nodes): granted by a ClusterRole, checked with no namespace.
    cluster: bool = False

    @property
    def rbac_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def as_json(self) -> dict[str, str]:
        return {
            "apiGroup": self.group,
            "resource": self.resource,
            "subresource": self.subresource,
            "verb": self.verb,
        }


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class FaultApi(Protocol):
    """The API calls a chaos kind may make (each kind's `Right`s say which it uses)."""

    async def delete_pod(self, namespace: str, name: str, uid: str, grace_period_seconds: int) -> None: ...

    async def exec_in_pod(
        self, namespace: str, pod: str, container: str, command: Sequence[str], timeout: float
    ) -> ExecResult:
        """Run `command` in the container (``pods/exec``); never raises for the command's own
        failure (that is `ExecResult.error`), only for the API's (`ApiError`)."""

    async def get_node(self, name: str) -> NodeState: ...

    async def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None]) -> None:
        """Set (a string) or remove (None) annotations of a node (a merge patch)."""

    async def add_ephemeral_container(
        self, namespace: str, pod: str, uid: str, container: Mapping[str, Any]
    ) -> None:
        """Add `container` to the pod's ephemeral containers (``pods/ephemeralcontainers``
        patch), only while the pod is the one with `uid`. Pod Security admission checks it
        like any container: a level that forbids it answers 403 (`ForbiddenError`)."""

    async def ephemeral_containers(self, namespace: str, pod: str) -> tuple[EphemeralState, ...] | None:
        """The pod's ephemeral containers as its status shows them; None: no such pod."""


@dataclass(frozen=True)
class Strike:
    """One trial's fault: the victims, their pods as the gate saw them, and the spec."""

    namespace: str
    victims: tuple[Victim, ...]
    #: The victims' pods at the gate, by pod UID.
    pods: Mapping[str, PodState]
    chaos: ChaosSpec
    #: How long a call is retried on transient API errors.
    retry_budget: float
    #: True while the subject lock is held, fresh, for the victims: asked right before each
    #: call that disturbs a victim (each delete, each retry of one, each exec). After the lock's
    #: renew deadline another Campaign may hold the subject, so the call is not ours to send.
    held: Callable[[], bool]
    #: The node the operator itself runs on (``--node-name``, the downward API in a pod); None
    #: when unknown (a process outside the cluster). Node-level kinds never fail it.
    operator_node: str | None = None


@dataclass(frozen=True)
class Injection:
    """What injecting did."""

    #: None: every victim was disturbed. Otherwise why not (an infrastructure error).
    error: str | None
    #: (monotonic, wall) of the first answer that proves the fault took effect; None when no
    #: answer can stand for it.
    first_acked: tuple[float, float] | None = None
    #: True: the method cannot work for this subject and nothing was done; `error` says what
    #: to fix, and the Campaign stops with it rather than retrying.
    refused: bool = False
    #: What the kind recorded per victim (``final_state["chaos"]``): container ids, PIDs, ...
    details: Mapping[str, Any] = field(default_factory=dict)
    #: What else the fault disturbed beyond the victims (node_failure: every other pod on the
    #: node), in words: the engine puts it in the Campaign's status and a Warning Event.
    notice: str | None = None


#: True once the trial must stop (the operator exiting, the Campaign deleted).
Stopping = Callable[[], bool]

Inject = Callable[[Strike, FaultApi, Clock, Stopping], Awaitable[Injection]]


@dataclass(frozen=True)
class Fault:
    """An injected fault the ledger still holds as not healed: what a heal needs to undo it."""

    namespace: str
    victims: tuple[Victim, ...]
    chaos: ChaosSpec
    details: Mapping[str, Any]


#: Undo the fault; None when it is undone (or was never there), else why it could not be.
Heal = Callable[[Fault, FaultApi], Awaitable[str | None]]

#: Wait, bounded, until the cluster itself no longer shows the healed fault's aftermath (a
#: failed node Ready again); None once it does, else why the wait ended without it.
Settled = Callable[[Sequence[Victim], FaultApi, Clock, Stopping], Awaitable[str | None]]


@dataclass(frozen=True)
class ChaosKindInfo:
    """One kind of fault, as the registry lists it."""

    type: str
    #: One sentence: what it does (the CRD's description and the README's table).
    summary: str
    rights: tuple[Right, ...]
    #: Milestones only this kind records, in recovery order: (name, what it means).
    milestones: tuple[tuple[str, str], ...]
    #: The milestone at which every victim is back (the engine's recovery waits for it).
    back: str
    #: True: victims are replaced by new pods (new UIDs); False: the same pods come back.
    replaces_pods: bool
    #: Whether `chaos.durationSeconds` is required (a fault held until healed) or refused.
    needs_duration: bool
    inject: Inject
    #: None: the cluster undoes the fault by itself; nothing of ours is left to remove.
    heal: Heal | None = None
    #: None: the heal leaves nothing for anyone to act on. Otherwise the cluster shows the
    #: fault for a while after the heal (node_failure: the node NotReady until its kubelet's
    #: next status update), and a baseline trial restores its remediator only once that is over:
    #: restored sooner, it would act on the fault it was scaled down for, between trials.
    settled: Settled | None = None
    #: True: the victims' processes start anew (the subject's judge waits for a new start);
    #: False: the same processes carry on once the fault is healed (a partition).
    restarts: bool = True
    #: The optional chaos fields only some kinds take (``direction``, ``image``): a Campaign
    #: that sets one for a kind that does not take it is refused rather than silently ignored.
    takes: frozenset[str] = frozenset()

    @property
    def opt_in(self) -> bool:
        """Its rights reach beyond the watched namespaces (a cluster-scoped resource, which RBAC
        cannot grant per namespace): no install grants them unless asked, the kustomize installs
        with the kind's component (`component`), the chart with the kind in ``chaosKinds``."""
        return any(r.cluster for r in self.rights)

    @property
    def component(self) -> str | None:
        """The kustomize component that grants an opt-in kind's rights (generated, make crd)."""
        return "manifests/" + self.type.replace("_", "-") if self.opt_in else None

    def enable_hint(self) -> str:
        """How a cluster administrator grants this kind's rights to the operator."""
        if self.component is not None:
            return (
                f"{self.type}'s rights are cluster-wide and off by default: add the kustomize "
                f"component {self.component} to the operator's install (components: "
                f"[{self.component}]), or {self.type} to the Helm chart's chaosKinds "
                '(README "Security model")'
            )
        return (
            f"grant the operator {self.type}'s role (manifests/operator/chaos-rbac.yaml), or "
            f"{self.type} in the Helm chart's chaosKinds"
        )

    def check(self, chaos: ChaosSpec) -> tuple[str, str] | None:
        """What is wrong with `chaos` for this kind (field, why), or None."""
        if self.needs_duration and chaos.duration_seconds is None:
            return (
                "chaos.durationSeconds",
                f"{self.type} needs chaos.durationSeconds (how long the fault is held)",
            )
        if not self.needs_duration and chaos.duration_seconds is not None:
            return (
                "chaos.durationSeconds",
                f"{self.type} does not take chaos.durationSeconds (the cluster undoes it by itself)",
            )
        for name, value in (("direction", chaos.direction), ("image", chaos.image)):
            if value is not None and name not in self.takes:
                return f"chaos.{name}", f"{self.type} does not take chaos.{name}"
        return None
