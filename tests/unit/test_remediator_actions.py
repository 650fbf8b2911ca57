"""The remediator's actions read from the API without its help: the audit receiver (a real HTTP
server) refuses what has no token or is no EventList, keeps only completed writes of the
Campaign's identities around its subject, never lets one namespace's writes reach another's
Campaign, and attributes Node writes by the victims' nodes; managedFields changes of a named
field manager on a subject pod are actions too."""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tests.unit.fakes import FAST_SETTINGS, FakeCluster, FakeLock, ListSink, fast_campaign

from aftershock import receiver
from aftershock.auditing import AuditPayloadError, parse_event_list
from aftershock.engine.actions import AuditHorizon, AuditInbox, CampaignActions
from aftershock.engine.podwatch import PodWatches
from aftershock.engine.runner import CampaignRunner
from aftershock.engine.view import PodView, next_observation
from aftershock.errors import ApiError
from aftershock.kube import decode
from aftershock.kube.decode import decode_managed, decode_pod
from aftershock.model import (
    ACTION_SOURCE_AUDIT,
    ACTION_SOURCE_MANAGED_FIELDS,
    CampaignRef,
    CampaignSpec,
    ManagedFields,
    parse_campaign_spec,
    remediator_actions,
)

REF = CampaignRef(namespace="db", name="heal", uid="uid-db")
OTHER = CampaignRef(namespace="other", name="heal", uid="uid-other")
TOKEN = "audit-token-for-tests-0123456789"
HEALER = "system:serviceaccount:db:healer"
OTHER_HEALER = "system:serviceaccount:other:healer"
#: The fault went in at this wall time (2026-12-06T20:00:00Z) and monotonic 100.
KILL_WALL = 1796587200.0


class ManualClock:
    def __init__(self) -> None:
        self.mono = 100.0

    def wall(self) -> float:
        return KILL_WALL - 100.0 + self.mono

    def monotonic(self) -> float:
        return self.mono


def stamp(offset: float) -> str:
    """An audit MicroTime `offset` seconds after the fault."""
    when = datetime.datetime.fromtimestamp(KILL_WALL, datetime.UTC) + datetime.timedelta(seconds=offset)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(
    *,
    user: str = HEALER,
    verb: str = "patch",
    resource: str = "pods",
    namespace: str | None = "db",
    name: str = "tikv-1",
    at: float = 1.5,
    stage: str = "ResponseComplete",
    code: int = 200,
    group: str = "",
    subresource: str | None = None,
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "name": name, "apiVersion": "v1", "apiGroup": group}
    if namespace is not None:
        ref["namespace"] = namespace
    if subresource:
        ref["subresource"] = subresource
    body: dict[str, Any] = {
        "level": "Request",
        "auditID": f"id-{verb}-{name}-{at}",
        "stage": stage,
        "verb": verb,
        "user": {"username": user, "groups": ["system:serviceaccounts"]},
        "objectRef": ref,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": stamp(at - 0.004),
        "stageTimestamp": stamp(at),
        "userAgent": "healer/1.0",
    }
    if request is not None:
        body["requestObject"] = request
    return body


def batch(*items: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": list(items)}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], AuditInbox, ManualClock]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    clock = ManualClock()
    inbox = AuditInbox(clock)
    app = receiver.build_audit_app(inbox.deliver, receiver.TokenFile(token_file, "audit receiver"))
    async with TestClient(TestServer(app)) as client:
        yield client, inbox, clock


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the batch -------------------------------------------------------------------------------


def test_only_completed_writes_are_kept_with_microsecond_times() -> None:
    parsed = parse_event_list(
        batch(
            event(stage="RequestReceived"),
            event(verb="get"),
            event(verb="watch"),
            event(verb="delete", at=2.000123),
            event(verb="patch", at=3.5),
        )
    )

    assert [(e.verb, round(e.completed - KILL_WALL, 6)) for e in parsed.writes] == [
        ("delete", 2.000123),
        ("patch", 3.5),
    ]
    assert parsed.writes[0].received == pytest.approx(KILL_WALL + 1.996123, abs=1e-6)
    assert parsed.newest == pytest.approx(KILL_WALL + 3.5, abs=1e-6)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "expected a JSON object"),
        ({"kind": "PodList", "apiVersion": "v1"}, "expected kind EventList"),
        ({"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "items": []}, "audit.k8s.io/v1"),
        ({**batch(), "items": {"a": 1}}, "items: expected a list"),
        ({**batch(), "items": ["not an event"]}, "items[0]: expected an object"),
        (batch({**event(), "stageTimestamp": "yesterday"}), "items[0].stageTimestamp"),
        (batch({**event(), "stageTimestamp": "2026-12-06T20:00:00"}), "no time zone"),
        (batch({**event(), "responseStatus": {"code": "200"}}), "responseStatus.code"),
        (batch({**event(), "objectRef": ["pods"]}), "items[0].objectRef: expected an object"),
        (batch({**event(), "user": {"username": 7}}), "user.username: expected a string"),
    ],
)
def test_a_body_that_is_no_event_list_is_refused_naming_what(body: Any, words: str) -> None:
    with pytest.raises(AuditPayloadError) as info:
        parse_event_list(body)
    assert words in str(info.value)


