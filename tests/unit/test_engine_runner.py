"""CampaignRunner end to end against in-memory fakes of its ports and a real ledger file.

Each test runs a whole Campaign (or the part of it a user would look at) and checks what a
person would notice: which pods were deleted, what the ledger holds, and what the Campaign's
status and events say.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.unit.fakes import (
    FAST_SETTINGS,
    FakeCluster,
    FakeLock,
    FakeProbe,
    ListSink,
    RealClock,
    Stop,
    fast_campaign,
    selector_matches,
    unavailable,
)

from aftershock.chaos import node_failure
from aftershock.chaos import victims as pod_kill
from aftershock.endpoints import ServiceInfo
from aftershock.engine.outcomes import InfraBackoff
from aftershock.engine.ports import ScaleApi, SubjectProbe
from aftershock.engine.runner import CampaignRunner, RunnerSettings
from aftershock.errors import ApiError, TransientApiError
from aftershock.ledger import Ledger
from aftershock.model import (
    DEFAULT_PROTECTED_NAMESPACES,
    MILESTONES,
    AttemptRecord,
    CampaignRef,
    CampaignSpec,
    Milestone,
    NodeState,
    Outcome,
    Phase,
    Victim,
    parse_campaign_spec,
)

REF = CampaignRef(namespace="db", name="kill-tikv", uid="campaign-uid-1")

SETTINGS = FAST_SETTINGS
campaign = fast_campaign


@dataclass
class Harness:
    ledger: Ledger
    cluster: FakeCluster = field(default_factory=FakeCluster)
    lock: FakeLock = field(default_factory=FakeLock)
    sink: ListSink = field(default_factory=ListSink)
    stop: Stop = field(default_factory=Stop)
    probe: FakeProbe | None = None
    #: The namespace's Services as the API server would describe them (None: no lookups).
    services: dict[str, ServiceInfo] | None = None
    #: The operator may not read Services (RBAC from before the lookup).
    forbidden: bool = False
    #: The specs the subject was opened with.
    opened: list[CampaignSpec] = field(default_factory=list)

    def runner(
        self,
        spec: Mapping[str, Any],
        *,
        ref: CampaignRef = REF,
        existing_status: Mapping[str, Any] | None = None,
        settings: RunnerSettings = SETTINGS,
        scaler: ScaleApi | None = None,
    ) -> CampaignRunner:
        def probe_factory(spec: CampaignSpec, _namespace: str) -> SubjectProbe | None:
            self.opened.append(spec)
            return self.probe

        services = None if self.services is None else FakeServices(self.services, forbidden=self.forbidden)

        return CampaignRunner(
            ref=ref,
            generation=3,
            spec_source=lambda: spec,
            existing_status=existing_status or {},
            ledger=self.ledger,
            pods=self.cluster,
            probe_factory=probe_factory,
            lock=self.lock,
            status=self.sink,
            events=self.sink,
            clock=RealClock(),
            settings=settings,
            services=services,
            scaler=scaler,
        )

    async def run(self, spec: Mapping[str, Any], *, ref: CampaignRef = REF, timeout: float = 10.0) -> Phase:
        return await asyncio.wait_for(self.runner(spec, ref=ref).run(self.stop), timeout)

    def status_condition(self, type_: str) -> dict[str, Any]:
        c = self.sink.condition(type_)
        assert c is not None, f"no {type_} condition in {self.sink.last}"
        return c


@dataclass
class FakeServices:
    """Services by name, in the Campaign's namespace only; every lookup recorded."""

    services: dict[str, ServiceInfo]
    looked_up: list[tuple[str, str]] = field(default_factory=list)
    forbidden: bool = False

    async def get_service(self, namespace: str, name: str) -> ServiceInfo | None:
        self.looked_up.append((namespace, name))
        if self.forbidden:
            raise ApiError("forbidden", 403)
        return self.services.get(name) if namespace == REF.namespace else None


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async with await Ledger.open(tmp_path / "ledger.db") as opened:
        yield opened


@pytest.fixture
async def h(ledger: Ledger) -> AsyncIterator[Harness]:
    harness = Harness(ledger=ledger)
    harness.cluster.add_statefulset("tikv", 3)
    yield harness
    await harness.cluster.close()


def cond(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in status["conditions"] if c["type"] == type_]
    assert len(found) == 1, f"{type_}: {status['conditions']}"
    return dict(found[0])


def ordered(record: AttemptRecord, names: list[str]) -> list[float]:
    return [record.milestones[n].offset for n in names]


# --- the fakes behave like the API server (or these tests prove nothing) ------------------------------


async def test_fake_cluster_deletes_by_uid_and_replaces_like_a_statefulset(h: Harness) -> None:
    pods, rv = await h.cluster.list_pods("db", "app=tikv")
    assert [p.name for p in pods] == ["tikv-0", "tikv-1", "tikv-2"]
    watch = h.cluster.watch_pods("db", "app=tikv", rv)

    with pytest.raises(ApiError) as conflict:
        await h.cluster.delete_pod("db", "tikv-0", "uid-of-someone-else", 0)
    assert conflict.value.status == 409
    with pytest.raises(ApiError) as missing:
        await h.cluster.delete_pod("db", "tikv-9", "uid-tikv-9", 0)
    assert missing.value.status == 404
    await h.cluster.delete_pod("db", "tikv-0", "uid-tikv-0", 0)

    events = [await asyncio.wait_for(anext(watch), 1) for _ in range(4)]
    assert [e.type for e in events] == ["DELETED", "ADDED", "MODIFIED", "MODIFIED"]
    assert {e.pod.name for e in events} == {"tikv-0"}
    new = events[1].pod
    assert new.uid != "uid-tikv-0"
    assert (new.ready, new.node) == (False, None)
    assert events[2].pod.node is not None
    assert not events[2].pod.ready
    assert events[3].pod.ready
    assert [(d.name, d.uid) for d in h.cluster.delete_calls] == [
        ("tikv-0", "uid-of-someone-else"),
        ("tikv-9", "uid-tikv-9"),
        ("tikv-0", "uid-tikv-0"),
    ]
    assert [p.uid for p in h.cluster.deleted] == ["uid-tikv-0"]
    await watch.aclose()


