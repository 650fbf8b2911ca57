"""One trial's timeline: the fault, what the alerting chain and the remediator said, each of the
remediator's actions, the subject's milestones, the recovery, the heal and the trial's end, in
the order they happened, with offsets from the fault. Pure: over one attempt as the ledger
holds it (what `aftershock report` and its HTML page show).

Order: by offset; equal offsets (one look at the subject showed two moments) in the order the
operator recorded them (``final_state["milestoneOrder"]``), the fault first, the remediator's
actions in the order they were seen, after the milestones of the same offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aftershock import model
from aftershock.model import AttemptRecord

#: What each of the engine's own milestones means on a timeline; a subject's own milestones
#: (``store_up``, ``leader_elected``) read as their names with spaces.
_WORDS: Final = {
    "gate_passed": "steady state held (gate passed)",
    "kill_sent": "fault injected",
    "kill_acked": "fault acknowledged by the API server",
    "first_unhealthy": "subject first seen unhealthy",
    "victim_gone": "victim gone",
    "replacement_created": "replacement created",
    "replacement_scheduled": "replacement scheduled",
    "replacement_ready": "replacement Ready",
    "recovered": "recovered",
    "relapsed": "relapsed",
    "fault_healed": "fault healed",
    "victim_unready": "victims marked not Ready (their node stopped answering)",
    model.ALERT_FIRING: "alert firing",
    model.ALERT_RESOLVED: "alert resolved",
    model.REMEDIATOR_DETECTED: "remediator detected",
    model.REMEDIATOR_RESOLVED: "remediator resolved",
}

#: Kinds of entry (the HTML page styles by them).
MILESTONE: Final = "milestone"
ACTION: Final = "action"
END: Final = "end"

#: `Entry.event` of the remediator's first action, of each later one, and of the trial's end.
FIRST_ACTION: Final = "first_action"
LATER_ACTION: Final = "action"
TRIAL_ENDED: Final = "trial_ended"


@dataclass(frozen=True)
class Entry:
    offset: float  # seconds from the fault (monotonic)
    wall: float | None  # unix seconds; None when the ledger kept only the offset
    kind: str  # MILESTONE, ACTION or END
    what: str
    detail: str = ""
    #: A remediator action taken after the subject had recovered.
    after_recovery: bool = False
    #: What happened, as a key a chart can style by: the milestone's name (``kill_sent``,
    #: ``alert_firing``, ``recovered``, a subject's own), `FIRST_ACTION`, `LATER_ACTION` or
    #: `TRIAL_ENDED`.
    event: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "offsetSeconds": self.offset,
            "wall": self.wall,
            "kind": self.kind,
            "what": self.what,
            "detail": self.detail,
            "afterRecovery": self.after_recovery,
        }


def _words(name: str) -> str:
    return _WORDS.get(name, name.replace("_", " "))


def trial_timeline(attempt: AttemptRecord, chaos_type: str | None = None) -> list[Entry]:
    """The attempt's timeline (empty for one that never injected its fault)."""
    if "kill_sent" not in attempt.milestones:
        return []
    order = attempt.final_state.get("milestoneOrder")
    recorded = {str(n): i for i, n in enumerate(order)} if isinstance(order, list) else {}
    victims = ", ".join(v.name for v in attempt.victims)
    keyed: list[tuple[float, int, int, Entry]] = []
    for name, m in attempt.milestones.items():
        detail = ""
        if name == "kill_sent":
            detail = " ".join(x for x in (chaos_type or "", victims) if x)
        entry = Entry(m.offset, m.wall, MILESTONE, _words(name), detail, event=name)
        # The fault first among equal offsets: it is recorded after the tracker's milestones
        # (`milestoneOrder`), but nothing at its offset can have come before it.
        seq = -1 if name == "kill_sent" else recorded.get(name, len(recorded))
        keyed.append((m.offset, 0, seq, entry))
    recovered = attempt.milestones.get("recovered")
    actions = model.remediator_actions(attempt.final_state)
    for i, a in enumerate(actions):
        what, event = ("first action", FIRST_ACTION) if i == 0 else ("action", LATER_ACTION)
        detail = " ".join(x for x in (a.identity, a.verb or a.reason, a.involved, a.message) if x)
        entry = Entry(a.offset, a.wall, ACTION, what, detail, model.after_recovery(a, recovered), event)
        keyed.append((a.offset, 1, i, entry))
    quiet = attempt.final_state.get("quietWait")
    if isinstance(quiet, Mapping) and isinstance(quiet.get("endedOffset"), int | float):
        ended = float(quiet["endedOffset"])
        why = (
            "the quiet wait reached its cap"
            if quiet.get("capped")
            else f"the remediator was quiet for {quiet.get('quietSeconds')}s"
        )
        keyed.append((ended, 2, 0, Entry(ended, None, END, "trial ended", why, event=TRIAL_ENDED)))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]


def render_text(entries: list[Entry]) -> list[str]:
    """The timeline as lines of a text table: offset, what, detail."""
    lines = []
    for e in entries:
        flag = "  [after recovery]" if e.after_recovery else ""
        lines.append(f"  {e.offset:+10.3f}s  {e.what:<38} {e.detail}{flag}".rstrip())
    return lines
