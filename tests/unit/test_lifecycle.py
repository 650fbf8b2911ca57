"""A Campaign's life around its trials: a spec change is observed (observedGeneration follows
it, conditions included), and a deletion mid-run stops the runner, records the attempt in
flight as interrupted and the Campaign as deleted in the ledger."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from tests.unit.fakes import FakeCluster, FakeLock, ListSink, RealClock, Stop

from aftershock import report
from aftershock.engine import lifecycle
from aftershock.engine.ports import SubjectProbe
from aftershock.engine.runner import CampaignRunner, RunnerSettings
from aftershock.ledger import Ledger, schema
from aftershock.model import DEFAULT_PROTECTED_NAMESPACES, CampaignRef, CampaignSpec, Outcome, Phase, Verdict

REF = CampaignRef(namespace="db", name="kill-tikv", uid="campaign-uid-1")
SETTINGS = RunnerSettings(protected_namespaces=DEFAULT_PROTECTED_NAMESPACES, lock_retry_interval=0.05)


class LiveCampaign:
    """The Campaign object as kopf's live `body` shows it: spec and generation change together."""

    def __init__(self, **spec: Any) -> None:
        self.generation = 1
        self.spec: dict[str, Any] = {
            "subject": {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}},
            "chaos": {"type": "node_kill", "mode": "one"},
            "trials": 3,
            "intervalSeconds": 0,
            "steadyState": {"timeoutSeconds": 5, "stableSeconds": 0},
            # No settle window: these tests are about lifecycle, not relapses.
            "recovery": {"timeoutSeconds": 30, "settleSeconds": 0},
            "seed": 7,
            **spec,
        }

    def patch_suspend(self, value: bool) -> None:
        """`kubectl patch --type merge -p '{"spec":{"suspend":...}}'`: a new generation."""
        self.spec = {**self.spec, "suspend": value}
        self.generation += 1


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async with await Ledger.open(tmp_path / "ledger.db") as opened:
        yield opened


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    c = FakeCluster()
    c.add_statefulset("tikv", 3)
    yield c
    await c.close()


class Namespace:
    """The `NamespaceApi` port: a namespace that can be marked for deletion, counting the looks."""

    def __init__(self) -> None:
        self.deleting = False
        self.looks = 0
        self._looked = asyncio.Condition()

    async def namespace_deleting(self, namespace: str) -> bool:
        assert namespace == REF.namespace
        async with self._looked:
            self.looks += 1
            self._looked.notify_all()
        return self.deleting

    async def wait_looks(self, n: int) -> None:
        async with self._looked:
            await asyncio.wait_for(self._looked.wait_for(lambda: self.looks >= n), 10)


def make_runner(
    live: LiveCampaign,
    ledger: Ledger,
    cluster: FakeCluster,
    sink: ListSink,
    lock: FakeLock,
    namespace: Namespace | None = None,
) -> CampaignRunner:
    def no_probe(_spec: CampaignSpec, _namespace: str) -> SubjectProbe | None:
        return None

    return CampaignRunner(
        ref=REF,
        generation=live.generation,
        spec_source=lambda: live.spec,
        generation_source=lambda: live.generation,
        existing_status={},
        ledger=ledger,
        pods=cluster,
        probe_factory=no_probe,
        lock=lock,
        status=sink,
        events=sink,
        clock=RealClock(),
        settings=SETTINGS,
        namespaces=namespace,
    )


def condition_generations(status: dict[str, Any]) -> set[int]:
    return {int(c["observedGeneration"]) for c in status["conditions"]}


# --- observedGeneration --------------------------------------------------------------------------


