"""One trial, in the order that is the safety argument: steady-state gate -> choose victims ->
write the attempt to the ledger -> re-check every guard -> kill -> observe -> commit.

Nothing is killed unless the gate passed moments before, the lock is held, the victim still
matches the selector in the Campaign's own namespace, and the namespace is not protected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aftershock.chaos import registry as chaos_registry
from aftershock.chaos import victims as victim_choice
from aftershock.chaos.base import ChaosKindInfo, Injection, Strike
from aftershock.engine import gate as gate_step
from aftershock.engine import heal, lifecycle, recovery, strike
from aftershock.engine import reset as reset_step
from aftershock.engine.actions import CampaignActions
from aftershock.engine.alerts import CampaignAlerts
from aftershock.engine.holds import subject_keys
from aftershock.engine.observe import RecoveryTracker
from aftershock.engine.outcomes import (
    REASON_CHAOS_REFUSED,
    REASON_FAULT_COLLATERAL,
    REASON_SELECTOR_MATCHES_NOTHING,
    REASON_TRIAL_DRY_RUN,
    REASON_TRIAL_INFRA,
    REASON_TRIAL_INTERRUPTED,
    REASON_TRIAL_RECOVERED,
    REASON_TRIAL_RESET,
    REASON_TRIAL_UNRECOVERED,
    Gate,
    RunnerSettings,
    TrialResult,
    pod_json,
)
from aftershock.engine.ports import (
    NamespaceApi,
    PodApi,
    RemediatorActivity,
    StopSignal,
    SubjectLock,
    SubjectProbe,
    VolumeApi,
)
from aftershock.engine.publisher import StatusPublisher
from aftershock.engine.remediator import RemediatorScaler
from aftershock.engine.signals import SignalWatch
from aftershock.engine.view import PodView
from aftershock.errors import ApiError
from aftershock.model import (
    AttemptRecord,
    CampaignSpec,
    Milestone,
    Outcome,
    RemediatorAction,
    Verdict,
    Victim,
    after_recovery,
)

log = logging.getLogger(__name__)


@dataclass
class Trials:
    """Runs trials for one Campaign; `expected_pods` is learnt once and kept across trials."""

    spec: CampaignSpec
    seed: str
    settings: RunnerSettings
    pods: PodApi
    view: PodView
    probe: SubjectProbe | None
    lock: SubjectLock
    #: The Campaign's status, and through it its ref, clock, ledger and recorder.
    publisher: StatusPublisher
    remediator: RemediatorScaler
    #: The remediator's Events (None: it does not say how it reports, or there is none).
    signals: SignalWatch | None = None
    #: Where the remediator's actions are seen live, for the quiet wait at a trial's end
    #: (``spec.remediator.quietSeconds``); None: no wait.
    activity: RemediatorActivity | None = None
    #: The alerts delivered for this Campaign (`spec.detection`; None: it listens for none).
    alerts: CampaignAlerts | None = None
    #: The remediator's writes (audit webhook, managedFields; None: no remediator).
    actions: CampaignActions | None = None
    #: The subject's claims, for `spec.reset.mode: Recreate` (None: no access to them).
    volumes: VolumeApi | None = None
    #: Whether the namespace is being deleted, asked when pods go mid-recovery (None: never).
    namespaces: NamespaceApi | None = None
    expected_pods: int | None = None
    #: What this trial's reset did (`finalState["reset"]` of its attempt); None without one.
    reset: dict[str, Any] | None = None

    @property
    def _ns(self) -> str:
        return self.publisher.ref.namespace

    def _gate_failure(self, gate: Gate, index: int) -> TrialResult:
        spec, waited = self.spec, f"{self.spec.steady_state_timeout_seconds:g}s"
        why = "; ".join(gate.reasons) or "unknown"
        if not gate.pods and self.view.synced:
            return TrialResult(
                None,
                stall_reason=f"spec.subject.selector {spec.subject.selector.to_query()!r} matches no "
                f"pods in namespace {self._ns!r} (waited {waited}): check the labels and the namespace",
                stall_name=REASON_SELECTOR_MATCHES_NOTHING,
            )
        if gate.probe_failed:
            return TrialResult(
                None,
                stall_reason=f"steady state not reached in {waited} (infrastructure): {why}",
                stop_verdict=Verdict.INFRA_ERROR,
            )
        return TrialResult(
            None,
            stall_reason=f"steady state not reached in {waited}: {why}",
            stop_verdict=Verdict.INFRA_ERROR if index == 0 else Verdict.NONE,
        )

    def _choose(self, gate: Gate, index: int, attempt_no: int) -> tuple[str, tuple[Victim, ...]]:
        victim_seed = victim_choice.victim_seed(self.seed, index, attempt_no)
        roles = gate.probe.roles if gate.probe is not None else {}
        chosen = victim_choice.choose_victims(
            gate.pods, self.spec.chaos, victim_choice.rng_for(victim_seed), roles=roles
        )
        details = self.probe.victim_details(gate.probe) if self.probe is not None else {}
        return victim_seed, tuple(
            victim_choice.to_victim(p, details.get(p.name), roles.get(p.name)) for p in chosen
        )

    async def _reset(self, index: int, stop: StopSignal) -> TrialResult | None:
        """The reset before the gate (never part of the recovery): None to go on."""
        self.reset = None
        if self.spec.dry_run:
            return None
        plan = reset_step.ResetPlan(
            spec=self.spec,
            namespace=self._ns,
            protected_namespaces=self.settings.protected_namespaces,
            poll_interval=self.settings.probe_interval,
        )
        self.publisher.message = f"trial {index + 1}/{self.spec.trials}: resetting the subject"
        try:
            report = await reset_step.reset_subject(
                plan=plan,
                view=self.view,
                pods=self.pods,
                volumes=self.volumes,
                lock=self.lock,
                clock=self.publisher.clock,
                stop=stop,
            )
        except reset_step.ResetRefused as exc:
            if not self.lock.holds(subject_keys(self.view.pods())):
                return TrialResult(None)  # lost the lock: go back and wait for it
            return TrialResult(None, stall_reason=f"refused to reset ({self.spec.reset.mode}): {exc}")
        if report is None:
            return None
        self.reset = report.as_json()
        if stop.is_set():
            return TrialResult(None, interrupted=True)
        if report.error is not None:
            return TrialResult(None, stall_reason=f"spec.reset ({self.spec.reset.mode}): {report.error}")
        await self.publisher.emit(
            "Normal",
            REASON_TRIAL_RESET,
            f"trial {index + 1}/{self.spec.trials}: {self.spec.reset.mode} reset of "
            f"{len(report.pods)} pods, {len(report.claims)} claims in {report.seconds or 0:.3f}s",
        )
        return None

    async def run(self, index: int, stop: StopSignal) -> TrialResult:
        tally = self.publisher.tally
        if self.expected_pods is None:
            self.expected_pods = tally.expected_pods
        reset = await self._reset(index, stop)
        if reset is not None:
            return reset
        gate = await gate_step.wait_for_steady_state(
            spec=self.spec,
            view=self.view,
            probe=self.probe,
            stop=stop,
            publisher=self.publisher,
            probe_interval=self.settings.probe_interval,
            expected_pods=self.expected_pods,
        )
        if stop.is_set():
            return TrialResult(None, interrupted=True)
        if not gate.passed:
            return self._gate_failure(gate, index)
        if not self.lock.holds(subject_keys(gate.pods)):
            # The pods now belong to a controller this Campaign does not hold (they appeared
            # after the lock was taken), or the lease lapsed: back to the lock, nothing recorded.
            return TrialResult(None)
        if self.expected_pods is None:
            self.expected_pods = len(gate.pods)
        attempt_no = tally.attempt_number(index)
        try:
            victim_seed, victims = self._choose(gate, index, attempt_no)
        except victim_choice.VictimSelectionError as exc:
            return TrialResult(None, stall_reason=f"victim selection refused: {exc}")
        remediator: dict[str, Any] | None = None
        if self.spec.baseline and self.spec.remediator is not None and not self.spec.dry_run:
            try:
                remediator = await self.remediator.read(self.spec.remediator)
            except ApiError as exc:
                if exc.transient:
                    return TrialResult(None)  # try the trial again after the loop's pause
                rem = self.spec.remediator
                return TrialResult(None, stall_reason=f"spec.remediator: {rem.kind} {rem.name}: {exc}")
        initial_state = {
            "remediator": remediator,
            "expectedPods": self.expected_pods,
            "pods": [pod_json(p) for p in gate.pods],
            "probe": dict(gate.probe.summary) if gate.probe is not None else None,
            "reset": self.reset,
        }
        clock = self.publisher.clock
        attempt_id = await self.publisher.ledger.begin_attempt(
            self.publisher.ref.uid,
            index,
            victims=victims,
            victim_seed=victim_seed,
            initial_state=initial_state,
            # Recorded with the attempt, before any kill: the ledger proves every kill had a
            # passed gate even when the attempt is cut short. The offset is provisional (from
            # now, a few ms before the kill) until the attempt ends with the exact one.
            gate_passed=Milestone(gate.wall, gate.mono - clock.monotonic()),
            now=clock.wall(),
        )
        strike_ = _Strike(self, index, attempt_id, victims, gate, chaos_registry.kind_of(self.spec.chaos))
        return await strike_.run(remediator, stop)

    async def finish_attempt(
        self,
        attempt_id: int,
        outcome: Outcome,
        *,
        milestones: Mapping[str, Milestone] | None = None,
        final_state: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> AttemptRecord:
        out = self.publisher
        clock, recorder = out.clock, out.recorder
        started = clock.monotonic()
        record = await out.ledger.finish_attempt(
            attempt_id,
            outcome,
            milestones=milestones or {},
            # The reset before this trial's gate, with every end of the attempt.
            final_state={**(final_state or {}), **({"reset": self.reset} if self.reset else {})},
            error=error,
            now=clock.wall(),
        )
        recorder.ledger_write(clock.monotonic() - started)
        recorder.attempt_finished(out.ref, record)
        out.tally.record(record)  # committed: the next publish counts it
        return record


@dataclass
class _Strike:
    """From the recorded attempt to its outcome: dry run, guards, remediator, kill, recovery."""

    trials: Trials
    index: int
    attempt_id: int
    victims: tuple[Victim, ...]
    gate: Gate
    #: The Campaign's chaos kind: how the fault is injected and which milestone says "back".
    kind: ChaosKindInfo

    @property
    def _label(self) -> str:
        names = ", ".join(v.name for v in self.victims)
        return f"trial {self.index + 1}/{self.trials.spec.trials} ({names})"

    async def run(self, remediator: Mapping[str, Any] | None, stop: StopSignal) -> TrialResult:
        t = self.trials
        names = ", ".join(v.name for v in self.victims)
        if t.spec.dry_run:
            record = await t.finish_attempt(
                self.attempt_id, Outcome.DRY_RUN, milestones={"gate_passed": Milestone(self.gate.wall, 0.0)}
            )
            await t.publisher.emit(
                "Normal",
                REASON_TRIAL_DRY_RUN,
                f"trial {self.index + 1}/{t.spec.trials}: would kill {names} (dry run)",
            )
            return TrialResult(Outcome.DRY_RUN, record)
        # The last guards, right before the kill: every one of them must still hold.
        inputs = strike.GuardInputs(
            spec=t.spec,
            namespace=t.publisher.ref.namespace,
            protected_namespaces=t.settings.protected_namespaces,
            expected_pods=t.expected_pods,
            probed=t.probe is not None,
        )
        refused = strike.refusal(inputs, self.victims, t.view, self.gate, t.lock)
        if refused is not None:
            await t.finish_attempt(self.attempt_id, Outcome.INTERRUPTED, error=f"not killed: {refused}")
            if not strike.lock_covers(self.victims, t.view, t.lock):
                return TrialResult(None)  # lost the lock: go back and wait for it
            return TrialResult(None, stall_reason=f"refused to kill: {refused}")
        if remediator is not None:
            error = await t.remediator.scale_down(remediator)
            if error is not None:
                await t.remediator.restore(remediator)
                record = await t.finish_attempt(self.attempt_id, Outcome.INFRA_ERROR, error=error)
                return TrialResult(Outcome.INFRA_ERROR, record)
        try:
            t.publisher.message = (
                f"trial {self.index + 1}/{t.spec.trials}: killed {names}, observing recovery"
            )
            return await self._kill_and_observe(stop)
        finally:
            if remediator is not None:
                if self.kind.settled is not None:
                    waited = await self.kind.settled(self.victims, t.pods, t.publisher.clock, stop.is_set)
                    if waited is not None:
                        log.warning("%s: restoring the remediator anyway: %s", self._label, waited)
                await t.remediator.restore(remediator)

    async def _kill_and_observe(self, stop: StopSignal) -> TrialResult:
        t = self.trials
        clock = t.publisher.clock
        assert t.expected_pods is not None
        fault = heal.TrialFault(
            ledger=t.publisher.ledger,
            api=t.pods,
            heals=self.kind.heal is not None,
            attempt_id=self.attempt_id,
            campaign_uid=t.publisher.ref.uid,
            namespace=t.publisher.ref.namespace,
            chaos=t.spec.chaos,
            victims=self.victims,
            wall=clock.wall,
            monotonic=clock.monotonic,
        )
        # The intent is in the ledger before anything is injected: whatever happens next, a
        # restarted operator or the sweeper knows what to heal.
        await fault.intend()
        try:
            return await self._inject_and_observe(fault, stop)
        finally:
            await asyncio.shield(fault.heal("the trial ended"))

    async def _inject_and_observe(self, fault: heal.TrialFault, stop: StopSignal) -> TrialResult:
        t = self.trials
        clock = t.publisher.clock
        assert t.expected_pods is not None
        quiet = recovery.quiet_wait(t.spec, t.activity)
        with t.view.subscribe() as queue:
            kill_mono, kill_wall = clock.monotonic(), clock.wall()
            tracker = RecoveryTracker(
                victims=self.victims,
                initial_pods=self.gate.pods,
                kill_sent_mono=kill_mono,
                kill_sent_wall=kill_wall,
                expected_pods=t.expected_pods,
                judge=(
                    t.probe.judge(self.victims, self.gate.probe, self.kind.restarts)
                    if t.probe is not None
                    else None
                ),
                back=self.kind.back,
                replaces_pods=self.kind.replaces_pods,
                container=t.spec.chaos.container,
                restarts=self.kind.restarts,
                unready=any(name == "victim_unready" for name, _ in self.kind.milestones),
            )
            writes = recovery.write_probe(
                t.probe,
                key=f"/aftershock/probe/{t.publisher.ref.uid}",
                clock=clock,
                kill_mono=kill_mono,
                interval=t.settings.writes.interval,
                timeout=t.settings.writes.timeout,
                limit=int(t.spec.recovery_timeout_seconds / t.settings.writes.interval) + 1,
            )
            async with writes as window:
                if stop.is_set():
                    # Stopped (the Campaign or its namespace deleted, the operator exiting)
                    # between the gate and here: no kill, ever, after a deletion.
                    record = await t.finish_attempt(
                        self.attempt_id, Outcome.INTERRUPTED, error=lifecycle.interrupted_reason(stop)
                    )
                    return dataclasses.replace(TrialResult(Outcome.INTERRUPTED, record), interrupted=True)
                plan = Strike(
                    namespace=t.publisher.ref.namespace,
                    victims=self.victims,
                    pods={p.uid: p for p in self.gate.pods},
                    chaos=t.spec.chaos,
                    retry_budget=t.settings.kill_retry_budget,
                    held=lambda: strike.lock_covers(self.victims, t.view, t.lock),
                    operator_node=t.settings.operator_node,
                )
                if t.actions is not None:
                    # Before the fault goes in: the remediator may act the moment it does.
                    t.actions.fault_injected(
                        kill_mono, kill_wall, frozenset(v.node for v in self.victims if v.node)
                    )
                killed = await self.kind.inject(plan, t.pods, clock, stop.is_set)
                kill_error = killed.error
                gate_passed = Milestone(self.gate.wall, self.gate.mono - kill_mono)
                if killed.refused:
                    # The kind's method cannot work here and nothing was done: stop and say why.
                    await t.finish_attempt(
                        self.attempt_id, Outcome.INTERRUPTED, error=f"not killed: {kill_error}"
                    )
                    return TrialResult(None, stall_reason=str(kill_error), stall_name=REASON_CHAOS_REFUSED)
                if kill_error is not None:
                    record = await t.finish_attempt(
                        self.attempt_id,
                        Outcome.INFRA_ERROR,
                        milestones={"gate_passed": gate_passed},
                        error=kill_error,
                    )
                    await t.publisher.emit(
                        "Warning", REASON_TRIAL_INFRA, f"trial {self.index + 1}: {kill_error}"
                    )
                    return TrialResult(Outcome.INFRA_ERROR, record)
                await self._injected(fault, killed)
                if t.alerts is not None:
                    # From now on, what Alertmanager delivers for this Campaign is this trial's.
                    t.alerts.fault_injected(self.attempt_id, kill_mono)
                # A kind that keeps the victims' processes is back when healed: the tracker is
                # told then (for the others the cluster's own signs say when they are back).
                holding = (
                    asyncio.create_task(fault.hold(stop, None if self.kind.restarts else tracker.mark_back))
                    if fault.heals
                    else None
                )
                if killed.first_acked is not None:
                    tracker.mark_acked(*killed.first_acked)
                watch = recovery.Watch(
                    t.spec,
                    t.view,
                    t.probe,
                    clock,
                    t.settings.probe_interval,
                    namespace=t.publisher.ref.namespace,
                    namespaces=t.namespaces,
                    quiet=quiet,
                    on_recovered=None if quiet is None else self._waiting_for_quiet(quiet),
                )
                # Watching starts now, while the kill is recorded and published: the ledger's
                # fsync and the status patch took 0.1-0.2 s on the real node, and an etcd
                # election is over in less.
                observing = asyncio.create_task(recovery.observe(watch, tracker, queue, stop))
                try:
                    await t.publisher.ledger.mark_kill_sent(
                        self.attempt_id, Milestone(kill_wall, 0.0), tracker.milestones.get("kill_acked")
                    )
                    await t.publisher.publish()
                    outcome, error = await observing
                finally:
                    observing.cancel()
                    # Whatever ended the observation (recovered, timed out, the Campaign or its
                    # namespace deleted, the operator stopping), a held fault stops being held
                    # here and is healed just below (`_record_fault`), before the attempt is
                    # recorded and the finalizer may go; `_kill_and_observe`'s finally heals
                    # it on any other way out (`aftershock.engine.heal`). The pod and
                    # container kills leave nothing of ours to undo.
                    if holding is not None:
                        holding.cancel()
        end_mono = clock.monotonic()
        milestones = {
            **tracker.milestones,
            "gate_passed": gate_passed,
            "kill_sent": Milestone(kill_wall, 0.0),
        }
        final_state: dict[str, Any] = {
            "pods": [pod_json(p) for p in t.view.pods()],
            "probe": dict(tracker.probe.summary) if tracker.probe is not None else None,
            "milestoneSources": dict(tracker.sources),
            "clockOffsetSeconds": tracker.clock_offset,
            "recoveryBracket": _bracket_json(tracker.recovery_bracket, tracker.unseen_why),
        }
        why = "the trial was stopped" if stop.is_set() else "the trial ended"
        await self._record_fault(fault, why, tracker, killed.details, kill_mono, milestones, final_state)
        if window is not None:
            milestones.update(window.milestones())
            final_state["writes"] = window.summary()
        await self._record_remediator(quiet, tracker, kill_mono, end_mono, milestones, final_state)
        # The order each milestone was recorded in: equal offsets (one look saw two moments)
        # are shown in it, not by name (`aftershock.phases.MILESTONE_ORDER`).
        final_state["milestoneOrder"] = list(milestones)
        record = await t.finish_attempt(
            self.attempt_id, outcome, milestones=milestones, final_state=final_state, error=error
        )
        return await self._report(outcome, record, error)

    async def _injected(self, fault: heal.TrialFault, killed: Injection) -> None:
        t = self.trials
        await fault.injected(killed.details)
        if killed.notice:
            # In the status while the fault lasts, and as an Event that stays.
            t.publisher.message = f"trial {self.index + 1}/{t.spec.trials}: {killed.notice}"
            await t.publisher.emit("Warning", REASON_FAULT_COLLATERAL, t.publisher.message)

    def _waiting_for_quiet(self, quiet: recovery.QuietWait) -> Callable[[float], Awaitable[None]]:
        """Say in the status that the subject recovered and the trial waits for the remediator
        to be quiet: the trial may go on for long after the recovery."""
        t = self.trials

        async def announce(offset: float) -> None:
            t.publisher.message = (
                f"trial {self.index + 1}/{t.spec.trials}: recovered {offset:.3f}s after the fault; "
                f"waiting until the remediator has been quiet for {quiet.quiet_seconds:g}s"
            )
            await t.publisher.publish()

        return announce

    async def _record_remediator(
        self,
        quiet: recovery.QuietWait | None,
        tracker: RecoveryTracker,
        kill_mono: float,
        end_mono: float,
        milestones: dict[str, Milestone],
        final_state: dict[str, Any],
    ) -> None:
        """What the remediator said (its Events) and did (its writes: audit webhook,
        managedFields) in the trial window (kill to the end, quiet wait included), in time order,
        each action flagged when it came after the recovery, and how the quiet wait ended."""
        t = self.trials
        if t.signals is not None or t.actions is not None:
            actions: list[RemediatorAction] = []
            if t.signals is not None:
                said = t.signals.trial(kill_mono, end_mono)
                milestones.update(said.milestones)
                actions.extend(said.actions)
            if t.actions is not None:
                # The audit webhook delivers in batches: the window's last writes may still be
                # on their way (bounded wait; none when no batch ever came).
                await t.actions.caught_up(end_mono, t.settings.audit_catch_up_seconds)
                actions.extend(t.actions.trial(kill_mono, end_mono))
            recovered = milestones.get("recovered")
            final_state["remediatorActions"] = [
                {**a.as_json(), "afterRecovery": after_recovery(a, recovered)}
                for a in sorted(actions, key=lambda a: a.offset)
            ]
        if quiet is not None:
            final_state["quietWait"] = quiet.summary(kill_mono, tracker.recovered_seen_mono)

    @staticmethod
    async def _record_fault(
        fault: heal.TrialFault,
        why: str,
        tracker: RecoveryTracker,
        injected: Mapping[str, Any],
        kill_mono: float,
        milestones: dict[str, Milestone],
        final_state: dict[str, Any],
    ) -> None:
        """Heal a held fault now if it still stands, and record what the kind did and saw."""
        await fault.heal(why)
        if fault.healed is not None:
            milestones["fault_healed"] = Milestone(fault.healed[1], fault.healed[0] - kill_mono)
        if fault.heal_error is not None:
            final_state["healError"] = fault.heal_error
        chaos_details = tracker.chaos_details(injected)
        if chaos_details:
            final_state["chaos"] = chaos_details

    async def _report(self, outcome: Outcome, record: AttemptRecord, error: str | None) -> TrialResult:
        t, label = self.trials, self._label
        emit = t.publisher.emit
        if outcome is Outcome.RECOVERED:
            seconds = record.recovery_seconds or 0
            await emit("Normal", REASON_TRIAL_RECOVERED, f"{label}: recovered in {seconds:.3f}s")
            return TrialResult(outcome, record)
        if outcome is Outcome.UNRECOVERED:
            await emit("Warning", REASON_TRIAL_UNRECOVERED, f"{label}: {error}")
            if t.spec.stop_on_unrecovered:
                return TrialResult(
                    outcome,
                    record,
                    stop_reason=f"{label} did not recover: {error}",
                    stop_verdict=Verdict.HARD_FAIL,
                )
            return TrialResult(outcome, record)
        if outcome is Outcome.INFRA_ERROR:
            await emit("Warning", REASON_TRIAL_INFRA, f"{label}: {error}")
            return TrialResult(outcome, record)
        await emit("Warning", REASON_TRIAL_INTERRUPTED, f"{label}: {error}")
        return dataclasses.replace(TrialResult(outcome, record), interrupted=True)


def _bracket_json(bracket: tuple[Milestone, Milestone] | None, why: str | None) -> dict[str, Any] | None:
    """``final_state["recoveryBracket"]``: where the recovery lies as far as the operator's
    evidence goes (`RecoveryTracker.recovery_bracket`), and what the last look that did not
    find it waited for; None: not recovered."""
    if bracket is None:
        return None
    not_before, by = bracket
    return {
        "notBeforeWall": not_before.wall,
        "notBeforeOffset": not_before.offset,
        "byWall": by.wall,
        "byOffset": by.offset,
        "lastLookWaitedFor": why,
    }