@pytest.mark.parametrize(
    ("query", "labels", "expected"),
    [
        ("app=tikv", {"app": "tikv"}, True),
        ("app=tikv,zone in (a,b)", {"app": "tikv", "zone": "c"}, False),
        ("zone notin (a,b)", {}, True),
        ("canary,!debug", {"canary": ""}, True),
        ("!debug", {"debug": "1"}, False),
    ],
)
def test_fake_cluster_filters_by_selector(query: str, labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(query, labels) is expected


# --- a campaign that succeeds ------------------------------------------------------------------------


async def test_three_trials_recover_and_the_campaign_succeeds(h: Harness) -> None:
    phase = await h.run(campaign(trials=3))

    assert phase is Phase.SUCCEEDED
    completed = await h.ledger.completed_trials(REF.uid)
    assert [a.trial_index for a in completed] == [0, 1, 2]
    assert all(a.outcome is Outcome.RECOVERED and a.attempt == 1 for a in completed)
    # Every victim was deleted once, by its uid: the deletes are exactly the ledger's victims.
    assert [(d.name, d.uid) for d in h.cluster.delete_calls] == [
        (v.name, v.uid) for a in completed for v in a.victims
    ]
    assert all(len(a.victims) == 1 for a in completed)
    assert all(d.namespace == "db" and d.grace_period_seconds == 0 for d in h.cluster.delete_calls)
    for a in completed:
        chain = [
            "kill_sent",
            "victim_gone",
            "replacement_created",
            "replacement_scheduled",
            "replacement_ready",
            "recovered",
        ]
        offsets = ordered(a, chain)
        assert offsets == sorted(offsets), f"trial {a.trial_index}: {dict(zip(chain, offsets, strict=True))}"
        assert a.milestones["kill_sent"].offset == 0.0
        assert a.milestones["gate_passed"].offset <= 0.0
        assert 0.0 <= a.milestones["kill_acked"].offset <= a.milestones["recovered"].offset
        assert a.milestones["first_unhealthy"].offset <= a.milestones["recovered"].offset
        assert "store_up" not in a.milestones  # no PD configured
        # The fake takes at least ~20 ms from delete to Ready; recovery cannot be faster.
        assert a.recovery_seconds is not None
        assert 0.015 <= a.recovery_seconds < 2.0
        assert a.error is None
        assert a.initial_state["expectedPods"] == 3
        assert sorted(p["name"] for p in a.final_state["pods"]) == ["tikv-0", "tikv-1", "tikv-2"]

    status = h.sink.last
    assert status["phase"] == "Succeeded"
    assert status["progress"] == "3/3"
    assert status["verdict"] == "Pass"
    assert status["trials"] == {
        "requested": 3,
        "completed": 3,
        "failed": 0,
        "interrupted": 0,
        "infraErrors": 0,
    }
    assert status["healthSource"] == "pods"
    assert status["observedGeneration"] == 3
    assert status["startedAt"] is not None
    assert status["completedAt"] is not None
    assert status["lastTrial"]["index"] == 2
    assert status["lastTrial"]["outcome"] == "recovered"
    assert h.status_condition("Ready")["status"] == "True"
    assert h.status_condition("Reconciling")["status"] == "False"
    assert h.status_condition("Stalled")["status"] == "False"
    assert h.status_condition("SpecValid")["status"] == "True"
    assert h.status_condition("SubjectLocked")["status"] == "True"
    pods_only = h.status_condition("SubjectAPIConfigured")
    assert (pods_only["status"], pods_only["reason"]) == ("False", "HealthFromPodsOnly")
    assert "no subject.pdURL" in pods_only["message"]
    assert h.sink.reasons().count("TrialRecovered") == 3
    assert h.sink.events[-1][:2] == ("Normal", "CampaignFinished")
    assert "verdict Pass" in h.sink.events[-1][2]

    row = await h.ledger.get_campaign(REF.uid)
    assert row is not None
    assert (row.phase, row.verdict.value) == (Phase.SUCCEEDED, "Pass")
    assert row.finished_at is not None
    # The lock is released when the campaign ends, so another Campaign can take the subject.
    assert not h.lock.held
    assert h.lock.release_calls >= 1


async def test_status_while_running_says_reconciling_and_counts_progress(h: Harness) -> None:
    await h.run(campaign(trials=2))

    running = [s for s in h.sink.statuses if s["phase"] == "Running"]
    assert running, "no status was published while trials ran"
    assert {s["progress"] for s in running} >= {"0/2", "1/2"}
    for s in running:
        assert cond(s, "Reconciling")["status"] == "True"
        assert cond(s, "Ready")["status"] == "False"
    assert any("observing recovery" in s["message"] for s in running)


async def test_a_finished_campaign_is_not_run_again_by_a_new_runner(h: Harness) -> None:
    await h.run(campaign(trials=2))
    deletes = len(h.cluster.delete_calls)

    # The operator restarts: a new runner on the same ledger only republishes the result.
    h.sink = ListSink()
    phase = await h.run(campaign(trials=2))

    assert phase is Phase.SUCCEEDED
    assert len(h.cluster.delete_calls) == deletes
    assert h.sink.last["progress"] == "2/2"
    assert h.sink.last["verdict"] == "Pass"
    assert h.status_condition("Ready")["status"] == "True"


async def test_dry_run_deletes_nothing_and_records_the_victims_it_would_kill(h: Harness) -> None:
    phase = await h.run(campaign(trials=2, dryRun=True))

    assert phase is Phase.SUCCEEDED
    assert h.cluster.delete_calls == []
    completed = await h.ledger.completed_trials(REF.uid)
    assert [a.outcome for a in completed] == [Outcome.DRY_RUN, Outcome.DRY_RUN]
    pods = {(p.name, p.uid) for p in h.cluster.pods()}
    for a in completed:
        assert len(a.victims) == 1
        assert (a.victims[0].name, a.victims[0].uid) in pods
    assert h.sink.last["progress"] == "2/2"
    assert h.sink.last["verdict"] == ""  # a dry run measures nothing
    assert h.sink.reasons().count("TrialDryRun") == 2
    assert "would kill" in next(m for _, r, m in h.sink.events if r == "TrialDryRun")


async def test_victims_are_reproducible_from_the_seed(tmp_path: Path) -> None:
    """The same seed picks the same victims in a fresh world (a run can be explained later)."""
    chosen: list[list[str]] = []
    for run in range(2):
        async with await Ledger.open(tmp_path / f"ledger-{run}.db") as ledger:
            harness = Harness(ledger=ledger)
            harness.cluster.add_statefulset("tikv", 5)
            await harness.run(campaign(trials=3, dryRun=True))
            chosen.append([a.victims[0].name for a in await ledger.completed_trials(REF.uid)])
            await harness.cluster.close()
    assert chosen[0] == chosen[1]


# --- refused before anything happens ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        pytest.param(
            {"subject": {"kind": "TiKV", "selector": {"matchLabels": {}}}},
            "spec.subject.selector",
            "must select something",
            id="empty-selector",
        ),
        pytest.param(
            {
                "subject": {
                    "kind": "TiKV",
                    "selector": {"matchLabels": {"app": "tikv"}},
                    "pdURL": "http://169.254.169.254/latest/meta-data",
                }
            },
            "spec.subject.pdURL",
            "link-local",
            id="pd-url-metadata-ip",
        ),
        pytest.param(
            {
                "subject": {
                    "kind": "TiKV",
                    "selector": {"matchLabels": {"app": "tikv"}},
                    "pdURL": "http://pd.other-ns.svc:2379",
                }
            },
            "spec.subject.pdURL",
            "outside the Campaign's namespace",
            id="pd-url-other-namespace",
        ),
        pytest.param({"trials": 0}, "spec.trials", "between 1 and", id="no-trials"),
        pytest.param(
            {"chaos": {"mode": "fixed"}}, "spec.chaos.value", "required", id="fixed-mode-without-value"
        ),
    ],
)
async def test_an_invalid_spec_fails_the_campaign_naming_the_field(
    h: Harness, change: dict[str, Any], field: str, words: str
) -> None:
    phase = await h.run(campaign(**change))

    assert phase is Phase.FAILED
    assert h.cluster.delete_calls == []
    assert await h.ledger.get_campaign(REF.uid) is None
    assert await h.ledger.attempts(REF.uid) == []
    assert h.lock.acquire_calls == 0
    status = h.sink.last
    assert status["phase"] == "Failed"
    spec_valid = h.status_condition("SpecValid")
    assert spec_valid["status"] == "False"
    assert spec_valid["reason"] == "InvalidSpec"
    assert spec_valid["message"].startswith(f"{field}:")
    assert words in spec_valid["message"]
    assert field in status["message"]
    assert h.status_condition("Stalled")["status"] == "True"
    assert h.status_condition("Ready")["status"] == "False"
    assert ("Warning", "InvalidSpec") in [(t, r) for t, r, _ in h.sink.events]


