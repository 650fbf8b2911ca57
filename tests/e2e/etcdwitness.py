"""etcd's own word on who led when, independent of the operator: a witness the etcd tests share.

Every member's ``POST /v3/maintenance/status`` (the v3 JSON gateway: its member id, the leader
it follows, its raft term) is asked by a thread of the member's own every 10 ms, so a member
that is dying (accepting connections, answering nothing) holds back only its own answers, never
another member's. Each answer keeps the wall time its request left and the time it was back.

An election is a raft term increase: a majority of the members following one leader at a term
above the one they followed before. The member that wins may be the one that was killed (a
container restarted in place can win the next term), so a comparison of member ids alone can
miss an election that took place; the term cannot. The time of an election is bracketed by the
answers: a member switched after the last answer that still showed the old state was asked and
before the first that showed the new one was back; the majority (the ``k``-th member to switch,
``k = n // 2 + 1``) between the ``k``-th smallest of those bounds.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e import realnode

INTERVAL_S = 0.01
#: A member slower than this counts as not answering in that poll (urllib applies it to the
#: connect and to the read each, so a hung member costs at most twice this, its thread only).
TIMEOUT_S = 0.2


@dataclass(frozen=True)
class Answer:
    """One poll of one member: when it was asked and answered (wall seconds), and what it said
    (member_id None: no answer)."""

    sent: float
    received: float
    member_id: str | None
    leader: str  # "0": follows no leader
    term: int


@dataclass(frozen=True)
class Leadership:
    """A leader as a majority of the members followed it, and the raft term it led in."""

    leader: str
    term: int


@dataclass(frozen=True)
class Election:
    """A majority following `leader` at `term`, first reached after `earliest` and by `latest`
    (wall seconds)."""

    leader: str
    term: int
    earliest: float
    latest: float

    def gap(self, stamp: float) -> float:
        """How far `stamp` lies outside [earliest, latest] (0 inside)."""
        return max(0.0, self.earliest - stamp, stamp - self.latest)


def status(url: str, timeout: float = TIMEOUT_S) -> dict[str, Any] | None:
    """One member's status (loopback or a pod IP the test made), None if it did not answer."""
    req = urllib.request.Request(url + "/v3/maintenance/status", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result
    except (OSError, ValueError):
        return None


@dataclass
class EtcdWitness:
    """Every member's status every 10 ms, one thread per member (`netns`: the threads poll from
    inside that network namespace, a pod's of the test's own)."""

    endpoints: list[str]
    netns: Path | None = None
    interval: float = INTERVAL_S
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> EtcdWitness:
        for url in self.endpoints:
            self.answers[url] = []
            thread = threading.Thread(target=self._run, args=(url,), daemon=True, name=f"etcd-witness {url}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _run(self, url: str) -> None:
        if self.netns is not None:
            realnode.enter_netns(self.netns)  # this thread only, for good
        got = self.answers[url]
        while not self._stop.is_set():
            sent = time.time()
            raw = status(url)
            received = time.time()
            if raw is None:
                answer = Answer(sent, received, None, "0", 0)
            else:
                answer = Answer(
                    sent,
                    received,
                    str(raw["header"]["member_id"]),
                    str(raw.get("leader", "0")),
                    int(raw.get("raftTerm", 0)),
                )
            with self._lock:
                got.append(answer)
            self._stop.wait(max(0.0, sent + self.interval - time.time()))

    def _copy(self) -> dict[str, list[Answer]]:
        with self._lock:
            return {url: list(got) for url, got in self.answers.items()}

    # -- what the members said ------------------------------------------------------------------

    def member_ids(self) -> dict[str, str]:
        """Member id -> endpoint, from the answers."""
        return {a.member_id: url for url, got in self._copy().items() for a in got if a.member_id}

    def said_at(self, t: float) -> dict[str, Answer | None]:
        """Each member's last answer that was back by `t` (None: none, or it did not answer)."""
        seen: dict[str, Answer | None] = {}
        for url, got in self._copy().items():
            last = [a for a in got if a.received <= t]
            seen[url] = last[-1] if last and last[-1].member_id is not None else None
        return seen

    def first_said_after(self, t: float) -> dict[str, Answer | None]:
        """Each member's first answer to a poll sent at or after `t` (None: none answered)."""
        return {
            url: next((a for a in got if a.sent >= t and a.member_id is not None), None)
            for url, got in self._copy().items()
        }

    def _majority(self, seen: dict[str, Answer | None]) -> Leadership | None:
        votes: dict[Leadership, int] = {}
        for a in seen.values():
            if a is not None and a.leader != "0":
                key = Leadership(a.leader, a.term)
                votes[key] = votes.get(key, 0) + 1
        best = max(votes.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best is not None and best[1] * 2 > len(self.endpoints) else None

    def leader_before(self, t: float) -> Leadership | None:
        """Whom a majority followed, in which term, by the answers back before `t`."""
        return self._majority(self.said_at(t))

    def election_after(self, t: float, before: Leadership) -> Election | None:
        """The first majority after `t` that follows one leader at a term above `before`'s."""
        answers = self._copy()
        need = len(self.endpoints) // 2 + 1
        # Every (leader, term) above `before` some member followed after t, earliest first.
        candidates = sorted(
            {
                (a.received, Leadership(a.leader, a.term))
                for got in answers.values()
                for a in got
                if a.sent >= t and a.member_id and a.leader != "0" and a.term > before.term
            },
            key=lambda c: c[0],
        )
        tried: set[Leadership] = set()
        found: list[Election] = []
        for _, lead in candidates:
            if lead in tried:
                continue
            tried.add(lead)
            bounds = [b for got in answers.values() if (b := _switch(got, t, lead)) is not None]
            if len(bounds) >= need:
                earliest = sorted(lo for lo, _ in bounds)[need - 1]
                latest = sorted(hi for _, hi in bounds)[need - 1]
                found.append(Election(lead.leader, lead.term, earliest, latest))
        return min(found, key=lambda e: e.latest, default=None)


def _switch(got: list[Answer], t: float, lead: Leadership) -> tuple[float, float] | None:
    """When one member began following `lead` after `t`: after the last answered poll before
    it that did not show it was sent (or `t`), by the first that showed it was back."""
    after = [a for a in got if a.sent >= t]
    for i, a in enumerate(after):
        if a.member_id and Leadership(a.leader, a.term) == lead:
            earlier = [b.sent for b in after[:i] if b.member_id]
            return (earlier[-1] if earlier else t, a.received)
    return None