def test_the_change_is_the_patch_body_or_the_response_code() -> None:
    patched = parse_event_list(batch(event(request={"metadata": {"labels": {"healed": "yes"}}}))).writes[0]
    deleted = parse_event_list(batch(event(verb="delete", code=200))).writes[0]

    assert patched.change() == '{"metadata":{"labels":{"healed":"yes"}}}; HTTP 200'
    assert deleted.change() == "HTTP 200"


# --- the receiver over HTTP ------------------------------------------------------------------


async def test_without_the_token_nothing_is_recorded(
    served: tuple[TestClient[Any, Any], AuditInbox, ManualClock],
) -> None:
    client, inbox, _ = served
    with inbox.listen(REF, frozenset({HEALER}), frozenset()) as actions:
        actions.fault_injected(100.0, KILL_WALL, frozenset())
        for headers in ({}, auth("wrong-token-wrong-token-000"), {"Authorization": TOKEN}):
            resp = await client.post(receiver.AUDIT_PATH, json=batch(event()), headers=headers)
            assert resp.status == 401
            assert "Bearer" in resp.headers["WWW-Authenticate"]
        assert actions.trial(100.0, 200.0) == ()


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[]",
        b'{"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [1]}',
        b"\xff\xfe",
    ],
)
async def test_a_malformed_batch_is_a_400_and_the_receiver_goes_on(
    served: tuple[TestClient[Any, Any], AuditInbox, ManualClock], data: bytes
) -> None:
    client, inbox, _ = served
    resp = await client.post(receiver.AUDIT_PATH, data=data, headers=auth())
    assert resp.status == 400
    assert "EventList" in await resp.text()
    with inbox.listen(REF, frozenset({HEALER}), frozenset()) as actions:
        actions.fault_injected(100.0, KILL_WALL, frozenset())
        resp = await client.post(receiver.AUDIT_PATH, json=batch(event()), headers=auth())
        assert resp.status == 200
        assert await resp.json() == {"writes": 1, "recorded": 1}


async def test_a_batch_over_the_limit_is_refused(
    served: tuple[TestClient[Any, Any], AuditInbox, ManualClock],
) -> None:
    client, _, _ = served
    resp = await client.post(receiver.AUDIT_PATH, data=b"x" * (receiver.MAX_AUDIT_BODY + 1), headers=auth())
    assert resp.status == 413


async def test_the_remediators_writes_around_the_subject_are_its_actions_in_time_order(
    served: tuple[TestClient[Any, Any], AuditInbox, ManualClock],
) -> None:
    client, inbox, _ = served
    with inbox.listen(REF, frozenset({HEALER}), frozenset()) as actions:
        resp = await client.post(receiver.AUDIT_PATH, json=batch(event(at=0.2)), headers=auth())
        assert await resp.json() == {"writes": 1, "recorded": 0}  # no trial under way yet
        actions.fault_injected(100.0, KILL_WALL, frozenset({"node-a"}))
        body = batch(
            event(verb="delete", name="tikv-0", at=1.25),
            event(user="system:serviceaccount:db:someone-else", at=1.3),  # not its identity
            event(resource="configmaps", name="cm", at=1.4),  # not around the subject
            event(
                group="apps", resource="statefulsets", name="tikv", at=1.6, request={"spec": {"replicas": 3}}
            ),
            event(resource="nodes", namespace=None, name="node-a", at=2.0, request={"spec": {"taints": []}}),
            event(resource="nodes", namespace=None, name="node-b", at=2.1),  # no victim ran there
            event(resource="pods", subresource="eviction", verb="create", name="tikv-2", at=2.5, code=429),
            event(at=-0.5),  # before the fault
        )
        resp = await client.post(receiver.AUDIT_PATH, json=body, headers=auth())
        assert await resp.json() == {"writes": 8, "recorded": 4}
        found = actions.trial(100.0, 110.0)
        assert actions.last_action_mono() == pytest.approx(102.5, abs=1e-6)

    assert [(a.verb, a.involved, round(a.offset, 6)) for a in found] == [
        ("delete", "pods db/tikv-0", 1.25),
        ("patch", "statefulsets db/tikv", 1.6),
        ("patch", "nodes node-a", 2.0),
        ("create", "pods/eviction db/tikv-2", 2.5),
    ]
    assert {a.source for a in found} == {ACTION_SOURCE_AUDIT}
    assert {a.identity for a in found} == {HEALER}
    assert found[3].change == "HTTP 429"
    assert found[1].change.startswith('{"spec":{"replicas":3}}')
    # As the attempt's final state keeps them, and as everything downstream reads them.
    again = remediator_actions({"remediatorActions": [a.as_json() for a in reversed(found)]})
    assert again == tuple(found)