async def test_a_protected_namespace_is_never_disturbed(h: Harness) -> None:
    h.cluster.add_statefulset("tikv", 3, namespace="kube-system")
    ref = CampaignRef(namespace="kube-system", name="oops", uid="campaign-uid-ks")

    phase = await h.run(campaign(), ref=ref)

    assert phase is Phase.FAILED
    assert h.cluster.delete_calls == []
    assert h.lock.acquire_calls == 0
    assert await h.ledger.attempts(ref.uid) == []
    stalled = h.status_condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ProtectedNamespace")
    assert h.status_condition("SpecValid")["reason"] == "ProtectedNamespace"
    assert "kube-system" in h.sink.last["message"]


async def test_a_selector_that_matches_no_pods_fails_after_the_steady_state_timeout(h: Harness) -> None:
    spec = campaign(
        subject={"kind": "TiKV", "selector": {"matchLabels": {"app": "nothing"}}},
        steadyState={"timeoutSeconds": 1, "stableSeconds": 0},
    )
    loop = asyncio.get_running_loop()
    started = loop.time()

    phase = await h.run(spec)

    assert loop.time() - started >= 0.9  # it waited for the timeout, not less
    assert phase is Phase.FAILED
    assert h.cluster.delete_calls == []
    assert await h.ledger.attempts(REF.uid) == []
    status = h.sink.last
    assert status["message"] == (
        "spec.subject.selector 'app=nothing' matches no pods in namespace 'db' (waited 1s): "
        "check the labels and the namespace"
    )
    # The user's mistake, named as such: not an infrastructure error of the cluster.
    assert status["verdict"] == ""
    for type_, value in (("Stalled", "True"), ("Ready", "False")):
        assert h.status_condition(type_)["status"] == value
        assert h.status_condition(type_)["reason"] == "SelectorMatchesNothing"
    assert h.status_condition("SteadyState")["status"] == "False"
    assert "app=nothing" in h.status_condition("SteadyState")["message"]
    assert ("Warning", "SelectorMatchesNothing", status["message"]) in h.sink.events
    assert "InfraError" not in str(status)


async def test_pods_that_cannot_be_listed_are_an_infrastructure_error_not_an_empty_selector(
    h: Harness,
) -> None:
    h.cluster.list_error = TransientApiError("pods is forbidden", 403)
    spec = campaign(steadyState={"timeoutSeconds": 1, "stableSeconds": 0})

    phase = await h.run(spec)

    assert phase is Phase.FAILED
    assert h.sink.last["verdict"] == "InfraError"
    assert h.status_condition("Stalled")["reason"] == "InfraError"


async def test_a_busy_subject_is_waited_for_and_nothing_is_deleted(h: Harness) -> None:
    h.lock.busy = True
    task = asyncio.create_task(h.runner(campaign()).run(h.stop))

    status = await h.sink.wait_for(lambda s: any(c["type"] == "SubjectLocked" for c in s["conditions"]))
    locked = cond(status, "SubjectLocked")
    assert (locked["status"], locked["reason"]) == ("False", "SubjectBusy")
    assert "db/other-campaign/uid-other" in locked["message"]
    assert status["phase"] == "Pending"
    h.stop.set()
    phase = await asyncio.wait_for(task, 3)

    assert phase is Phase.PENDING
    assert h.cluster.delete_calls == []
    assert await h.ledger.attempts(REF.uid) == []
    row = await h.ledger.get_campaign(REF.uid)
    assert row is not None
    assert row.finished_at is None


