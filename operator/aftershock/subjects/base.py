"""The subject protocol: what a kind of system under test supplies so the engine can run
trials against it without knowing what it is.

A kind (`SubjectKindInfo`, listed once in `aftershock.subjects.registry`) declares:

- its **milestones**: the moments of a recovery that only it can see (TiKV's ``store_up``;
  etcd's ``leader_lost``, ``leader_elected``, ``member_healthy``), in the order a recovery
  passes them, with a sentence each. The ledger, status, report, metrics and plots take names
  from what the trials recorded, so a new name needs no edit there.
- its **roles** (etcd: Leader, Follower), by which `chaos.target` chooses victims; none for
  a subject without them.
- how to **open** it for one Campaign (`Subject`): its members' health beyond pod readiness
  (`Subject.check`), a per-trial `RecoveryJudge` that stamps its milestones, and optionally a
  write probe (`Subject.write_and_read`).

Rule: a subject reads its own API only (``pd`` and ``etcd`` speak HTTP); pods come from the
engine. Errors reading the subject are `ProbeUnavailableError`: infrastructure, never a
verdict on the subject.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aftershock.model import CampaignSpec, Milestone, PodState, ProbeResult, Victim
from aftershock.subjects.pd import PdClients

#: Stamps a milestone at the moment the engine observed something (monotonic, wall).
Stamp = Callable[[float, float], Milestone]


@dataclass(frozen=True)
class Look:
    """One answer of the subject's own API during a trial, as the engine got it."""

    result: ProbeResult
    #: When the answer was in, on the operator's clocks (monotonic, wall).
    mono: float
    wall: float
    #: Stamps a milestone at a moment of those clocks (relative to the kill).
    stamp: Stamp
    #: The replacement pods were all Ready before this look.
    replacement_ready: bool
    #: When the look began: a state seen in the answer held somewhere between this and `mono`.
    asked: Milestone | None = None
    #: False: the fault keeps the victims' processes (a partition); `replacement_ready` then
    #: means the fault is healed, and no new start is to be waited for.
    restarts: bool = True

    @property
    def answered(self) -> Milestone:
        return self.stamp(self.mono, self.wall)


class RecoveryJudge(Protocol):
    """One trial's view of the subject's own recovery. Pure: fed probe results, no I/O.

    `observe` returns the milestones reached by a `Look` (name -> stamp), each once; `done`
    says the subject's own part of the recovery holds (the engine adds pods and health).
    """

    def probe_interval(self, replacement_ready: bool, normal: float) -> float | None:
        """How soon the next look is wanted (None: not yet; e.g. TiKV before its pod is Ready)."""

    def observe(self, look: Look) -> Mapping[str, Milestone]: ...

    @property
    def done(self) -> Milestone | None:
        """When the subject's own part of the recovery was reached, or None (not yet)."""

    @property
    def sources(self) -> Mapping[str, str]:
        """Milestone name -> who stamped it (`SOURCE_OBSERVED` unless the subject's own clock)."""

    @property
    def clock_offset(self) -> float | None:
        """Operator clock minus the subject's, when the subject shows its clock."""

    def pending(self) -> Mapping[str, str]:
        """What the subject's recovery still waits for, in words: per victim pod name, or
        under "" for the subject as a whole."""


class Subject(Protocol):
    """One Campaign's handle on its subject's own API."""

    @property
    def health_source(self) -> str:
        """What health is judged from, for the status (``pods+pd``, ``pods+etcd``)."""

    @property
    def api_name(self) -> str:
        """The subject's own API as people call it (``PD``, ``etcd``), for the engine's words."""

    async def check(self, pods: Sequence[PodState], now: float) -> ProbeResult: ...

    def judge(
        self, victims: Sequence[Victim], gate: ProbeResult | None, restarts: bool = True
    ) -> RecoveryJudge:
        """A judge for one trial, from the victims and the look that passed the gate;
        `restarts` False: the fault keeps the victims' processes (a partition)."""

    def victim_details(self, gate: ProbeResult | None) -> Mapping[str, int]:
        """Per pod name, the subject's own id for it (TiKV: store id), recorded with a victim."""

    @property
    def writes(self) -> bool:
        """Whether `write_and_read` is supported (a write-availability probe runs per trial)."""

    async def write_and_read(self, key: str, value: str, timeout: float) -> None:
        """Write `value` under `key` and read it back; raise `ProbeUnavailableError` if either
        fails or the read disagrees."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class SubjectResources:
    """What the operator process shares among the Campaigns it runs, handed to every kind's
    `open` (a kind takes what it uses): one PD client per pdURL, not one per Campaign."""

    pd_clients: PdClients | None = None


@dataclass(frozen=True)
class SubjectKindInfo:
    """One kind of subject, as the registry lists it."""

    kind: str
    #: Subject-specific milestones in recovery order: (name, what it means).
    milestones: tuple[tuple[str, str], ...]
    #: Roles a victim can be chosen by (`chaos.target`); empty: the kind has none.
    roles: tuple[str, ...]
    #: The spec field that names the kind's own API (``pdURL``, ``endpoints``).
    api_field: str
    #: Open the subject for a Campaign (None: health from pods alone); raises `SpecError`
    #: for a spec this kind cannot run (another kind's field, a target it has no roles for).
    open: Callable[[CampaignSpec, str, SubjectResources | None], Subject | None]
    #: The kind's rules on a spec, without opening anything (what `aftershock validate` runs
    #: offline and `open` runs first): raises `SpecError`.
    check: Callable[[CampaignSpec, str], None]
