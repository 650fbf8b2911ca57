"""Detection from the alerting chain, on a real ledger file and a real HTTP server: the receiver
refuses what is not Alertmanager with the token, routes each alert by its namespace label and
the Campaign's matchers to the trial under way, and the report shows time to detect."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from aftershock import export, page, receiver, report
from aftershock.alerting import PayloadError, parse_notification
from aftershock.engine.alerts import AlertInbox
from aftershock.ledger import Ledger
from aftershock.model import (
    ALERT_FIRING,
    ALERT_RESOLVED,
    CampaignRef,
    Milestone,
    Outcome,
    Victim,
    parse_detection,
)

REF = CampaignRef(namespace="db", name="etcd-alerts", uid="uid-db")
OTHER = CampaignRef(namespace="other", name="etcd-alerts", uid="uid-other")
SPEC: dict[str, Any] = {
    "subject": {"kind": "Etcd", "selector": {"matchLabels": {"app": "etcd"}}},
    "detection": {"alertMatchers": [{"name": "alertname", "value": "EtcdMemberDown"}]},
}
_PARSED = parse_detection(SPEC["detection"])
assert _PARSED is not None
DETECTION = _PARSED
TOKEN = "s3cret-token-for-tests-0123456789"


class ManualClock:
    def __init__(self) -> None:
        self.mono = 100.0

    def wall(self) -> float:
        return 1_000_000.0 + self.mono

    def monotonic(self) -> float:
        return self.mono


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "aftershock",
        "groupKey": "{}:{}",
        "alerts": list(alerts),
    }


def alert(
    status: str = "firing",
    *,
    namespace: str = "db",
    name: str = "EtcdMemberDown",
    fingerprint: str = "a1b2c3",
    starts: str = "2026-12-06T18:00:00.123456789Z",
    ends: str = "0001-01-01T00:00:00Z",
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "namespace": namespace, "instance": "127.0.0.1:2379"},
        "annotations": {},
        "startsAt": starts,
        "endsAt": ends,
        "fingerprint": fingerprint,
    }


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async with await Ledger.open(tmp_path / "ledger.db") as opened:
        for ref in (REF, OTHER):
            await opened.ensure_campaign(ref, SPEC, requested_trials=2, seed="1", now=1.0)
        yield opened


async def begin(ledger: Ledger, ref: CampaignRef, index: int) -> int:
    attempt_id = await ledger.begin_attempt(
        ref.uid,
        index,
        victims=[Victim(name="etcd-0", uid="pod-0", node="real-0", restart_count=0)],
        victim_seed="s",
        initial_state={},
        gate_passed=Milestone(1.0, -1.0),
        now=1.0,
    )
    await ledger.mark_kill_sent(attempt_id, Milestone(2.0, 0.0), None)
    return attempt_id


async def finish(ledger: Ledger, attempt_id: int) -> None:
    await ledger.finish_attempt(
        attempt_id,
        Outcome.RECOVERED,
        milestones={"recovered": Milestone(5.0, 3.0)},
        final_state={},
        error=None,
        now=9.0,
    )


@pytest.fixture
async def served(
    ledger: Ledger, tmp_path: Path
) -> AsyncIterator[tuple[TestClient[Any, Any], AlertInbox, ManualClock]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    clock = ManualClock()
    inbox = AlertInbox(ledger, clock)
    app = receiver.build_app(inbox.deliver, receiver.TokenFile(token_file))
    async with TestClient(TestServer(app)) as client:
        yield client, inbox, clock


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the payload -----------------------------------------------------------------------------


def test_go_times_with_nanoseconds_and_the_zero_time_parse() -> None:
    (a,) = parse_notification(notification(alert(starts="2026-12-06T18:00:00.123456789Z")))
    assert a.firing
    assert a.ends_at is None
    assert a.starts_at == pytest.approx(1796580000.123456, abs=1e-6)
    (r,) = parse_notification(notification(alert("resolved", ends="2026-12-06T18:00:05.5+00:00")))
    assert not r.firing
    assert r.ends_at == pytest.approx(1796580005.5)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "JSON object"),
        ({"version": "3", "alerts": []}, "version"),
        (notification(alert(status="pending")), "alerts[0].status"),
        (notification(alert(fingerprint="not hex!")), "alerts[0].fingerprint"),
        (notification(alert(starts="yesterday")), "alerts[0].startsAt"),
        (notification({**alert(), "labels": {"alertname": 3}}), "alerts[0].labels"),
    ],
)
def test_a_body_that_is_no_notification_is_refused_naming_what(body: Any, words: str) -> None:
    with pytest.raises(PayloadError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_notification(body)


# --- the receiver over HTTP ------------------------------------------------------------------


async def test_without_the_token_nothing_is_recorded(
    served: tuple[TestClient[Any, Any], AlertInbox, ManualClock], ledger: Ledger
) -> None:
    client, inbox, clock = served
    with inbox.listen(REF, DETECTION) as campaign:
        attempt = await begin(ledger, REF, 0)
        campaign.fault_injected(attempt, clock.mono)
        clock.mono += 2
        body = notification(alert())
        for headers in ({}, auth("wrong-token-of-enough-length"), {"Authorization": TOKEN}):
            resp = await client.post(receiver.PATH, json=body, headers=headers)
            assert resp.status == 401, headers
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        resp = await client.post(receiver.PATH, data=b"{not json", headers=auth())
        assert resp.status == 400
        assert "not an Alertmanager webhook notification" in await resp.text()
    assert await ledger.alert_notices(REF.uid) == []


async def test_a_trials_alert_fires_and_resolves_into_milestones_in_the_order_received(
    served: tuple[TestClient[Any, Any], AlertInbox, ManualClock], ledger: Ledger
) -> None:
    client, inbox, clock = served
    with inbox.listen(REF, DETECTION) as campaign:
        attempt = await begin(ledger, REF, 0)
        kill = clock.mono
        campaign.fault_injected(attempt, kill)
        clock.mono = kill + 2.5
        resp = await client.post(receiver.PATH, json=notification(alert()), headers=auth())
        assert resp.status == 200
        assert await resp.json() == {"alerts": 1, "recorded": 1, "unclaimed": 0}
        # Alertmanager repeats a firing alert (repeat_interval): the first one stays the milestone.
        clock.mono = kill + 4.0
        await client.post(receiver.PATH, json=notification(alert()), headers=auth())
        clock.mono = kill + 7.25
        ends = "2026-12-06T18:00:06Z"
        await client.post(receiver.PATH, json=notification(alert("resolved", ends=ends)), headers=auth())
        await finish(ledger, attempt)
    (record,) = await ledger.attempts(REF.uid)
    assert record.milestones[ALERT_FIRING] == Milestone(clock.wall() - 4.75, 2.5)
    assert record.milestones[ALERT_RESOLVED].offset == pytest.approx(7.25)
    notices = await ledger.alert_notices(REF.uid)
    assert [(n.alert.firing, n.offset) for n in notices] == [(True, 2.5), (True, 4.0), (False, 7.25)]
    assert notices[2].alert.ends_at == pytest.approx(1796580006.0)
    assert notices[0].received_at == pytest.approx(1_000_000.0 + kill + 2.5)

    data = await report.load_report(ledger, REF.namespace, REF.name)
    summary = report.to_json_value(data)["summary"]["detection"]
    assert summary["alerted"] == 1
    assert summary["timeToDetectP50Seconds"] == pytest.approx(2.5)
    trial = report.to_json_value(data)["trials"][0]
    assert trial["timeToAlertSeconds"] == pytest.approx(2.5)
    assert [n["status"] for n in trial["alertNotifications"]] == ["firing", "firing", "resolved"]
    table = report.render_table(data)
    assert "alert-resolved" in table
    assert "time to detect p50=2.500" in table
    assert "time to detect p50" in page.render_html(data)
    (row,) = [export.attempt_row(data.campaign, a) for a in data.attempts]
    assert row["timeToAlertSeconds"] == pytest.approx(2.5)
    assert row["timeToAlertResolvedSeconds"] == pytest.approx(7.25)


async def test_another_namespaces_alert_never_lands_on_this_campaign(
    served: tuple[TestClient[Any, Any], AlertInbox, ManualClock], ledger: Ledger
) -> None:
    client, inbox, clock = served
    with inbox.listen(REF, DETECTION) as mine, inbox.listen(OTHER, DETECTION) as theirs:
        a_mine, a_theirs = await begin(ledger, REF, 0), await begin(ledger, OTHER, 0)
        mine.fault_injected(a_mine, clock.mono)
        theirs.fault_injected(a_theirs, clock.mono)
        clock.mono += 1
        body = notification(
            alert(namespace="other", fingerprint="0f"),
            alert(namespace="", fingerprint="1f"),  # no namespace: nobody's
            alert(name="EtcdNoLeader", fingerprint="2f"),  # not this Campaign's matchers
        )
        resp = await client.post(receiver.PATH, json=body, headers=auth())
        assert await resp.json() == {"alerts": 3, "recorded": 1, "unclaimed": 2}
    assert await ledger.alert_notices(REF.uid) == []
    (theirs_notice,) = await ledger.alert_notices(OTHER.uid)
    assert theirs_notice.alert.labels["namespace"] == "other"


async def test_an_alert_firing_before_the_fault_is_not_its_detection(
    served: tuple[TestClient[Any, Any], AlertInbox, ManualClock], ledger: Ledger
) -> None:
    client, inbox, clock = served
    with inbox.listen(REF, DETECTION) as campaign:
        # Between trials: claimed, but no trial is under way, so nothing is recorded.
        resp = await client.post(receiver.PATH, json=notification(alert()), headers=auth())
        assert await resp.json() == {"alerts": 1, "recorded": 0, "unclaimed": 1}
        attempt = await begin(ledger, REF, 0)
        campaign.fault_injected(attempt, clock.mono)
        clock.mono += 1
        # The same alert repeated after the fault (same fingerprint, same startsAt): still the
        # old incident. A new one (new startsAt) is this trial's.
        await client.post(receiver.PATH, json=notification(alert()), headers=auth())
        clock.mono += 1
        fresh = alert(starts="2026-12-06T18:10:00Z")
        await client.post(receiver.PATH, json=notification(fresh), headers=auth())
        await finish(ledger, attempt)
    (record,) = await ledger.attempts(REF.uid)
    assert record.milestones[ALERT_FIRING].offset == pytest.approx(2.0)


async def test_the_token_file_is_read_again_when_the_secret_rotates(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    token = receiver.TokenFile(path)
    assert token.accepts(f"Bearer {TOKEN}")
    path.write_text("a-new-token-after-rotation-000")
    assert not token.accepts(f"Bearer {TOKEN}")
    assert token.accepts("Bearer a-new-token-after-rotation-000")
    path.write_text("short")
    with pytest.raises(receiver.TokenError, match="at least 16"):
        token.current()


async def test_a_body_over_the_limit_is_refused(
    served: tuple[TestClient[Any, Any], AlertInbox, ManualClock],
) -> None:
    client, _, _ = served
    big = json.dumps(notification(*[alert(fingerprint=f"{i:x}") for i in range(1001)]))
    resp = await client.post(receiver.PATH, data=big, headers={**auth(), "Content-Type": "application/json"})
    assert resp.status == 400
    assert "at most 1000 alerts" in await resp.text()
    resp = await client.post(receiver.PATH, data=b"x" * (receiver.MAX_BODY + 1), headers=auth())
    assert resp.status == 413