async def test_a_subject_freed_while_waiting_is_taken_and_the_campaign_runs(h: Harness) -> None:
    h.lock.busy = True
    task = asyncio.create_task(h.runner(campaign(trials=1)).run(h.stop))
    await h.sink.wait_for(lambda s: s["phase"] == "Pending")
    assert h.cluster.delete_calls == []
    h.lock.busy = False

    phase = await asyncio.wait_for(task, 5)

    assert phase is Phase.SUCCEEDED
    assert len(h.cluster.deleted) == 1
    assert h.status_condition("SubjectLocked")["status"] == "True"


# --- trials that do not recover -----------------------------------------------------------------------


async def test_a_replacement_that_never_gets_ready_is_unrecovered_and_hard_fails(h: Harness) -> None:
    h.cluster.ready_delays = [None]

    phase = await h.run(campaign(trials=3, recovery={"timeoutSeconds": 1, "settleSeconds": 0}))

    assert phase is Phase.FAILED
    assert len(h.cluster.delete_calls) == 1  # stopOnUnrecovered (the default): no more kills
    (attempt,) = await h.ledger.attempts(REF.uid)
    assert attempt.outcome is Outcome.UNRECOVERED
    assert attempt.recovery_seconds is None
    assert "recovered" not in attempt.milestones
    assert "replacement_scheduled" in attempt.milestones
    assert "replacement_ready" not in attempt.milestones
    assert attempt.error is not None
    assert "not recovered within 1s" in attempt.error
    assert f"{attempt.victims[0].name}: replacement not Ready" in attempt.error
    status = h.sink.last
    assert status["verdict"] == "HardFail"
    assert status["phase"] == "Failed"
    assert status["progress"] == "1/3"
    assert status["trials"]["failed"] == 1
    assert status["recovery"]["p95Seconds"] is None
    assert h.status_condition("Ready")["status"] == "False"
    assert (h.status_condition("Stalled")["status"], h.status_condition("Stalled")["reason"]) == (
        "True",
        "HardFail",
    )
    assert "TrialUnrecovered" in h.sink.reasons()


async def test_without_stop_on_unrecovered_the_campaign_goes_on_and_is_partial(h: Harness) -> None:
    # The first replacement gets Ready only after the 1 s recovery timeout; the second trial then
    # starts from a healthy subject again and recovers.
    h.cluster.ready_delays = [1.3]

    phase = await h.run(
        campaign(trials=2, recovery={"timeoutSeconds": 1, "settleSeconds": 0, "stopOnUnrecovered": False}),
        timeout=15,
    )

    assert phase is Phase.SUCCEEDED  # it ran to the end ...
    outcomes = [a.outcome for a in await h.ledger.completed_trials(REF.uid)]
    assert outcomes == [Outcome.UNRECOVERED, Outcome.RECOVERED]
    assert len(h.cluster.deleted) == 2
    status = h.sink.last
    assert status["verdict"] == "Partial"  # ... but not every trial recovered
    assert status["progress"] == "2/2"
    assert status["trials"]["failed"] == 1
    assert h.status_condition("Ready")["status"] == "False"


async def test_an_slo_that_cannot_be_met_stops_the_campaign_early_with_fail(h: Harness) -> None:
    # Every recovery takes more than 1 ms: after the first trial, no outcome of the other four
    # can bring the p95 under it.
    phase = await h.run(campaign(trials=5, slo={"p95RecoverySeconds": 0.001}))

    assert phase is Phase.FAILED
    assert len(h.cluster.deleted) == 1
    assert len(await h.ledger.completed_trials(REF.uid)) == 1
    status = h.sink.last
    assert status["verdict"] == "Fail"
    assert status["progress"] == "1/5"
    assert "stopped early" in status["message"]
    assert "0.001" in status["message"]
    assert h.status_condition("Stalled")["reason"] == "Fail"


async def test_a_reachable_slo_passes(h: Harness) -> None:
    phase = await h.run(campaign(trials=2, slo={"p95RecoverySeconds": 5}))

    assert phase is Phase.SUCCEEDED
    assert h.sink.last["verdict"] == "Pass"


# --- the kill --------------------------------------------------------------------------------------------


async def test_transient_delete_errors_are_retried_and_the_trial_recovers(h: Harness) -> None:
    h.cluster.fail_before_delete = [
        TransientApiError("delete pod: 503 Service Unavailable", 503),
        TransientApiError("delete pod: 503 Service Unavailable", 503),
    ]

    phase = await h.run(campaign(trials=1))

    assert phase is Phase.SUCCEEDED
    assert len(h.cluster.delete_calls) == 3
    assert len({(d.name, d.uid) for d in h.cluster.delete_calls}) == 1  # the same pod, by uid
    assert len(h.cluster.deleted) == 1
    (attempt,) = await h.ledger.completed_trials(REF.uid)
    assert attempt.outcome is Outcome.RECOVERED


async def test_a_delete_whose_answer_was_lost_is_not_repeated_on_the_replacement(h: Harness) -> None:
    # The first delete went through but its answer was lost; the retry meets the replacement
    # (same name, new uid), which the UID precondition protects.
    h.cluster.fail_after_delete = [TransientApiError("delete pod: connection reset", 503)]

    phase = await h.run(campaign(trials=1))

    assert phase is Phase.SUCCEEDED
    assert len(h.cluster.delete_calls) == 2
    assert len(h.cluster.deleted) == 1
    (attempt,) = await h.ledger.completed_trials(REF.uid)
    assert attempt.outcome is Outcome.RECOVERED


