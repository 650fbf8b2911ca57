"""The Campaign as typed, frozen values: parsed once at the edge, read everywhere else.

Rule: no I/O here. `parse_campaign_spec` turns the raw ``spec`` dict of a Campaign into
`CampaignSpec` or raises `SpecError` naming the field, so a bad Campaign is marked with a
condition that says what to fix instead of failing deep inside a trial.

The CRD schema already enforces most of this on the API server; the same checks live here
because the operator must never trust that the CRD installed is the one it shipped with
(an old CRD, `kubectl apply --validate=false` on a CRD without schema, `aftershock validate`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aftershock import cron
from aftershock.endpoints import (
    check_endpoint_namespace,
    check_endpoint_url,
    check_pd_namespace,
    check_pd_url,
)
from aftershock.errors import SpecError
from aftershock.fields import _bool, _enum, _get, _int, _mapping, _name, _number
from aftershock.records import (
    ACTION_SOURCE_AUDIT,
    ACTION_SOURCE_EVENT,
    ACTION_SOURCE_MANAGED_FIELDS,
    ALERT_FIRING,
    ALERT_RESOLVED,
    MILESTONES,
    REMEDIATOR_DETECTED,
    REMEDIATOR_RESOLVED,
    SOURCE_OBSERVED,
    SOURCE_PD_HEARTBEAT,
    AttemptRecord,
    ClusterEvent,
    ContainerState,
    EphemeralState,
    ExecResult,
    ManagedEntry,
    ManagedFields,
    Milestone,
    NodeState,
    Outcome,
    PodState,
    ProbeResult,
    RemediatorAction,
    Victim,
    actions_after_recovery,
    after_recovery,
    remediator_actions,
)

__all__ = [
    "ACTION_SOURCE_AUDIT",
    "ACTION_SOURCE_EVENT",
    "ACTION_SOURCE_MANAGED_FIELDS",
    "ALERT_FIRING",
    "ALERT_RESOLVED",
    "MILESTONES",
    "REMEDIATOR_DETECTED",
    "REMEDIATOR_RESOLVED",
    "SOURCE_OBSERVED",
    "SOURCE_PD_HEARTBEAT",
    "AttemptRecord",
    "ClusterEvent",
    "ContainerState",
    "EphemeralState",
    "ExecResult",
    "ManagedEntry",
    "ManagedFields",
    "Milestone",
    "NodeState",
    "Outcome",
    "PodState",
    "ProbeResult",
    "RemediatorAction",
    "SpecError",
    "Victim",
    "actions_after_recovery",
    "after_recovery",
    "check_endpoint_namespace",
    "check_endpoint_url",
    "check_pd_namespace",
    "check_pd_url",
    "remediator_actions",
]

GROUP = "aftershock.dev"
#: The operator's finalizer on every Campaign it serves (kopf's, under our own name).
FINALIZER = "aftershock.dev/finalizer"
VERSION = "v1alpha1"
PLURAL = "campaigns"
KIND = "Campaign"

#: Namespaces the operator refuses to disturb whatever a Campaign asks.
DEFAULT_PROTECTED_NAMESPACES: frozenset[str] = frozenset(
    {"kube-system", "kube-public", "kube-node-lease", "local-path-storage"}
)


#: `chaos.type` when absent: the pod delete, the first chaos kind (the registry lists them all).
DEFAULT_CHAOS_TYPE = "node_kill"

#: The chaos kind that fails whole nodes: it needs `ChaosSpec.acknowledge_node_failure`.
NODE_FAILURE = "node_failure"


class ChaosMode(enum.StrEnum):
    ONE = "one"
    FIXED = "fixed"
    FIXED_PERCENT = "fixed-percent"


_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")


def _image(raw: Any, field_name: str) -> str | None:
    """An image reference (``registry/name:tag`` or ``@sha256:...``), or None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw or len(raw) > 512 or not _IMAGE.match(raw):
        raise SpecError(field_name, f"must be an image reference like registry/name:tag, got {raw!r}")
    return raw


class PartitionDirection(enum.StrEnum):
    """Whom a network partition cuts the victims off from."""

    #: The subject's other members (the pods its selector matches).
    MEMBERS = "members"
    #: Every address but the pod's own loopback: members, clients, PD, anything.
    ALL = "all"


class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    #: Only in the ledger: the Campaign was deleted before it finished (its object is gone).
    DELETED = "Deleted"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