async def test_another_namespaces_writes_never_land_on_this_campaign(
    served: tuple[TestClient[Any, Any], AuditInbox, ManualClock],
) -> None:
    client, inbox, _ = served
    # Each Campaign names the other's ServiceAccount too: the namespace still decides.
    both = frozenset({HEALER, OTHER_HEALER})
    with inbox.listen(REF, both, frozenset()) as mine, inbox.listen(OTHER, both, frozenset()) as theirs:
        mine.fault_injected(100.0, KILL_WALL, frozenset({"node-a"}))
        theirs.fault_injected(100.0, KILL_WALL, frozenset({"node-b"}))
        body = batch(
            event(user=OTHER_HEALER, namespace="other", name="tikv-0", verb="delete", at=1.0),
            event(user=HEALER, namespace="db", name="tikv-1", verb="delete", at=1.1),
            event(user=OTHER_HEALER, resource="nodes", namespace=None, name="node-b", at=1.2),
        )
        resp = await client.post(receiver.AUDIT_PATH, json=body, headers=auth())
        assert await resp.json() == {"writes": 3, "recorded": 3}
        assert [a.involved for a in mine.trial(100.0, 110.0)] == ["pods db/tikv-1"]
        assert [a.involved for a in theirs.trial(100.0, 110.0)] == ["pods other/tikv-0", "nodes node-b"]


async def test_a_trial_waits_for_the_batch_that_covers_its_end() -> None:
    clock = ManualClock()
    inbox = AuditInbox(clock)
    with inbox.listen(REF, frozenset({HEALER}), frozenset()) as actions:
        actions.fault_injected(100.0, KILL_WALL, frozenset())
        # No batch ever came (no webhook configured): nothing to wait for.
        assert await actions.caught_up(105.0, timeout=5.0)
        await inbox.deliver(parse_event_list(batch(event(at=1.0))))
        assert not await actions.caught_up(105.0, timeout=0.05)  # delivered up to +1 s only
        waiting = asyncio.create_task(actions.caught_up(105.0, timeout=5.0))
        await asyncio.sleep(0.01)
        await inbox.deliver(parse_event_list(batch(event(at=5.5), event(at=4.0))))
        assert await waiting
        assert [round(a.offset, 3) for a in actions.trial(100.0, 105.0)] == [1.0, 4.0]


# --- managedFields ---------------------------------------------------------------------------


POD: dict[str, Any] = {
    "metadata": {
        "name": "tikv-1",
        "namespace": "db",
        "uid": "u1",
        "managedFields": [
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-12-06T19:59:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {}},
                },
            }
        ],
    },
    "spec": {},
    "status": {},
}


def with_manager(pod: dict[str, Any], manager: str, fields: dict[str, Any], time: str) -> dict[str, Any]:
    changed = copy.deepcopy(pod)
    changed["metadata"]["managedFields"].append(
        {
            "manager": manager,
            "operation": "Update",
            "time": time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        }
    )
    return changed


def test_managed_fields_decode_to_their_field_paths() -> None:
    entries = decode_managed(POD["metadata"]["managedFields"])
    assert entries[0].manager == "kube-controller-manager"
    assert entries[0].fields == ("metadata.labels.app", "spec.containers")
    assert entries[0].time_text == "2026-12-06T19:59:00Z"
    assert decode_managed("nonsense") == ()


