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
import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

GROUP = "aftershock.dev"
VERSION = "v1alpha1"
PLURAL = "campaigns"
KIND = "Campaign"

#: Namespaces the operator refuses to disturb whatever a Campaign asks.
DEFAULT_PROTECTED_NAMESPACES: frozenset[str] = frozenset(
    {"kube-system", "kube-public", "kube-node-lease", "local-path-storage"}
)


class SubjectKind(enum.StrEnum):
    TIKV = "TiKV"


class ChaosType(enum.StrEnum):
    NODE_KILL = "node_kill"


class ChaosMode(enum.StrEnum):
    ONE = "one"
    FIXED = "fixed"
    FIXED_PERCENT = "fixed-percent"


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


class SpecError(ValueError):
    """A Campaign spec that cannot run. `field` is the dotted path a person has to fix."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"spec.{field_path}: {message}")
        self.field = f"spec.{field_path}"
        self.reason = message


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
    kind: SubjectKind
    selector: LabelSelector
    pd_url: str | None = None


@dataclass(frozen=True)
class ChaosSpec:
    type: ChaosType = ChaosType.NODE_KILL
    mode: ChaosMode = ChaosMode.ONE
    value: int | None = None
    grace_period_seconds: int = 0


class RemediatorKind(enum.StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFULSET = "StatefulSet"


@dataclass(frozen=True)
class Remediator:
    """A workload that heals the subject; scaled to zero during baseline trials."""

    kind: RemediatorKind
    name: str


@dataclass(frozen=True)
class CampaignSpec:
    subject: SubjectSpec
    chaos: ChaosSpec = field(default_factory=ChaosSpec)
    trials: int = 10
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


@dataclass(frozen=True)
class CampaignRef:
    """Which Campaign: the uid tells a re-created Campaign of the same name from the old one."""

    namespace: str
    name: str
    uid: str


_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _get(raw: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in raw or raw[key] is None:
        raise SpecError(path, "is required")
    return raw[key]


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be an object")
    return value


def _int(value: Any, path: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, "must be an integer")
    if not minimum <= value <= maximum:
        raise SpecError(path, f"must be between {minimum} and {maximum}, got {value}")
    return value


def _number(value: Any, path: str, *, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(path, "must be a number")
    if not minimum <= value <= maximum:
        raise SpecError(path, f"must be between {minimum:g} and {maximum:g}, got {value}")
    return float(value)


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(path, "must be true or false")
    return value


_E = TypeVar("_E", bound=enum.StrEnum)


def _enum(cls: type[_E], value: Any, path: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls if m.value)
        raise SpecError(path, f"must be one of {allowed}, got {value!r}") from None


def parse_selector(raw: Any, path: str) -> LabelSelector:
    sel = _mapping(raw, path)
    labels_raw = _mapping(sel.get("matchLabels") or {}, f"{path}.matchLabels")
    labels: list[tuple[str, str]] = []
    for k, v in sorted(labels_raw.items()):
        if not isinstance(k, str) or not _LABEL_KEY.match(k) or len(k) > 317:
            raise SpecError(f"{path}.matchLabels", f"{k!r} is not a valid label key")
        if not isinstance(v, str) or not _LABEL_VALUE.match(v):
            raise SpecError(f"{path}.matchLabels.{k}", f"{v!r} is not a valid label value")
        labels.append((k, v))
    exprs: list[LabelSelectorRequirement] = []
    for i, raw_expr in enumerate(sel.get("matchExpressions") or []):
        epath = f"{path}.matchExpressions[{i}]"
        e = _mapping(raw_expr, epath)
        key = _get(e, "key", f"{epath}.key")
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
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
            if not isinstance(v, str) or not _LABEL_VALUE.match(v):
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


def check_pd_url(url: str, path: str = "subject.pdURL", *, allow_loopback: bool = False) -> str:
    """The pdURL rule, enforced before any connection is made.

    Allowed: ``http(s)://`` to a DNS name (a Service, normally ``pd`` in the Campaign's own
    namespace; a name with dots must stay inside that namespace, which `check_pd_namespace`
    enforces once the namespace is known). Refused: other schemes, credentials in the URL,
    IP literals (they bypass the namespace rule), link-local and cloud metadata addresses.
    Loopback IPs only when the operator runs with ``--allow-loopback-pd`` (local development and
    tests, where the PD stand-in listens on 127.0.0.1).
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise SpecError(path, f"scheme must be http or https, got {parsed.scheme!r}")
    if parsed.username or parsed.password:
        raise SpecError(path, "must not carry credentials")
    if parsed.query or parsed.fragment:
        # PD's API takes none, and a token there would be published with the Campaign's spec.
        raise SpecError(path, "must not carry a query string or fragment")
    host = parsed.hostname
    if not host:
        raise SpecError(path, "has no host")
    try:
        _ = parsed.port
    except ValueError:
        raise SpecError(path, "has an invalid port") from None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_loopback and allow_loopback:
            return url
        if ip.is_link_local:
            raise SpecError(path, f"{host} is link-local (cloud metadata lives there); refused")
        raise SpecError(path, f"IP addresses are refused ({host}); name the PD Service instead")
    if host in ("metadata", "metadata.google.internal") or host.endswith(".internal"):
        raise SpecError(path, f"{host} is a metadata endpoint; refused")
    if host == "localhost" or host.endswith(".localhost"):
        if allow_loopback:
            return url
        raise SpecError(
            path, f"{host} is loopback; refused (the operator was not started with --allow-loopback-pd)"
        )
    # Resolvers read "2852039166", "0xa9fea9fe" or "0251.0376.0251.0376" as IPv4 addresses
    # (169.254.169.254 here) although ipaddress does not: a name whose last label is numeric
    # is no DNS name, so refuse it rather than guess what it resolves to.
    if re.fullmatch(r"(0x[0-9a-f]+|[0-9]+)", host.rsplit(".", 1)[-1], flags=re.IGNORECASE):
        raise SpecError(
            path, f"{host!r} reads as an IP address in another notation; name the PD Service instead"
        )
    if not all(_DNS_LABEL.match(label) for label in host.split(".")):
        raise SpecError(path, f"{host!r} is not a valid DNS name")
    return url