async def test_suspend_and_resume_are_observed_with_the_generation_that_asked_for_them(
    ledger: Ledger, cluster: FakeCluster
) -> None:
    live = LiveCampaign(trials=3, intervalSeconds=0.2)
    sink, lock, stop = ListSink(), FakeLock(), Stop()
    task = asyncio.create_task(make_runner(live, ledger, cluster, sink, lock).run(stop))

    await sink.wait_for(lambda s: s["progress"] == "1/3", timeout=10)
    live.patch_suspend(True)  # generation 2
    suspended = await sink.wait_for(lambda s: s["phase"] == "Suspended", timeout=10)
    assert suspended["observedGeneration"] == 2
    assert condition_generations(suspended) == {2}
    assert not lock.held  # suspended for real, not just relabelled

    live.patch_suspend(False)  # generation 3
    done = await asyncio.wait_for(task, 20)

    assert done is Phase.SUCCEEDED
    final = sink.last
    assert (final["phase"], final["observedGeneration"]) == ("Succeeded", 3)
    assert condition_generations(final) == {3}
    # Never ahead of what was acted on: Suspended only ever says generation 2, and nothing
    # published after the resume still claims generation 2.
    assert {s["observedGeneration"] for s in sink.statuses if s["phase"] == "Suspended"} == {2}
    resumed_at = next(i for i, s in enumerate(sink.statuses) if s["observedGeneration"] == 3)
    assert all(s["phase"] != "Suspended" for s in sink.statuses[resumed_at:])
    assert all(s["observedGeneration"] == 1 for s in sink.statuses[: sink.statuses.index(suspended)])


def test_a_finished_campaign_whose_suspend_changed_acknowledges_the_new_generation() -> None:
    status = {
        "phase": "Succeeded",
        "observedGeneration": 1,
        "message": "3/3 trials",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Succeeded", "observedGeneration": 1},
            {"type": "Stalled", "status": "False", "reason": "Succeeded", "observedGeneration": 1},
        ],
    }
    assert lifecycle.finished_generation_lags(status, 2)
    patch = lifecycle.acknowledge_generation(status, 2)
    assert patch["observedGeneration"] == 2
    assert [(c["type"], c["status"], c["observedGeneration"]) for c in patch["conditions"]] == [
        ("Ready", "True", 2),
        ("Stalled", "False", 2),
    ]
    assert set(patch) == {"observedGeneration", "conditions"}  # nothing else is touched
    assert not lifecycle.finished_generation_lags({**status, "observedGeneration": 2}, 2)
    # A running Campaign is its runner's business: the runner stamps what it acted on.
    assert not lifecycle.finished_generation_lags({**status, "phase": "Running"}, 2)


# --- deletion ------------------------------------------------------------------------------------


