"""The Campaign status as a projection of the ledger: conditions and `build_status`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from aftershock.engine.status import Conditions, build_status, iso
from aftershock.engine.tally import Tally
from aftershock.model import AttemptRecord, Milestone, Outcome, Phase, Verdict, Victim

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def condition(conds: Conditions, type_: str) -> dict[str, Any]:
    (found,) = [c for c in conds.to_list() if c["type"] == type_]
    return found


# --- conditions --------------------------------------------------------------------------------------


def test_iso_is_utc_to_the_second() -> None:
    assert iso(T0) == "2023-11-14T22:13:20Z"
    assert iso(T0 + 0.9) == "2023-11-14T22:13:20Z"
    assert iso(None) is None


def test_last_transition_time_stays_while_the_status_stays() -> None:
    conds = Conditions(None, generation=1)
    conds.set("Ready", False, "TrialsRunning", "trial 1/3", T0)
    conds.set("Ready", False, "SubjectBusy", "waiting for the subject", T0 + 60)

    ready = condition(conds, "Ready")
    assert ready["lastTransitionTime"] == iso(T0)
    # Reason and message are current even though the transition time is not.
    assert (ready["reason"], ready["message"]) == ("SubjectBusy", "waiting for the subject")


def test_last_transition_time_moves_when_the_status_changes() -> None:
    conds = Conditions(None, generation=1)
    conds.set("Ready", False, "TrialsRunning", "", T0)
    conds.set("Ready", True, "Succeeded", "", T0 + 60)
    assert condition(conds, "Ready")["lastTransitionTime"] == iso(T0 + 60)
    conds.set("Ready", None, "Unknown", "", T0 + 120)
    assert condition(conds, "Ready")["status"] == "Unknown"
    assert condition(conds, "Ready")["lastTransitionTime"] == iso(T0 + 120)


def test_conditions_read_back_from_an_existing_status_keep_their_times() -> None:
    existing: list[dict[str, Any]] = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "TrialsRunning",
            "message": "trial 2/3",
            "lastTransitionTime": "2020-01-01T00:00:00Z",
            "observedGeneration": 1,
        },
        {"type": "Stalled", "status": "False", "reason": "Progressing"},  # no time: the epoch
        {"status": "True"},  # malformed (no type): dropped
    ]
    conds = Conditions(existing, generation=2)

    assert conds.get("Ready") == "False"
    assert conds.reason("Ready") == "TrialsRunning"
    assert condition(conds, "Ready")["observedGeneration"] == 1  # not looked at since
    assert condition(conds, "Stalled")["lastTransitionTime"] == "1970-01-01T00:00:00Z"
    assert [c["type"] for c in conds.to_list()] == ["Ready", "Stalled"]

    conds.set("Ready", False, "TrialsRunning", "trial 3/3", T0)
    ready = condition(conds, "Ready")
    assert ready["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert ready["observedGeneration"] == 2
    assert ready["message"] == "trial 3/3"

    conds.set("Ready", True, "Succeeded", "", T0)
    assert condition(conds, "Ready")["lastTransitionTime"] == iso(T0)


def test_the_retired_pd_condition_is_dropped_and_its_successor_says_where_health_comes_from() -> None:
    written_by_an_older_operator = [
        {"type": "PDConfigured", "status": "True", "reason": "PDConfigured", "message": "http://pd:2379"},
        {"type": "SteadyState", "status": "True", "reason": "Healthy", "message": ""},
    ]
    conds = Conditions(written_by_an_older_operator, generation=1)
    conds.set("SubjectAPIConfigured", True, "Configured", "http://pd:2379", T0)
    assert [c["type"] for c in conds.to_list()] == ["SteadyState", "SubjectAPIConfigured"]


def test_conditions_are_listed_in_a_fixed_order() -> None:
    conds = Conditions(None, generation=1)
    for type_ in ("Zeta", "SubjectAPIConfigured", "SteadyState", "Stalled", "Ready", "Alpha", "SpecValid"):
        conds.set(type_, True, "R", "", T0)
    assert [c["type"] for c in conds.to_list()] == [
        "Ready",
        "Stalled",
        "SpecValid",
        "SteadyState",
        "SubjectAPIConfigured",
        "Alpha",
        "Zeta",
    ]
    assert conds.get("Missing") is None
    assert conds.reason("Missing") is None


# --- build_status ------------------------------------------------------------------------------------


def attempt(
    index: int,
    outcome: Outcome | None,
    *,
    recovery: float | None = None,
    attempt_no: int = 1,
    finished_at: float | None = None,
    victim: str = "tikv-1",
) -> AttemptRecord:
    milestones = {"kill_sent": Milestone(T0, 0.0)}
    if recovery is not None:
        milestones["recovered"] = Milestone(T0 + recovery, recovery)
    return AttemptRecord(
        campaign_uid="c-1",
        trial_index=index,
        attempt=attempt_no,
        victims=(Victim(name=victim, uid=f"uid-{victim}"),),
        victim_seed=f"s/trial-{index}/attempt-{attempt_no}",
        started_at=T0,
        outcome=outcome,
        milestones=milestones,
        finished_at=finished_at
        if finished_at is not None
        else (None if outcome is None else T0 + 100 + index),
    )


def status_of(attempts: Sequence[AttemptRecord], requested: int = 3, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "requested": requested,
        "tally": Tally.of(attempts),
        "phase": Phase.RUNNING,
        "verdict": Verdict.NONE,
        "conditions": Conditions(None, 4),
        "generation": 4,
        "health_source": "pods",
        "started_at": T0,
        "completed_at": None,
        "message": "running",
    }
    args.update(kwargs)
    return build_status(**args)


def test_status_with_no_attempts() -> None:
    status = status_of([])
    assert status["phase"] == "Running"
    assert status["progress"] == "0/3"
    assert status["trials"] == {
        "requested": 3,
        "completed": 0,
        "failed": 0,
        "interrupted": 0,
        "infraErrors": 0,
    }
    assert status["recovery"] == {
        "p50Seconds": None,
        "p95Seconds": None,
        "maxSeconds": None,
        "meanSeconds": None,
    }
    assert "lastTrial" not in status
    assert status["startedAt"] == "2023-11-14T22:13:20Z"
    assert status["completedAt"] is None
    assert status["observedGeneration"] == 4
    assert status["verdict"] == ""


def test_status_with_one_recovered_trial() -> None:
    status = status_of([attempt(0, Outcome.RECOVERED, recovery=12.3456)])

    assert status["progress"] == "1/3"
    assert status["trials"]["completed"] == 1
    assert status["recovery"] == {
        "p50Seconds": 12.346,
        "p95Seconds": 12.346,
        "maxSeconds": 12.346,
        "meanSeconds": 12.346,
    }
    assert status["lastTrial"] == {
        "index": 0,
        "outcome": "recovered",
        "victims": ["tikv-1"],
        "recoverySeconds": 12.346,
        "finishedAt": iso(T0 + 100),
    }


def test_status_with_two_recovered_trials_interpolates_percentiles() -> None:
    status = status_of(
        [attempt(0, Outcome.RECOVERED, recovery=10.0), attempt(1, Outcome.RECOVERED, recovery=20.0)]
    )

    assert status["progress"] == "2/3"
    assert status["recovery"] == {
        "p50Seconds": 15.0,
        "p95Seconds": 19.5,
        "maxSeconds": 20.0,
        "meanSeconds": 15.0,
    }
    assert status["lastTrial"]["index"] == 1


def test_interrupted_and_in_flight_attempts_are_not_counted_as_trials() -> None:
    attempts = [
        attempt(0, Outcome.INTERRUPTED, finished_at=T0 + 50),
        attempt(0, Outcome.RECOVERED, recovery=10.0, attempt_no=2, finished_at=T0 + 60),
        attempt(1, Outcome.INFRA_ERROR, finished_at=T0 + 70),
        attempt(1, None),  # in flight
    ]
    status = status_of(attempts)

    assert status["progress"] == "1/3"
    assert status["trials"] == {
        "requested": 3,
        "completed": 1,
        "failed": 0,
        "interrupted": 1,
        "infraErrors": 1,
    }
    assert status["recovery"]["p50Seconds"] == 10.0
    assert status["recovery"]["maxSeconds"] == 10.0


def test_last_trial_is_the_attempt_that_finished_last() -> None:
    attempts = [
        attempt(0, Outcome.INTERRUPTED, finished_at=T0 + 50),
        attempt(0, Outcome.RECOVERED, recovery=10.0, attempt_no=2, finished_at=T0 + 90, victim="tikv-2"),
        attempt(1, None),
    ]
    last = status_of(attempts)["lastTrial"]
    assert (last["index"], last["outcome"], last["victims"]) == (0, "recovered", ["tikv-2"])
    assert last["finishedAt"] == iso(T0 + 90)


def test_an_unrecovered_trial_completes_its_index_but_has_no_recovery_time() -> None:
    attempts = [
        attempt(0, Outcome.RECOVERED, recovery=4.0),
        attempt(1, Outcome.UNRECOVERED),
    ]
    status = status_of(attempts)

    assert status["progress"] == "2/3"
    assert status["trials"]["failed"] == 1
    assert status["recovery"]["maxSeconds"] == 4.0  # the unrecovered one is not a time
    assert status["lastTrial"]["outcome"] == "unrecovered"
    assert status["lastTrial"]["recoverySeconds"] is None


def test_a_recovered_milestone_on_an_unrecovered_attempt_is_not_a_recovery_time() -> None:
    status = status_of([attempt(0, Outcome.UNRECOVERED, recovery=99.0)])
    assert status["recovery"]["maxSeconds"] is None


def test_status_of_a_finished_campaign_carries_phase_verdict_and_conditions() -> None:
    conds = Conditions(None, 4)
    conds.set("Ready", True, "Succeeded", "3/3 trials", T0 + 500)
    status = status_of(
        [attempt(i, Outcome.RECOVERED, recovery=1.0 + i) for i in range(3)],
        phase=Phase.SUCCEEDED,
        verdict=Verdict.PASS,
        conditions=conds,
        completed_at=T0 + 500,
        health_source="pods+pd",
        message="3/3 trials",
    )
    assert (status["phase"], status["verdict"], status["progress"]) == ("Succeeded", "Pass", "3/3")
    assert status["completedAt"] == iso(T0 + 500)
    assert status["healthSource"] == "pods+pd"
    assert status["message"] == "3/3 trials"
    assert status["conditions"] == conds.to_list()
    assert status["recovery"]["p50Seconds"] == pytest.approx(2.0)


def test_dry_run_trials_count_as_progress_without_times() -> None:
    status = status_of([attempt(0, Outcome.DRY_RUN), attempt(1, Outcome.DRY_RUN)], requested=2)
    assert status["progress"] == "2/2"
    assert status["recovery"]["p95Seconds"] is None
