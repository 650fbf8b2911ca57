"""spec.detection: the alert matchers a Campaign listens for, as the CRD and the operator read
them (the same refusals from both: `aftershock validate` runs the CRD's schema and CEL rules
offline, then the operator's parse)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aftershock import validate
from aftershock.errors import SpecError
from aftershock.model import AlertMatcher, MatchType, parse_campaign_spec

BASE: dict[str, Any] = {
    "apiVersion": "aftershock.dev/v1alpha1",
    "kind": "Campaign",
    "metadata": {"name": "etcd-alerts", "namespace": "db"},
    "spec": {
        "subject": {
            "kind": "Etcd",
            "selector": {"matchLabels": {"app": "etcd"}},
            "endpoints": ["http://etcd-0.etcd:2379"],
        },
        "chaos": {"type": "node_kill"},
    },
}


def _campaign(matchers: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    obj["spec"]["detection"] = {"alertMatchers": matchers}
    return obj


def test_matchers_parse_with_alertmanagers_default_operator() -> None:
    spec = parse_campaign_spec(
        _campaign(
            [
                {"name": "alertname", "value": "EtcdMemberDown"},
                {"name": "severity", "value": "crit.*", "matchType": "Regex"},
            ]
        )["spec"]
    )
    assert spec.detection is not None
    assert spec.detection.alert_matchers == (
        AlertMatcher("alertname", "EtcdMemberDown", MatchType.EQUAL),
        AlertMatcher("severity", "crit.*", MatchType.REGEX),
    )
    assert validate.validate_object(_campaign([{"name": "alertname", "value": "EtcdMemberDown"}])) == []


def test_no_detection_means_no_listening() -> None:
    assert parse_campaign_spec(copy.deepcopy(BASE)["spec"]).detection is None


@pytest.mark.parametrize(
    ("labels", "matches"),
    [
        ({"alertname": "EtcdMemberDown", "severity": "critical", "job": "etcd"}, True),
        ({"alertname": "EtcdMemberDown", "severity": "warning", "job": "etcd"}, False),
        ({"alertname": "EtcdNoLeader", "severity": "critical", "job": "etcd"}, False),
        # A regex matches the whole value, as Alertmanager's do: "critical-ish" is not "critical".
        ({"alertname": "EtcdMemberDown", "severity": "critical-ish", "job": "etcd"}, False),
        # != against an absent label compares with the empty value (Alertmanager's rule).
        ({"alertname": "EtcdMemberDown", "severity": "critical"}, True),
        ({"alertname": "EtcdMemberDown", "severity": "critical", "job": "test"}, False),
    ],
)
def test_matching_follows_alertmanagers_semantics(labels: dict[str, str], matches: bool) -> None:
    spec = parse_campaign_spec(
        _campaign(
            [
                {"name": "alertname", "value": "EtcdMemberDown"},
                {"name": "severity", "value": "crit(ical)?", "matchType": "Regex"},
                {"name": "job", "value": "test", "matchType": "NotEqual"},
            ]
        )["spec"]
    )
    assert spec.detection is not None
    assert spec.detection.matches(labels) is matches


@pytest.mark.parametrize(
    ("matchers", "field", "text"),
    [
        ([], "spec.detection.alertMatchers", "positive matcher"),
        (
            [{"name": "alertname", "value": "X", "matchType": "=~"}],
            "spec.detection.alertMatchers[0].matchType",
            "Unsupported value",
        ),
        ([{"name": "alert-name", "value": "X"}], "spec.detection.alertMatchers[0].name", "should match"),
        (
            [{"name": "alertname", "value": "X", "matchType": "NotEqual"}],
            "spec.detection.alertMatchers",
            "positive matcher",
        ),
        ([{"name": "alertname", "value": ""}], "spec.detection.alertMatchers", "positive matcher"),
        (
            [{"name": "alertname", "value": "X"}, {"name": "namespace", "value": "other"}],
            "spec.detection.alertMatchers",
            "namespace label",
        ),
    ],
)
def test_the_crd_refuses_matchers_that_would_take_every_alert_or_another_namespaces(
    matchers: Any, field: str, text: str
) -> None:
    problems = validate.validate_object(_campaign(matchers))
    assert any(p.field == field and text in p.message for p in problems), problems


@pytest.mark.parametrize(
    ("matchers", "field", "text"),
    [
        (
            [{"name": "alertname", "value": "X", "matchType": "NotEqual"}],
            "spec.detection.alertMatchers",
            "positive matcher",
        ),
        (
            [{"name": "namespace", "value": "other"}],
            "spec.detection.alertMatchers[0].name",
            "namespace label",
        ),
        (
            [{"name": "alertname", "value": "(", "matchType": "Regex"}],
            "spec.detection.alertMatchers[0].value",
            "regular expression",
        ),
        ([{"name": "1abc", "value": "X"}], "spec.detection.alertMatchers[0].name", "label name"),
        ([{"name": "alertname", "value": "X"}] * 17, "spec.detection.alertMatchers", "1 to 16"),
    ],
)
def test_the_operator_refuses_the_same_naming_the_field(matchers: Any, field: str, text: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_campaign_spec(_campaign(matchers)["spec"])
    assert err.value.field == field
    assert text in str(err.value)