class LedgerWatchingLock(FakeLock):
    """Notes what the ledger says about the Campaign when the lock is let go: the last thing
    the runner does before it returns and kopf removes the finalizer."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self._ledger = ledger
        self.phase_at_release: Phase | None = None

    async def release(self) -> None:
        row = await self._ledger.get_campaign(REF.uid)
        self.phase_at_release = None if row is None else row.phase
        await super().release()


async def wait_for_kill(sink: ListSink) -> None:
    await sink.wait_for(lambda s: "observing recovery" in s["message"], timeout=10)


async def test_deletion_mid_trial_records_the_attempt_interrupted_and_the_campaign_deleted(
    ledger: Ledger, cluster: FakeCluster
) -> None:
    cluster.recreate = False  # the victim never comes back: only the deletion ends the trial
    live = LiveCampaign(trials=3)
    sink, lock, stop = ListSink(), LedgerWatchingLock(ledger), Stop()
    task = asyncio.create_task(make_runner(live, ledger, cluster, sink, lock).run(stop))
    await wait_for_kill(sink)

    stop.set(deleted=True)
    phase = await asyncio.wait_for(task, 10)

    assert phase is Phase.DELETED
    [attempt] = await ledger.attempts(REF.uid)
    assert (attempt.outcome, attempt.error) == (Outcome.INTERRUPTED, lifecycle.DELETED_MID_ATTEMPT)
    assert await ledger.completed_trials(REF.uid) == []  # not a subject failure
    assert "TrialUnrecovered" not in sink.reasons()
    row = await ledger.get_campaign(REF.uid)
    assert row is not None
    assert row.phase is Phase.DELETED
    assert row.deleted_at is not None
    assert row.deleted_at >= attempt.started_at
    assert not lock.held
    assert lock.phase_at_release is Phase.DELETED  # recorded before the finalizer can go
    assert len(cluster.delete_calls) == 1  # nothing more was killed after the deletion
    text = report.render_table(report.build_report(row, await ledger.attempts(REF.uid)))
    assert "phase Deleted" in text
    assert "deleted " in text


async def test_deletion_while_waiting_for_the_subject_is_recorded_too(
    ledger: Ledger, cluster: FakeCluster
) -> None:
    live = LiveCampaign()
    sink, lock, stop = ListSink(), FakeLock(busy=True), Stop()
    task = asyncio.create_task(make_runner(live, ledger, cluster, sink, lock).run(stop))
    await sink.wait_for(lambda s: s["phase"] == "Pending", timeout=10)

    stop.set(deleted=True)

    assert await asyncio.wait_for(task, 10) is Phase.DELETED
    row = await ledger.get_campaign(REF.uid)
    assert row is not None
    assert row.phase is Phase.DELETED
    assert cluster.delete_calls == []


async def test_operator_exit_mid_trial_is_not_a_deletion(ledger: Ledger, cluster: FakeCluster) -> None:
    cluster.recreate = False
    live = LiveCampaign(trials=3)
    sink, lock, stop = ListSink(), FakeLock(), Stop()
    task = asyncio.create_task(make_runner(live, ledger, cluster, sink, lock).run(stop))
    await wait_for_kill(sink)

    stop.set(deleted=False)

    assert await asyncio.wait_for(task, 10) is Phase.RUNNING
    row = await ledger.get_campaign(REF.uid)
    assert row is not None
    assert (row.phase, row.deleted_at) == (Phase.RUNNING, None)  # the next start resumes it
    [attempt] = await ledger.attempts(REF.uid)
    assert (attempt.outcome, attempt.error) == (Outcome.INTERRUPTED, lifecycle.STOPPED_MID_ATTEMPT)


async def test_a_namespace_deletion_interrupts_the_trial_when_its_pods_start_to_go(
    ledger: Ledger, cluster: FakeCluster
) -> None:
    """Ordered namespace deletion deletes the pods first and the Campaigns only once they are
    gone: the trial stops at the first pods going, not as a relapse or a timeout, kills
    nothing more, and the runner waits for the Campaign's deletion to record it."""
    cluster.recreate = False
    live = LiveCampaign(trials=3)
    sink, lock, stop, namespace = ListSink(), FakeLock(), Stop(), Namespace()
    task = asyncio.create_task(make_runner(live, ledger, cluster, sink, lock, namespace).run(stop))
    await wait_for_kill(sink)
    [attempt] = await ledger.attempts(REF.uid)
    victim = attempt.victims[0].name
    assert namespace.looks == 0  # the victim's own deletion is no sign

    namespace.deleting = True
    for pod in [p for p in (q.name for q in cluster.pods()) if p != victim]:
        cluster.remove_pod(pod)  # the namespace controller's deletecollection
    await namespace.wait_looks(2)  # the trial's look, then the runner's before it waits

    [attempt] = await ledger.attempts(REF.uid)
    assert (attempt.outcome, attempt.error) == (Outcome.INTERRUPTED, lifecycle.NAMESPACE_DELETED_MID_ATTEMPT)
    assert lifecycle.DELETED_MID_ATTEMPT.split(";")[0] in str(attempt.error)
    assert not task.done()  # waiting for the Campaign's own deletion
    stop.set(deleted=True)
    assert await asyncio.wait_for(task, 10) is Phase.DELETED
    row = await ledger.get_campaign(REF.uid)
    assert row is not None
    assert row.phase is Phase.DELETED
    assert len(cluster.delete_calls) == 1
    assert "TrialUnrecovered" not in sink.reasons()


async def test_pods_going_in_a_namespace_that_stays_change_nothing(
    ledger: Ledger, cluster: FakeCluster
) -> None:
    cluster.recreate = False
    live = LiveCampaign(trials=3, recovery={"timeoutSeconds": 1, "settleSeconds": 0})
    sink, lock, stop, namespace = ListSink(), FakeLock(), Stop(), Namespace()
    task = asyncio.create_task(make_runner(live, ledger, cluster, sink, lock, namespace).run(stop))
    await wait_for_kill(sink)
    [attempt] = await ledger.attempts(REF.uid)
    cluster.remove_pod(next(p.name for p in cluster.pods() if p.name != attempt.victims[0].name))
    await namespace.wait_looks(1)
    await sink.wait_for(lambda _: "TrialUnrecovered" in sink.reasons(), timeout=10)
    stop.set()
    await asyncio.wait_for(task, 10)
    attempts = await ledger.attempts(REF.uid)
    assert attempts[0].outcome is Outcome.UNRECOVERED  # judged as before: the timeout
    assert namespace.looks == 1  # one look per pods going, not one per event