async def test_a_forbidden_delete_is_an_infrastructure_error_not_a_measurement(h: Harness) -> None:
    h.cluster.fail_before_delete = [ApiError("pods is forbidden", 403)] * 2
    settings = RunnerSettings(
        protected_namespaces=DEFAULT_PROTECTED_NAMESPACES,
        lock_retry_interval=0.05,
        infra=InfraBackoff(max_consecutive=2, initial=0.01, max=0.02),
    )

    phase = await asyncio.wait_for(h.runner(campaign(trials=2), settings=settings).run(h.stop), 10)

    assert phase is Phase.FAILED
    assert len(h.cluster.delete_calls) == 2  # not retried within an attempt: 403 is not transient
    assert h.cluster.deleted == []
    attempts = await h.ledger.attempts(REF.uid)
    assert [a.outcome for a in attempts] == [Outcome.INFRA_ERROR, Outcome.INFRA_ERROR]
    assert await h.ledger.completed_trials(REF.uid) == []
    status = h.sink.last
    assert status["verdict"] == "InfraError"
    assert status["progress"] == "0/2"
    assert status["trials"]["infraErrors"] == 2
    assert "forbidden" in status["message"]


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ApiError("watch: too old resource version", 410), id="gone"),
        pytest.param(TransientApiError("watch: connection reset", 503), id="broken"),
    ],
)
async def test_a_watch_that_breaks_during_recovery_is_listed_again_and_the_trial_recovers(
    h: Harness, error: ApiError
) -> None:
    h.cluster.after_delete = lambda: h.cluster.break_watches(error)

    phase = await h.run(campaign(trials=2))

    assert phase is Phase.SUCCEEDED
    assert [a.outcome for a in await h.ledger.completed_trials(REF.uid)] == [Outcome.RECOVERED] * 2
    assert len(h.cluster.deleted) == 2
    assert h.cluster.list_calls >= 3  # the first list, then one after each broken watch


# --- PD (the subject probe) ----------------------------------------------------------------------------

PD_SUBJECT = {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}, "pdURL": "http://pd:2379"}


async def test_with_pd_recovery_waits_for_the_store_to_come_back(h: Harness) -> None:
    h.probe = FakeProbe()

    phase = await h.run(campaign(trials=1, subject=PD_SUBJECT))

    assert phase is Phase.SUCCEEDED
    (attempt,) = await h.ledger.completed_trials(REF.uid)
    m = attempt.milestones
    assert m["replacement_ready"].offset <= m["store_up"].offset <= m["recovered"].offset
    assert attempt.victims[0].member_id is not None  # from the probe at the gate
    assert attempt.initial_state["probe"] is not None
    assert h.sink.last["healthSource"] == "pods+pd"
    configured = h.status_condition("SubjectAPIConfigured")
    assert (configured["status"], configured["reason"]) == ("True", "Configured")
    assert "http://pd:2379" in configured["message"]  # the endpoints it judges health from
    assert h.probe.closed


@pytest.mark.parametrize(
    ("probe", "words"),
    [
        pytest.param(FakeProbe(error=unavailable()), "PD unavailable", id="unavailable"),
        pytest.param(FakeProbe(healthy=False), "region health check failed", id="unhealthy"),
    ],
)
async def test_no_kill_unless_pd_confirms_a_healthy_subject(h: Harness, probe: FakeProbe, words: str) -> None:
    h.probe = probe

    phase = await h.run(campaign(subject=PD_SUBJECT, steadyState={"timeoutSeconds": 1, "stableSeconds": 0}))

    assert phase is Phase.FAILED
    assert h.cluster.delete_calls == []
    assert await h.ledger.attempts(REF.uid) == []
    assert probe.checks >= 1
    status = h.sink.last
    assert status["verdict"] == "InfraError"
    assert words in status["message"]
    assert "steady state not reached" in status["message"]
    assert probe.closed


async def test_a_lock_lost_while_the_gate_ran_stops_the_kill(h: Harness) -> None:
    h.probe = FakeProbe(during_check=h.lock.lose)
    task = asyncio.create_task(h.runner(campaign(subject=PD_SUBJECT)).run(h.stop))

    await h.sink.wait_for(lambda s: any(c["reason"] == "SubjectBusy" for c in s["conditions"]))
    h.stop.set()
    await asyncio.wait_for(task, 3)

    assert h.cluster.delete_calls == []
    # Checked right after the gate, before anything is recorded: back to waiting for the lock.
    assert await h.ledger.attempts(REF.uid) == []
    assert await h.ledger.completed_trials(REF.uid) == []


async def test_no_kill_when_another_pod_lost_readiness_while_pd_was_asked(h: Harness) -> None:
    spec = campaign(
        trials=1,
        subject=PD_SUBJECT,
        steadyState={"timeoutSeconds": 1, "stableSeconds": 0},
        recovery={"timeoutSeconds": 1, "settleSeconds": 0},
    )
    pods = h.cluster.pods()
    (victim,) = pod_kill.choose_victims(
        pods, parse_campaign_spec(spec).chaos, pod_kill.rng_for(pod_kill.victim_seed("7", 0, 1))
    )
    bystander = next(p for p in pods if p.name != victim.name)
    h.probe = FakeProbe(during_check=lambda: h.cluster.set_ready(bystander.name, False))

    await h.run(spec)

    # Killing now would leave one of three pods up: the gate exists to prevent exactly that.
    assert h.cluster.delete_calls == []


# --- stopping and restarting ------------------------------------------------------------------------------


async def test_an_attempt_in_flight_at_a_restart_is_interrupted_and_its_index_runs_again(h: Harness) -> None:
    spec = campaign(trials=3)
    # What a crash mid-trial leaves: the attempt was written, its outcome never was.
    await h.ledger.ensure_campaign(REF, spec, 3, "7", 1000.0)
    await h.ledger.begin_attempt(
        REF.uid,
        0,
        victims=[Victim(name="tikv-1", uid="uid-tikv-1")],
        victim_seed="7/trial-0/attempt-1",
        initial_state={"expectedPods": 3},
        gate_passed=Milestone(wall=1000.0, offset=-1.0),
        now=1000.0,
    )

    phase = await h.run(spec)

    assert phase is Phase.SUCCEEDED
    attempts = await h.ledger.attempts(REF.uid)
    assert [(a.trial_index, a.attempt, a.outcome) for a in attempts] == [
        (0, 1, Outcome.INTERRUPTED),
        (0, 2, Outcome.RECOVERED),
        (1, 1, Outcome.RECOVERED),
        (2, 1, Outcome.RECOVERED),
    ]
    assert attempts[0].error is not None
    assert "runs again" in attempts[0].error
    completed = await h.ledger.completed_trials(REF.uid)
    assert [a.trial_index for a in completed] == [0, 1, 2]  # none twice, none missing
    assert len(h.cluster.deleted) == 3
    status = h.sink.last
    assert status["progress"] == "3/3"
    assert status["trials"]["completed"] == 3
    assert status["trials"]["interrupted"] == 1
    assert "TrialInterrupted" in h.sink.reasons()


