"""Time to alert, split by the alerting chain's own records (issue 20: "how much of the time to
alert is Prometheus's scrape and evaluation intervals and Alertmanager's group_wait, each
measured, not assumed").

`breakdown` takes a fault's injection time and the operator's ``alert_firing`` stamp (both
wall clock, from the ledger) and reads, after the fact, what Prometheus and Alertmanager
recorded in between:

=====================  ===================================================================
stamp                  whose record
=====================  ===================================================================
injected               the caller (the ledger's ``kill_sent`` or the fault's own stamp)
last good scrape       Prometheus: the last ``up == 1`` sample of the target before the run
                       of failed scrapes the rule saw (raw samples, ``up{...}[range]``)
first failed scrape    Prometheus: the first ``up == 0`` sample of that run. A sample is
                       stamped with the scrape's START (scrape/scrape.go ``report``: the
                       ``appendTime`` of ``scrapeAndReport``; snapped to the target's
                       interval grid when within 2 ms of it), also for a scrape that timed
                       out: so the scrape ENDED at stamp + its own ``scrape_duration_seconds``
                       sample (same timestamp), and that end is when Prometheus knew
active_at              Prometheus: the rule evaluation that first saw the expression true:
                       the episode's first ``ALERTS`` sample (its timestamp is the
                       evaluation's slot time, which is the alert's ``activeAt``:
                       rules/alerting.go ``Eval``); checked against ``ALERTS_FOR_STATE``
                       (whose value is activeAt in whole seconds) so that an alert already
                       active at the injection is never taken for this fault's, and against
                       ``/api/v1/alerts``'s exact ``activeAt`` while the alert is still active
fired_at               Prometheus: the evaluation that made it firing, the episode's first
                       ``ALERTS{alertstate="firing"}`` sample (= ``FiredAt``, which Prometheus
                       sends as ``startsAt``); at least ``for:`` after active_at, at the first
                       evaluation slot past it
alertmanager_received  Alertmanager: the alert's ``updatedAt`` in ``/api/v2/alerts``, which
                       ``postAlertsHandler`` sets to the receive time of each POST of it
                       (api/v2/api.go). Only the first receipt is wanted: Prometheus resends
                       a firing alert no sooner than ``--rules.alert.resend-delay`` after the
                       first (rules/alerting.go ``needsSending``), so an ``updatedAt`` less
                       than that after fired_at is the first. Alertmanager hides an alert
                       once it has ended (api/v2 ``alertFilter``), so read it while it fires:
                       `AlertmanagerWatch` polls while the faults run
delivered              the operator: the receiver's receive stamp of the notification, the
                       ledger's ``alert_firing`` milestone (wall)
=====================  ===================================================================

The parts, which add up to the total (checked here to 5 ms; Prometheus's stamps are whole
milliseconds, Alertmanager's and the operator's finer):

- ``scrape_wait``: injected -> the first failed scrape ENDED (the fault taking effect, the wait
  for the next scrape, and that scrape's own duration: up to its timeout when the target hangs);
- ``evaluation_wait``: that end -> active_at (the wait for the next rule evaluation). It can be
  slightly negative when a late evaluation read a sample stamped before its slot;
- ``for_wait``: active_at -> fired_at (``for:`` rounded up to the evaluation grid);
- ``send_wait``: fired_at -> Alertmanager's receipt (the evaluation's own run, Prometheus's
  notification queue and the POST);
- ``alertmanager_wait``: the receipt -> delivered (``group_wait`` for a new group, then the
  notification pipeline, the webhook POST, and the receiver taking it).

A rule that fires on a scraped VALUE rather than on a failed scrape (PD's
``pd_cluster_status{type="store_down_count"} > 0``) is given as a `Signal`: the series and
which of its values are the fault. ``scrape_wait`` then ends with the first scrape that
brought such a value (also stamped with its start, ended at stamp + its duration), so it
includes the exporter's own judgement (PD marking the store Down); the caller splits that off
with the exporter's records, if it has them.

Where the records do not allow a part it is None and `unmeasured` says why; the combined
span is then still given (``detect_wait`` = scrape + evaluation, ``notify_wait`` = send +
alertmanager). Never a configured value in place of a measured one: `ChainSettings` (what
Prometheus and Alertmanager say their settings are) is there only to bound the parts.

Clocks: Prometheus, Alertmanager, the operator and the tests all run on this one host and read
its one wall clock; no offset between them to correct. Stamps are unix seconds (float).

Use (tests/e2e/test_alerts_realnode.py does)::

    watch = alertclock.AlertmanagerWatch(chain.alertmanager, "EtcdMemberDown").start()
    ...  # the Campaign runs its faults
    watch.stop()
    # The ledger's first firing notice of the trial (alert_notifications: its labels and
    # received_at = the alert_firing milestone), and the trial's kill_sent wall time:
    b = alertclock.breakdown(chain.prometheus, chain.alertmanager, "EtcdMemberDown",
                             notice["labels"], kill_wall, notice["received_at"],
                             receipts=watch.receipts())
    print(b.describe())  # b.scrape_wait, b.evaluation_wait, b.for_wait, ... b.settings
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

#: How far before the injection the raw samples are read (the last good scrape lies there).
LOOKBACK_S = 60.0
#: The parts must add up to the total within this (float sums of ms stamps).
SUM_TOLERANCE_S = 0.005
#: Prometheus's stamps are ms; Go's ns times (activeAt, startsAt) are floored to them.
MS = 0.001
_EPS = 1e-6
#: Go's time.Duration / Prometheus's model.Duration text: "1m30s", "500ms", "2s", "1h".
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|y|w|d|h|m|s)")
_UNIT = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}


class ChainRecordError(RuntimeError):
    """The chain's records do not describe this fault's alert (wrong labels, an alert already
    active before the injection, a notification that came before the alert fired, ...)."""


def go_duration(text: str) -> float:
    """Seconds in a Go/Prometheus duration ("1m30s", "500ms"); ValueError if it is not one."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def rfc3339(text: str) -> float:
    """Unix seconds of an RFC 3339 time as Go writes it (ns digits kept to the µs)."""
    from aftershock.alerting import parse_time

    parsed = parse_time(text, "alertclock")
    if parsed is None:
        raise ValueError(f"zero time: {text!r}")
    return parsed


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
        return json.loads(resp.read())


