"""What the operator serves on /metrics: parsed by Prometheus's own parser, served from memory
(a scrape never reads the ledger, and renders only what changed), and the loop-lag meter."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import replace
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from prometheus_client.parser import text_string_to_metric_families
from tests.unit import etcd_trials

from aftershock import metrics
from aftershock.metrics import LoopLagMeter, Metrics
from aftershock.model import (
    REMEDIATOR_DETECTED,
    REMEDIATOR_RESOLVED,
    AttemptRecord,
    CampaignRef,
    Milestone,
    Outcome,
    Phase,
    Verdict,
)

A = CampaignRef("db", "kill-a", "uid-a")
B = CampaignRef("db", "kill-b", "uid-b")


def recovered(uid: str, index: int, recovery: float) -> AttemptRecord:
    return AttemptRecord(
        campaign_uid=uid,
        trial_index=index,
        attempt=1,
        victims=(),
        victim_seed="s",
        started_at=1000.0,
        outcome=Outcome.RECOVERED,
        milestones={
            "replacement_ready": Milestone(wall=1001.0, offset=recovery / 2),
            "recovered": Milestone(wall=1002.0, offset=recovery),
        },
    )


def families(m: Metrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


def samples(m: Metrics, family: str, **labels: str) -> dict[str, float]:
    """sample name (+ le) -> value, for the samples whose labels include `labels`."""
    out = {}
    for s in families(m)[family].samples:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            out[s.name + (f"[{s.labels['le']}]" if "le" in s.labels else "")] = s.value
    return out


class _NoLedger:
    """A ledger that fails the test if anything reads it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"/metrics read the ledger ({name})")


def test_the_recovered_phase_is_the_recovery_time_the_status_gives() -> None:
    """Phases count from the kill taking effect (ADR 0008), not from the request leaving."""
    m = Metrics()
    record = recovered("uid-a", 0, 3.0)
    record = dataclasses.replace(
        record,
        milestones={
            **record.milestones,
            "kill_acked": Milestone(wall=1000.25, offset=0.25),
            "first_unhealthy": Milestone(wall=1000.5, offset=0.5),
        },
    )
    m.attempt_finished(A, record)
    rec = samples(m, "aftershock_recovery_seconds", campaign="kill-a", milestone="recovered")
    assert rec["aftershock_recovery_seconds_sum"] == record.recovery_seconds == 2.75
    ready = samples(m, "aftershock_recovery_seconds", campaign="kill-a", milestone="replacement_ready")
    assert ready["aftershock_recovery_seconds_sum"] == 1.25


def test_the_exposition_counts_what_was_recorded_per_campaign() -> None:
    m = Metrics()
    m.attempt_finished(A, recovered("uid-a", 0, 0.3))
    m.attempt_finished(A, recovered("uid-a", 1, 3.0))
    m.attempt_finished(B, recovered("uid-b", 0, 0.05))
    m.campaign_phase(A, Phase.RUNNING)
    m.status_patched(A)
    m.status_patched(A)

    rec = samples(m, "aftershock_recovery_seconds", campaign="kill-a", milestone="recovered")
    assert rec["aftershock_recovery_seconds_count"] == 2
    assert rec["aftershock_recovery_seconds_sum"] == 3.3
    assert rec["aftershock_recovery_seconds_bucket[0.25]"] == 0
    assert rec["aftershock_recovery_seconds_bucket[0.5]"] == 1
    assert rec["aftershock_recovery_seconds_bucket[5.0]"] == 2
    assert rec["aftershock_recovery_seconds_bucket[+Inf]"] == 2
    # A value on a bound counts in that bucket (`le` is inclusive), as Prometheus defines it.
    b = samples(m, "aftershock_recovery_seconds", campaign="kill-b", milestone="recovered")
    assert b["aftershock_recovery_seconds_bucket[0.05]"] == 1
    assert samples(m, "aftershock_trial_attempts", campaign="kill-a", outcome="recovered") == {
        "aftershock_trial_attempts_total": 2
    }
    phase = {
        s.labels["phase"]: s.value
        for s in families(m)["aftershock_campaign_phase"].samples
        if s.labels["campaign"] == "kill-a"
    }
    assert phase["Running"] == 1
    assert sum(phase.values()) == 1
    assert samples(m, "aftershock_status_patches", campaign="kill-a") == {
        "aftershock_status_patches_total": 2
    }
    assert samples(m, "aftershock_status_patches", campaign="kill-b") == {}