class Verdict(enum.StrEnum):
    NONE = ""
    PASS = "Pass"
    FAIL = "Fail"
    PARTIAL = "Partial"
    HARD_FAIL = "HardFail"
    INFRA_ERROR = "InfraError"


@dataclass(frozen=True)
class LabelSelectorRequirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def to_query(self) -> str:
        """The selector in the API's ``labelSelector`` query syntax."""
        parts = [f"{k}={v}" for k, v in self.match_labels]
        for req in self.match_expressions:
            if req.operator == "In":
                parts.append(f"{req.key} in ({','.join(req.values)})")
            elif req.operator == "NotIn":
                parts.append(f"{req.key} notin ({','.join(req.values)})")
            elif req.operator == "Exists":
                parts.append(req.key)
            else:
                parts.append(f"!{req.key}")
        return ",".join(parts)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Evaluated locally too: a victim is re-checked against the selector before any kill."""
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class SubjectSpec:
    #: A kind `aftershock.subjects.registry` lists (it alone knows which there are).
    kind: str
    selector: LabelSelector
    pd_url: str | None = None
    #: The subject's own API (etcd: its client URLs); checked by the same rules as `pd_url`.
    endpoints: tuple[str, ...] = ()

    @property
    def api_url_fields(self) -> tuple[tuple[str, str], ...]:
        """(field path, URL) of every URL the operator will connect to for this subject."""
        pd = (("subject.pdURL", self.pd_url),) if self.pd_url else ()
        return (*pd, *((f"subject.endpoints[{i}]", u) for i, u in enumerate(self.endpoints)))

    @property
    def api_urls(self) -> tuple[str, ...]:
        """Every URL the operator will connect to for this subject."""
        return (self.pd_url, *self.endpoints) if self.pd_url else self.endpoints


#: `chaos.target` for victims among all members, whatever their role.
ANY_TARGET = "Any"

#: Trials a Campaign runs when `spec.trials` is absent (one place: the CRD states it too).
DEFAULT_TRIALS = 10


@dataclass(frozen=True)
class ChaosSpec:
    #: The chaos kind's name (`aftershock.chaos.registry.KINDS`, which checks it).
    type: str = DEFAULT_CHAOS_TYPE
    mode: ChaosMode = ChaosMode.ONE
    value: int | None = None
    grace_period_seconds: int = 0
    #: Which members a victim is chosen among, by their role at the gate: `ANY_TARGET`, or one of
    #: the roles the subject's kind declares (the registry checks which).
    target: str = ANY_TARGET
    #: How long a fault that stays until healed is held, seconds (the kinds that need one).
    duration_seconds: float | None = None
    #: The container a container-level kind acts on; None: the pod's first container.
    container: str | None = None
    #: Whom a network fault cuts the victims off from (the kinds that take it; None: members).
    direction: PartitionDirection | None = None
    #: The image a kind's helper container runs (the kinds that take it; None: the kind's own).
    image: str | None = None
    #: Victims are chosen only among members running on these nodes (empty: any node). For a
    #: node-level kind (node_failure) it names the nodes a Campaign may fail.
    nodes: tuple[str, ...] = ()
    #: Required true for node_failure: a failed node takes down everything on it, other
    #: namespaces' pods included (the CRD says the same with a CEL rule).
    acknowledge_node_failure: bool = False


class RemediatorKind(enum.StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFULSET = "StatefulSet"


@dataclass(frozen=True)
class RemediatorSignals:
    """How the remediator reports, as Kubernetes Events: its Events are those whose reporting
    controller (events.k8s.io) or source component (core/v1) is `controller`; the first with
    `detected_reason` after the kill says it noticed, the first with `resolved_reason` that
    it declared the incident over. Every one of its Events in the trial window is an action."""

    controller: str
    detected_reason: str
    resolved_reason: str


def service_account_user(namespace: str, name: str) -> str:
    """The API user a ServiceAccount's token authenticates as."""
    return f"system:serviceaccount:{namespace}:{name}"


@dataclass(frozen=True)
class RemediatorIdentities:
    """Who the remediator is to the API server: its writes around the subject are its actions
    (docs/remediator.md). ServiceAccounts as ``name`` (the Campaign's namespace) or
    ``namespace/name``; users as the API server authenticates them; field managers as they
    appear in managedFields."""

    service_accounts: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    field_managers: tuple[str, ...] = ()

    def usernames(self, namespace: str) -> frozenset[str]:
        """The API usernames these identities authenticate as (audit's ``user.username``)."""
        found = set(self.users)
        for sa in self.service_accounts:
            ns, _, name = sa.rpartition("/")
            found.add(service_account_user(ns or namespace, name))
        return frozenset(found)