class DeletedAtTheAttempt:
    """The ledger, with the Campaign deleted the moment its attempt is written: after the gate
    passed, before the kill (kopf sets `stopped` whenever the watch event comes)."""

    def __init__(self, ledger: Ledger, stop: Stop) -> None:
        self._ledger, self._stop = ledger, stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def begin_attempt(self, *args: Any, **kwargs: Any) -> int:
        attempt_id: int = await self._ledger.begin_attempt(*args, **kwargs)
        self._stop.set(deleted=True)
        return attempt_id


async def test_a_deletion_between_the_gate_and_the_kill_kills_nothing(
    ledger: Ledger, cluster: FakeCluster
) -> None:
    live = LiveCampaign(trials=3)
    sink, lock, stop = ListSink(), FakeLock(), Stop()
    runner = make_runner(live, cast(Ledger, DeletedAtTheAttempt(ledger, stop)), cluster, sink, lock)

    assert await asyncio.wait_for(runner.run(stop), 10) is Phase.DELETED

    assert cluster.delete_calls == []
    [attempt] = await ledger.attempts(REF.uid)
    assert (attempt.outcome, attempt.error) == (Outcome.INTERRUPTED, lifecycle.DELETED_MID_ATTEMPT)
    assert "kill_sent" not in attempt.milestones


# --- the ledger's record of a deletion -------------------------------------------------------------


SPEC = {"subject": {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}}, "trials": 3}


async def test_deletion_closes_an_attempt_left_in_flight_and_the_first_time_stands(ledger: Ledger) -> None:
    await ledger.ensure_campaign(REF, SPEC, 3, "7", 1000.0)
    await ledger.set_campaign_state(REF.uid, Phase.RUNNING, Verdict.NONE, 1001.0, started=True)
    await ledger.begin_attempt(
        REF.uid, 0, victims=(), victim_seed="s", initial_state={}, gate_passed=None, now=1002.0
    )

    await lifecycle.record_deletion(ledger, REF, 1010.0)
    await lifecycle.record_deletion(ledger, REF, 1020.0)  # the DELETED watch event, later

    row = await ledger.get_campaign(REF.uid)
    assert row is not None
    assert (row.phase, row.deleted_at) == (Phase.DELETED, 1010.0)
    [attempt] = await ledger.attempts(REF.uid)
    assert (attempt.outcome, attempt.error) == (Outcome.INTERRUPTED, lifecycle.DELETED_MID_ATTEMPT)


async def test_a_finished_campaign_deleted_later_keeps_its_phase(ledger: Ledger) -> None:
    await ledger.ensure_campaign(REF, SPEC, 3, "7", 1000.0)
    await ledger.set_campaign_state(REF.uid, Phase.SUCCEEDED, Verdict.NONE, 1001.0, finished=True)

    await lifecycle.record_deletion(ledger, REF, 1100.0)

    row = await ledger.get_campaign(REF.uid)
    assert row is not None
    assert (row.phase, row.deleted_at) == (Phase.SUCCEEDED, 1100.0)


async def test_deleting_a_campaign_the_ledger_never_saw_records_nothing(ledger: Ledger) -> None:
    await lifecycle.record_deletion(ledger, REF, 1100.0)
    assert await ledger.get_campaign(REF.uid) is None


async def test_a_ledger_written_before_deletions_were_recorded_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in schema.MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO campaigns (uid, namespace, name, spec, requested_trials, seed, phase, created_at) "
        "VALUES (?, 'db', 'kill-tikv', '{}', 3, '7', 'Running', 1000.0)",
        (REF.uid,),
    )
    conn.close()

    async with await Ledger.open(path) as ledger:
        row = await ledger.get_campaign(REF.uid)
        assert row is not None
        assert (row.phase, row.deleted_at) == (Phase.RUNNING, None)
        await lifecycle.record_deletion(ledger, REF, 1200.0)
        row = await ledger.get_campaign(REF.uid)
        assert row is not None
        assert (row.phase, row.deleted_at) == (Phase.DELETED, 1200.0)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