#: A real pod with managedFields, from the test bed's API server (tests/data/kube/README.md).
CAPTURED_POD = Path(__file__).resolve().parents[1] / "data" / "kube" / "pod-managed-fields.json"


def _at(second: int) -> str:
    """A managedFields time `second` seconds after the fault (whole seconds, as the API's)."""
    return datetime.datetime.fromtimestamp(KILL_WALL + second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_managed_fields_are_decoded_only_where_a_campaign_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shared pod watch decodes every pod event, and managedFields only in a namespace where
    a Campaign names a field manager (`ManagedFields.settle`): elsewhere, and for a Campaign
    that names none, the hot path pays nothing for them and keeps none."""
    decoded: list[str] = []
    real = decode.decode_managed

    def counting(raw: Any) -> Any:
        decoded.append(str(raw[0]["manager"]) if isinstance(raw, list) and raw else "")
        return real(raw)

    monkeypatch.setattr(decode, "decode_managed", counting)
    spec = _spec({"fieldManagers": ["reference-remediator"]})
    captured = json.loads(CAPTURED_POD.read_text())
    # The remediator's entry (the capture's 4th) was written before the fault.
    captured["metadata"]["managedFields"][3]["time"] = _at(-60)
    raws: dict[tuple[str, str], dict[str, Any]] = {}
    for ns, name in (("db", "store-0"), ("db", "store-1"), ("other", "store-0")):
        raw = copy.deepcopy(captured)
        raw["metadata"].update(
            namespace=ns, name=name, uid=f"{ns}-{name}", labels=dict(spec.subject.selector.match_labels)
        )
        raws[(ns, name)] = raw
    clock = ManualClock()
    cluster = FakeCluster()
    for raw in raws.values():
        cluster.add_pod(decode_pod(raw))
    # One watch of every namespace, two views: the Campaign's in db, another in `other`.
    watches = PodWatches(cluster, clock, scope="cluster")
    view = PodView(watches, "db", spec.subject.selector)
    elsewhere = PodView(watches, "other", spec.subject.selector)
    # A Campaign with a remediator but no field manager named, its trial running.
    unnamed = CampaignActions(REF, frozenset({HEALER}), frozenset(), clock, AuditHorizon())
    unnamed.fault_injected(100.0, KILL_WALL, frozenset())
    view.on_change = unnamed.pod_changed
    tasks = [asyncio.create_task(v.run()) for v in (view, elsewhere)]
    try:
        assert await view.wait_synced(5)
        assert await elsewhere.wait_synced(5)
        with view.subscribe() as seen, elsewhere.subscribe() as seen_elsewhere:

            async def change(ns: str, name: str, entry: int, second: int, field: str = "") -> None:
                raw = raws[(ns, name)]
                raw["metadata"]["managedFields"][entry]["time"] = _at(second)
                if field:
                    raw["metadata"]["managedFields"][entry]["fieldsV1"]["f:metadata"]["f:labels"][field] = {}
                cluster.modify_pod(decode_pod(copy.deepcopy(raw)))
                obs = await next_observation(seen if ns == "db" else seen_elsewhere, 5)
                assert obs is not None
                assert (obs.type, obs.pod.name) == ("MODIFIED", name)

            # Each change: the kubelet's status write (the capture's 3rd entry).
            for second in range(1, 11):
                for ns, name in raws:
                    await change(ns, name, 2, second)
            assert decoded == [], "managedFields decoded with no field manager named"
            kept = [p.managed for p in (*view.pods(), *elsewhere.pods())]
            assert all(isinstance(m, ManagedFields) and not m.known for m in kept), kept
            assert not unnamed.trial(100.0, 200.0)

            # A Campaign naming the remediator's field manager, its trial running, in db only.
            named = CampaignActions(
                REF, frozenset(), frozenset({"reference-remediator"}), clock, AuditHorizon()
            )
            view.on_change, view.reads_managed_fields = named.pod_changed, True
            named.fault_injected(100.0, KILL_WALL, frozenset())
            clock.mono = 101.5
            # store-0: the kubelet writes; the remediator's entry predates the fault: no action
            # (the pod before was kept released: the entry's own time says it is old).
            await change("db", "store-0", 2, 11)
            # store-1: the remediator's first write after the fault, against a released pod.
            await change("db", "store-1", 3, 1, "f:healed")
            # store-0 again, now diffed against decoded entries: the remediator adds a label.
            clock.mono = 102.0
            await change("db", "store-0", 3, 2, "f:healed")
            # The other namespace's pods still cost nothing.
            await change("other", "store-0", 3, 2, "f:healed")
            assert decoded == ["kube-controller-manager"] * 3
            found = named.trial(100.0, 200.0)
            assert [(a.involved, a.identity, a.source, a.offset) for a in found] == [
                ("pods db/store-1", "reference-remediator", ACTION_SOURCE_MANAGED_FIELDS, 1.5),
                ("pods db/store-0", "reference-remediator", ACTION_SOURCE_MANAGED_FIELDS, 2.0),
            ]
            # Against a released pod every field of the entry; against a decoded one the new one.
            assert "metadata.labels.remediation.example/checked" in found[0].change
            assert found[1].change == "metadata.labels.healed"
            other_managed = elsewhere.pods()[0].managed
            assert isinstance(other_managed, ManagedFields)
            assert not other_managed.known
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cluster.close()


async def test_a_write_during_a_broken_watch_is_found_at_the_relist_on_a_released_pod() -> None:
    """A pod kept released (before the Campaign read managedFields) whose only change, the
    remediator's label, came while the watch was broken: the relist passes it on."""
    spec = _spec({"fieldManagers": ["reference-remediator"]})
    raw = json.loads(CAPTURED_POD.read_text())
    raw["metadata"]["managedFields"][3]["time"] = _at(-60)
    raw["metadata"].update(namespace="db", uid="db-store-0", labels=dict(spec.subject.selector.match_labels))
    clock = ManualClock()
    cluster = FakeCluster()
    cluster.add_pod(decode_pod(raw))
    view = PodView(PodWatches(cluster, clock), "db", spec.subject.selector)
    task = asyncio.create_task(view.run())
    try:
        assert await view.wait_synced(5)
        named = CampaignActions(REF, frozenset(), frozenset({"reference-remediator"}), clock, AuditHorizon())
        view.on_change, view.reads_managed_fields = named.pod_changed, True
        named.fault_injected(100.0, KILL_WALL, frozenset())
        clock.mono = 102.0
        cluster.break_watches(ApiError("stream reset", 500))
        raw["metadata"]["managedFields"][3]["time"] = _at(1)
        raw["metadata"]["managedFields"][3]["fieldsV1"]["f:metadata"]["f:labels"]["f:healed"] = {}
        cluster.modify_pod(decode_pod(copy.deepcopy(raw)))
        for _ in range(500):
            if named.trial(100.0, 200.0):
                break
            await asyncio.sleep(0.01)
        found = named.trial(100.0, 200.0)
        assert [(a.involved, a.identity) for a in found] == [("pods db/store-0", "reference-remediator")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await cluster.close()


def test_managed_fields_decoded_late_equal_what_eager_decoding_gives() -> None:
    raw = json.loads(CAPTURED_POD.read_text())["metadata"]["managedFields"]
    lazy = ManagedFields(copy.deepcopy(raw), decode_managed)
    other = ManagedFields(copy.deepcopy(raw), decode_managed)
    assert lazy == other  # raw against raw
    assert not lazy.decoded  # ... compared without decoding
    assert lazy == decode_managed(raw)
    assert lazy.decoded
    assert [e.manager for e in lazy][3] == "reference-remediator"
    assert len(lazy) == 4
    assert other == lazy  # one decoded, one not
    assert ManagedFields("nonsense", decode_managed) == ()
    changed = copy.deepcopy(raw)
    changed[3]["fieldsV1"]["f:metadata"]["f:labels"]["f:more"] = {}
    assert ManagedFields(changed, decode_managed) != ManagedFields(copy.deepcopy(raw), decode_managed)
    released = ManagedFields(copy.deepcopy(raw), decode_managed)
    released.settle(keep=False)
    assert not released.known
    assert list(released) == []
    assert released == lazy  # unknown: equal to anything (nobody reads it)
    kept = ManagedFields(copy.deepcopy(raw), decode_managed)
    kept.settle(keep=True)
    assert kept.decoded
    assert kept == lazy


def test_a_named_field_managers_new_or_changed_entry_is_an_action() -> None:
    clock = ManualClock()
    actions = CampaignActions(REF, frozenset(), frozenset({"healer"}), clock, AuditHorizon())
    before = decode_pod(POD)
    actions.fault_injected(100.0, KILL_WALL, frozenset())
    labelled = with_manager(
        POD, "healer", {"f:metadata": {"f:labels": {"f:healed": {}}}}, "2026-12-06T20:00:01Z"
    )
    actions.pod_changed(before, decode_pod(labelled), 101.25, KILL_WALL + 1.25)
    # The same entry seen again (another field changed by someone else): no new action.
    actions.pod_changed(decode_pod(labelled), decode_pod(labelled), 101.5, KILL_WALL + 1.5)
    # Another manager's write is not the remediator's.
    other = with_manager(labelled, "kubectl-patch", {"f:spec": {"f:x": {}}}, "2026-12-06T20:00:02Z")
    actions.pod_changed(decode_pod(labelled), decode_pod(other), 102.0, KILL_WALL + 2.0)
    # The remediator writes again: its entry's fields grow.
    again = copy.deepcopy(other)
    again["metadata"]["managedFields"][1]["fieldsV1"]["f:metadata"]["f:annotations"] = {"f:why": {}}
    again["metadata"]["managedFields"][1]["time"] = "2026-12-06T20:00:03Z"
    actions.pod_changed(decode_pod(other), decode_pod(again), 103.0, KILL_WALL + 3.0)

    found = actions.trial(100.0, 110.0)
    assert [(a.identity, a.source, a.offset, a.change) for a in found] == [
        ("healer", ACTION_SOURCE_MANAGED_FIELDS, 1.25, "metadata.labels.healed"),
        ("healer", ACTION_SOURCE_MANAGED_FIELDS, 3.0, "metadata.annotations.why"),
    ]
    assert found[0].involved == "pods db/tikv-1"
    assert "2026-12-06T20:00:01Z" in found[0].message


# --- whose writes: the Campaign's identities, the workload's ServiceAccount by default ----------


class FakeWorkloads:
    def __init__(self, sa: str | None) -> None:
        self.sa = sa
        self.asked: list[tuple[str, str, str]] = []

    async def service_account(self, kind: str, namespace: str, name: str) -> str:
        self.asked.append((kind, namespace, name))
        if self.sa is None:
            raise ApiError("deployments.apps healer is forbidden", 403)
        return self.sa


def _runner(workloads: FakeWorkloads, inbox: AuditInbox | None) -> CampaignRunner:
    return CampaignRunner(
        ref=REF,
        generation=1,
        spec_source=dict,
        existing_status={},
        ledger=None,  # type: ignore[arg-type]  # not reached: only the actions' scope is used
        pods=FakeCluster(),
        probe_factory=lambda spec, ns: None,
        lock=FakeLock(),
        status=ListSink(),
        events=ListSink(),
        clock=ManualClock(),
        settings=FAST_SETTINGS,
        audit_inbox=inbox,
        workloads=workloads,
    )


def _spec(identities: dict[str, Any] | None) -> CampaignSpec:
    rem: dict[str, Any] = {"kind": "Deployment", "name": "healer"}
    if identities is not None:
        rem["identities"] = identities
    return parse_campaign_spec({**fast_campaign(), "remediator": rem})


@pytest.mark.parametrize(
    ("identities", "sa", "usernames", "asked"),
    [
        # No ServiceAccount named: the workload's own is the identity, field managers beside it.
        ({"fieldManagers": ["fm"]}, "healer-sa", {"system:serviceaccount:db:healer-sa"}, True),
        (None, "healer-sa", {"system:serviceaccount:db:healer-sa"}, True),
        # Named: the workload is not asked.
        ({"serviceAccounts": ["ops/agent"]}, "healer-sa", {"system:serviceaccount:ops:agent"}, False),
        # It cannot be read (RBAC): nothing by ServiceAccount is recorded, the run goes on.
        ({"users": ["alice"], "fieldManagers": ["fm"]}, None, {"alice"}, True),
    ],
)
async def test_the_remediators_identities_and_its_workloads_service_account(
    identities: dict[str, Any] | None, sa: str | None, usernames: set[str], asked: bool
) -> None:
    workloads = FakeWorkloads(sa)
    inbox = AuditInbox(ManualClock())
    runner = _runner(workloads, inbox)
    spec = _spec(identities)
    view = PodView(PodWatches(FakeCluster(), ManualClock()), REF.namespace, spec.subject.selector)
    async with runner._actions(spec, view) as actions:
        assert actions is not None
        assert actions.usernames == usernames
        assert actions.field_managers == frozenset((identities or {}).get("fieldManagers", []))
        assert view.on_change == actions.pod_changed  # the pod watch tells it of managedFields
    assert view.on_change is None
    assert workloads.asked == ([("Deployment", "db", "healer")] if asked else [])