@dataclass(frozen=True)
class Remediator:
    """A workload that heals the subject; scaled to zero during baseline trials."""

    kind: RemediatorKind
    name: str
    signals: RemediatorSignals | None = None
    #: A trial ends only once the subject recovered and the remediator then did nothing for
    #: this long (`aftershock.engine.recovery.QuietWait`); None: it ends at the recovery plus
    #: the settle window, whatever the remediator does. Never part of the recovery time.
    quiet_seconds: float | None = None
    #: Whose writes are its actions; without ServiceAccounts named, the workload's own one
    #: (read from its pod template when the Campaign starts) is added.
    identities: RemediatorIdentities | None = None


class MatchType(enum.StrEnum):
    """Alertmanager's matcher operators (=, !=, =~, !~), named in words as Kubernetes names a
    selector's operators (and as YAML tools read without quoting); regular expressions match
    the whole value, as Alertmanager's do."""

    EQUAL = "Equal"
    NOT_EQUAL = "NotEqual"
    REGEX = "Regex"
    NOT_REGEX = "NotRegex"

    @property
    def symbol(self) -> str:
        return {"Equal": "=", "NotEqual": "!=", "Regex": "=~", "NotRegex": "!~"}[self.value]


@dataclass(frozen=True)
class AlertMatcher:
    """One label matcher of `spec.detection.alertMatchers`, as Alertmanager writes them."""

    name: str
    value: str
    match_type: MatchType = MatchType.EQUAL

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Alertmanager's semantics: a label that is absent has the empty value."""
        got = labels.get(self.name, "")
        if self.match_type is MatchType.EQUAL:
            return got == self.value
        if self.match_type is MatchType.NOT_EQUAL:
            return got != self.value
        found = re.fullmatch(self.value, got) is not None
        return found if self.match_type is MatchType.REGEX else not found

    def __str__(self) -> str:
        return f"{self.name}{self.match_type.symbol}{self.value!r}"


@dataclass(frozen=True)
class DetectionSpec:
    """`spec.detection`: which alerts, delivered by Alertmanager to the operator's receiver, say
    that the trial's fault was detected. An alert counts for this Campaign only when it carries
    the label ``namespace`` equal to the Campaign's namespace and matches every matcher."""

    alert_matchers: tuple[AlertMatcher, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.alert_matchers)


class ResetMode(enum.StrEnum):
    """What happens to the subject before each trial's steady-state gate."""

    NONE = "None"
    #: Every member's pod deleted (UID precondition) and re-created by its controller.
    RESTART = "Restart"
    #: As Restart, and each pod's PersistentVolumeClaims (its StatefulSet's volumeClaimTemplates,
    #: named ``<template>-<pod>``) deleted first: the next trial starts from empty volumes.
    RECREATE = "Recreate"


@dataclass(frozen=True)
class ResetSpec:
    mode: ResetMode = ResetMode.NONE
    #: Required true for `Recreate`: the subject's data is deleted before every trial.
    acknowledge_data_loss: bool = False


class ConcurrencyPolicy(enum.StrEnum):
    """What a scheduled tick does while a run of the Campaign still goes (CronJob's words; not
    ``Allow``: two runs of one Campaign would share one subject and one series)."""

    #: Skip the tick: the running run goes on, the tick is recorded as skipped.
    FORBID = "Forbid"
    #: Stop the running run (its attempt in flight is recorded ``interrupted``) and start anew.
    REPLACE = "Replace"


#: Runs a scheduled Campaign keeps in the ledger when ``schedule.historyLimit`` is absent.
DEFAULT_HISTORY_LIMIT = 10


@dataclass(frozen=True)
class ScheduleSpec:
    """``spec.schedule``: run the Campaign again at each tick of a cron schedule."""

    cron: cron.CronSchedule
    #: A tick missed by more than this (the operator was down, say) is not run; None: any
    #: missed tick may still run (once: missed ticks never make a burst of runs).
    starting_deadline_seconds: int | None = None
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    #: Runs kept in the ledger with their attempts; older ones are pruned to a summary row.
    history_limit: int = DEFAULT_HISTORY_LIMIT