def selector(labels: Mapping[str, str]) -> str:
    """``{a="x",b="y"}``, values escaped as PromQL strings."""

    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    return "{" + ",".join(f"{k}={quote(v)}" for k, v in sorted(labels.items())) + "}"


Samples = list[tuple[float, float]]


def raw_samples(
    prometheus: str, metric: str, labels: Mapping[str, str], start: float, end: float
) -> list[tuple[dict[str, str], Samples]]:
    """Every raw sample of `metric{labels}` stamped in (start, end], per series: (labels
    without ``__name__``, [(stamp s, value)]). An instant query of a range selector returns the
    stored samples with their own timestamps (ms), not a resampled grid."""
    window_ms = max(1, math.ceil((end - start) * 1000))
    query = f"{metric}{selector(labels)}[{window_ms}ms]"
    url = prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": f"{end:.3f}"})
    body = _get(url)
    if body.get("status") != "success":
        raise ChainRecordError(f"Prometheus refused {query}: {body}")
    out: list[tuple[dict[str, str], Samples]] = []
    for series in body["data"]["result"]:
        metric_labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
        out.append((metric_labels, [(round(float(t), 3), float(v)) for t, v in series["values"]]))
    return out


# --- Alertmanager's receipts ------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """One alert as `AlertmanagerWatch` first saw it in Alertmanager's ``/api/v2/alerts``."""

    fingerprint: str
    labels: Mapping[str, str]
    starts_at: float
    #: Alertmanager's updatedAt: when it received the POST that carried this alert (last one).
    updated_at: float
    #: This host's wall clock at the poll that first showed it.
    seen_at: float