async def test_stop_during_recovery_records_the_attempt_interrupted_and_does_not_finish(h: Harness) -> None:
    h.cluster.ready_delays = [None]  # the first replacement waits: the stop comes first
    spec = campaign(trials=2)
    task = asyncio.create_task(h.runner(spec).run(h.stop))
    await h.sink.wait_for(lambda s: "observing recovery" in s["message"])
    await asyncio.sleep(0.05)  # the replacement is created and scheduled meanwhile
    h.stop.set()

    phase = await asyncio.wait_for(task, 3)

    assert not phase.finished
    (attempt,) = await h.ledger.attempts(REF.uid)
    assert attempt.outcome is Outcome.INTERRUPTED
    assert attempt.error is not None
    assert "stopped" in attempt.error
    assert "kill_sent" in attempt.milestones
    assert await h.ledger.completed_trials(REF.uid) == []
    row = await h.ledger.get_campaign(REF.uid)
    assert row is not None
    assert row.finished_at is None
    assert not row.phase.finished
    assert not h.lock.held
    assert "CampaignFinished" not in h.sink.reasons()
    assert len(h.cluster.deleted) == 1

    # The operator comes back once the replacement is Ready: the interrupted index runs again.
    victim = attempt.victims[0].name
    h.cluster.set_ready(victim)
    h.stop = Stop()
    h.sink = ListSink()
    phase = await h.run(spec)

    assert phase is Phase.SUCCEEDED
    completed = await h.ledger.completed_trials(REF.uid)
    assert [(a.trial_index, a.attempt) for a in completed] == [(0, 2), (1, 1)]
    assert h.sink.last["trials"]["interrupted"] == 1
    assert h.sink.last["progress"] == "2/2"


# --- what the status reports -------------------------------------------------------------------------------


async def test_status_percentiles_for_one_trial(h: Harness) -> None:
    await h.run(campaign(trials=1))

    (attempt,) = await h.ledger.completed_trials(REF.uid)
    r = attempt.recovery_seconds
    assert r is not None
    recovery = h.sink.last["recovery"]
    for key in ("p50Seconds", "p95Seconds", "maxSeconds", "meanSeconds"):
        assert recovery[key] == pytest.approx(r, abs=1e-3), key


async def test_status_percentiles_for_two_trials_interpolate(h: Harness) -> None:
    h.cluster.ready_delays = [0.02, 0.35]

    await h.run(campaign(trials=2))

    fast, slow = (a.recovery_seconds for a in await h.ledger.completed_trials(REF.uid))
    assert fast is not None
    assert slow is not None
    assert slow >= 0.35 > fast  # the fake's delays show through: the numbers are measured
    recovery = h.sink.last["recovery"]
    assert recovery["p50Seconds"] == pytest.approx((fast + slow) / 2, abs=1e-3)
    assert recovery["p95Seconds"] == pytest.approx(fast + 0.95 * (slow - fast), abs=1e-3)
    assert recovery["maxSeconds"] == pytest.approx(slow, abs=1e-3)
    assert recovery["meanSeconds"] == pytest.approx((fast + slow) / 2, abs=1e-3)
    assert "p50" in h.sink.last["message"]


async def test_every_milestone_the_ledger_knows_can_be_recorded_by_a_pd_trial(h: Harness) -> None:
    """A trial with PD fills every milestone of a recovery (``relapsed`` has a test of its own:
    a recovered trial never has it): none is silently never measured."""
    h.probe = FakeProbe()

    await h.run(campaign(trials=1, subject=PD_SUBJECT))

    (attempt,) = await h.ledger.completed_trials(REF.uid)
    assert set(attempt.milestones) == set(MILESTONES) - {"relapsed"} | {"store_up"}  # TiKV's own
    assert all(math.isfinite(m.offset) for m in attempt.milestones.values())


async def test_existing_conditions_keep_their_transition_time_across_a_restart(h: Harness) -> None:
    existing = {
        "conditions": [
            {
                "type": "SpecValid",
                "status": "True",
                "reason": "Valid",
                "message": "",
                "lastTransitionTime": "2020-01-01T00:00:00Z",
                "observedGeneration": 1,
            },
            {
                "type": "Ready",
                "status": "True",
                "reason": "Succeeded",
                "message": "",
                "lastTransitionTime": "2020-01-01T00:00:00Z",
                "observedGeneration": 1,
            },
        ]
    }
    await asyncio.wait_for(h.runner(campaign(trials=1), existing_status=existing).run(h.stop), 10)

    spec_valid = h.status_condition("SpecValid")
    assert spec_valid["lastTransitionTime"] == "2020-01-01T00:00:00Z"  # still True: unchanged
    assert spec_valid["observedGeneration"] == 3
    # Ready went False while trials ran, so its transition time moved.
    first_running = next(s for s in h.sink.statuses if s["phase"] == "Running")
    ready = cond(first_running, "Ready")
    assert ready["status"] == "False"
    assert ready["lastTransitionTime"] != "2020-01-01T00:00:00Z"


# --- the settle window after "recovered" -------------------------------------------------------------------