@dataclass(frozen=True)
class TrendSpec:
    """``spec.trend``: how each finished run is judged against earlier ones."""

    #: The run every run is also compared with (None: only the previous run).
    baseline_run: int | None = None
    #: Median shifts smaller than this are never a regression (as `aftershock compare`'s option).
    min_effect_seconds: float = 0.0
    #: The significance level of the test (as `aftershock compare --alpha`).
    alpha: float = 0.05


@dataclass(frozen=True)
class CampaignSpec:
    subject: SubjectSpec
    chaos: ChaosSpec = field(default_factory=ChaosSpec)
    trials: int = DEFAULT_TRIALS
    interval_seconds: float = 30.0
    steady_state_timeout_seconds: float = 300.0
    steady_state_stable_seconds: float = 10.0
    recovery_timeout_seconds: float = 600.0
    #: After "recovered", how long the subject must stay healthy for the trial to count: one
    #: TiKV heartbeat interval (10 s) plus margin, so a store that relapses to Disconnected
    #: because its new process never reported is caught.
    recovery_settle_seconds: float = 15.0
    stop_on_unrecovered: bool = True
    slo_p95_recovery_seconds: float | None = None
    suspend: bool = False
    dry_run: bool = False
    seed: int | None = None
    baseline: bool = False
    remediator: Remediator | None = None
    reset: ResetSpec = field(default_factory=ResetSpec)
    schedule: ScheduleSpec | None = None
    trend: TrendSpec = field(default_factory=TrendSpec)
    detection: DetectionSpec | None = None


@dataclass(frozen=True)
class CampaignRef:
    """Which Campaign: the uid tells a re-created Campaign of the same name from the old one."""

    namespace: str
    name: str
    uid: str

    @property
    def object_uid(self) -> str:
        """The Campaign object's uid, also when `uid` is a run's id (``<uid>#<n>``,
        `aftershock.engine.runs`)."""
        return object_uid(self.uid)


#: Separates a Campaign's uid from its run number in a run's id (run 1's id is the uid itself).
RUN_ID_SEPARATOR = "#"


def object_uid(run_id: str) -> str:
    """The Campaign object's uid in a run's id."""
    return run_id.partition(RUN_ID_SEPARATOR)[0]