@dataclass
class AlertmanagerWatch:
    """Polls Alertmanager's ``/api/v2/alerts`` (every `period` s, in a thread) and keeps each
    (fingerprint, startsAt) as first seen. Alertmanager has no watch API, and it stops showing
    an alert once it has ended, so its receipt of an alert that resolves within seconds is
    only visible to someone looking while it fires."""

    alertmanager: str
    #: Only these alerts (Alertmanager's own ``filter`` matcher); None: all.
    alertname: str | None = None
    period: float = 0.1
    errors: list[str] = field(default_factory=list)
    _seen: dict[tuple[str, str], Receipt] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> AlertmanagerWatch:
        self._thread = threading.Thread(target=self._run, daemon=True, name="alertmanager-watch")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    @contextmanager
    def running(self) -> Iterator[AlertmanagerWatch]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def receipts(self) -> list[Receipt]:
        with self._lock:
            return list(self._seen.values())

    def poll(self) -> None:
        """One look (also what the thread does every `period`)."""
        url = self.alertmanager + "/api/v2/alerts"
        if self.alertname is not None:
            url += "?" + urllib.parse.urlencode({"filter": f'alertname="{self.alertname}"'})
        now = time.time()
        alerts = _get(url, timeout=2.0)
        with self._lock:
            for a in alerts:
                key = (a["fingerprint"], a["startsAt"])
                if key not in self._seen:
                    self._seen[key] = Receipt(
                        a["fingerprint"],
                        dict(a["labels"]),
                        rfc3339(a["startsAt"]),
                        rfc3339(a["updatedAt"]),
                        now,
                    )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except (OSError, ValueError, KeyError) as exc:
                self.errors.append(repr(exc))
            self._stop.wait(self.period)


# --- What the chain says its settings are (bounds only) ---------------------------------------


@dataclass(frozen=True)
class ChainSettings:
    """The settings, as Prometheus's and Alertmanager's own APIs report them (seconds). They
    bound the measured parts; they never stand in for one."""

    scrape_interval: float | None
    scrape_timeout: float | None
    evaluation_interval: float
    #: The rule's ``for:``.
    hold: float
    #: ``--rules.alert.resend-delay``.
    resend_delay: float
    #: The top-level route's ``group_wait`` and ``group_interval`` (Alertmanager's defaults
    #: 30 s and 5 m when unset); None if no Alertmanager was asked.
    group_wait: float | None
    group_interval: float | None
    #: The rule group's ``prometheus_rule_group_iterations_missed_total`` when read: evaluation
    #: slots skipped because an evaluation ran late (each widens an evaluation wait by one
    #: interval). Counted since Prometheus started.
    missed_evaluations: int


def read_settings(
    prometheus: str, alertmanager: str | None, alert: str, target: Mapping[str, str] | None
) -> ChainSettings:
    rules = _get(prometheus + "/api/v1/rules?" + urllib.parse.urlencode({"type": "alert"}))
    found = [
        (float(g["interval"]), float(r.get("duration", 0.0)))
        for g in rules["data"]["groups"]
        for r in g["rules"]
        if r.get("name") == alert
    ]
    if not found:
        raise ChainRecordError(f"Prometheus has no alerting rule {alert!r}")
    if len(set(found)) > 1:
        raise ChainRecordError(f"rule {alert!r} is in several groups with other settings: {found}")
    evaluation_interval, hold = found[0]
    group_file = next(
        f"{g['file']};{g['name']}"
        for g in rules["data"]["groups"]
        for r in g["rules"]
        if r.get("name") == alert
    )
    flags = _get(prometheus + "/api/v1/status/flags")["data"]
    resend = go_duration(flags.get("rules.alert.resend-delay", "1m"))
    interval = timeout = None
    if target is not None:
        targets = _get(prometheus + "/api/v1/targets?state=active")["data"]["activeTargets"]
        mine = [t for t in targets if all(t["labels"].get(k) == v for k, v in target.items())]
        if len(mine) == 1:
            interval = go_duration(mine[0]["scrapeInterval"])
            timeout = go_duration(mine[0]["scrapeTimeout"])
    group_wait = group_interval = None
    if alertmanager is not None:
        status = _get(alertmanager + "/api/v2/status")
        route = yaml.safe_load(status["config"]["original"]).get("route", {})
        group_wait = go_duration(str(route.get("group_wait", "30s")))
        group_interval = go_duration(str(route.get("group_interval", "5m")))
    return ChainSettings(
        interval,
        timeout,
        evaluation_interval,
        hold,
        resend,
        group_wait,
        group_interval,
        missed_iterations(prometheus, group_file),
    )


def missed_iterations(prometheus: str, rule_group: str) -> int:
    """``prometheus_rule_group_iterations_missed_total`` of `rule_group` ("file;name"), from
    Prometheus's own /metrics."""
    with urllib.request.urlopen(prometheus + "/metrics", timeout=5) as resp:  # loopback only
        text = resp.read().decode()
    wanted = f'prometheus_rule_group_iterations_missed_total{{rule_group="{rule_group}"}} '
    for line in text.splitlines():
        if line.startswith(wanted):
            return int(float(line.removeprefix(wanted)))
    raise ChainRecordError(f"Prometheus's /metrics has no missed-iterations count for {rule_group!r}")


