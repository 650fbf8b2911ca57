"""What the steps of a Campaign hand each other: settings, the gate's and a trial's results,
and the Event reasons. Below every step (gate, strike, remediator, publisher, trial, runner),
so the steps import it and never each other in a circle."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from aftershock.model import AttemptRecord, Outcome, PodState, ProbeResult, Verdict

# Event reasons (what `kubectl describe campaign` and `kubectl get events` show).
REASON_TRIAL_RECOVERED = "TrialRecovered"
REASON_TRIAL_RESET = "TrialReset"
REASON_TRIAL_UNRECOVERED = "TrialUnrecovered"
REASON_TRIAL_INFRA = "TrialInfraError"
REASON_TRIAL_INTERRUPTED = "TrialInterrupted"
REASON_TRIAL_DRY_RUN = "TrialDryRun"
REASON_CAMPAIGN_DONE = "CampaignFinished"
REASON_INVALID = "InvalidSpec"
#: The selector matched no pod for the whole steady-state timeout: the user's mistake (labels,
#: namespace), not the cluster's, so not `InfraError`.
REASON_SELECTOR_MATCHES_NOTHING = "SelectorMatchesNothing"
#: The chaos kind cannot work on this subject (its method, its rights): nothing was injected.
REASON_CHAOS_REFUSED = "ChaosRefused"
#: The fault disturbed more than the victims (a failed node stops everything on it).
REASON_FAULT_COLLATERAL = "FaultCollateral"


def look_jitter() -> float:
    """What the pause before the next look at the subject's API is multiplied by: drawn once
    per look, between 0.5 and 1.5 (the interval give or take half).

    Looks on a fixed grid lock in phase with the subject's own periodic reports (TiKV's
    heartbeats every 10 s, 0.5 s in the bench): every look then sees the newest report at the
    same age, and the clock offset taken as the smallest gap over many looks (`PdClock`) stays
    wrong by that age. Measured on the real node: 28 ms off for 12 trials in a row, then 14 ms
    when the phases drifted, with 50 ms looks and 0.5 s heartbeats. Jittered looks land at
    every phase, so the smallest gap comes down to the answer's own delay."""
    return random.uniform(0.5, 1.5)


@dataclass(frozen=True)
class InfraBackoff:
    """How a Campaign rides out infrastructure errors in a row: it waits longer after each
    (doubling from `initial` up to `max`, jittered by the runner) and gives up after
    `max_consecutive` of them (verdict InfraError)."""

    max_consecutive: int = 5
    initial: float = 1.0
    max: float = 60.0

    def delay(self, streak: int) -> float:
        """The wait after the `streak`-th error in a row, before jitter."""
        return min(self.initial * 2.0 ** (streak - 1), self.max)


@dataclass(frozen=True)
class WriteProbeSettings:
    """The write probe's pace and per-operation timeout (subjects that support writes): one
    write and one read per interval, so a trial costs a few hundred requests at most."""

    interval: float = 0.05
    timeout: float = 0.5


@dataclass(frozen=True)
class RunnerSettings:
    protected_namespaces: frozenset[str]
    allow_loopback_pd: bool = False
    #: How often the subject's own API is asked during gate and recovery. PD and etcd have no
    #: watch; this bounds the precision of their milestones, so it is short but not a hot loop.
    probe_interval: float = 0.5
    #: How often a Campaign waiting for the subject lock looks again.
    lock_retry_interval: float = 5.0
    #: How long a delete is retried on transient API errors before the attempt is an
    #: infrastructure error.
    kill_retry_budget: float = 30.0
    infra: InfraBackoff = field(default_factory=InfraBackoff)
    writes: WriteProbeSettings = field(default_factory=WriteProbeSettings)
    #: ``--author-check``: a run starts only when the Campaign's author (the annotation the
    #: admission policy records) holds every right the Campaign uses (ADR 0012).
    author_check: bool = False
    #: ``--namespace-label``: a run starts only in a namespace carrying this label (key, value).
    namespace_label: tuple[str, str] | None = None
    #: ``--node-name``: the node the operator runs on, which node-level chaos never fails.
    operator_node: str | None = None
    #: How long a trial's end waits for the audit webhook to deliver the writes of its window
    #: (the API server's --audit-webhook-batch-max-wait should be shorter).
    audit_catch_up_seconds: float = 5.0


@dataclass(frozen=True)
class Gate:
    """The steady-state gate's answer: passed, on which pods and which look at the subject."""

    passed: bool
    pods: tuple[PodState, ...] = ()
    probe: ProbeResult | None = None
    mono: float = 0.0
    wall: float = 0.0
    reasons: tuple[str, ...] = ()
    probe_failed: bool = False


@dataclass(frozen=True)
class TrialResult:
    outcome: Outcome | None  # None: no attempt was made (gate failed, selection refused)
    record: AttemptRecord | None = None
    stop_reason: str | None = None  # set when the campaign must not go on
    stop_verdict: Verdict = Verdict.NONE
    stall_reason: str | None = None
    stall_name: str | None = None  # the conditions' reason for the stall, when it has a name
    interrupted: bool = False


def pod_json(p: PodState) -> dict[str, Any]:
    return {
        "name": p.name,
        "uid": p.uid,
        "node": p.node,
        "ready": p.ready,
        "restartCount": p.restart_count,
        "phase": p.phase,
    }