def test_a_scrape_renders_only_the_families_that_changed() -> None:
    m = Metrics()
    for ref in (A, B):
        m.attempt_finished(ref, recovered(ref.uid, 0, 1.0))
        m.campaign_phase(ref, Phase.RUNNING)
        m.status_patched(ref)
    m.render()
    rendered = m.renders
    m.render()
    assert m.renders == rendered  # nothing changed: nothing rendered again
    m.status_patched(A)
    m.render()
    assert m.renders == rendered + 1  # A's patch counter only
    assert samples(m, "aftershock_status_patches", campaign="kill-a") == {
        "aftershock_status_patches_total": 2
    }
    m.campaign_phase(A, Phase.RUNNING)  # the same phase again changes nothing
    m.render()
    assert m.renders == rendered + 1


def test_label_values_are_escaped() -> None:
    m = Metrics()
    odd = CampaignRef('n"s', "a\\b\nc", 'u"id')
    m.status_patched(odd)
    (sample,) = families(m)["aftershock_status_patches"].samples
    assert sample.labels == {"namespace": 'n"s', "campaign": "a\\b\nc", "uid": 'u"id'}


async def test_metrics_are_served_without_reading_the_ledger() -> None:
    m = Metrics()
    m.attempt_finished(A, recovered("uid-a", 0, 1.0))
    m.loop_lag(0.012)
    app = metrics.build_app(m, _NoLedger())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        text = await resp.text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"aftershock_recovery_seconds", "aftershock_event_loop_lag_seconds"} <= names


class _FakeLoop:
    """A clock and a sleep where each sleep oversleeps by the next of `overshoots`."""

    def __init__(self, overshoots: list[float]) -> None:
        self.now = 100.0
        self.overshoots = overshoots

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.overshoots.pop(0)


async def test_loop_lag_meter_reports_how_late_each_sleep_woke() -> None:
    loop = _FakeLoop([0.0, 0.03, 0.25, -0.0005])
    seen: list[float] = []
    meter = LoopLagMeter(seen.append, interval=0.1, clock=loop.clock, sleep=loop.sleep)
    for _ in range(4):
        await meter.measure_once()
    assert [round(v, 6) for v in seen] == [0.0, 0.03, 0.25, 0.0]  # an early wake is no lag


async def test_loop_lag_reaches_the_histogram_on_metrics_and_the_meter_stops() -> None:
    m = Metrics()
    reported = asyncio.Event()

    def observe(seconds: float) -> None:
        m.loop_lag(seconds)
        reported.set()

    meter = LoopLagMeter(observe, interval=0.001).start()
    await reported.wait()  # on the real loop: however long it takes, no time bound here
    await meter.stop()
    name = "aftershock_event_loop_lag_seconds"
    count = samples(m, name)[f"{name}_count"]
    assert count >= 1
    reported.clear()
    await asyncio.sleep(0.01)  # a running meter would report within this
    assert not reported.is_set()
    assert samples(m, name)[f"{name}_count"] == count


def with_signals(
    record: AttemptRecord, detect: float | None, resolve: float | None, actions: int
) -> AttemptRecord:
    """`record` as a Campaign that watches its remediator's Events would have finished it."""
    said = dict(record.milestones)
    if detect is not None:
        said[REMEDIATOR_DETECTED] = Milestone(wall=1000.0 + detect, offset=detect)
    if resolve is not None:
        said[REMEDIATOR_RESOLVED] = Milestone(wall=1000.0 + resolve, offset=resolve)
    acted = [{"reason": "Ungated", "message": "", "object": "Pod/x", "wall": 1000.0, "offset": 0.1}] * actions
    return replace(record, milestones=said, final_state={"remediatorActions": acted})