# fullmatch, never match: `$` also matches before a trailing newline ("web\n" would pass).
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
#: A label key's prefix is a DNS subdomain: 253 characters at most (Kubernetes refuses more).
_LABEL_PREFIX_MAX = 253
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_MAX_ENDPOINTS = 16


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _node_name(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or len(raw) > 253 or not _DNS_SUBDOMAIN.fullmatch(raw):
        raise SpecError(path, f"{raw!r} is not a valid node name")
    return raw


def _is_label_key(key: Any) -> bool:
    if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
        return False
    prefix, _, _ = key.rpartition("/")
    return len(prefix) <= _LABEL_PREFIX_MAX


def parse_selector(raw: Any, path: str) -> LabelSelector:
    sel = _mapping(raw, path)
    labels_raw = _mapping(sel.get("matchLabels") or {}, f"{path}.matchLabels")
    labels: list[tuple[str, str]] = []
    for k, v in sorted(labels_raw.items()):
        if not _is_label_key(k):
            raise SpecError(f"{path}.matchLabels", f"{k!r} is not a valid label key")
        if not isinstance(v, str) or not _LABEL_VALUE.fullmatch(v):
            raise SpecError(f"{path}.matchLabels.{k}", f"{v!r} is not a valid label value")
        labels.append((k, v))
    exprs: list[LabelSelectorRequirement] = []
    for i, raw_expr in enumerate(sel.get("matchExpressions") or []):
        epath = f"{path}.matchExpressions[{i}]"
        e = _mapping(raw_expr, epath)
        key = _get(e, "key", f"{epath}.key")
        if not _is_label_key(key):
            raise SpecError(f"{epath}.key", f"{key!r} is not a valid label key")
        op = _get(e, "operator", f"{epath}.operator")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise SpecError(f"{epath}.operator", f"must be In, NotIn, Exists or DoesNotExist, got {op!r}")
        raw_values = e.get("values") or []
        if not isinstance(raw_values, list):
            raise SpecError(f"{epath}.values", "must be a list of strings")
        values = tuple(raw_values)
        if op in ("In", "NotIn") and not values:
            raise SpecError(f"{epath}.values", f"must not be empty for operator {op}")
        if op in ("Exists", "DoesNotExist") and values:
            raise SpecError(f"{epath}.values", f"must be empty for operator {op}")
        for v in values:
            if not isinstance(v, str) or not _LABEL_VALUE.fullmatch(v):
                raise SpecError(f"{epath}.values", f"{v!r} is not a valid label value")
        exprs.append(LabelSelectorRequirement(key, op, values))
    # An empty selector selects every pod in the namespace: never a valid chaos target.
    if not labels and not any(e.operator in ("In", "Exists") for e in exprs):
        raise SpecError(
            path,
            "must select something: give matchLabels or an In/Exists matchExpression "
            "(an empty selector would match every pod in the namespace)",
        )
    return LabelSelector(tuple(labels), tuple(exprs))


def _endpoints(raw: Any, *, allow_loopback: bool) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not 1 <= len(raw) <= _MAX_ENDPOINTS:
        raise SpecError("subject.endpoints", f"must be a list of 1 to {_MAX_ENDPOINTS} URLs")
    found: list[str] = []
    for i, url in enumerate(raw):
        path = f"subject.endpoints[{i}]"
        if not isinstance(url, str):
            raise SpecError(path, "must be a string")
        found.append(check_endpoint_url(url, path, allow_loopback=allow_loopback))
    return tuple(found)


def requested_trials(raw: Mapping[str, Any]) -> int:
    """The trials a spec asks for as far as it can be read: for a status before (or without)
    a parse, such as the one that says the spec is invalid."""
    trials = raw.get("trials") if isinstance(raw, Mapping) else None
    return trials if isinstance(trials, int) and not isinstance(trials, bool) else DEFAULT_TRIALS


def read_suspend(raw: Mapping[str, Any]) -> bool:
    """`spec.suspend`, the one field that changes while a Campaign runs (re-read each loop)."""
    return isinstance(raw, Mapping) and bool(raw.get("suspend", False))


def _parse_chaos(chaos_raw: Mapping[str, Any]) -> ChaosSpec:
    """`spec.chaos`: the fields every kind reads, and those only some kinds take (the
    registry checks which kind takes which)."""
    ctype = _name(chaos_raw.get("type", DEFAULT_CHAOS_TYPE), "chaos.type")
    mode = _enum(ChaosMode, chaos_raw.get("mode", "one"), "chaos.mode")
    value_raw = chaos_raw.get("value")
    value: int | None = None
    if mode is ChaosMode.FIXED:
        value = _int(_get(chaos_raw, "value", "chaos.value"), "chaos.value", minimum=1, maximum=1000)
    elif mode is ChaosMode.FIXED_PERCENT:
        value = _int(_get(chaos_raw, "value", "chaos.value"), "chaos.value", minimum=1, maximum=100)
    elif value_raw is not None:
        value = _int(value_raw, "chaos.value", minimum=1, maximum=1)
    grace = _int(chaos_raw.get("gracePeriodSeconds", 0), "chaos.gracePeriodSeconds", minimum=0, maximum=3600)
    target = _name(chaos_raw.get("target", ANY_TARGET), "chaos.target")
    duration_raw = chaos_raw.get("durationSeconds")
    duration = (
        None
        if duration_raw is None
        else _number(duration_raw, "chaos.durationSeconds", minimum=1, maximum=86_399)
    )
    container_raw = chaos_raw.get("container")
    container = None if container_raw is None else _name(container_raw, "chaos.container")
    direction_raw = chaos_raw.get("direction")
    direction = None if direction_raw is None else _enum(PartitionDirection, direction_raw, "chaos.direction")
    image = _image(chaos_raw.get("image"), "chaos.image")
    nodes_raw = chaos_raw.get("nodes") or []
    if not isinstance(nodes_raw, list):
        raise SpecError("chaos.nodes", "must be a list of node names")
    nodes = tuple(dict.fromkeys(_node_name(n, f"chaos.nodes[{i}]") for i, n in enumerate(nodes_raw)))
    ack_node = _bool(chaos_raw.get("acknowledgeNodeFailure", False), "chaos.acknowledgeNodeFailure")
    if ctype == NODE_FAILURE and not ack_node:
        raise SpecError(
            "chaos.acknowledgeNodeFailure",
            "must be true for chaos.type node_failure: a failed node takes down everything that "
            "runs on it, other namespaces' pods included; set spec.chaos.acknowledgeNodeFailure: "
            "true to accept that",
        )
    return ChaosSpec(
        type=ctype,
        mode=mode,
        value=value,
        grace_period_seconds=grace,
        target=target,
        duration_seconds=duration,
        container=container,
        direction=direction,
        image=image,
        nodes=nodes,
        acknowledge_node_failure=ack_node,
    )


def parse_campaign_spec(raw: Mapping[str, Any], *, allow_loopback_pd: bool = False) -> CampaignSpec:
    """Parse and check a Campaign ``spec``; raise `SpecError` naming the first bad field."""
    raw = _mapping(raw, "")
    subject_raw = _mapping(_get(raw, "subject", "subject"), "subject")
    kind = _name(_get(subject_raw, "kind", "subject.kind"), "subject.kind")
    selector = parse_selector(_get(subject_raw, "selector", "subject.selector"), "subject.selector")
    pd_url = subject_raw.get("pdURL")
    if pd_url is not None:
        if not isinstance(pd_url, str):
            raise SpecError("subject.pdURL", "must be a string")
        pd_url = check_endpoint_url(pd_url, allow_loopback=allow_loopback_pd)
    subject = SubjectSpec(
        kind=kind,
        selector=selector,
        pd_url=pd_url,
        endpoints=_endpoints(subject_raw.get("endpoints"), allow_loopback=allow_loopback_pd),
    )

    chaos = _parse_chaos(_mapping(_get(raw, "chaos", "chaos"), "chaos"))
    duration = chaos.duration_seconds

    steady = _mapping(raw.get("steadyState") or {}, "steadyState")
    recovery = _mapping(raw.get("recovery") or {}, "recovery")
    slo = _mapping(raw.get("slo") or {}, "slo")
    p95 = slo.get("p95RecoverySeconds")
    seed = raw.get("seed")
    remediator: Remediator | None = None
    if raw.get("remediator") is not None:
        rem = _mapping(raw["remediator"], "remediator")
        rem_name = _get(rem, "name", "remediator.name")
        if not isinstance(rem_name, str) or not all(_DNS_LABEL.fullmatch(x) for x in rem_name.split(".")):
            raise SpecError("remediator.name", f"{rem_name!r} is not a valid object name")
        remediator = Remediator(
            kind=_enum(RemediatorKind, _get(rem, "kind", "remediator.kind"), "remediator.kind"),
            name=rem_name,
            signals=_signals(rem.get("signals")),
            quiet_seconds=(
                None
                if rem.get("quietSeconds") is None
                else _number(rem["quietSeconds"], "remediator.quietSeconds", minimum=1, maximum=3_600)
            ),
            identities=_identities(rem.get("identities")),
        )
    spec = CampaignSpec(
        subject=subject,
        chaos=chaos,
        trials=_int(raw.get("trials", DEFAULT_TRIALS), "trials", minimum=1, maximum=100_000),
        interval_seconds=_number(
            raw.get("intervalSeconds", 30), "intervalSeconds", minimum=0, maximum=86_400
        ),
        steady_state_timeout_seconds=_number(
            steady.get("timeoutSeconds", 300), "steadyState.timeoutSeconds", minimum=1, maximum=86_400
        ),
        steady_state_stable_seconds=_number(
            steady.get("stableSeconds", 10), "steadyState.stableSeconds", minimum=0, maximum=3_600
        ),
        recovery_timeout_seconds=_number(
            recovery.get("timeoutSeconds", 600), "recovery.timeoutSeconds", minimum=1, maximum=86_400
        ),
        recovery_settle_seconds=_number(
            recovery.get("settleSeconds", 15), "recovery.settleSeconds", minimum=0, maximum=3_600
        ),
        stop_on_unrecovered=_bool(recovery.get("stopOnUnrecovered", True), "recovery.stopOnUnrecovered"),
        slo_p95_recovery_seconds=(
            None if p95 is None else _number(p95, "slo.p95RecoverySeconds", minimum=0.001, maximum=86_400)
        ),
        suspend=_bool(raw.get("suspend", False), "suspend"),
        dry_run=_bool(raw.get("dryRun", False), "dryRun"),
        seed=None if seed is None else _int(seed, "seed", minimum=0, maximum=2**53),
        baseline=_bool(raw.get("baseline", False), "baseline"),
        remediator=remediator,
        reset=parse_reset(raw.get("reset")),
        schedule=parse_schedule(raw.get("schedule")),
        trend=parse_trend(raw.get("trend")),
        detection=parse_detection(raw.get("detection")),
    )
    _check_quiet(spec)
    if duration is not None and duration >= spec.recovery_timeout_seconds:
        raise SpecError(
            "chaos.durationSeconds",
            f"{duration:g} must be shorter than recovery.timeoutSeconds "
            f"({spec.recovery_timeout_seconds:g}): the victims come back only after the fault is healed",
        )
    return spec


def _check_quiet(spec: CampaignSpec) -> None:
    """`remediator.quietSeconds` bounded by the recovery timeout, which caps the wait. Every
    remediator has its actions watched (its Events with `signals`, its identities' writes from
    the audit webhook and managedFields: `aftershock.engine.actions`), so the wait always has
    something to listen to; what each source can see is docs/remediator.md's."""
    rem = spec.remediator
    if rem is None or rem.quiet_seconds is None:
        return
    if rem.quiet_seconds >= spec.recovery_timeout_seconds:
        raise SpecError(
            "remediator.quietSeconds",
            f"{rem.quiet_seconds:g} must be shorter than recovery.timeoutSeconds "
            f"({spec.recovery_timeout_seconds:g}), which caps the quiet wait after the recovery",
        )


def parse_schedule(raw: Any) -> ScheduleSpec | None:
    """`spec.schedule`, or None for a Campaign that runs once (and again only when asked)."""
    if raw is None:
        return None
    sched = _mapping(raw, "schedule")
    expression = _get(sched, "cron", "schedule.cron")
    if not isinstance(expression, str):
        raise SpecError("schedule.cron", "must be a string")
    zone = sched.get("timeZone", "UTC")
    if not isinstance(zone, str):
        raise SpecError("schedule.timeZone", "must be a string")
    try:
        cron.zone(zone)
    except cron.CronError as exc:
        raise SpecError("schedule.timeZone", str(exc)) from None
    try:
        schedule = cron.parse(expression, zone)
    except cron.CronError as exc:
        raise SpecError("schedule.cron", str(exc)) from None
    deadline = sched.get("startingDeadlineSeconds")
    return ScheduleSpec(
        cron=schedule,
        starting_deadline_seconds=(
            None
            if deadline is None
            else _int(deadline, "schedule.startingDeadlineSeconds", minimum=1, maximum=31_536_000)
        ),
        concurrency_policy=_enum(
            ConcurrencyPolicy, sched.get("concurrencyPolicy", "Forbid"), "schedule.concurrencyPolicy"
        ),
        history_limit=_int(
            sched.get("historyLimit", DEFAULT_HISTORY_LIMIT),
            "schedule.historyLimit",
            minimum=2,
            maximum=10_000,
        ),
    )


#: Bounds of `spec.detection.alertMatchers` (the CRD states them too).
_MAX_ALERT_MATCHERS = 16
_MAX_MATCHER_VALUE = 1024
#: Prometheus's label names (Alertmanager's UTF-8 names are not needed for rules written here).
_ALERT_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,127}")
#: The label that ties an alert to a namespace: set by the receiver's rule, never by a matcher.
ALERT_NAMESPACE_LABEL = "namespace"


