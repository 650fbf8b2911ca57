"""Milestones read in the order they happened: when one look at etcd saw the leader lost and a
new one elected, both have the same offset, and the report's chain must still read
``leader_lost -> leader_elected`` (the recording order), never the names' alphabetical order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.test_engine_runner import REF, Harness, campaign

from aftershock import page, phases, report
from aftershock.ledger import CampaignRow, Ledger
from aftershock.model import AttemptRecord, CampaignRef, Milestone, Outcome, Phase, Verdict, Victim

CAMPAIGN = CampaignRow(
    ref=CampaignRef(namespace="chaos", name="etcd-kill", uid="c"),
    spec={"trials": 3},
    requested_trials=3,
    seed="7",
    phase=Phase.SUCCEEDED,
    verdict=Verdict.PASS,
    created_at=1.0,
    started_at=1.0,
    finished_at=2.0,
)


def _attempt(index: int, order: list[str] | None) -> AttemptRecord:
    offsets = {
        "kill_sent": 0.0,
        "kill_acked": 0.01,
        "victim_gone": 0.2,
        "leader_lost": 0.9,
        "leader_elected": 0.9,  # one look saw both
        "replacement_created": 1.0,
        "replacement_scheduled": 1.0,
        "replacement_ready": 2.0,
        "member_healthy": 2.4,
        "recovered": 2.5,
    }
    final: dict[str, Any] = {} if order is None else {"milestoneOrder": order}
    return AttemptRecord(
        campaign_uid="c",
        trial_index=index,
        attempt=1,
        victims=(Victim("etcd-0", "u0"),),
        victim_seed="s",
        started_at=1.0,
        outcome=Outcome.RECOVERED,
        # As the ledger loads them: engine columns first, the subject's rows by name.
        milestones={n: Milestone(100.0 + o, o) for n, o in sorted(offsets.items(), key=lambda kv: kv[0])},
        final_state=final,
    )


RECORDED = [
    "kill_acked", "victim_gone", "leader_lost", "leader_elected", "replacement_created",
    "replacement_scheduled", "replacement_ready", "member_healthy", "recovered", "kill_sent",
]  # fmt: skip


def test_equal_offsets_follow_the_recording_order_in_the_chain_and_the_text_report() -> None:
    attempts = [_attempt(i, RECORDED) for i in range(3)]
    chain = [p.start for p in phases.phases_for(attempts)]
    assert chain.index("leader_lost") < chain.index("leader_elected")
    assert phases.recovery_milestones(attempts[0]).index("leader_lost") < phases.recovery_milestones(
        attempts[0]
    ).index("leader_elected")
    built = report.build_report(CAMPAIGN, attempts)
    rendered = report.render_table(built)
    assert "leader_lost->leader_elected" in rendered
    assert "leader_elected->leader_lost" not in rendered
    html = page.render_html(built)
    assert (
        "leader_lost \u2192 leader_elected" in html
        or "leader_lost&#x2192;" in html
        or (html.index("leader_lost") < html.index("leader_elected"))
    )


def test_records_without_an_order_still_sort_by_offset() -> None:
    attempts = [_attempt(i, None) for i in range(3)]
    chain = [p.start for p in phases.phases_for(attempts)] + [phases.phases_for(attempts)[-1].end]
    assert chain[0] == "kill_sent"
    assert chain[-1] == "recovered"
    assert chain.index("victim_gone") < chain.index("replacement_ready") < chain.index("member_healthy")


# --- container_kill: its own milestones, in the order they happened ------------------------------

#: As container_kill records them (tests/unit/test_chaos.py runs it through the engine): one look
#: at the pod saw the new container running and Ready at once, so the two have equal offsets and
#: their names sort the wrong way round ("container_ready" < "container_started").
CK_OFFSETS = {
    "kill_sent": 0.0,
    "kill_acked": 0.02,
    "container_down": 0.3,
    "container_started": 1.1,
    "container_ready": 1.1,
    "store_up": 1.6,
    "recovered": 1.6,
}
CK_RECORDED = [
    "kill_acked",
    "container_down",
    "container_started",
    "container_ready",
    "store_up",
    "recovered",
    "kill_sent",
]


def _ck_attempt(index: int) -> AttemptRecord:
    return AttemptRecord(
        campaign_uid="c",
        trial_index=index,
        attempt=1,
        victims=(Victim("tikv-1", "u1"),),
        victim_seed="s",
        started_at=1.0,
        outcome=Outcome.RECOVERED,
        milestones={n: Milestone(100.0 + o, o) for n, o in sorted(CK_OFFSETS.items())},
        final_state={"milestoneOrder": CK_RECORDED},
    )


def test_container_kill_milestones_read_in_the_order_they_happened() -> None:
    attempts = [_ck_attempt(i) for i in range(3)]
    happened = ["container_down", "container_started", "container_ready", "store_up", "recovered"]
    assert phases.recovery_milestones(attempts[0]) == happened
    phased = phases.phases_for(attempts)
    assert [p.start for p in phased] + [phased[-1].end] == ["kill_sent", *happened]
    built = report.build_report(CAMPAIGN, attempts)
    rendered = report.render_table(built)
    assert "container_started->container_ready" in rendered
    assert "container_ready->container_started" not in rendered
    html = page.render_html(built)
    spots = [html.index(f"container_{n} \u2192") for n in ("down", "started", "ready")]
    assert spots == sorted(spots), spots


async def test_container_kill_through_the_engine_records_its_milestones_in_order(tmp_path: Path) -> None:
    """The engine's own record of a container_kill trial (the in-memory cluster): the order it
    recorded is the order the report shows, and it is the order a container comes back in."""
    async with await Ledger.open(tmp_path / "ledger.db") as ledger:
        harness = Harness(ledger=ledger)
        harness.cluster.add_statefulset("tikv", 3)
        try:
            assert await harness.run(campaign(chaos={"type": "container_kill", "mode": "one"}, trials=2)) is (
                Phase.SUCCEEDED
            )
            attempts = await ledger.attempts(REF.uid)
        finally:
            await harness.cluster.close()
    for a in attempts:
        chain = phases.recovery_milestones(a)
        want = [
            n for n in ("container_down", "container_started", "container_ready", "recovered") if n in chain
        ]
        assert want == ["container_down", "container_started", "container_ready", "recovered"], chain
        assert [n for n in chain if n in want] == want
        recorded = [n for n in a.final_state["milestoneOrder"] if n in want]
        assert recorded == want