async def test_a_relapse_within_the_settle_window_is_recorded_not_a_success(h: Harness) -> None:
    """PD confirms the recovery once, then reports the store gone again (a restarted store whose
    new process never heartbeated drops to Disconnected): the trial is a relapse, not a recovery."""
    checks_after_recovery = 0

    def during_check() -> None:
        nonlocal checks_after_recovery
        pods = h.cluster.pods()
        if h.cluster.delete_calls and len(pods) == 3 and all(p.ready for p in pods):
            checks_after_recovery += 1
            if checks_after_recovery == 2:
                assert h.probe is not None
                h.probe.healthy = False

    h.probe = FakeProbe(during_check=during_check)
    spec = campaign(trials=1, subject=PD_SUBJECT, recovery={"timeoutSeconds": 5, "settleSeconds": 5})

    phase = await h.run(spec)

    (attempt,) = await h.ledger.attempts(REF.uid)
    assert attempt.outcome is Outcome.UNRECOVERED
    assert attempt.recovery_seconds is None
    assert attempt.error is not None
    assert attempt.error.startswith("relapsed ")
    assert "region health check failed" in attempt.error
    assert attempt.milestones["relapsed"].offset >= attempt.milestones["recovered"].offset
    assert phase is Phase.FAILED
    status = h.sink.last
    assert status["verdict"] == "HardFail"
    assert status["lastTrial"]["outcome"] == "unrecovered"
    assert status["lastTrial"]["relapsedSeconds"] is not None
    assert "relapsed" in status["message"]


async def test_a_subject_that_stays_healthy_through_the_settle_window_recovered(h: Harness) -> None:
    h.probe = FakeProbe()
    spec = campaign(trials=1, subject=PD_SUBJECT, recovery={"timeoutSeconds": 5, "settleSeconds": 0.3})

    phase = await h.run(spec)

    (attempt,) = await h.ledger.attempts(REF.uid)
    assert phase is Phase.SUCCEEDED
    assert attempt.outcome is Outcome.RECOVERED
    assert "relapsed" not in attempt.milestones
    assert attempt.final_state["milestoneSources"]["recovered"] in ("observed", "pd_heartbeat")


class RecordingStop(Stop):
    """The stop signal, remembering how long the runner asked to wait each time."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    async def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return await super().wait(timeout)


async def test_infra_errors_in_a_row_wait_twice_as_long_each_time_capped_and_jittered(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the n-th infrastructure error in a row the runner waits initial x 2^(n-1), at most
    `max`, times a factor drawn between 0.5 and 1.5 (so many Campaigns hit by one outage do not
    all come back at once); the n = max_consecutive-th error ends the Campaign instead."""
    h.cluster.fail_before_delete = [ApiError("pods is forbidden", 403)] * 4
    draws = iter([0.5, 1.5, 0.75])
    asked: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        asked.append((a, b))
        return next(draws)

    monkeypatch.setattr(random, "uniform", uniform)
    h.stop = RecordingStop()
    settings = RunnerSettings(
        protected_namespaces=DEFAULT_PROTECTED_NAMESPACES,
        lock_retry_interval=0.05,
        infra=InfraBackoff(max_consecutive=4, initial=0.01, max=0.03),
    )

    phase = await asyncio.wait_for(h.runner(campaign(trials=4), settings=settings).run(h.stop), 10)

    assert phase is Phase.FAILED
    assert asked == [(0.5, 1.5)] * 3  # one draw per wait, over the documented range
    # 0.01 x 0.5, then 0.02 x 1.5, then 0.04 capped at 0.03, x 0.75.
    backoffs = [w for w in h.stop.waits if w not in (None, 0, 0.0)]
    assert backoffs == pytest.approx([0.005, 0.03, 0.0225]), h.stop.waits


def test_infra_backoff_doubles_from_initial_up_to_max() -> None:
    backoff = InfraBackoff(initial=1.0, max=60.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


# --- subject URLs name Services the API server vouches for (issue 21) --------------------------------


async def test_a_pd_url_naming_an_external_name_service_fails_before_anything_is_touched(h: Harness) -> None:
    h.services = {"pd": ServiceInfo(type="ExternalName", headless=False)}
    phase = await h.run(campaign(subject={**campaign()["subject"], "pdURL": "http://pd:2379"}))

    assert phase is Phase.FAILED
    assert h.opened == []  # no client made for it, nothing connected to
    assert h.cluster.delete_calls == []
    assert h.lock.acquire_calls == 0
    spec_valid = h.status_condition("SpecValid")
    assert (spec_valid["status"], spec_valid["reason"]) == ("False", "InvalidSpec")
    assert spec_valid["message"].startswith(
        "spec.subject.pdURL: Service 'pd' in namespace 'db' is of type ExternalName"
    )


async def test_a_member_of_a_headless_service_is_connected_to_by_its_qualified_name(h: Harness) -> None:
    h.services = {"pd": ServiceInfo(type="ClusterIP", headless=True)}
    await h.run(campaign(trials=1, subject={**campaign()["subject"], "pdURL": "http://pd-0.pd:2379/"}))

    assert [s.subject.pd_url for s in h.opened] == ["http://pd-0.pd.db.svc:2379/"]


async def test_an_operator_not_allowed_to_read_services_says_what_to_grant(h: Harness) -> None:
    h.services, h.forbidden = {}, True
    phase = await h.run(campaign(subject={**campaign()["subject"], "pdURL": "http://pd:2379"}))

    assert phase is Phase.FAILED
    assert h.opened == []
    assert "needs `get` on services" in h.status_condition("SpecValid")["message"]


# --- a baseline arm of node_failure: the remediator back only once the node is ----------------


class NodeAfterHeal(FakeCluster):
    """The in-memory cluster whose failed nodes the control plane shows NotReady (from the freeze)
    until a moment after the thaw: the kubelet's next status update, as on a real node."""

    back_after = 1.5

    def __init__(self) -> None:
        super().__init__()
        for i in range(3):
            self.nodes[f"node-{i}"] = NodeState(f"node-{i}", {}, {}, (), ready="True")

    async def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None]) -> None:
        await FakeCluster.patch_node_annotations(self, name, annotations)
        node = self.nodes[name]
        if annotations.get(node_failure.REQUEST) is not None:
            self.nodes[name] = dataclasses.replace(node, ready="Unknown")
        elif node_failure.REQUEST in annotations:
            loop = asyncio.get_running_loop()
            loop.call_later(self.back_after, self._back, name)

    def _back(self, name: str) -> None:
        self.nodes[name] = dataclasses.replace(self.nodes[name], ready="True")