# --- The breakdown -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    """One alert episode as the ALERTS series recorded it."""

    labels: Mapping[str, str]
    active_at: float
    fired_at: float


def find_episode(
    alerts: Sequence[tuple[dict[str, str], Samples]],
    for_state: Sequence[tuple[dict[str, str], Samples]],
    injected: float,
    delivered: float,
) -> Episode:
    """The alert episode this fault started: of the label sets given, the one that became
    active first at or after `injected` and fired by `delivered`. Pure (unit-tested).

    `alerts`: ALERTS series (labels with ``alertstate``); `for_state`: ALERTS_FOR_STATE series
    (value: activeAt in whole seconds). An episode that began before the injection is never
    this fault's: its first sample after the injection carries an older ALERTS_FOR_STATE."""
    by_set: dict[tuple[tuple[str, str], ...], list[tuple[float, str]]] = {}
    for labels, samples in alerts:
        state = labels.get("alertstate", "")
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "alertstate"))
        by_set.setdefault(key, []).extend((t, state) for t, _ in samples)
    held = {tuple(sorted(labels.items())): dict(samples) for labels, samples in for_state}
    episodes: list[Episode] = []
    reasons: list[str] = []
    for key, states in by_set.items():
        states.sort()
        after = [(t, s) for t, s in states if t >= injected - _EPS]
        if not after:
            reasons.append(f"{dict(key)}: no ALERTS sample after the injection")
            continue
        start = after[0][0]
        second = math.floor(start + _EPS)
        held_at = held.get(key, {})
        if start not in held_at:
            reasons.append(f"{dict(key)}: no ALERTS_FOR_STATE sample at {start:.3f}")
            continue
        if int(held_at[start]) != second or any(second <= t < start for t, _ in states):
            reasons.append(
                f"{dict(key)}: already active before the injection (ALERTS_FOR_STATE says "
                f"activeAt {held_at[start]:.0f}, first sample after the injection {start:.3f})"
            )
            continue
        fired = [t for t, s in after if s == "firing" and int(held_at.get(t, -1)) == second]
        if not fired or fired[0] > delivered + _EPS:
            reasons.append(f"{dict(key)}: active at {start:.3f} but not firing by {delivered:.3f}")
            continue
        episodes.append(Episode(dict(key), start, fired[0]))
    if not episodes:
        raise ChainRecordError(
            "no alert episode began after the injection and fired before the "
            "notification: " + "; ".join(reasons or ["no ALERTS series matched"])
        )
    return min(episodes, key=lambda e: e.active_at)


def _failed(value: float) -> bool:
    return value == 0.0


@dataclass(frozen=True)
class Signal:
    """The scraped series a rule fires on, when that is not the target's ``up``: `labels`
    select exactly one series of `metric` (with the target's ``job`` and ``instance``), and
    `bad` says which of its values are the fault."""

    metric: str
    labels: Mapping[str, str]
    bad: Callable[[float], bool]


@dataclass(frozen=True)
class ScrapeRun:
    last_good: float | None
    first_failed: float
    #: The failed scrape's own ``scrape_duration_seconds``; None if Prometheus has none.
    duration: float | None


def failed_scrapes(
    up: Samples, durations: Samples, active_at: float, bad: Callable[[float], bool] = _failed
) -> ScrapeRun | str:
    """The run of failed scrapes that the evaluation at `active_at` saw (the latest sample
    stamped at or before it, and the failures before it without a success between), or why
    there is none. With `bad`, the run of samples whose value it calls the fault (a `Signal`)
    instead of ``up == 0``. Pure (unit-tested)."""
    seen = [(t, v) for t, v in up if t <= active_at + _EPS]
    if not seen:
        return "no sample of the signal before the alert became active"
    if not bad(seen[-1][1]):
        return (
            f"the target's last scrape before activeAt ({seen[-1][0]:.3f}) showed no fault "
            f"(value {seen[-1][1]:g}): the rule did not fire on it"
        )
    i = len(seen) - 1
    while i > 0 and bad(seen[i - 1][1]):
        i -= 1
    last_good = seen[i - 1][0] if i > 0 else None
    first = seen[i][0]
    return ScrapeRun(last_good, first, dict(durations).get(first))


