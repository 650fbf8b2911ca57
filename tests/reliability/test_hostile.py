"""Hostile input, applied to the real API server with the operator running (as its
ServiceAccount, without --allow-loopback-pd, as in production):

- hypothesis-generated Campaign specs, valid and invalid (RELIABILITY_HOSTILE_EXAMPLES, 60);
- selectors that reach the operator's own pods (app.kubernetes.io/name=aftershock) or another app;
- label and string edge cases; Campaigns in protected namespaces;
- pdURLs at link-local / metadata addresses, IP literals in any notation, other namespaces,
  loopback without the flag, credentials, other schemes.

Invariants: the operator never exits; every Campaign is either refused by the API server (4xx,
never 5xx) or marked by the operator with SpecValid=False / Stalled=True and a message naming the
field (the same field `aftershock.model` names offline); nothing is deleted but ledger victims;
the operator's own pods are never touched; and the operator contacts or looks up nothing but
loopback (two witnesses: a Python audit hook on every connect/getaddrinfo in the operator
process, and its sockets as the kernel lists them), so a refused pdURL provably got no traffic.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from aftershock import endpoints, model
from tests.e2e import testbed
from tests.reliability import invariants
from tests.reliability.conftest import drop_namespace, env_int, make_namespace
from tests.reliability.proc import Operator
from tests.reliability.tally import TALLY
from tests.reliability.watchers import AuditLog, PodWatch

pytestmark = pytest.mark.reliability

EXAMPLES = env_int("RELIABILITY_HOSTILE_EXAMPLES", 60)
SEED = env_int("RELIABILITY_SEED", 20_261_121)
OPERATOR_LABELS = {"app.kubernetes.io/name": "aftershock", "app.kubernetes.io/component": "operator"}
WEB_LABELS = {"app": "web", "app.kubernetes.io/name": "web"}
PROTECTED_EXTRA = "rel-protected"


@dataclass
class Env:
    cluster: testbed.Cluster
    namespace: str
    op: Operator
    audit: AuditLog
    watch: PodWatch
    api: k8s.CustomObjectsApi
    bystanders: dict[str, str]  # uid -> name, before anything ran
    names: list[str] = field(default_factory=list)  # Campaigns the operator saw, per namespace below
    created: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]
    results: collections.Counter[str] = field(default_factory=collections.Counter)


def _deployment(name: str, labels: dict[str, str], replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": "registry.invalid/x:1"}],
                },
            },
        },
    }


@pytest.fixture(scope="module")
def env(
    cluster: testbed.Cluster,
    operator_identity: str,
    audit: AuditLog,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("hostile")
    ns = make_namespace(cluster, "hostile")
    cluster.kubectl("create", "namespace", PROTECTED_EXTRA, check=False)
    # The operator's look-alikes and another app, in the namespace Campaigns target.
    cluster.apply(_deployment("aftershock", OPERATOR_LABELS, 2), namespace=ns)
    cluster.apply(_deployment("web", WEB_LABELS, 3), namespace=ns)
    for d in ("aftershock", "web"):
        cluster.kubectl("rollout", "status", f"deployment/{d}", "-n", ns, "--timeout=120s", timeout=150)
    pods = cluster.get_json("pods", "-n", ns)["items"]
    bystanders = {p["metadata"]["uid"]: p["metadata"]["name"] for p in pods}
    audit.mark()
    watch = PodWatch(cluster.api_client(), ns).start()
    op = Operator(
        kubeconfig=operator_identity,
        db=work / "ledger.db",
        workdir=work,
        namespaces=[ns, "kube-system", "kube-public", "kube-node-lease", PROTECTED_EXTRA],
        extra_args=["--protected-namespace", PROTECTED_EXTRA],
        allow_loopback_pd=False,
    )
    op.start()
    e = Env(cluster, ns, op, audit, watch, k8s.CustomObjectsApi(cluster.api_client()), bystanders)
    try:
        yield e
    finally:
        op.stop()
        watch.stop()
        TALLY.crashes += len(op.crashes)
        for ns_, name in e.created:
            if ns_ != ns:
                cluster.kubectl(
                    "patch",
                    "campaign",
                    name,
                    "-n",
                    ns_,
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )
                cluster.kubectl("delete", "campaign", name, "-n", ns_, "--wait=false", check=False)
        drop_namespace(cluster, ns)
        cluster.kubectl("delete", "namespace", PROTECTED_EXTRA, "--wait=false", check=False)


def _expected_field(
    spec: Any, namespace: str, services: dict[str, endpoints.ServiceInfo | None] | None = None
) -> str | None:
    """The field `aftershock.model` names for this spec (None: valid), as the operator should:
    its name rules, then what the API server says of the Services a pdURL names (`services`,
    the namespace's as listed; a name not among them has no Service)."""
    try:
        parsed = model.parse_campaign_spec(spec if isinstance(spec, dict) else {}, allow_loopback_pd=False)
        if parsed.subject.pd_url is not None:
            model.check_pd_namespace(parsed.subject.pd_url, namespace)
            known = services or {}
            wanted = endpoints.service_names(parsed.subject.pd_url, namespace)
            endpoints.resolve_service_name(
                parsed.subject.pd_url, namespace, {n.service: known.get(n.service) for n in wanted}
            )
    except model.SpecError as exc:
        return exc.field
    if namespace in model.DEFAULT_PROTECTED_NAMESPACES | {PROTECTED_EXTRA}:
        return "metadata.namespace"
    return None


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def submit(e: Env, spec: Any, namespace: str | None = None, *, keep: bool = False) -> dict[str, Any]:
    """Create one Campaign and judge what became of it. Returns a record for the caller."""
    ns = namespace or e.namespace
    name = f"h-{next(e.counter):04d}"
    body = {
        "apiVersion": "aftershock.dev/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name},
        "spec": spec,
    }
    TALLY.bad_inputs_tried += 1
    try:
        e.api.create_namespaced_custom_object("aftershock.dev", "v1alpha1", ns, "campaigns", body)
    except ApiException as exc:
        if not 400 <= int(exc.status or 0) < 500:
            e.problems.append(f"{name}: API server answered {exc.status} (not a 4xx refusal): {exc.reason}")
        env_result = "rejected by the API server"
        e.results[env_result] += 1
        return {"name": name, "result": env_result, "status": exc.status}
    except ValueError as exc:  # the client itself refuses to serialise (e.g. NaN)
        return {"name": name, "result": f"not sendable: {exc}"}
    e.created.append((ns, name))
    stored = e.api.get_namespaced_custom_object("aftershock.dev", "v1alpha1", ns, "campaigns", name)
    listed = e.cluster.get_json("services", "-n", ns)["items"]
    services: dict[str, endpoints.ServiceInfo | None] = {
        s["metadata"]["name"]: endpoints.ServiceInfo(
            type=s["spec"].get("type", "ClusterIP"), headless=s["spec"].get("clusterIP") == "None"
        )
        for s in listed
    }
    expected = _expected_field(stored.get("spec"), ns, services)
    deadline = time.monotonic() + 30
    obj: dict[str, Any] = stored
    verdict = "timeout"
    while time.monotonic() < deadline:
        if not e.op.check_alive():
            e.problems.append(f"{name}: the operator exited while judging {spec!r}")
        obj = e.api.get_namespaced_custom_object("aftershock.dev", "v1alpha1", ns, "campaigns", name)
        conds = _conditions(obj)
        valid = conds.get("SpecValid", {}).get("status")
        if expected is not None and valid == "False":
            verdict = "refused"
            break
        if expected is None and valid == "True":
            verdict = "accepted"
            break
        if expected is not None and valid == "True":
            verdict = "accepted but should be refused"
            break
        if expected is None and valid == "False":
            verdict = "refused but valid offline"
            break
        time.sleep(0.2)
    conds = _conditions(obj)
    if verdict == "refused":
        message = conds["SpecValid"].get("message", "")
        stalled = conds.get("Stalled", {})
        if expected not in message:
            e.problems.append(f"{ns}/{name}: SpecValid message {message!r} does not name {expected}")
        if stalled.get("status") != "True" or (obj.get("status") or {}).get("phase") != "Failed":
            e.problems.append(f"{ns}/{name}: refused but not Failed/Stalled: {obj.get('status')}")
    elif verdict != "accepted":
        e.problems.append(
            f"{ns}/{name}: {verdict} (expected {expected or 'valid'}); spec {stored.get('spec')!r}"
        )
    e.results[verdict] += 1
    if verdict == "accepted" and not keep:
        e.api.delete_namespaced_custom_object("aftershock.dev", "v1alpha1", ns, "campaigns", name)
    return {"name": name, "result": verdict, "expected": expected, "object": obj}


# --- hypothesis ------------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "app",
        "app.kubernetes.io/name",
        "app.kubernetes.io/component",
        "k" * 63,
        "k" * 64,
        "-bad",
        "a/b/c",
        "ä",
        "example.com/" + "x" * 63,
        "x" * 254 + "/y",
        "",
    ]
)
VALUES = st.one_of(
    st.sampled_from(["aftershock", "web", "tikv", "", "-x", "v" * 63, "v" * 64, "a b", "é", "true", "a\nb"]),
    st.text(max_size=70),
)
SELECTORS: st.SearchStrategy[Any] = st.one_of(
    st.fixed_dictionaries({"matchLabels": st.dictionaries(KEYS, VALUES, max_size=3)}),
    st.fixed_dictionaries(
        {
            "matchExpressions": st.lists(
                st.fixed_dictionaries(
                    {
                        "key": KEYS,
                        "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Bogus", ""]),
                        "values": st.lists(VALUES, max_size=3),
                    }
                ),
                max_size=2,
            )
        }
    ),
    st.just({}),
    st.integers(),
    st.text(max_size=10),
)
PD_URLS = [
    "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]:2379",
    "http://[::ffff:169.254.169.254]/",
    "http://metadata.google.internal/computeMetadata/v1",
    "http://metadata/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://169.254.169.254.nip.io/",
    "http://10.0.0.7:2379",
    "http://127.0.0.1:2379",
    "http://[::1]:2379",
    "http://localhost:2379",
    "http://pd.kube-system.svc:2379",
    "http://pd.other.svc.cluster.local:2379",
    "http://pd.{ns}.svc.cluster.local.evil.example:2379",
    "http://user:pass@pd:2379",
    "file:///etc/passwd",
    "gopher://pd:70/",
    "http://pd\u3002kube-system.svc:2379",
    "http://pd%2ekube-system:2379",
    "http://PD.KUBE-SYSTEM.SVC:2379",
    "http://pd:99999",
    "http://:2379",
]
PD = st.one_of(st.none(), st.sampled_from(PD_URLS), st.text(max_size=30).map(lambda s: "http://" + s))
NUMBERS = st.one_of(
    st.integers(min_value=-10, max_value=200_000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    subject: dict[str, Any] = {
        "kind": draw(st.sampled_from(["TiKV", "tikv", "PD", ""])),
        "selector": draw(SELECTORS),
    }
    pd = draw(PD)
    if pd is not None:
        subject["pdURL"] = pd
    spec: dict[str, Any] = {
        "subject": subject,
        "chaos": draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "type": st.sampled_from(["node_kill", "network_partition", ""]),
                    "mode": st.sampled_from(["one", "fixed", "fixed-percent", "all"]),
                    "value": st.integers(min_value=-1, max_value=2000),
                    "gracePeriodSeconds": st.integers(min_value=-1, max_value=4000),
                },
            )
        ),
        # Every Campaign here is a dry run or fails before a trial: what is judged is the input.
        "dryRun": True,
        "steadyState": {"timeoutSeconds": 5, "stableSeconds": 0},
    }
    for key in ("trials", "intervalSeconds", "seed"):
        if draw(st.booleans()):
            spec[key] = draw(NUMBERS)
    if draw(st.booleans()):
        spec["recovery"] = {
            "timeoutSeconds": draw(NUMBERS),
            "stopOnUnrecovered": draw(st.one_of(st.booleans(), st.text(max_size=3))),
        }
    if draw(st.booleans()):
        spec["remediator"] = {
            "kind": draw(st.sampled_from(["StatefulSet", "Deployment", "DaemonSet"])),
            "name": draw(VALUES),
        }
    if draw(st.booleans()):
        spec[draw(st.sampled_from(["unknownField", "suspend", "baseline"]))] = draw(
            st.one_of(st.booleans(), st.text(max_size=5))
        )
    return spec


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@seed(SEED)
@given(spec=specs())
def test_generated_specs_are_refused_with_the_field_named_or_accepted(env: Env, spec: dict[str, Any]) -> None:
    before = len(env.problems)
    submit(env, spec)
    assert env.op.alive() or not env.op.crashes, env.op.crashes
    assert len(env.problems) == before, env.problems[before:]


