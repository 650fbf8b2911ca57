"""Parsing a Campaign spec: the defaults, and every refusal naming the field a person must fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aftershock.endpoints import ServiceInfo, ServiceName, resolve_service_name, service_names
from aftershock.model import (
    ChaosMode,
    LabelSelector,
    LabelSelectorRequirement,
    SpecError,
    check_pd_namespace,
    check_pd_url,
    parse_campaign_spec,
    parse_selector,
)

MINIMAL: dict[str, Any] = {
    "subject": {"kind": "TiKV", "selector": {"matchLabels": {"app.kubernetes.io/name": "tikv"}}},
    "chaos": {},
}


def spec_with(path: str, value: Any) -> dict[str, Any]:
    """MINIMAL with the dotted `path` set to `value` (`...` deletes it)."""
    raw = copy.deepcopy(MINIMAL)
    *parents, leaf = path.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return raw


def refusal(raw: Any, **kwargs: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_campaign_spec(raw, **kwargs)
    return info.value


# --- defaults -----------------------------------------------------------------------------------------


def test_a_minimal_spec_gets_the_documented_defaults() -> None:
    spec = parse_campaign_spec(MINIMAL)

    assert spec.subject.kind == "TiKV"
    assert spec.subject.selector == LabelSelector(match_labels=(("app.kubernetes.io/name", "tikv"),))
    assert spec.subject.pd_url is None
    assert spec.chaos.type == "node_kill"
    assert spec.chaos.mode is ChaosMode.ONE
    assert spec.chaos.value is None
    assert spec.chaos.grace_period_seconds == 0
    assert spec.trials == 10
    assert spec.interval_seconds == 30.0
    assert spec.steady_state_timeout_seconds == 300.0
    assert spec.steady_state_stable_seconds == 10.0
    assert spec.recovery_timeout_seconds == 600.0
    assert spec.stop_on_unrecovered is True
    assert spec.slo_p95_recovery_seconds is None
    assert spec.suspend is False
    assert spec.dry_run is False
    assert spec.seed is None


def test_a_full_spec_is_read_field_by_field() -> None:
    raw = {
        "subject": {
            "kind": "TiKV",
            "selector": {
                "matchLabels": {"app": "tikv"},
                "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}],
            },
            "pdURL": "http://pd.db.svc:2379",
        },
        "chaos": {"type": "node_kill", "mode": "fixed-percent", "value": 34, "gracePeriodSeconds": 5},
        "trials": 7,
        "intervalSeconds": 1.5,
        "steadyState": {"timeoutSeconds": 60, "stableSeconds": 0},
        "recovery": {"timeoutSeconds": 120, "stopOnUnrecovered": False},
        "slo": {"p95RecoverySeconds": 45.5},
        "suspend": True,
        "dryRun": True,
        "seed": 42,
    }
    spec = parse_campaign_spec(raw)

    assert spec.subject.pd_url == "http://pd.db.svc:2379"
    assert spec.subject.selector.match_expressions == (LabelSelectorRequirement("zone", "In", ("a", "b")),)
    assert (spec.chaos.mode, spec.chaos.value, spec.chaos.grace_period_seconds) == (
        ChaosMode.FIXED_PERCENT,
        34,
        5,
    )
    assert spec.trials == 7
    assert spec.interval_seconds == 1.5
    assert (spec.steady_state_timeout_seconds, spec.steady_state_stable_seconds) == (60.0, 0.0)
    assert (spec.recovery_timeout_seconds, spec.stop_on_unrecovered) == (120.0, False)
    assert spec.slo_p95_recovery_seconds == 45.5
    assert (spec.suspend, spec.dry_run, spec.seed) == (True, True, 42)


def test_explicit_nulls_for_optional_sections_mean_their_defaults() -> None:
    raw = {**MINIMAL, "steadyState": None, "recovery": None, "slo": None, "seed": None}
    spec = parse_campaign_spec(raw)
    assert spec.steady_state_timeout_seconds == 300.0
    assert spec.recovery_timeout_seconds == 600.0
    assert spec.slo_p95_recovery_seconds is None


# --- every refusal names its field ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        ("subject", ..., "spec.subject", "required"),
        ("subject", "tikv", "spec.subject", "must be an object"),
        ("subject.kind", ..., "spec.subject.kind", "required"),
        ("subject.kind", 7, "spec.subject.kind", "must be a non-empty string"),
        ("subject.selector", ..., "spec.subject.selector", "required"),
        ("subject.selector", {}, "spec.subject.selector", "must select something"),
        ("subject.selector", {"matchLabels": {}}, "spec.subject.selector", "must select something"),
        (
            "subject.selector",
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["x"]}]},
            "spec.subject.selector",
            "must select something",
        ),
        (
            "subject.selector",
            {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
            "spec.subject.selector",
            "must select something",
        ),
        (
            "subject.selector",
            {"matchLabels": {"bad key": "x"}},
            "spec.subject.selector.matchLabels",
            "label key",
        ),
        (
            "subject.selector",
            {"matchLabels": {"-app": "x"}},
            "spec.subject.selector.matchLabels",
            "label key",
        ),
        (
            "subject.selector",
            {"matchLabels": {"Example.COM/app": "x"}},
            "spec.subject.selector.matchLabels",
            "label key",
        ),
        (
            "subject.selector",
            {"matchLabels": {"a" * 254 + "/b": "x"}},  # a prefix is a DNS subdomain: 253 at most
            "spec.subject.selector.matchLabels",
            "label key",
        ),
        (
            "subject.selector",
            {"matchLabels": {"": "x"}},
            "spec.subject.selector.matchLabels",
            "label key",
        ),
        (
            "subject.selector",
            {"matchLabels": {"app\n": "x"}},
            "spec.subject.selector.matchLabels",
            "label key",
        ),
        (
            "subject.selector",
            {"matchLabels": {"app": "web\n"}},  # the API server's pattern refuses it too
            "spec.subject.selector.matchLabels.app",
            "label value",
        ),
        (
            "subject.selector",
            {"matchLabels": {"app": "tikv!"}},
            "spec.subject.selector.matchLabels.app",
            "label value",
        ),
        (
            "subject.selector",
            {"matchLabels": {"app": "x" * 64}},
            "spec.subject.selector.matchLabels.app",
            "label value",
        ),
        (
            "subject.selector",
            {"matchLabels": {"app": 3}},
            "spec.subject.selector.matchLabels.app",
            "label value",
        ),
        (
            "subject.selector",
            {"matchLabels": {"app": "tikv"}, "matchExpressions": [{"operator": "Exists"}]},
            "spec.subject.selector.matchExpressions[0].key",
            "required",
        ),
        (
            "subject.selector",
            {"matchLabels": {"app": "tikv"}, "matchExpressions": [{"key": "a b", "operator": "Exists"}]},
            "spec.subject.selector.matchExpressions[0].key",
            "label key",
        ),
        (
            "subject.selector",
            {"matchLabels": {"app": "tikv"}, "matchExpressions": [{"key": "zone", "operator": "Near"}]},
            "spec.subject.selector.matchExpressions[0].operator",
            "'Near'",
        ),
        (
            "subject.selector",
            {"matchExpressions": [{"key": "zone", "operator": "In"}]},
            "spec.subject.selector.matchExpressions[0].values",
            "must not be empty",
        ),
        (
            "subject.selector",
            {"matchExpressions": [{"key": "zone", "operator": "Exists", "values": ["a"]}]},
            "spec.subject.selector.matchExpressions[0].values",
            "must be empty",
        ),
        (
            "subject.selector",
            {
                "matchExpressions": [
                    {"key": "a", "operator": "Exists"},
                    {"key": "b", "operator": "In", "values": ["?"]},
                ]
            },
            "spec.subject.selector.matchExpressions[1].values",
            "label value",
        ),
        (
            "subject.selector",
            {"matchExpressions": ["app"]},
            "spec.subject.selector.matchExpressions[0]",
            "object",
        ),
        ("subject.pdURL", 2379, "spec.subject.pdURL", "must be a string"),
        ("subject.pdURL", "ftp://pd:2379", "spec.subject.pdURL", "scheme"),
        ("chaos", ..., "spec.chaos", "required"),
        ("chaos.type", 7, "spec.chaos.type", "non-empty string"),
        ("chaos.durationSeconds", 0, "spec.chaos.durationSeconds", "between 1 and 86399"),
        ("chaos.mode", "all", "spec.chaos.mode", "'one', 'fixed', 'fixed-percent'"),
        ("chaos", {"mode": "fixed"}, "spec.chaos.value", "required"),
        ("chaos", {"mode": "fixed-percent"}, "spec.chaos.value", "required"),
        ("chaos", {"mode": "fixed", "value": 0}, "spec.chaos.value", "between 1 and 1000"),
        ("chaos", {"mode": "fixed-percent", "value": 101}, "spec.chaos.value", "between 1 and 100"),
        ("chaos", {"mode": "fixed", "value": "2"}, "spec.chaos.value", "must be an integer"),
        ("chaos", {"mode": "one", "value": 2}, "spec.chaos.value", "between 1 and 1"),
        ("chaos.gracePeriodSeconds", -1, "spec.chaos.gracePeriodSeconds", "between 0 and 3600"),
        ("trials", 0, "spec.trials", "between 1 and 100000, got 0"),
        ("trials", 100_001, "spec.trials", "between 1 and 100000"),
        ("trials", 2.5, "spec.trials", "must be an integer"),
        ("trials", True, "spec.trials", "must be an integer"),
        ("intervalSeconds", -1, "spec.intervalSeconds", "between 0 and 86400"),
        ("intervalSeconds", "30s", "spec.intervalSeconds", "must be a number"),
        ("intervalSeconds", float("nan"), "spec.intervalSeconds", "between"),
        ("steadyState", "fast", "spec.steadyState", "must be an object"),
        ("steadyState.timeoutSeconds", 0, "spec.steadyState.timeoutSeconds", "between 1 and"),
        ("steadyState.stableSeconds", 3601, "spec.steadyState.stableSeconds", "between 0 and 3600"),
        ("recovery.timeoutSeconds", 0.5, "spec.recovery.timeoutSeconds", "between 1 and"),
        ("recovery.stopOnUnrecovered", "yes", "spec.recovery.stopOnUnrecovered", "true or false"),
        ("slo.p95RecoverySeconds", 0, "spec.slo.p95RecoverySeconds", "between 0.001 and"),
        ("suspend", 1, "spec.suspend", "true or false"),
        ("dryRun", "false", "spec.dryRun", "true or false"),
        ("seed", -1, "spec.seed", "between 0 and"),
        ("seed", 2**53 + 1, "spec.seed", "between 0 and"),
    ],
)
def test_a_bad_field_is_refused_by_name(path: str, value: Any, field: str, words: str) -> None:
    exc = refusal(spec_with(path, value))
    assert exc.field == field
    assert words in exc.reason
    assert str(exc).startswith(f"{field}: ")


def test_a_spec_that_is_not_an_object_is_refused() -> None:
    exc = refusal(["subject"])
    assert "must be an object" in exc.reason


def test_match_expression_values_must_be_a_list() -> None:
    raw = spec_with(
        "subject.selector", {"matchExpressions": [{"key": "app", "operator": "In", "values": "tikv"}]}
    )
    exc = refusal(raw)
    assert exc.field == "spec.subject.selector.matchExpressions[0].values"


@pytest.mark.parametrize(
    "labels",
    [
        {"app": ""},  # an empty value is a valid label value
        {"example.com/app": "tikv"},
        {"a": "A-b_c.9"},
        {"x" * 63: "y" * 63},
    ],
)
def test_valid_label_keys_and_values_are_accepted(labels: dict[str, str]) -> None:
    spec = parse_campaign_spec(spec_with("subject.selector", {"matchLabels": labels}))
    assert dict(spec.subject.selector.match_labels) == labels


def test_a_label_name_longer_than_63_characters_is_refused() -> None:
    exc = refusal(spec_with("subject.selector", {"matchLabels": {"x" * 64: "y"}}))
    assert exc.field == "spec.subject.selector.matchLabels"


def test_the_first_bad_field_is_the_one_named() -> None:
    raw = spec_with("trials", 0)
    raw["chaos"] = {"mode": "fixed"}
    assert refusal(raw).field == "spec.chaos.value"


# --- pdURL ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://pd:2379",
        "https://pd:2379",
        "http://pd.db:2379",
        "http://pd.db.svc:2379",
        "http://pd.db.svc.cluster.local:2379/",
        "http://basic-pd",
    ],
)
def test_pd_urls_naming_a_service_are_accepted(url: str) -> None:
    assert check_pd_url(url) == url
    check_pd_namespace(url, "db")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://pd:2379", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("pd:2379", "scheme"),
        ("http://user:secret@pd:2379", "must not carry credentials"),
        ("http://user@pd:2379", "must not carry credentials"),
        ("http:///stores", "has no host"),
        ("http://pd:99999", "invalid port"),
        ("http://10.0.0.7:2379", "IP addresses are refused"),
        ("http://[fd00::7]:2379", "IP addresses are refused"),
        ("http://127.0.0.1:2379", "IP addresses are refused"),
        ("http://[::1]:2379", "IP addresses are refused"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://metadata/computeMetadata/v1", "metadata endpoint"),
        ("http://metadata.google.internal/", "metadata endpoint"),
        ("http://anything.internal:2379", "metadata endpoint"),
        ("http://pd_1:2379", "not a valid DNS name"),
        ("http://pd..db:2379", "not a valid DNS name"),
    ],
)
def test_pd_urls_that_could_reach_elsewhere_are_refused(url: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        check_pd_url(url)
    assert info.value.field == "spec.subject.pdURL"
    assert words in info.value.reason


def test_the_link_local_refusal_says_why() -> None:
    with pytest.raises(SpecError) as info:
        check_pd_url("http://169.254.169.254/")
    assert info.value.reason == "169.254.169.254 is link-local (cloud metadata lives there); refused"


@pytest.mark.parametrize("url", ["http://127.0.0.1:2379", "http://[::1]:2379", "http://localhost:2379"])
def test_loopback_only_with_allow_loopback(url: str) -> None:
    assert check_pd_url(url, allow_loopback=True) == url
    check_pd_namespace(url, "db")


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://10.0.0.1/", "http://metadata/"])
def test_allow_loopback_allows_nothing_but_loopback(url: str) -> None:
    with pytest.raises(SpecError):
        check_pd_url(url, allow_loopback=True)


def test_localhost_is_loopback_too() -> None:
    with pytest.raises(SpecError) as info:
        check_pd_url("http://localhost:2379")
    assert info.value.field == "spec.subject.pdURL"


@pytest.mark.parametrize("host", ["2852039166", "0xa9fea9fe"])
def test_ip_literals_in_other_notations_are_refused(host: str) -> None:
    # Both are 169.254.169.254 to getaddrinfo (inet_aton); a single label passes the namespace rule.
    with pytest.raises(SpecError):
        check_pd_url(f"http://{host}:2379")


def test_a_pd_url_that_fails_is_reported_through_parse_campaign_spec() -> None:
    exc = refusal(spec_with("subject.pdURL", "http://169.254.169.254/"))
    assert exc.field == "spec.subject.pdURL"
    assert "link-local" in exc.reason
    assert parse_campaign_spec(spec_with("subject.pdURL", "http://127.0.0.1:2379"), allow_loopback_pd=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://pd.other-ns.svc:2379",
        "http://pd.other-ns.svc.cluster.local:2379",
        "http://pd.db.example.com:2379",
        "http://pd.kube-system.svc",
        "http://etcd-0.etcd.other-ns:2379",
        "http://etcd-0.etcd.other-ns.svc.cluster.local:2379",
        "http://etcd-0.etcd-headless.db.svc.example.com:2379",
    ],
)
def test_a_pd_service_outside_the_campaigns_namespace_is_refused(url: str) -> None:
    with pytest.raises(SpecError) as info:
        check_pd_namespace(url, "db")
    assert info.value.field == "spec.subject.pdURL"
    assert "outside the Campaign's namespace 'db'" in info.value.reason


def test_a_name_that_only_starts_like_a_service_name_is_refused() -> None:
    with pytest.raises(SpecError):
        check_pd_namespace("http://pd.db.svc.attacker.example:2379", "db")


# --- label selectors ------------------------------------------------------------------------------------


def sel(*exprs: tuple[str, str, tuple[str, ...]], labels: tuple[tuple[str, str], ...] = ()) -> LabelSelector:
    return LabelSelector(labels, tuple(LabelSelectorRequirement(k, op, v) for k, op, v in exprs))


@pytest.mark.parametrize(
    ("selector", "query", "matching", "not_matching"),
    [
        (
            sel(labels=(("app", "tikv"), ("tier", "db"))),
            "app=tikv,tier=db",
            [{"app": "tikv", "tier": "db", "x": "y"}],
            [{"app": "tikv"}, {"app": "pd", "tier": "db"}, {}],
        ),
        (
            sel(("zone", "In", ("a", "b"))),
            "zone in (a,b)",
            [{"zone": "a"}, {"zone": "b"}],
            [{"zone": "c"}, {}],
        ),
        (
            sel(("zone", "NotIn", ("a", "b")), labels=(("app", "tikv"),)),
            "app=tikv,zone notin (a,b)",
            [{"app": "tikv", "zone": "c"}, {"app": "tikv"}],  # NotIn matches an absent key
            [{"app": "tikv", "zone": "a"}],
        ),
        (
            sel(("app", "Exists", ())),
            "app",
            [{"app": ""}, {"app": "x"}],
            [{"other": "app"}],
        ),
        (
            sel(("canary", "DoesNotExist", ()), labels=(("app", "tikv"),)),
            "app=tikv,!canary",
            [{"app": "tikv"}],
            [{"app": "tikv", "canary": "true"}],
        ),
    ],
)
def test_label_selector_matches_and_query(
    selector: LabelSelector, query: str, matching: list[dict[str, str]], not_matching: list[dict[str, str]]
) -> None:
    assert selector.to_query() == query
    for labels in matching:
        assert selector.matches(labels), labels
    for labels in not_matching:
        assert not selector.matches(labels), labels


def test_parse_selector_sorts_match_labels_so_the_query_is_stable() -> None:
    a = parse_selector({"matchLabels": {"b": "2", "a": "1"}}, "subject.selector")
    b = parse_selector({"matchLabels": {"a": "1", "b": "2"}}, "subject.selector")
    assert a == b
    assert a.to_query() == "a=1,b=2"


# --- what a subject URL names in the Campaign's namespace (issue 21: etcd members) -----------------


HEADLESS = ServiceInfo(type="ClusterIP", headless=True)
CLUSTER_IP = ServiceInfo(type="ClusterIP", headless=False)


@pytest.mark.parametrize(
    ("host", "names"),
    [
        ("pd", [ServiceName("pd")]),
        ("pd.db", [ServiceName("pd"), ServiceName("db", "pd")]),
        ("pd.db.svc", [ServiceName("pd")]),
        ("pd.db.svc.cluster.local", [ServiceName("pd")]),
        # The README's example, in any namespace: a member of the headless Service etcd here.
        ("etcd-0.etcd", [ServiceName("etcd", "etcd-0")]),
        ("etcd-0.etcd-headless.db", [ServiceName("etcd-headless", "etcd-0")]),
        ("etcd-0.etcd-headless.db.svc", [ServiceName("etcd-headless", "etcd-0")]),
        # The usual six labels, once always refused.
        ("etcd-0.etcd-headless.db.svc.cluster.local", [ServiceName("etcd-headless", "etcd-0")]),
    ],
)
def test_subject_hosts_name_a_service_or_a_member_of_a_headless_one_in_the_namespace(
    host: str, names: list[ServiceName]
) -> None:
    assert list(service_names(f"http://{host}:2379", "db", "subject.endpoints[0]")) == names


@pytest.mark.parametrize(
    ("host", "services", "qualified"),
    [
        ("pd", {"pd": CLUSTER_IP}, "pd.db.svc"),
        ("pd.db.svc.cluster.local", {"pd": CLUSTER_IP}, "pd.db.svc"),
        ("etcd-0.etcd", {"etcd": HEADLESS}, "etcd-0.etcd.db.svc"),
        (
            "etcd-0.etcd-headless.db.svc.cluster.local",
            {"etcd-headless": HEADLESS},
            "etcd-0.etcd-headless.db.svc",
        ),
        # Two labels ending in the namespace: a Service of that name, or else a member.
        ("etcd.db", {"etcd": CLUSTER_IP, "db": None}, "etcd.db.svc"),
        ("etcd-0.db", {"etcd-0": None, "db": HEADLESS}, "etcd-0.db.db.svc"),
    ],
)
def test_a_name_is_qualified_to_the_campaigns_namespace_as_the_api_server_describes_it(
    host: str, services: dict[str, ServiceInfo | None], qualified: str
) -> None:
    url = resolve_service_name(f"http://{host}:2379/x", "db", services, "subject.endpoints[0]")
    assert url == f"http://{qualified}:2379/x"


@pytest.mark.parametrize(
    ("host", "services", "words"),
    [
        ("pd", {"pd": ServiceInfo(type="ExternalName", headless=False)}, "ExternalName"),
        ("etcd-0.etcd", {"etcd": ServiceInfo(type="ExternalName", headless=False)}, "ExternalName"),
        ("etcd-0.etcd", {"etcd": CLUSTER_IP}, "is not headless"),
        ("pd", {"pd": None}, "no Service for it: looked for Service 'pd' in namespace 'db'"),
        ("etcd-0.etcd", {}, "pod 'etcd-0' of headless Service 'etcd' in namespace 'db'"),
    ],
)
def test_a_service_the_api_server_does_not_vouch_for_is_refused(
    host: str, services: dict[str, ServiceInfo | None], words: str
) -> None:
    with pytest.raises(SpecError) as info:
        resolve_service_name(f"http://{host}:2379", "db", services, "subject.endpoints[0]")
    assert info.value.field == "spec.subject.endpoints[0]"
    assert words in info.value.reason


def test_loopback_names_no_service() -> None:
    assert resolve_service_name("http://127.0.0.1:2379", "db", {}) == "http://127.0.0.1:2379"


# --- spec.remediator.identities -------------------------------------------------------------------


def test_remediator_identities_name_service_accounts_users_and_field_managers() -> None:
    raw = spec_with(
        "remediator",
        {
            "kind": "Deployment",
            "name": "healer",
            "identities": {
                "serviceAccounts": ["healer", "ops/agent"],
                "users": ["alice"],
                "fieldManagers": ["fm"],
            },
        },
    )
    ids = parse_campaign_spec(raw).remediator.identities  # type: ignore[union-attr]

    assert ids is not None
    assert ids.field_managers == ("fm",)
    assert ids.usernames("ns") == {
        "system:serviceaccount:ns:healer",
        "system:serviceaccount:ops:agent",
        "alice",
    }


def test_remediator_without_identities_leaves_them_to_its_workload() -> None:
    raw = spec_with("remediator", {"kind": "Deployment", "name": "healer"})

    assert parse_campaign_spec(raw).remediator.identities is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("identities", "path"),
    [
        ({}, "remediator.identities"),
        ({"serviceAccounts": ["Bad_Name"]}, "remediator.identities.serviceAccounts"),
        ({"users": [""]}, "remediator.identities.users"),
        ({"fieldManagers": "fm"}, "remediator.identities.fieldManagers"),
    ],
)
def test_bad_remediator_identities_are_refused_naming_the_field(identities: Any, path: str) -> None:
    raw = spec_with("remediator", {"kind": "Deployment", "name": "healer", "identities": identities})

    assert refusal(raw).field == f"spec.{path}"