def parse_detection(raw: Any) -> DetectionSpec | None:
    """`spec.detection`, or None when the Campaign does not listen for alerts."""
    if raw is None:
        return None
    det = _mapping(raw, "detection")
    found = _get(det, "alertMatchers", "detection.alertMatchers")
    if not isinstance(found, list) or not 1 <= len(found) <= _MAX_ALERT_MATCHERS:
        raise SpecError("detection.alertMatchers", f"must be a list of 1 to {_MAX_ALERT_MATCHERS} matchers")
    matchers: list[AlertMatcher] = []
    for i, item in enumerate(found):
        path = f"detection.alertMatchers[{i}]"
        m = _mapping(item, path)
        name = _get(m, "name", f"{path}.name")
        if not isinstance(name, str) or not _ALERT_LABEL_NAME.fullmatch(name):
            raise SpecError(f"{path}.name", f"{name!r} is not a Prometheus label name")
        if name == ALERT_NAMESPACE_LABEL:
            raise SpecError(
                f"{path}.name",
                "the namespace label is matched by the receiver itself (an alert counts only for "
                "Campaigns in the namespace it names); leave it out",
            )
        value = _get(m, "value", f"{path}.value")
        if not isinstance(value, str) or len(value) > _MAX_MATCHER_VALUE:
            raise SpecError(f"{path}.value", f"must be a string of at most {_MAX_MATCHER_VALUE} characters")
        match_type = _enum(MatchType, m.get("matchType", MatchType.EQUAL.value), f"{path}.matchType")
        if match_type in (MatchType.REGEX, MatchType.NOT_REGEX):
            try:
                re.compile(value)
            except re.error as exc:
                raise SpecError(f"{path}.value", f"is not a regular expression: {exc}") from None
        matchers.append(AlertMatcher(name, value, match_type))
    # Matchers that only exclude (or match the empty value) would take every alert of the
    # namespace as this fault's detection.
    if not any(m.match_type in (MatchType.EQUAL, MatchType.REGEX) and m.value for m in matchers):
        raise SpecError(
            "detection.alertMatchers",
            "needs at least one positive matcher (Equal or Regex) with a non-empty value, e.g. "
            "{name: alertname, value: EtcdMemberDown}: otherwise every alert of the namespace matches",
        )
    return DetectionSpec(tuple(matchers))