def test_remediator_timings_and_actions_are_exposed_per_campaign_only_when_watched() -> None:
    m = Metrics()
    m.attempt_finished(A, with_signals(recovered("uid-a", 0, 3.0), 0.2, 1.5, 3))
    m.attempt_finished(A, with_signals(recovered("uid-a", 1, 3.0), 0.4, None, 2))
    m.attempt_finished(B, recovered("uid-b", 0, 3.0))  # no spec.remediator.signals
    detected = samples(m, "aftershock_remediator_seconds", campaign="kill-a", signal="detected")
    assert detected["aftershock_remediator_seconds_count"] == 2
    assert detected["aftershock_remediator_seconds_sum"] == pytest.approx(0.6)
    assert detected["aftershock_remediator_seconds_bucket[0.25]"] == 1
    resolved = samples(m, "aftershock_remediator_seconds", campaign="kill-a", signal="resolved")
    assert resolved["aftershock_remediator_seconds_count"] == 1
    actions = samples(m, "aftershock_remediator_actions", campaign="kill-a")
    assert actions == {"aftershock_remediator_actions_total": 5}
    assert samples(m, "aftershock_remediator_seconds", campaign="kill-b") == {}
    assert samples(m, "aftershock_remediator_actions", campaign="kill-b") == {}


def test_an_etcd_campaign_is_labelled_with_the_milestones_its_trials_recorded() -> None:
    """The `milestone` label follows the subject: etcd's election and member milestones, no TiKV
    store_up; each counts the recovered trials that reached it, as the ledger holds them."""
    etcd = CampaignRef("db", "kill-etcd", "uid-e")
    m = Metrics()
    records = etcd_trials.attempts(etcd.uid)
    for record in records:
        m.attempt_finished(etcd, record)
    counts = {
        s.labels["milestone"]: s.value
        for s in families(m)["aftershock_recovery_seconds"].samples
        if s.name == "aftershock_recovery_seconds_count"
    }
    recovered = [r for r in records if r.outcome is Outcome.RECOVERED]
    assert counts == {
        name: sum(name in r.milestones for r in recovered)
        for name in etcd_trials.CHAIN
        if name != "kill_sent"
    }
    assert (counts["leader_elected"], counts["member_healthy"]) == (2, 3)  # Follower kills elect no one
    elected = samples(m, "aftershock_recovery_seconds", campaign="kill-etcd", milestone="leader_elected")
    # From the kill taking effect (kill_acked: 0.01 s, 0.11 s in the slower trial; ADR 0008).
    assert elected["aftershock_recovery_seconds_sum"] == pytest.approx((0.35 - 0.01) + (0.45 - 0.11))


def test_a_tikv_campaign_keeps_its_milestone_labels() -> None:
    m = Metrics()
    chain = ("victim_gone", "replacement_created", "replacement_scheduled", "replacement_ready", "store_up")
    offsets = {"kill_sent": 0.0, "first_unhealthy": 0.05} | {n: i + 1.0 for i, n in enumerate(chain)}
    milestones = {k: Milestone(1000.0 + v, v) for k, v in offsets.items()}
    m.attempt_finished(
        A,
        replace(recovered("uid-a", 0, 11.1), milestones=milestones | {"recovered": Milestone(1011.1, 11.1)}),
    )
    counts = families(m)["aftershock_recovery_seconds"].samples
    assert [s.labels["milestone"] for s in counts if s.name.endswith("_count")] == [*chain, "recovered"]


