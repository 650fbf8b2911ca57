"""Attempts shaped as an etcd Campaign records them: the engine's milestones, etcd's own
(``leader_lost``, ``leader_elected``, ``member_healthy``) and the write probe's, with Leader and
Follower victims. The reporting, export and metrics tests feed them where TiKV's chain would not
fit. Offsets are the shape measured on the test bed's real node (an election in about 0.3 s)."""

from __future__ import annotations

from aftershock.model import AttemptRecord, Milestone, Outcome, Victim

T0 = 1_714_564_800.0

#: A Leader kill that recovered: etcd's election inside the pod's replacement.
LEADER: dict[str, float] = {
    "gate_passed": -2.0,
    "kill_sent": 0.0,
    "kill_acked": 0.01,
    "first_unhealthy": 0.02,
    "writes_failed": 0.04,
    "victim_gone": 0.05,
    "replacement_created": 0.06,
    "replacement_scheduled": 0.07,
    "leader_lost": 0.09,
    "leader_elected": 0.35,
    "writes_restored": 0.36,
    "replacement_ready": 1.2,
    "member_healthy": 1.5,
    "recovered": 1.6,
}
#: A Follower kill: the leader stays, so no election.
FOLLOWER: dict[str, float] = {
    k: v
    for k, v in LEADER.items()
    if k not in ("leader_lost", "leader_elected", "writes_failed", "writes_restored")
}

#: etcd's chain as `phases.phases_for` finds it in `attempts`: every milestone on the way, by
#: median offset.
CHAIN: tuple[str, ...] = (
    "kill_sent",
    "victim_gone",
    "replacement_created",
    "replacement_scheduled",
    "leader_lost",
    "leader_elected",
    "replacement_ready",
    "member_healthy",
    "recovered",
)


def attempt(
    uid: str, index: int, outcome: Outcome, offsets: dict[str, float], role: str, *, attempt_no: int = 1
) -> AttemptRecord:
    kill = T0 + 100 * index
    return AttemptRecord(
        campaign_uid=uid,
        trial_index=index,
        attempt=attempt_no,
        victims=(Victim(f"etcd-{index % 3}", f"pod-{index}", node="real-0", role=role),),
        victim_seed="s",
        started_at=kill - 3,
        outcome=outcome,
        milestones={name: Milestone(kill + off, off) for name, off in offsets.items()},
        finished_at=kill + max(offsets.values()) + 1,
    )


def attempts(uid: str) -> list[AttemptRecord]:
    """Three trials: two Leader kills (one 0.1 s slower), a Follower kill; and an attempt that
    did not recover (its milestones count nowhere)."""
    slower = {k: v + 0.1 if v > 0 else v for k, v in LEADER.items()}
    unrecovered = {k: v for k, v in LEADER.items() if k not in ("member_healthy", "recovered")}
    return [
        attempt(uid, 0, Outcome.RECOVERED, LEADER, "Leader"),
        attempt(uid, 1, Outcome.RECOVERED, FOLLOWER, "Follower"),
        attempt(uid, 2, Outcome.UNRECOVERED, unrecovered, "Leader"),
        attempt(uid, 3, Outcome.RECOVERED, slower, "Leader"),
    ]