def parse_trend(raw: Any) -> TrendSpec:
    """`spec.trend`: the baseline run and the test's settings."""
    if raw is None:
        return TrendSpec()
    trend = _mapping(raw, "trend")
    baseline = trend.get("baselineRun")
    return TrendSpec(
        baseline_run=None
        if baseline is None
        else _int(baseline, "trend.baselineRun", minimum=1, maximum=2**31),
        min_effect_seconds=_number(
            trend.get("minEffectSeconds", 0), "trend.minEffectSeconds", minimum=0, maximum=86_400
        ),
        alpha=_number(trend.get("alpha", 0.05), "trend.alpha", minimum=0.0001, maximum=0.5),
    )


def parse_reset(raw: Any) -> ResetSpec:
    """`spec.reset`; `Recreate` deletes the subject's volumes, so it is refused unless
    `spec.reset.acknowledgeDataLoss` is true (the CRD says the same with a CEL rule)."""
    if raw is None:
        return ResetSpec()
    reset = _mapping(raw, "reset")
    mode = _enum(ResetMode, reset.get("mode", "None"), "reset.mode")
    ack = _bool(reset.get("acknowledgeDataLoss", False), "reset.acknowledgeDataLoss")
    if mode is ResetMode.RECREATE and not ack:
        raise SpecError(
            "reset.acknowledgeDataLoss",
            "must be true when spec.reset.mode is Recreate: Recreate deletes the subject's "
            "PersistentVolumeClaims (all its data) before every trial; set "
            "spec.reset.acknowledgeDataLoss: true to accept that, or use mode Restart",
        )
    return ResetSpec(mode=mode, acknowledge_data_loss=ack)


