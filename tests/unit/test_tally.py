"""The status kept from a tally of the attempts is the status rebuilt from every attempt.

The runner no longer reads a Campaign's attempts back on each publish: it keeps a `Tally`,
seeded from the ledger once and updated as each attempt is committed. These tests hold it to
what the operator published before (`rebuilt_from_every_attempt` is `build_status` as it was,
reading every attempt), over real ledgers of 0 to 1,000 attempts that end every way, and show
that a restarted operator publishes what the one before it did.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.unit.fakes import ListSink, Stop, fast_campaign
from tests.unit.test_engine_runner import REF, Harness

from aftershock import stats
from aftershock.engine import verdict as verdict_step
from aftershock.engine.status import Conditions, build_status
from aftershock.engine.tally import Tally
from aftershock.errors import ApiError
from aftershock.ledger import Ledger
from aftershock.model import (
    AttemptRecord,
    Milestone,
    Outcome,
    Phase,
    Verdict,
    Victim,
    parse_campaign_spec,
)

T0 = 1_700_000_000.0

# --- the status as it was built before the tally (the reference) -----------------------------------


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def rebuilt_from_every_attempt(attempts: Sequence[AttemptRecord], **facts: Any) -> dict[str, Any]:
    """The ledger's part of `build_status` as the operator published it before the tally,
    from every attempt the ledger holds (kept here unchanged, as the reference)."""
    completed = [a for a in attempts if a.outcome is not None and a.outcome.completes_trial]
    recoveries = [r for a in completed if (r := a.recovery_seconds) is not None]
    summary = stats.summarize(recoveries)
    counts = {o: sum(1 for a in attempts if a.outcome is o) for o in Outcome}
    status: dict[str, Any] = {
        "progress": f"{len(completed)}/{facts['requested']}",
        "trials": {
            "requested": facts["requested"],
            "completed": len(completed),
            "failed": counts[Outcome.UNRECOVERED],
            "interrupted": counts[Outcome.INTERRUPTED],
            "infraErrors": counts[Outcome.INFRA_ERROR],
        },
        "recovery": {
            "p50Seconds": _round(summary.p50),
            "p95Seconds": _round(summary.p95),
            "maxSeconds": _round(summary.max),
            "meanSeconds": _round(summary.mean),
        },
    }
    finished = [a for a in attempts if a.outcome is not None]
    if finished:
        last = max(finished, key=lambda a: (a.finished_at or 0.0, a.trial_index, a.attempt))
        status["lastTrial"] = {
            "index": last.trial_index,
            "outcome": last.outcome.value if last.outcome else None,
            "victims": [v.name for v in last.victims],
            "recoverySeconds": _round(last.recovery_seconds),
            "finishedAt": _iso(last.finished_at),
        }
        relapsed = last.milestones.get("relapsed")
        if relapsed is not None:
            status["lastTrial"]["relapsedSeconds"] = _round(relapsed.offset)
    return status


def status_from(tally: Tally, requested: int) -> dict[str, Any]:
    return build_status(
        requested=requested,
        tally=tally,
        phase=Phase.RUNNING,
        verdict=Verdict.NONE,
        conditions=Conditions(None, 2),
        generation=2,
        health_source="pods",
        started_at=T0,
        completed_at=None,
        message="running",
    )


def expected_status(attempts: Sequence[AttemptRecord], requested: int) -> dict[str, Any]:
    """The whole status, its ledger part from the reference: what the operator published."""
    return {**status_from(Tally(), requested), **rebuilt_from_every_attempt(attempts, requested=requested)}


# --- ledgers of attempts that end every way --------------------------------------------------------------

#: How the generated attempts end, with weights: every outcome, relapses (unrecovered with a
#: `recovered` and a `relapsed` milestone) and recoveries without settling.
ENDINGS: tuple[tuple[str, int], ...] = (
    ("recovered", 50),
    ("relapsed", 8),
    ("unrecovered", 6),
    ("interrupted", 12),
    ("infra_error", 12),
    ("dry_run", 6),
    ("refused", 6),  # interrupted before any kill: no kill_sent, no recovered
)


class LedgerFiller:
    """Writes attempts into a real ledger as the runner does (begin, kill, finish), keeping the
    tally the runner would keep from the records `finish_attempt` returns."""

    def __init__(self, ledger: Ledger, seed: int) -> None:
        self.ledger, self.rng = ledger, random.Random(seed)
        self.tally = Tally()
        self.first = [e for e, _ in ENDINGS]
        self.rng.shuffle(self.first)
        self.next_index = 0
        self.now = T0

    def _clock(self) -> float:
        # Mostly forward, sometimes the same second (ties are ordered by index and attempt),
        # sometimes a step back (a wall clock set back: finish order is not time order).
        step = self.rng.choice((0.0, 0.0, 1.5, 2.0, 3.25, -4.0))
        self.now += step
        return self.now

    async def attempt(self) -> AttemptRecord:
        # Every ending once first (in an order of the seed's), then as the weights say.
        ending = (
            self.first.pop()
            if self.first
            else self.rng.choices([e for e, _ in ENDINGS], [w for _, w in ENDINGS])[0]
        )
        index = self.next_index
        victims = [Victim(name=f"tikv-{self.rng.randrange(3)}", uid=f"u-{index}")]
        attempt_id = await self.ledger.begin_attempt(
            REF.uid,
            index,
            victims=victims,
            victim_seed=f"7/trial-{index}",
            initial_state={"expectedPods": 3},
            gate_passed=Milestone(self.now, -0.5),
            now=self._clock(),
        )
        milestones: dict[str, Milestone] = {}
        if ending not in {"refused", "dry_run"}:
            await self.ledger.mark_kill_sent(attempt_id, Milestone(self.now, 0.0), None)
            recovery = round(self.rng.uniform(0.02, 30.0), 6)
            if ending in ("recovered", "relapsed"):
                milestones["recovered"] = Milestone(self.now + recovery, recovery)
            if ending == "relapsed":
                milestones["relapsed"] = Milestone(self.now + recovery + 2, recovery + 2.0)
        outcome = {
            "recovered": Outcome.RECOVERED,
            "relapsed": Outcome.UNRECOVERED,
            "unrecovered": Outcome.UNRECOVERED,
            "interrupted": Outcome.INTERRUPTED,
            "infra_error": Outcome.INFRA_ERROR,
            "dry_run": Outcome.DRY_RUN,
            "refused": Outcome.INTERRUPTED,
        }[ending]
        record = await self.ledger.finish_attempt(
            attempt_id,
            outcome,
            milestones=milestones,
            final_state={},
            error=None if outcome is Outcome.RECOVERED else ending,
            now=self._clock(),
        )
        self.tally.record(record)
        if outcome.completes_trial:
            self.next_index += 1
        return record


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async with await Ledger.open(tmp_path / "ledger.db") as opened:
        await opened.ensure_campaign(REF, fast_campaign(), 3, "7", T0)
        yield opened


@pytest.mark.parametrize(("attempts", "check_every"), [(0, 1), (1, 1), (10, 1), (1000, 100)])
async def test_the_status_kept_from_the_tally_is_the_status_rebuilt_from_every_attempt(
    ledger: Ledger, attempts: int, check_every: int
) -> None:
    filler = LedgerFiller(ledger, seed=attempts)
    requested = max(attempts, 1)
    for n in range(1, attempts + 1):
        await filler.attempt()
        if n % check_every and n != attempts:
            continue
        in_ledger = await ledger.attempts(REF.uid)
        expected = expected_status(in_ledger, requested)
        # As the runner keeps it (commit by commit), and as a restarted runner seeds it.
        assert status_from(filler.tally, requested) == expected, f"after {n} attempts"
        assert status_from(Tally.of(in_ledger), requested) == expected, f"after {n} attempts"
    in_ledger = await ledger.attempts(REF.uid)
    assert status_from(Tally.of(in_ledger), requested) == expected_status(in_ledger, requested)
    assert status_from(filler.tally, requested) == expected_status(in_ledger, requested)
    if attempts >= 10:
        # The generated ledgers do hold every way an attempt can end, and the tie-breaking.
        outcomes = {a.outcome for a in in_ledger}
        assert outcomes == set(Outcome)
        assert any("relapsed" in a.milestones for a in in_ledger)


async def test_an_attempt_in_flight_counts_for_its_index_and_nothing_else(ledger: Ledger) -> None:
    filler = LedgerFiller(ledger, seed=3)
    for _ in range(5):
        await filler.attempt()
    await ledger.begin_attempt(
        REF.uid,
        filler.next_index,
        victims=[Victim(name="tikv-1", uid="u-x")],
        victim_seed="7/x",
        initial_state={"expectedPods": 4},
        gate_passed=None,
        now=T0 + 1000,
    )
    in_ledger = await ledger.attempts(REF.uid)

    seeded = Tally.of(in_ledger)

    assert status_from(seeded, 9) == expected_status(in_ledger, 9)
    assert seeded.counts.in_flight == 1
    at_index = [a for a in in_ledger if a.trial_index == filler.next_index]
    assert seeded.attempt_number(filler.next_index) == len(at_index) + 1
    assert seeded.expected_pods == 4  # the latest attempt's, as the next trial would learn it


@pytest.mark.parametrize("attempts", [0, 1, 10, 1000])
async def test_the_verdict_and_the_early_stop_from_the_tally_are_those_from_every_attempt(
    ledger: Ledger, attempts: int
) -> None:
    filler = LedgerFiller(ledger, seed=attempts + 1)
    for _ in range(attempts):
        await filler.attempt()
    in_ledger = await ledger.attempts(REF.uid)
    completed = [a for a in in_ledger if a.outcome is not None and a.outcome.completes_trial]
    tally = Tally.of(in_ledger)
    for requested in (len(completed), len(completed) + 3):
        for slo in (None, 0.5, 10.0, 29.0, 86_400.0):
            for stops in (
                (False, False, False),
                (True, False, False),
                (False, True, False),
                (False, False, True),
            ):
                facts: dict[str, Any] = {
                    "requested_trials": requested,
                    "stopped_on_unrecovered": stops[0],
                    "aborted_on_infra_error": stops[1],
                    "slo_p95_seconds": slo,
                    "stopped_on_slo": stops[2],
                }
                before = stats.verdict(completed=completed, **facts)
                now = stats.verdict_of_counts(counts=tally.counts, recoveries=tally.recoveries, **facts)
                assert now == before, facts
            slo_spec = {} if slo is None else {"slo": {"p95RecoverySeconds": slo}}
            spec = parse_campaign_spec(fast_campaign(trials=max(requested, 1), **slo_spec))
            values = [
                a.recovery_seconds if a.recovery_seconds is not None else float("inf") for a in completed
            ]
            remaining = spec.trials - len(completed)
            unreachable = (
                spec.slo_p95_recovery_seconds is not None
                and remaining > 0
                and stats.slo_unreachable(values, remaining, spec.slo_p95_recovery_seconds)
            )
            assert (verdict_step.slo_out_of_reach(spec, tally) is not None) == unreachable


# --- the runner: one read of the attempts, and the same status after a restart ------------------------


def count_attempt_reads(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    original: Callable[[str], Awaitable[list[AttemptRecord]]] = ledger.attempts

    async def counted(campaign_uid: str) -> list[AttemptRecord]:
        reads.append(campaign_uid)
        return await original(campaign_uid)

    monkeypatch.setattr(ledger, "attempts", counted)
    return reads


@pytest.mark.parametrize("trials", [1, 4])
async def test_a_campaign_reads_its_attempts_once_however_many_trials_it_runs(
    h: Harness, monkeypatch: pytest.MonkeyPatch, trials: int
) -> None:
    reads = count_attempt_reads(h.ledger, monkeypatch)

    phase = await h.run(fast_campaign(trials=trials))

    assert phase is Phase.SUCCEEDED
    assert reads == [REF.uid]  # when the runner took the Campaign up
    assert h.sink.last["progress"] == f"{trials}/{trials}"
    assert h.sink.last == {
        **h.sink.last,
        **rebuilt_from_every_attempt(await h.ledger.attempts(REF.uid), requested=trials),
    }


LEDGER_PART = ("progress", "trials", "recovery", "lastTrial")


def ledger_part(status: dict[str, Any]) -> dict[str, Any]:
    return {k: status.get(k) for k in LEDGER_PART}


async def test_a_restarted_operator_publishes_the_status_the_one_before_it_did(h: Harness) -> None:
    # The first of four trials, retried after an infrastructure error, then the operator stops
    # while the Campaign waits out its interval (nothing is published after that status).
    spec = fast_campaign(trials=4, intervalSeconds=60)
    h.cluster.fail_before_delete = [ApiError("pods is forbidden", 403)]
    task = asyncio.create_task(h.runner(spec).run(h.stop))
    await h.sink.wait_for(lambda s: s["progress"] == "1/4")
    h.stop.set()
    assert not (await asyncio.wait_for(task, 5)).finished
    before = h.sink.last
    assert before["trials"]["infraErrors"] == 1
    assert before["trials"]["completed"] == 1

    # The next operator finds the subject busy: its first status is its seed, before any trial.
    h.stop, h.sink = Stop(), ListSink()
    h.lock.busy = True
    task = asyncio.create_task(h.runner(spec).run(h.stop))
    after = await h.sink.wait_for(lambda s: s["phase"] == "Pending")
    h.stop.set()
    await asyncio.wait_for(task, 5)

    assert ledger_part(after) == ledger_part(before)
    assert after["lastTrial"]["outcome"] == "recovered"


async def test_a_finished_campaign_is_republished_with_the_same_numbers_after_a_restart(h: Harness) -> None:
    spec = fast_campaign(trials=3)
    assert await h.run(spec) is Phase.SUCCEEDED
    before = h.sink.last

    h.stop, h.sink = Stop(), ListSink()
    assert await h.run(spec) is Phase.SUCCEEDED

    assert ledger_part(h.sink.last) == ledger_part(before)
    assert (h.sink.last["verdict"], h.sink.last["completedAt"]) == (before["verdict"], before["completedAt"])