@dataclass(frozen=True)
class Breakdown:
    """Time to alert, stamp by stamp and part by part (seconds; stamps unix seconds)."""

    alert: str
    #: The alert's whole label set (from Prometheus's ALERTS series).
    labels: Mapping[str, str]
    #: The scrape target's labels, whose ``up`` was read; None if the alert names none.
    target: Mapping[str, str] | None
    settings: ChainSettings
    injected: float
    last_good_scrape: float | None
    first_failed_scrape: float | None
    #: That scrape's own ``scrape_duration_seconds``.
    failed_scrape_duration: float | None
    active_at: float
    fired_at: float
    alertmanager_received: float | None
    delivered: float
    scrape_wait: float | None
    evaluation_wait: float | None
    for_wait: float
    send_wait: float | None
    alertmanager_wait: float | None
    #: scrape_wait + evaluation_wait (injected -> active_at): always measured.
    detect_wait: float
    #: send_wait + alertmanager_wait (fired_at -> delivered): always measured.
    notify_wait: float
    #: injected -> delivered.
    total: float
    #: Part name -> why it could not be measured.
    unmeasured: Mapping[str, str]
    #: Where active_at and fired_at were read (with the rounding that applies).
    sources: Mapping[str, str]

    PARTS = ("scrape_wait", "evaluation_wait", "for_wait", "send_wait", "alertmanager_wait")

    def parts(self) -> dict[str, float | None]:
        return {p: getattr(self, p) for p in self.PARTS}

    def describe(self) -> str:
        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        head = f"{self.alert}{selector(self.labels)}: time to alert {self.total:.3f} s = " + " + ".join(
            f"{p.removesuffix('_wait')} {fmt(v)}" for p, v in self.parts().items()
        )
        tail = [f"  (detect {self.detect_wait:.3f}, notify {self.notify_wait:.3f}"]
        if self.failed_scrape_duration is not None:
            tail.append(f", failed scrape took {self.failed_scrape_duration:.3f}")
        if self.last_good_scrape is not None and self.first_failed_scrape is not None:
            tail.append(
                f", last good scrape {self.first_failed_scrape - self.last_good_scrape:.3f} before it"
            )
        tail.append(")")
        why = "".join(f"\n  {p}: not measured: {r}" for p, r in self.unmeasured.items())
        return head + "".join(tail) + why