_EVENT_REASON = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")


_SA_REF = re.compile(r"^(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _identities(raw: Any) -> RemediatorIdentities | None:
    if raw is None:
        return None
    ids = _mapping(raw, "remediator.identities")
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("serviceAccounts", "users", "fieldManagers"):
        path = f"remediator.identities.{key}"
        values = ids.get(key) or []
        if not isinstance(values, list) or len(values) > 32:
            raise SpecError(path, "must be a list of at most 32 names")
        for v in values:
            if not isinstance(v, str) or not v or len(v) > 253:
                raise SpecError(path, f"{v!r} must be a non-empty string of at most 253 characters")
            if key == "serviceAccounts" and not _SA_REF.fullmatch(v):
                raise SpecError(path, f"{v!r} is not a ServiceAccount (name or namespace/name)")
        lists[key] = tuple(values)
    if not any(lists.values()):
        raise SpecError("remediator.identities", "names no serviceAccounts, users nor fieldManagers")
    return RemediatorIdentities(lists["serviceAccounts"], lists["users"], lists["fieldManagers"])


def _signals(raw: Any) -> RemediatorSignals | None:
    if raw is None:
        return None
    sig = _mapping(raw, "remediator.signals")
    values: dict[str, str] = {}
    for key in ("controller", "detectedReason", "resolvedReason"):
        path = f"remediator.signals.{key}"
        value = _get(sig, key, path)
        if not isinstance(value, str) or not value or len(value) > 128:
            raise SpecError(path, "must be a non-empty string of at most 128 characters")
        if key != "controller" and not _EVENT_REASON.fullmatch(value):
            raise SpecError(path, f"{value!r} is not an Event reason (a letter, then letters, digits, _ . -)")
        values[key] = value
    return RemediatorSignals(
        controller=values["controller"],
        detected_reason=values["detectedReason"],
        resolved_reason=values["resolvedReason"],
    )


#: Label the operator's own pods carry; a selector matching them is refused.
OPERATOR_POD_LABEL = ("app.kubernetes.io/name", "aftershock")