# --- fixed cases -----------------------------------------------------------------------------


def _base(selector: dict[str, Any], **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "subject": {"kind": "TiKV", "selector": selector},
        "chaos": {"type": "node_kill", "mode": "one"},
        "trials": 1,
        "intervalSeconds": 0,
        "steadyState": {"timeoutSeconds": 10, "stableSeconds": 0},
    }
    spec.update(extra)
    return spec


@pytest.mark.parametrize(
    "selector",
    [
        {"matchLabels": {"app.kubernetes.io/name": "aftershock"}},
        {"matchLabels": {"app.kubernetes.io/component": "operator"}},
        {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "Exists"}]},
        {
            "matchExpressions": [
                {"key": "app.kubernetes.io/name", "operator": "In", "values": ["web", "aftershock"]}
            ]
        },
        {
            "matchExpressions": [
                {"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["web"]},
                {"key": "app.kubernetes.io/name", "operator": "Exists"},
            ]
        },
    ],
    ids=["operator-label", "operator-component", "name-exists", "web-or-operator", "not-web"],
)
def test_selector_reaching_the_operators_pods_is_refused_whole(env: Env, selector: dict[str, Any]) -> None:
    record = submit(env, _base(selector), keep=True)
    assert record["result"] == "accepted"  # valid as input; refused when victims are chosen
    name = record["name"]
    deadline = time.monotonic() + 60
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = env.api.get_namespaced_custom_object(
            "aftershock.dev", "v1alpha1", env.namespace, "campaigns", name
        )
        if (obj.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            break
        time.sleep(0.3)
    status = obj.get("status") or {}
    assert status.get("phase") == "Failed", status
    stalled = _conditions(obj).get("Stalled", {})
    assert stalled.get("status") == "True"
    assert "selector" in stalled.get("message", ""), stalled
    assert "operator's own pods" in stalled.get("message", ""), stalled
    # Nothing was even attempted: no attempt row, so no kill could have followed.
    views, _ = invariants.read_ledger(env.op.db, env.namespace, [name])
    assert not views[name].attempts


def test_selector_matching_another_app_is_accepted_and_dry_run_kills_nothing(env: Env) -> None:
    record = submit(env, _base({"matchLabels": {"app": "web"}}, dryRun=True), keep=True)
    assert record["result"] == "accepted"
    testbed.wait_for(
        lambda: (
            (
                env.api.get_namespaced_custom_object(
                    "aftershock.dev", "v1alpha1", env.namespace, "campaigns", record["name"]
                ).get("status")
                or {}
            ).get("phase")
            == "Succeeded"
        ),
        60,
        what="dry run against another app finished",
    )


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease", PROTECTED_EXTRA])
def test_campaign_in_a_protected_namespace_is_refused(env: Env, namespace: str) -> None:
    pods_before = {p["metadata"]["uid"] for p in env.cluster.get_json("pods", "-n", namespace)["items"]}
    record = submit(env, _base({"matchLabels": {"app": "anything"}}), namespace=namespace)
    assert record["result"] == "refused", record
    stalled = _conditions(record["object"]).get("Stalled", {})
    assert stalled.get("reason") == "ProtectedNamespace"
    assert "metadata.namespace" in stalled.get("message", "")
    assert {
        p["metadata"]["uid"] for p in env.cluster.get_json("pods", "-n", namespace)["items"]
    } >= pods_before


@pytest.mark.parametrize("url", PD_URLS)
def test_pd_url_outside_the_rule_is_refused(env: Env, url: str) -> None:
    record = submit(
        env,
        _base(
            {"matchLabels": {"app": "web"}},
            dryRun=True,
            subject={
                "kind": "TiKV",
                "selector": {"matchLabels": {"app": "web"}},
                "pdURL": url.format(ns=env.namespace),
            },
        ),
    )
    assert record["result"] in ("refused", "rejected by the API server"), record


API = "rejected by the API server"  # the CRD's schema: a value's pattern and length


@pytest.mark.parametrize(
    ("labels", "outcome"),
    [
        pytest.param({"app": "v" * 63}, "accepted", id="value63"),
        pytest.param({"app": "v" * 64}, API, id="value64"),
        pytest.param({"k" * 63: "x"}, "accepted", id="key63"),
        pytest.param({"example.com/" + "k" * 63: "x"}, "accepted", id="prefixed"),
        # Keys are not in the CRD's schema (a map's keys have no pattern): the operator judges them.
        pytest.param({"a" * 254 + "/b": "x"}, "refused", id="prefix254"),
        pytest.param({"app": ""}, "accepted", id="empty-value"),
        pytest.param({"app": " web"}, API, id="space"),
        pytest.param({"app": "wéb"}, API, id="unicode"),
        pytest.param({"app": "web\n"}, API, id="newline"),
        pytest.param({"app\n": "web"}, "refused", id="newline-key"),
        pytest.param({"": "web"}, "refused", id="empty-key"),
    ],
)
def test_label_edge_cases(env: Env, labels: dict[str, str], outcome: str) -> None:
    """Each edge case has one right answer: who refuses it (the API server or the operator,
    naming spec.subject.selector.matchLabels), or that it is valid."""
    before = len(env.problems)
    record = submit(env, _base({"matchLabels": labels}, dryRun=True))
    assert record["result"] == outcome, record
    assert env.problems[before:] == []
    if outcome == "refused":
        valid = _conditions(record["object"])["SpecValid"]
        assert "spec.subject.selector.matchLabels" in valid["message"], valid


# --- after everything --------------------------------------------------------------------------


def test_zz_after_all_hostile_input(env: Env) -> None:
    """Runs last in this module (pytest keeps file order): the run-wide invariants."""
    time.sleep(2.0)
    assert not env.op.crashes, env.op.crashes
    assert env.op.alive()
    assert not env.problems, env.problems[:20]
    gone = list(env.watch.gone)
    killed_bystanders = [
        g
        for g in gone
        if g.uid in env.bystanders and dict(g.labels).get("app.kubernetes.io/name") == "aftershock"
    ]
    assert not killed_bystanders, killed_bystanders
    deletes = env.audit.pod_deletes()
    by_operator = [d for d in deletes if d.by_operator]
    names = [n for ns, n in env.created if ns == env.namespace]
    views, integrity = invariants.read_ledger(env.op.db, env.namespace, names)
    acc = invariants.kills_match_ledger(by_operator, list(views.values()), env.namespace)
    TALLY.unintended_kills += len(acc.unintended)
    assert integrity == "ok"
    assert not acc.unintended
    assert not acc.problems
    # Every example here was a dry run or refused: nothing may have been deleted at all.
    assert not by_operator, by_operator
    assert not [g for g in gone if g.uid in env.bystanders], gone
    contacts = env.op.non_loopback_contacts()
    assert env.op.net_events() > 0
    assert not contacts, contacts
    TALLY.note(
        f"hostile input: {sum(env.results.values())} Campaigns submitted ({dict(env.results)}); "
        f"network witness: {env.op.net_events()} connects/lookups recorded, none beyond loopback"
    )