def check_pd_namespace(url: str, namespace: str, path: str = "subject.pdURL") -> None:
    """A PD Service name must resolve inside the Campaign's own namespace."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
        return  # IP literals were already judged by check_pd_url
    except ValueError:
        pass
    if host == "localhost":
        return
    labels = host.split(".")
    if len(labels) == 1:
        return  # a bare Service name; the TiKV probe qualifies it with the Campaign's namespace
    # Only <svc>.<ns>, <svc>.<ns>.svc and <svc>.<ns>.svc.cluster.local name a Service in the
    # namespace; anything longer may be an outside DNS name that merely starts like one.
    in_namespace = labels[1] == namespace and (
        len(labels) == 2
        or (len(labels) == 3 and labels[2] == "svc")
        or (len(labels) == 5 and labels[2:] == ["svc", "cluster", "local"])
    )
    if not in_namespace:
        raise SpecError(
            path,
            f"{host} is outside the Campaign's namespace {namespace!r}; refused "
            f"(name a Service as <service>, <service>.{namespace}, <service>.{namespace}.svc or "
            f"<service>.{namespace}.svc.cluster.local)",
        )


def parse_campaign_spec(raw: Mapping[str, Any], *, allow_loopback_pd: bool = False) -> CampaignSpec:
    """Parse and check a Campaign ``spec``; raise `SpecError` naming the first bad field."""
    raw = _mapping(raw, "")
    subject_raw = _mapping(_get(raw, "subject", "subject"), "subject")
    kind = _enum(SubjectKind, _get(subject_raw, "kind", "subject.kind"), "subject.kind")
    selector = parse_selector(_get(subject_raw, "selector", "subject.selector"), "subject.selector")
    pd_url = subject_raw.get("pdURL")
    if pd_url is not None:
        if not isinstance(pd_url, str):
            raise SpecError("subject.pdURL", "must be a string")
        pd_url = check_pd_url(pd_url, allow_loopback=allow_loopback_pd)
    subject = SubjectSpec(kind=kind, selector=selector, pd_url=pd_url)

    chaos_raw = _mapping(_get(raw, "chaos", "chaos"), "chaos")
    ctype = _enum(ChaosType, chaos_raw.get("type", "node_kill"), "chaos.type")
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
    chaos = ChaosSpec(type=ctype, mode=mode, value=value, grace_period_seconds=grace)

    steady = _mapping(raw.get("steadyState") or {}, "steadyState")
    recovery = _mapping(raw.get("recovery") or {}, "recovery")
    slo = _mapping(raw.get("slo") or {}, "slo")
    p95 = slo.get("p95RecoverySeconds")
    seed = raw.get("seed")
    remediator: Remediator | None = None
    if raw.get("remediator") is not None:
        rem = _mapping(raw["remediator"], "remediator")
        rem_name = _get(rem, "name", "remediator.name")
        if not isinstance(rem_name, str) or not all(_DNS_LABEL.match(x) for x in rem_name.split(".")):
            raise SpecError("remediator.name", f"{rem_name!r} is not a valid object name")
        remediator = Remediator(
            kind=_enum(RemediatorKind, _get(rem, "kind", "remediator.kind"), "remediator.kind"), name=rem_name
        )
    return CampaignSpec(
        subject=subject,
        chaos=chaos,
        trials=_int(raw.get("trials", 10), "trials", minimum=1, maximum=100_000),
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
    )


# --- Trials -------------------------------------------------------------------------------

#: The moments of one trial, in the order a recovery normally passes them. Each is recorded as
#: a wall-clock time (for people) and as an offset in seconds from `kill_sent` measured on the
#: monotonic clock (for durations: a wall-clock step during a trial does not bend them).
MILESTONES: tuple[str, ...] = (
    "gate_passed",  # steady state held for stableSeconds; negative offset
    "kill_sent",  # the delete request left (offset 0 by definition)
    "kill_acked",  # the API server answered the delete
    "first_unhealthy",  # first observation of the subject not healthy
    "victim_gone",  # the victim pod object is gone (DELETED event)
    "replacement_created",  # a new pod (new UID) took the victim's place
    "replacement_scheduled",  # ... bound to a node
    "replacement_ready",  # ... Ready
    "store_up",  # PD has a heartbeat from the victim's store newer than its new start timestamp
    "recovered",  # the whole subject healthy again: the recovery time
    "relapsed",  # unhealthy again within the settle window after "recovered": not a recovery
)

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
    store_id: int | None = None


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
        """kill_sent -> subject healthy, monotonic; None unless recovered."""
        m = self.milestones.get("recovered")
        return None if m is None or self.outcome is not Outcome.RECOVERED else m.offset


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


#: Label the operator's own pods carry; a selector matching them is refused.
OPERATOR_POD_LABEL = ("app.kubernetes.io/name", "aftershock")


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
