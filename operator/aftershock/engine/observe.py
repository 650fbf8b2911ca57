"""Turning a stream of observations into a trial's milestones. Pure: no I/O, no clock.

The tracker is fed pod observations (from the watch) and probe results (from PD) with the
monotonic and wall time each was observed, and records the first moment each milestone
held. With several victims, a replacement milestone is the moment the *last* victim reached
it: the subject is only as recovered as its slowest pod.

The subject's own milestones (TiKV's ``store_up``, etcd's election) are its `RecoveryJudge`'s:
the tracker hands it every probe result and records what it stamps; ``final_state
["milestoneSources"]`` says who stamped each.

After "recovered" the tracker keeps judging: the subject unhealthy again (a pod not Ready, PD
not healthy, e.g. the store Disconnected because its new process never reported) is a relapse,
stamped ``relapsed`` with its reason; the runner watches for one during the settle window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aftershock.model import SOURCE_OBSERVED, Milestone, PodState, ProbeResult, Victim
from aftershock.subjects.base import Look, RecoveryJudge


@dataclass
class _VictimTrack:
    victim: Victim
    gone: bool = False
    replacement_uid: str | None = None
    created: Milestone | None = None
    scheduled: Milestone | None = None
    ready: Milestone | None = None
    #: Kinds that keep the pod (container_kill): the container before, and what came after.
    container_before: str | None = None
    down: Milestone | None = None
    container_after: str | None = None
    restart_count_after: int | None = None
    started: Milestone | None = None


@dataclass
class RecoveryTracker:
    victims: Sequence[Victim]
    initial_pods: Sequence[PodState]
    kill_sent_mono: float
    kill_sent_wall: float
    expected_pods: int
    #: The subject's own judge of its recovery; None: health from pods alone.
    judge: RecoveryJudge | None = None
    milestones: dict[str, Milestone] = field(default_factory=dict)
    pods: dict[str, PodState] = field(default_factory=dict)
    probe: ProbeResult | None = None
    #: Milestone name -> who stamped it (`SOURCE_PD_HEARTBEAT` or `SOURCE_OBSERVED`).
    sources: dict[str, str] = field(default_factory=dict)
    #: Why the subject relapsed after "recovered" (None: it did not).
    relapse_reason: str | None = None
    #: The chaos kind's milestone at which every victim is back (`ChaosKindInfo.back`).
    back: str = "replacement_ready"
    #: True: victims are replaced by new pods; False: the same pods get new containers.
    replaces_pods: bool = True
    #: The container a container-level kind acted on (None: the pod's first).
    container: str | None = None
    #: False: the victims keep their processes (a partition): no new container is waited for,
    #: and `back` is the heal (`mark_back`).
    restarts: bool = True
    #: True: each victim's pod seen not Ready is stamped (``victim_unready``: the kind stops the
    #: victims without ending their pods, e.g. node_failure's node that stops answering).
    unready: bool = False

    def __post_init__(self) -> None:
        self._tracks = {v.name: _VictimTrack(v) for v in self.victims}
        by_uid = {p.uid: p for p in self.initial_pods}
        for track in self._tracks.values():
            pod = by_uid.get(track.victim.uid)
            state = pod.container(self.container) if pod is not None else None
            track.container_before = state.container_id if state is not None else None
        self._victim_uids = {v.uid: v.name for v in self.victims}
        self._initial_uids = {p.uid for p in self.initial_pods}
        self._initial_names = {p.name for p in self.initial_pods}
        self.pods = {p.uid: p for p in self.initial_pods}
        self._pods_healthy_since: Milestone | None = None
        self._recovered_seen_mono: float | None = None
        #: When the last look that did not find the subject recovered was asked.
        self._unseen_at: Milestone | None = None
        #: What that look still waited for, in words.
        self._unseen_why: str | None = None
        #: Where the recovery lies, as far as the tracker's evidence goes (`recovery_bracket`).
        self._bracket: tuple[Milestone, Milestone] | None = None

    # -- recording ---------------------------------------------------------------------------

    def _stamp(self, mono: float, wall: float) -> Milestone:
        return Milestone(wall=wall, offset=mono - self.kill_sent_mono)

    def _mark(self, name: str, mono: float, wall: float) -> None:
        if name not in self.milestones:
            self.milestones[name] = self._stamp(mono, wall)
            self.sources[name] = SOURCE_OBSERVED

    @property
    def probe_enabled(self) -> bool:
        return self.judge is not None

    @property
    def clock_offset(self) -> float | None:
        """Operator wall clock minus the subject's clock, seconds; None until a probe shows it."""
        return None if self.judge is None else self.judge.clock_offset

    @property
    def recovered_seen_mono(self) -> float | None:
        """When the tracker first judged the subject recovered (monotonic; for the settle window,
        which runs from that moment even when "recovered" itself is stamped earlier)."""
        return self._recovered_seen_mono

    @property
    def recovery_bracket(self) -> tuple[Milestone, Milestone] | None:
        """(Not before, by): the span the recovery lies in, as far as the evidence goes; None
        until recovered. Completed by the heal: the moment it was done, both ends. Completed by
        the pod watch: by the event's arrival, not before the pod's Ready transition (the API's,
        to the second) when the event is a pod turning Ready (`_bracket_from_ready`). Completed
        by a look at the subject's API: after the last look that did not find it recovered
        was asked, and by the answer of the one that did; ``recovered`` lies between. A look
        held up by a slow member (etcd's ``/health`` waits for a read through Raft; a thawed
        member's can wait half a second for a retry) makes the span wide: the stamp cannot be
        closer to the truth than the looks were to each other, and the ledger says so."""
        return self._bracket

    @property
    def unseen_why(self) -> str | None:
        """What the last look that did not find the subject recovered still waited for."""
        return self._unseen_why

    @property
    def relapsed(self) -> bool:
        return "relapsed" in self.milestones

    def mark_acked(self, mono: float, wall: float) -> None:
        self._mark("kill_acked", mono, wall)

    def mark_back(self, mono: float, wall: float) -> None:
        """The kind says every victim is back (a held fault healed): its `back` milestone."""
        self._mark(self.back, mono, wall)
        self._check(mono, wall)

    @property
    def recovered(self) -> bool:
        return "recovered" in self.milestones

    def _victims_back(self) -> Milestone | None:
        """When every victim was back: the kind's own `back` milestone or, for a kind whose
        victims keep their processes (node_failure: the node frozen), every victim replaced by a
        new pod that is Ready, if that came first. Someone acted while the fault held (a
        remediator's out-of-service taint, a force delete): the member is back on another node
        before its old one is (ADR 0021)."""
        own = self.milestones.get(self.back)
        if self.restarts or self.replaces_pods:
            return own
        moved = self.milestones.get("replacement_ready")
        found = [m for m in (own, moved) if m is not None]
        return min(found, key=lambda m: m.offset) if found else None

    # -- pods --------------------------------------------------------------------------------

    def observe_pod(self, type_: str, pod: PodState, mono: float, wall: float) -> None:
        if type_ == "DELETED":
            self.pods.pop(pod.uid, None)
        else:
            self.pods[pod.uid] = pod
        victim_name = self._victim_uids.get(pod.uid)
        if victim_name is not None and type_ == "DELETED":
            track = self._tracks[victim_name]
            if not track.gone:
                track.gone = True
                self._all_then("victim_gone", [t.gone for t in self._tracks.values()], mono, wall)
        if type_ != "DELETED" and pod.uid not in self._initial_uids and not pod.deleting:
            self._track_replacement(pod, mono, wall)
        if self.unready and victim_name is not None and type_ != "DELETED" and not pod.ready:
            track = self._tracks[victim_name]
            if track.down is None:
                track.down = self._stamp(mono, wall)
                downs = [t.down is not None for t in self._tracks.values()]
                self._all_then("victim_unready", downs, mono, wall)
        if self.restarts and not self.replaces_pods and victim_name is not None and type_ != "DELETED":
            self._track_container(self._tracks[victim_name], pod, mono, wall)
        if self.pods_healthy():
            if self._pods_healthy_since is None:
                self._pods_healthy_since = self._stamp(mono, wall)
        else:
            self._pods_healthy_since = None
        seen_before = self._bracket is not None
        self._check(mono, wall)
        if self._bracket is not None and not seen_before:
            self._bracket_from_ready(pod)

    def _bracket_from_ready(self, pod: PodState) -> None:
        """The recovery was completed by this pod event, stamped when it arrived. A watch event
        is late by its delivery, more than 100 ms on a loaded machine (two watches of one pod's
        Ready 155 ms apart in a rehearsal): when the event is the pod turning Ready, its Ready
        condition's lastTransitionTime (the kubelet's, to the second) is the earliest it can
        have happened. Anything else keeps the span at the event."""
        recovered = self.milestones["recovered"]
        since = pod.ready_at
        if not pod.ready or since is None or since < self.kill_sent_wall or since >= recovered.wall:
            return
        self._bracket = (Milestone(wall=since, offset=recovered.offset - (recovered.wall - since)), recovered)

    def _replacement_for(self, pod: PodState) -> _VictimTrack | None:
        # A StatefulSet replaces a pod under the same name. The newest pod of that name is the
        # replacement, even if an earlier replacement was itself deleted before it got Ready
        # (a controller or node agent can do that): its readiness is what recovery waits for.
        track = self._tracks.get(pod.name)
        if track is not None:
            return track
        for t in self._tracks.values():
            if t.replacement_uid == pod.uid:
                return t
        # A new pod under the name of a pod that was there before the kill is that pod's
        # replacement (a bystander's), never a victim's.
        if pod.name in self._initial_names:
            return None
        # Otherwise (Deployment-style subjects, new names) the first victim without a
        # replacement takes the new pod.
        live_names = {p.name for p in self.pods.values()} - {pod.name}
        for t in self._tracks.values():
            if t.replacement_uid is None and t.victim.name not in live_names:
                return t
        return None

    def _track_replacement(self, pod: PodState, mono: float, wall: float) -> None:
        track = self._replacement_for(pod)
        if track is None:
            return
        track.replacement_uid = pod.uid
        stamp = self._stamp(mono, wall)
        if track.created is None:
            track.created = stamp
        if pod.node and track.scheduled is None:
            track.scheduled = stamp
        if pod.ready and track.ready is None:
            track.ready = stamp
        tracks = list(self._tracks.values())
        self._all_then("replacement_created", [t.created is not None for t in tracks], mono, wall)
        self._all_then("replacement_scheduled", [t.scheduled is not None for t in tracks], mono, wall)
        self._all_then("replacement_ready", [t.ready is not None for t in tracks], mono, wall)

    def _track_container(self, track: _VictimTrack, pod: PodState, mono: float, wall: float) -> None:
        """The same pod, a new container: down (old one not running or not Ready), started
        (a new containerID), Ready (the new one Ready)."""
        state = pod.container(self.container)
        if state is None:
            return
        stamp = self._stamp(mono, wall)
        renewed = state.container_id is not None and state.container_id != track.container_before
        if track.down is None and (renewed or not state.ready or state.started_at is None):
            track.down = stamp
        if renewed and state.started_at is not None:
            track.container_after = state.container_id
            track.restart_count_after = state.restart_count
            if track.started is None:
                track.started = stamp
            if state.ready and track.ready is None:
                track.ready = stamp
        tracks = list(self._tracks.values())
        self._all_then("container_down", [t.down is not None for t in tracks], mono, wall)
        self._all_then("container_started", [t.started is not None for t in tracks], mono, wall)
        self._all_then("container_ready", [t.ready is not None for t in tracks], mono, wall)

    def chaos_details(self, injected: Mapping[str, Any]) -> dict[str, Any]:
        """Per victim, what the kind recorded at the kill with what the tracker saw after it
        (``final_state["chaos"]``): for container_kill the containerID and restartCount after."""
        details: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in injected.items()}
        if self.replaces_pods or not self.restarts:
            return details
        for name, track in self._tracks.items():
            entry = details.setdefault(name, {})
            entry["containerIDAfter"] = track.container_after
            entry["restartCountAfter"] = track.restart_count_after
        return details

    def _all_then(self, name: str, flags: Iterable[bool], mono: float, wall: float) -> None:
        if all(flags):
            self._mark(name, mono, wall)

    # -- probe (the subject's own API) ------------------------------------------------------

    def observe_probe(
        self, result: ProbeResult, mono: float, wall: float, asked: tuple[float, float] | None = None
    ) -> None:
        """`mono`/`wall`: when the answer was in; `asked`: (mono, wall) when the look began."""
        self.probe = result
        if self.judge is not None:
            look = Look(
                result,
                mono,
                wall,
                self._stamp,
                replacement_ready=self._victims_back() is not None,
                asked=None if asked is None else self._stamp(*asked),
                restarts=self.restarts,
            )
            reached = self.judge.observe(look)
            for name, stamp in reached.items():
                if name not in self.milestones:
                    self.milestones[name] = stamp
                    self.sources[name] = self.judge.sources.get(name, SOURCE_OBSERVED)
            done = self.judge.done
            finishing = [n for n, m in reached.items() if m is done]
            if finishing and self._recovers_now():
                # Recovered when the subject's own part held, if everything else already held then.
                assert done is not None
                back = self._victims_back()
                assert back is not None
                stamps = [done, back]
                if self._pods_healthy_since is not None:
                    stamps.append(self._pods_healthy_since)
                self.milestones["recovered"] = max(stamps, key=lambda m: m.offset)
                self.sources["recovered"] = self.sources.get(finishing[0], SOURCE_OBSERVED)
                self._recovered_seen_mono = mono
        seen_before = self._bracket is not None
        self._check(mono, wall)
        if self.recovered and not seen_before:
            self._bracket_from_look(self._stamp(mono, wall))
        elif not self.recovered:
            self._unseen_at = self._stamp(*asked) if asked is not None else self._stamp(mono, wall)
            self._unseen_why = "; ".join(self.pending()) or None

    def _bracket_from_look(self, answered: Milestone) -> None:
        """The recovery was first seen in a look at the subject's API answered at `answered`.
        Its span: what the pod watch and the heal stamped, if they completed it; else from the
        last look that did not find it (or the kill, when no look had) to this answer."""
        recovered = self.milestones["recovered"]
        watched = [m for m in (self._victims_back(), self._pods_healthy_since) if m is not None]
        latest = max(watched, key=lambda m: m.offset, default=None)
        if latest is not None and latest.offset >= recovered.offset:
            self._bracket = (recovered, recovered)
            return
        unseen = self._unseen_at or Milestone(wall=self.kill_sent_wall, offset=0.0)
        candidates = [unseen, *([latest] if latest is not None else [])]
        not_before = max(candidates, key=lambda m: m.offset)
        if not_before.offset > recovered.offset:  # a judge's own earlier stamp (PD's heartbeat)
            not_before = recovered
        by = answered if answered.offset >= recovered.offset else recovered
        self._bracket = (not_before, by)

    def _recovers_now(self) -> bool:
        return (
            not self.recovered
            and self._victims_back() is not None
            and self.pods_healthy()
            and self.probe is not None
            and self.probe.healthy
        )

    # -- the recovery predicate ---------------------------------------------------------------

    def pods_healthy(self) -> bool:
        live = [p for p in self.pods.values() if not p.deleting]
        return len(live) == self.expected_pods and all(p.ready for p in live)

    def _check(self, mono: float, wall: float) -> None:
        if "first_unhealthy" not in self.milestones and (
            not self.pods_healthy() or (self.probe is not None and not self.probe.healthy)
        ):
            self._mark("first_unhealthy", mono, wall)
        if self.recovered:
            self._check_relapse(mono, wall)
            return
        if self._victims_back() is None or not self.pods_healthy():
            return
        if self.judge is not None and (
            self.judge.done is None or self.probe is None or not self.probe.healthy
        ):
            return
        self._mark("recovered", mono, wall)
        self._recovered_seen_mono = mono
        # Seen in the pod watch or at the heal: exact. (`observe_probe` widens it when a look
        # completed it.)
        recovered = self.milestones["recovered"]
        self._bracket = (recovered, recovered)

    def _check_relapse(self, mono: float, wall: float) -> None:
        if self.relapsed:
            return
        reasons = self._unhealthy_now()
        if reasons:
            self._mark("relapsed", mono, wall)
            self.relapse_reason = "; ".join(reasons)

    def pending(self) -> list[str]:
        """What recovery still waits for, in words (for the unrecovered trial's error)."""
        missing: list[str] = []
        waiting = dict(self.judge.pending()) if self.judge is not None else {}
        if not self.restarts and self._victims_back() is None:
            missing.append(f"the fault is not healed yet ({self.back}) and no victim was replaced")
        for name, track in self._tracks.items():
            if not self.restarts:
                if name in waiting:
                    missing.append(f"{name}: {waiting[name]}")
                continue
            if not self.replaces_pods:
                if track.started is None:
                    missing.append(f"{name}: no new container started")
                elif track.ready is None:
                    missing.append(f"{name}: new container not Ready")
                elif name in waiting:
                    missing.append(f"{name}: {waiting[name]}")
                continue
            if not track.gone and track.replacement_uid is None:
                missing.append(f"{name}: victim not gone")
            elif track.created is None:
                missing.append(f"{name}: no replacement pod")
            elif track.scheduled is None:
                missing.append(f"{name}: replacement not scheduled")
            elif track.ready is None:
                missing.append(f"{name}: replacement not Ready")
            elif name in waiting:
                missing.append(f"{name}: {waiting[name]}")
        if "" in waiting:
            missing.append(waiting[""])
        return missing + self._unhealthy_now()

    def _unhealthy_now(self) -> list[str]:
        """Why the subject as a whole is not healthy now: pods, and the subject's own word."""
        reasons: list[str] = []
        if not self.pods_healthy():
            ready = sum(p.ready for p in self.pods.values() if not p.deleting)
            reasons.append(f"{ready}/{self.expected_pods} pods Ready")
        if self.probe_enabled and self.probe is not None and not self.probe.healthy:
            reasons.extend(self.probe.reasons)
        return reasons