def test_a_deleted_campaign_s_series_are_dropped_and_every_run_goes_with_it() -> None:
    m = Metrics()
    m.attempt_finished(A, recovered("uid-a", 0, 1.0))
    m.attempt_finished(CampaignRef("db", "kill-a", "uid-a#2"), recovered("uid-a#2", 0, 2.0))
    m.campaign_phase(A, Phase.SUCCEEDED)
    m.attempt_finished(B, recovered("uid-b", 0, 1.0))
    # Both runs of A are one Campaign object: one series, labelled with its uid.
    assert samples(m, "aftershock_trial_attempts", campaign="kill-a", uid="uid-a") == {
        "aftershock_trial_attempts_total": 2
    }
    m.forget(A)
    text = m.render().decode()
    assert 'campaign="kill-a"' not in text
    assert samples(m, "aftershock_trial_attempts", campaign="kill-b") == {
        "aftershock_trial_attempts_total": 1
    }
    # The replay guard forgets it too: a Campaign of that uid replayed again counts from the ledger.
    m.replay(A, [recovered("uid-a", 0, 1.0)])
    assert samples(m, "aftershock_trial_attempts", campaign="kill-a") == {
        "aftershock_trial_attempts_total": 1
    }


def test_a_re_created_campaign_does_not_carry_on_the_old_one_s_series() -> None:
    """Same namespace and name, a new object (new uid): its own series from zero, labelled with
    its uid, even when this process never saw the old one deleted."""
    m = Metrics()
    m.attempt_finished(A, recovered("uid-a", 0, 1.0))
    m.attempt_finished(A, recovered("uid-a", 1, 1.0))
    again = CampaignRef("db", "kill-a", "uid-a2")
    m.attempt_finished(again, recovered("uid-a2", 0, 1.0))
    counts = [
        (s.labels["uid"], s.value)
        for s in families(m)["aftershock_trial_attempts"].samples
        if s.labels["campaign"] == "kill-a"
    ]
    assert counts == [("uid-a2", 1)]
    # A late word about the old object does not bring its series back over the new one's.
    m.forget(A)
    assert samples(m, "aftershock_trial_attempts", campaign="kill-a", uid="uid-a2") == {
        "aftershock_trial_attempts_total": 1
    }


async def test_start_up_replay_skips_campaigns_the_ledger_records_deleted(tmp_path: Any) -> None:
    from aftershock.ledger import Ledger

    async with await Ledger.open(tmp_path / "ledger.db") as ledger:
        for ref in (A, B):
            await ledger.ensure_campaign(ref, {}, requested_trials=1, seed="s", now=1000.0)
            await ledger.set_campaign_state(ref.uid, Phase.SUCCEEDED, Verdict.PASS, now=1001.0)
        await ledger.mark_deleted(A.uid, "deleted", now=1002.0)
        m = Metrics()
        await m.replay_ledger(ledger)
    text = m.render().decode()
    assert 'campaign="kill-b"' in text
    assert 'campaign="kill-a"' not in text


def _from(peer: str, path: str) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        (peer, 40000) if key == "peername" else default
    )
    return make_mocked_request("GET", path, transport=transport)


@pytest.mark.parametrize("peer", ["10.0.0.7", "192.168.1.2", "fd00::1", "::ffff:10.0.0.7"])
async def test_reports_are_refused_to_clients_off_loopback(peer: str) -> None:
    """Issue 21 item 4: a pod elsewhere in the cluster reads /metrics, never the reports."""

    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response(text="report")

    with pytest.raises(web.HTTPForbidden) as refused:
        await metrics.loopback_only(_from(peer, "/campaigns/ns/name"), handler)
    assert "port-forward" in (refused.value.text or "")
    with pytest.raises(web.HTTPForbidden):
        await metrics.loopback_only(_from(peer, "/campaigns"), handler)
    assert (await metrics.loopback_only(_from(peer, "/metrics"), handler)).status == 200
    assert metrics.loopback_only in metrics.build_app(Metrics(), _NoLedger()).middlewares  # type: ignore[arg-type]


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"])
async def test_reports_are_served_on_loopback(peer: str) -> None:
    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response(text="report")

    assert (await metrics.loopback_only(_from(peer, "/campaigns/ns/name"), handler)).status == 200