@dataclass
class RecordingScaler:
    """The remediator's scale subresource; each write with the failed nodes' Ready then."""

    cluster: FakeCluster
    desired: int = 1
    writes: list[tuple[int, dict[str, str | None]]] = field(default_factory=list)

    async def get_replicas(self, kind: str, namespace: str, name: str) -> tuple[int, int]:
        return self.desired, self.desired

    async def set_replicas(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        self.desired = replicas
        self.writes.append((replicas, {n: node.ready for n, node in self.cluster.nodes.items()}))

    async def pods_gone(self, kind: str, namespace: str, name: str, timeout: float) -> int:
        return 0


async def test_a_baseline_trial_of_node_failure_restores_the_remediator_once_the_node_is_ready(
    ledger: Ledger,
) -> None:
    """Restored while its node was still NotReady (a healed node is, until its kubelet's next
    status update), the baseline's remediator would act on the fault between trials: seen on the
    real nodes, the member moved in the baseline's interval."""
    cluster = NodeAfterHeal()
    cluster.add_statefulset("tikv", 3)
    scaler = RecordingScaler(cluster)
    h = Harness(ledger=ledger, cluster=cluster)
    spec = campaign(
        chaos={"type": "node_failure", "durationSeconds": 1, "acknowledgeNodeFailure": True},
        trials=2,
        baseline=True,
        remediator={"kind": "Deployment", "name": "healer"},
        recovery={"timeoutSeconds": 10, "settleSeconds": 0},
    )
    runner = h.runner(spec, scaler=scaler)
    try:
        assert await asyncio.wait_for(runner.run(h.stop), 30) == Phase.SUCCEEDED, h.sink.last
    finally:
        await cluster.close()
    records = await ledger.attempts(REF.uid)
    assert [r.outcome for r in records] == [Outcome.RECOVERED, Outcome.RECOVERED]
    # Per trial: down to 0 before the fault, back to 1 after, with every node Ready by then.
    assert [n for n, _ in scaler.writes] == [0, 1, 0, 1]
    for replicas, ready in scaler.writes:
        assert set(ready.values()) == {"True"}, (replicas, ready)


# --- a baseline trial's fault only once the remediator's pods are gone -------------------------


@dataclass
class LingeringRemediator:
    """The remediator's workload whose pod outlives the scale to zero by `linger` seconds (a
    process that ignores SIGTERM, or had not installed its handler yet, runs its whole grace
    period), or never goes (`linger` None). Every step in `log`, in order."""

    log: list[str]
    linger: float | None
    desired: int = 1

    async def get_replicas(self, kind: str, namespace: str, name: str) -> tuple[int, int]:
        # The scale subresource's status does not count a terminating pod: 0 at once.
        return self.desired, self.desired

    async def set_replicas(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        self.desired = replicas
        self.log.append(f"scaled to {replicas}")

    async def pods_gone(self, kind: str, namespace: str, name: str, timeout: float) -> int:
        if self.linger is None:
            self.log.append(f"pod still there after {timeout:g}s")
            return 1
        await asyncio.sleep(self.linger)
        self.log.append("pods gone")
        return 0


class KillLog(FakeCluster):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def delete_pod(self, namespace: str, name: str, uid: str, grace_period_seconds: int) -> None:
        self.log.append(f"kill {name}")
        await super().delete_pod(namespace, name, uid, grace_period_seconds)


async def test_a_baseline_trial_kills_only_once_the_remediators_pods_are_gone(ledger: Ledger) -> None:
    """Seen on the real nodes: the remediator restored after one trial and scaled down for the
    next within 2 s, before its process had installed its SIGTERM handler; its pod terminated
    for its whole 30 s grace period, alive through the fault, while the scale subresource
    already said 0."""
    log: list[str] = []
    cluster = KillLog(log)
    cluster.add_statefulset("tikv", 3)
    h = Harness(ledger=ledger, cluster=cluster)
    spec = campaign(trials=2, baseline=True, remediator={"kind": "Deployment", "name": "healer"})
    runner = h.runner(spec, scaler=LingeringRemediator(log, linger=0.3))
    assert await asyncio.wait_for(runner.run(h.stop), 30) == Phase.SUCCEEDED, h.sink.last
    kills = [e for e in log if e.startswith("kill ")]
    assert len(kills) == 2, log
    assert [e if not e.startswith("kill ") else "kill" for e in log] == [
        "scaled to 0", "pods gone", "kill", "scaled to 1",
        "scaled to 0", "pods gone", "kill", "scaled to 1",
    ]  # fmt: skip


async def test_a_remediator_that_does_not_stop_is_an_infrastructure_error_and_nothing_is_killed(
    ledger: Ledger,
) -> None:
    log: list[str] = []
    cluster = KillLog(log)
    cluster.add_statefulset("tikv", 3)
    h = Harness(ledger=ledger, cluster=cluster)
    settings = dataclasses.replace(SETTINGS, infra=InfraBackoff(max_consecutive=2, initial=0.01, max=0.02))
    spec = campaign(trials=1, baseline=True, remediator={"kind": "Deployment", "name": "healer"})
    runner = h.runner(spec, settings=settings, scaler=LingeringRemediator(log, linger=None))
    assert await asyncio.wait_for(runner.run(h.stop), 30) == Phase.FAILED
    assert cluster.deleted == [], log
    assert not any(e.startswith("kill ") for e in log), log
    # Restored after each refused attempt.
    assert log == ["scaled to 0", "pod still there after 90s", "scaled to 1"] * 2, log
    attempts = await ledger.attempts(REF.uid)
    assert [a.outcome for a in attempts] == [Outcome.INFRA_ERROR, Outcome.INFRA_ERROR]
    assert "still has 1 pod(s) 90s after scaling it to 0" in (attempts[0].error or ""), attempts[0]
    assert "SIGTERM" in h.sink.last["message"], h.sink.last