def _same_labels(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    return dict(a) == dict(b)


def _live_active_at(prometheus: str, labels: Mapping[str, str], active_at: float) -> float | None:
    """The alert's exact (ns) activeAt from /api/v1/alerts, while that episode is still active."""
    for a in _get(prometheus + "/api/v1/alerts")["data"]["alerts"]:
        if _same_labels(a["labels"], labels):
            at = rfc3339(a["activeAt"])
            if abs(at - active_at) < MS + _EPS:
                return at
            if math.floor(at) == math.floor(active_at):
                raise ChainRecordError(
                    f"/api/v1/alerts says activeAt {at:.6f}, ALERTS says {active_at:.3f}: not one episode"
                )
    return None


def breakdown(
    prometheus: str,
    alertmanager: str | None,
    alert: str,
    labels: Mapping[str, str],
    injected: float,
    delivered: float,
    *,
    target: Mapping[str, str] | None = None,
    receipts: Sequence[Receipt] | None = None,
    signal: Signal | None = None,
) -> Breakdown:
    """Split time to alert (`injected` -> `delivered`, wall clock) by the chain's records.

    `labels` pick the alert among the rule's series (e.g. ``{"instance": ..., "namespace": ...}``);
    of those that became active after the injection, the first to. `target` picks the scrape
    target whose ``up`` the rule watches; by default the alert's own ``job`` and ``instance``.
    `receipts`: what an `AlertmanagerWatch` saw; without them Alertmanager is asked now (which
    only works while the alert still fires there). `signal`: the series the rule fires on when
    it is not ``up == 0`` (its target: `target`, else the signal's ``job`` and ``instance``).
    Raises `ChainRecordError` when the records
    show no alert of these labels that this fault started and that fired before `delivered`."""
    if delivered < injected:
        raise ChainRecordError(f"delivered {delivered:.3f} before injected {injected:.3f}")
    start, end = injected - LOOKBACK_S, delivered + MS
    wanted = {"alertname": alert, **labels}
    episode = find_episode(
        raw_samples(prometheus, "ALERTS", wanted, start, end),
        raw_samples(prometheus, "ALERTS_FOR_STATE", wanted, start, end),
        injected,
        delivered,
    )
    unmeasured: dict[str, str] = {}
    sources = {
        "active_at": "first ALERTS sample of the episode (ms, floored)",
        "fired_at": 'first ALERTS{alertstate="firing"} sample (ms, floored)',
    }
    active_at, fired_at = episode.active_at, episode.fired_at
    exact = _live_active_at(prometheus, episode.labels, active_at)
    if exact is not None:
        active_at = exact
        sources["active_at"] = "/api/v1/alerts activeAt (still active; RFC 3339, to the µs)"

    if target is None and signal is not None and {"job", "instance"} <= signal.labels.keys():
        target = {"job": signal.labels["job"], "instance": signal.labels["instance"]}
    if target is None and {"job", "instance"} <= episode.labels.keys():
        target = {"job": episode.labels["job"], "instance": episode.labels["instance"]}
    settings = read_settings(prometheus, alertmanager, alert, target)

    # The scrape: the failed scrapes the rule saw, and when the first of them ended.
    scrape_wait = evaluation_wait = None
    last_good = first_failed = duration = None
    if target is None:
        unmeasured["scrape_wait"] = unmeasured["evaluation_wait"] = "the alert names no scrape target"
    else:
        if signal is None:
            up = raw_samples(prometheus, "up", target, start, end)
        else:
            up = raw_samples(prometheus, signal.metric, {**target, **signal.labels}, start, end)
        took = raw_samples(prometheus, "scrape_duration_seconds", target, start, end)
        if len(up) != 1 or len(took) != 1:
            what = "up" if signal is None else signal.metric
            why = f"{len(up)} {what} series match the target {dict(target)} (one wanted)"
            unmeasured["scrape_wait"] = unmeasured["evaluation_wait"] = why
        else:
            bad = _failed if signal is None else signal.bad
            run = failed_scrapes(up[0][1], took[0][1], episode.active_at, bad)
            if isinstance(run, str):
                unmeasured["scrape_wait"] = unmeasured["evaluation_wait"] = run
            else:
                last_good, first_failed, duration = run.last_good, run.first_failed, run.duration
                if duration is None:
                    why = f"no scrape_duration_seconds sample at the failed scrape ({first_failed:.3f})"
                    unmeasured["scrape_wait"] = unmeasured["evaluation_wait"] = why
                else:
                    done = first_failed + duration
                    if done < injected - SUM_TOLERANCE_S:
                        raise ChainRecordError(
                            f"the target's scrapes were failing before the injection: the run the "
                            f"rule saw began with a scrape at {first_failed:.3f} that ended at "
                            f"{done:.3f}, the fault went in at {injected:.3f}"
                        )
                    scrape_wait, evaluation_wait = done - injected, active_at - done

    # Alertmanager's first receipt: updatedAt of the alert Prometheus fired (startsAt = FiredAt).
    send_wait = alertmanager_wait = None
    received = None
    if alertmanager is None:
        unmeasured["send_wait"] = unmeasured["alertmanager_wait"] = "no Alertmanager given"
    else:
        if receipts is None:
            watch = AlertmanagerWatch(alertmanager, alert)
            watch.poll()
            receipts = watch.receipts()
        same = [
            r
            for r in receipts
            if _same_labels(r.labels, episode.labels) and -_EPS <= r.starts_at - fired_at < MS + _EPS
        ]
        if not same:
            why = (
                "Alertmanager showed no alert with these labels and startsAt "
                f"{fired_at:.3f} (it hides an alert once ended: watch while it fires)"
            )
            unmeasured["send_wait"] = unmeasured["alertmanager_wait"] = why
        else:
            r = min(same, key=lambda r: r.updated_at)
            fired_at = r.starts_at
            sources["fired_at"] = "Alertmanager's startsAt (Prometheus's FiredAt, to the µs)"
            if r.updated_at - fired_at >= settings.resend_delay:
                why = (
                    f"Alertmanager's updatedAt is {r.updated_at - fired_at:.1f} s after the alert "
                    f"fired, past Prometheus's resend delay ({settings.resend_delay:.0f} s): a "
                    "resend, not the first receipt"
                )
                unmeasured["send_wait"] = unmeasured["alertmanager_wait"] = why
            else:
                received = r.updated_at
                send_wait, alertmanager_wait = received - fired_at, delivered - received
    if delivered < fired_at - MS:
        raise ChainRecordError(
            f"the notification ({delivered:.3f}) came before this alert fired ({fired_at:.3f}): it "
            "was another alert's"
        )
    if received is not None and delivered < received:
        raise ChainRecordError(
            f"the notification ({delivered:.3f}) came before Alertmanager received this alert "
            f"({received:.3f}): it was another alert's"
        )

    detect_wait, for_wait, notify_wait = active_at - injected, fired_at - active_at, delivered - fired_at
    total = delivered - injected
    result = Breakdown(
        alert=alert,
        labels=episode.labels,
        target=target,
        settings=settings,
        injected=injected,
        last_good_scrape=last_good,
        first_failed_scrape=first_failed,
        failed_scrape_duration=duration,
        active_at=active_at,
        fired_at=fired_at,
        alertmanager_received=received,
        delivered=delivered,
        scrape_wait=scrape_wait,
        evaluation_wait=evaluation_wait,
        for_wait=for_wait,
        send_wait=send_wait,
        alertmanager_wait=alertmanager_wait,
        detect_wait=detect_wait,
        notify_wait=notify_wait,
        total=total,
        unmeasured=unmeasured,
        sources=sources,
    )
    _check_sums(result)
    return result


def _check_sums(b: Breakdown) -> None:
    """The parts telescope: each split adds up to its span, and the spans to the total."""
    checks = [("detect + for + notify", b.detect_wait + b.for_wait + b.notify_wait)]
    if b.scrape_wait is not None and b.evaluation_wait is not None:
        checks.append(
            (
                "scrape + evaluation + for + notify",
                b.scrape_wait + b.evaluation_wait + b.for_wait + b.notify_wait,
            )
        )
    if b.send_wait is not None and b.alertmanager_wait is not None:
        checks.append(
            (
                "detect + for + send + alertmanager",
                b.detect_wait + b.for_wait + b.send_wait + b.alertmanager_wait,
            )
        )
    for name, value in checks:
        if abs(value - b.total) > SUM_TOLERANCE_S:
            raise AssertionError(f"{name} = {value:.6f} s, but time to alert is {b.total:.6f} s: {b}")


#: Prometheus stamps in whole ms; Alertmanager and the operator finer.
STAMP_TOLERANCE_S = 0.005
#: What a bound on a wait leaves besides the settings: Prometheus commits a scrape's samples
#: after it measured the scrape's duration, and an evaluation slot that fell between the two
#: misses the sample (the next one sees it): on a machine at load 25 that commit can lag by
#: tens of ms. Also the 2 ms grid snap of scrape stamps and ms rounding.
SLACK_S = 0.1


def assert_parts_after_the_scrape_bounded(b: Breakdown, st: Any, detect_offset: float) -> None:
    """The bounds every alert's breakdown keeps after its scrape part (the e2e tests of the
    chain share them): evaluation, `for:`, the send, Alertmanager, and the parts summing to the
    ledger's time to detect (`detect_offset`, the operator's monotonic clock)."""
    assert b.failed_scrape_duration is not None
    assert b.evaluation_wait is not None
    assert b.for_wait is not None
    assert b.send_wait is not None
    assert b.alertmanager_wait is not None
    # Evaluation: the first evaluation slot after the failed sample was in; one interval more
    # per slot Prometheus skipped for a late evaluation (counted since it started).
    eval_bound = st.evaluation_interval * (1 + st.missed_evaluations)
    assert -(b.failed_scrape_duration + STAMP_TOLERANCE_S) <= b.evaluation_wait <= eval_bound + SLACK_S, (
        b.describe(),
        st,
    )
    # for: at least the rule's, at most one evaluation slot more.
    assert st.hold - 0.001 <= b.for_wait <= st.hold + eval_bound + SLACK_S, (b.describe(), st)
    assert b.send_wait >= -STAMP_TOLERANCE_S, b.describe()
    # Alertmanager: group_wait for a new group, the next group_interval tick for one that was
    # still there; then the webhook POST (generous: a loaded machine).
    assert 0 <= b.alertmanager_wait <= max(st.group_wait, st.group_interval) + 1.0, (b.describe(), st)
    # The parts add up to the ledger's time to detect.
    parts = sum(v for v in b.parts().values() if v is not None)
    assert parts == pytest.approx(detect_offset, abs=0.05), (b.describe(), detect_offset)
