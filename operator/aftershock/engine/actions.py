"""The remediator's actions, read from the API without its help (docs/remediator.md, ADR 0022).

Two sources, both the API server's own record of who wrote what:

- the audit webhook (`aftershock.receiver` -> `AuditInbox.deliver`): every completed write of
  the remediator's identities (API usernames: its ServiceAccounts, users), with the API server's
  µs timestamps, the verb, the object and the response code. It sees deletes and who made them.
- managedFields, seen by the operator's shared pod watch (`CampaignActions.pod_changed`): an
  entry of a field manager the Campaign names that is new or changed on a subject pod is an
  action, timed when the watch saw it (managedFields time has whole seconds). It cannot see
  deletes (a delete carries no manager), nor a ServiceAccount (a field manager is whatever name
  the client sends), nor objects the operator does not watch (PVCs, workloads, Nodes).

One `AuditInbox` per operator; each running Campaign holds a `CampaignActions` while it runs.
Namespace isolation: a namespaced write reaches only a Campaign of that namespace, however its
identities are named; a Node write (cluster-scoped) reaches the Campaign whose current trial's
victims ran on that Node. Objects "around the subject": pods (every subresource: eviction,
status, binding), PVCs, StatefulSets, Deployments and ReplicaSets of the Campaign's namespace,
and the victims' Nodes.

A trial asks, when its observation ends, for the actions in [kill, end]: audit delivery is
batched (the API server's ``--audit-webhook-batch-max-wait``), so it first waits, boundedly,
until a batch stamped after the end arrived (`caught_up`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from aftershock.auditing import AuditBatch, AuditEvent
from aftershock.engine.ports import Clock, RemediatorActivity
from aftershock.model import (
    ACTION_SOURCE_AUDIT,
    ACTION_SOURCE_MANAGED_FIELDS,
    CampaignRef,
    ManagedFields,
    PodState,
    RemediatorAction,
)

log = logging.getLogger(__name__)

#: Namespaced resources around a subject (API group, resource); any subresource of them.
AROUND_SUBJECT = frozenset(
    {
        ("", "pods"),
        ("", "persistentvolumeclaims"),
        ("apps", "statefulsets"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
    }
)
#: Actions kept per trial: a remediator in a write loop must not grow the attempt without bound.
MAX_ACTIONS = 1000


@dataclass
class _Window:
    kill_mono: float
    kill_wall: float
    nodes: frozenset[str]
    actions: list[RemediatorAction] = field(default_factory=list)
    dropped: int = 0


@dataclass(frozen=True)
class AuditDelivery:
    """What one audit batch did: completed writes in it, and those recorded for a trial."""

    writes: int
    recorded: int

    def as_json(self) -> dict[str, int]:
        return {"writes": self.writes, "recorded": self.recorded}


class CampaignActions:
    """The remediator's writes during one Campaign run's trials."""

    def __init__(
        self,
        ref: CampaignRef,
        usernames: frozenset[str],
        field_managers: frozenset[str],
        clock: Clock,
        horizon: AuditHorizon,
    ) -> None:
        self.ref = ref
        self.usernames = usernames
        self.field_managers = field_managers
        self._clock = clock
        self._horizon = horizon
        self._trial: _Window | None = None
        self._latest: float | None = None
        #: Monotonic time its run ended (None while it runs).
        self.ended: float | None = None

    # --- the trial's window ---

    def fault_injected(self, kill_mono: float, kill_wall: float, nodes: frozenset[str]) -> None:
        """A trial's fault went in: writes from now on are that trial's; Node writes count on
        `nodes` (where its victims ran)."""
        self._trial = _Window(kill_mono, kill_wall, nodes)
        self._latest = None

    def last_action_mono(self) -> float | None:
        """The monotonic time of the latest action seen in the current trial (None: none yet)."""
        return self._latest

    async def caught_up(self, end_mono: float, timeout: float) -> bool:
        """Wait (at most `timeout` s) until the audit webhook delivered a batch stamped after
        `end_mono`: the writes of the window have arrived. False when none came in time (no
        webhook configured, or the API server's buffer is behind)."""
        if not self.usernames or self._horizon.newest is None:
            return True  # no audit source, or no batch ever came: nothing to wait for
        end_wall = self._clock.wall() - (self._clock.monotonic() - end_mono)
        return await self._horizon.wait_past(end_wall, timeout)

    def trial(self, kill_mono: float, end_mono: float) -> tuple[RemediatorAction, ...]:
        """The actions of the trial whose fault went in at `kill_mono`, up to `end_mono`."""
        t = self._trial
        if t is None or t.kill_mono != kill_mono:
            return ()
        if t.dropped:
            log.warning(
                "%s/%s: %d remediator actions beyond %d in one trial were not kept",
                self.ref.namespace,
                self.ref.name,
                t.dropped,
                MAX_ACTIONS,
            )
        last = end_mono - kill_mono
        return tuple(sorted((a for a in t.actions if 0 <= a.offset <= last), key=lambda a: a.offset))

    def _add(self, action: RemediatorAction) -> None:
        t = self._trial
        assert t is not None
        if len(t.actions) >= MAX_ACTIONS:
            t.dropped += 1
            return
        t.actions.append(action)
        mono = t.kill_mono + action.offset
        self._latest = mono if self._latest is None else max(self._latest, mono)

    # --- the audit webhook ---

    def claims(self, event: AuditEvent) -> bool:
        """Whether `event` is a write of this Campaign's remediator around its subject."""
        if event.username not in self.usernames:
            return False
        if event.namespace:
            around = (event.api_group, event.resource) in AROUND_SUBJECT
            return event.namespace == self.ref.namespace and around
        t = self._trial
        return event.api_group == "" and event.resource == "nodes" and t is not None and event.name in t.nodes

    def take_audit(self, event: AuditEvent, delivered_wall: float) -> bool:
        """Record `event` (one this Campaign claims); False when no trial is under way or it
        came before the fault."""
        t = self._trial
        if t is None or event.completed < t.kill_wall:
            return False
        self._add(
            RemediatorAction(
                reason=f"{event.verb} {event.target.split(' ')[0]}",
                message=(
                    f"{event.username} {event.verb} {event.target}: received "
                    f"{event.received - t.kill_wall:+.6f}s, completed {event.completed - t.kill_wall:+.6f}s "
                    f"after the fault, delivered {delivered_wall - event.completed:.3f}s after it completed"
                    + (f" ({event.user_agent})" if event.user_agent else "")
                ),
                involved=event.target,
                wall=event.completed,
                offset=event.completed - t.kill_wall,
                source=ACTION_SOURCE_AUDIT,
                identity=event.username,
                verb=event.verb,
                change=event.change(),
            )
        )
        return True

    # --- managedFields, from the shared pod watch ---

    def pod_changed(self, before: PodState | None, after: PodState, mono: float, wall: float) -> None:
        """A subject pod changed (or appeared): its managedFields entries of a named manager
        that are new or changed are actions, timed when the watch saw them."""
        t = self._trial
        if t is None or not self.field_managers or mono < t.kill_mono:
            return
        # The pod watch kept `before` without its entries when no Campaign read them then
        # (`ManagedFields.known`, ADR 0025): nothing to diff against, so an entry is new when
        # stamped in the fault's second or later (managedFields time has whole seconds).
        unknown = (
            before is not None and isinstance(before.managed, ManagedFields) and not before.managed.known
        )
        old = (
            {}
            if before is None or unknown
            else {(e.manager, e.operation, e.subresource): e for e in before.managed}
        )
        for entry in after.managed:
            if entry.manager not in self.field_managers:
                continue
            if unknown and entry.time is not None and entry.time < math.floor(t.kill_wall):
                continue
            prior = old.get((entry.manager, entry.operation, entry.subresource))
            if prior is not None and prior == entry:
                continue
            fields = [f for f in entry.fields if prior is None or f not in prior.fields] or list(entry.fields)
            where = f"{after.namespace}/{after.name}"
            target = "pods" + (f"/{entry.subresource}" if entry.subresource else "") + f" {where}"
            self._add(
                RemediatorAction(
                    reason=f"{entry.operation} pods" + (f"/{entry.subresource}" if entry.subresource else ""),
                    message=(
                        f"field manager {entry.manager} ({entry.operation}) changed {target}; its "
                        f"managedFields time {entry.time_text}"
                    ),
                    involved=target,
                    wall=wall,
                    offset=mono - t.kill_mono,
                    source=ACTION_SOURCE_MANAGED_FIELDS,
                    identity=entry.manager,
                    verb="apply" if entry.operation == "Apply" else "update/patch",
                    change=", ".join(fields[:20]) + (", ..." if len(fields) > 20 else ""),
                )
            )


class Either:
    """The latest action of several sources (`RemediatorActivity`): the quiet wait at a trial's
    end counts from whichever source saw one last."""

    def __init__(self, *sources: RemediatorActivity) -> None:
        self._sources = sources

    def last_action_mono(self) -> float | None:
        seen = [t for s in self._sources if (t := s.last_action_mono()) is not None]
        return max(seen, default=None)


def activity_of(*sources: RemediatorActivity | None) -> RemediatorActivity | None:
    """Where the quiet wait sees the remediator act: every source the Campaign has."""
    found = [s for s in sources if s is not None]
    if not found:
        return None
    return found[0] if len(found) == 1 else Either(*found)


class AuditHorizon:
    """How far the audit webhook's deliveries have reached: the newest stageTimestamp seen in
    any batch (the API server sends batches in order, one worker)."""

    def __init__(self) -> None:
        self.newest: float | None = None
        self._changed = asyncio.Condition()

    async def advance(self, stamps: Sequence[float]) -> None:
        if not stamps:
            return
        newest = max(stamps)
        if self.newest is None or newest > self.newest:
            self.newest = newest
            async with self._changed:
                self._changed.notify_all()

    async def wait_past(self, wall: float, timeout: float) -> bool:
        async def past() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.newest is not None and self.newest >= wall)

        try:
            await asyncio.wait_for(past(), timeout)
        except TimeoutError:
            return False
        return True


class AuditInbox:
    """Routes the audit webhook's writes to the Campaigns that claim them (operator-wide)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.horizon = AuditHorizon()
        self._campaigns: list[CampaignActions] = []

    @contextmanager
    def listen(
        self, ref: CampaignRef, usernames: frozenset[str], field_managers: frozenset[str]
    ) -> Iterator[CampaignActions]:
        """Claim the remediator's writes for one Campaign run while it runs."""
        campaign = CampaignActions(ref, usernames, field_managers, self._clock, self.horizon)
        self._campaigns.append(campaign)
        try:
            yield campaign
        finally:
            campaign.ended = self._clock.monotonic()
            self._campaigns.remove(campaign)

    async def deliver(self, batch: AuditBatch) -> AuditDelivery:
        """Record each write for every Campaign that claims it."""
        recorded, now = 0, self._clock.wall()
        for event in batch.writes:
            took = False
            for campaign in self._campaigns:
                if campaign.claims(event):
                    took = campaign.take_audit(event, now) or took
            recorded += took
        newest = [] if batch.newest is None else [batch.newest]
        await self.horizon.advance([*newest, *(e.completed for e in batch.writes)])
        return AuditDelivery(len(batch.writes), recorded)
