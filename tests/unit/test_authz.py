"""Who may make the operator do what: the rights table, the author annotation, the operator's
own check before a run (engine/admit), and the admission policies generated from the table."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from aftershock import authz, cli
from aftershock.authz import AUTHOR_ANNOTATION, Author, Right
from aftershock.chaos import registry as chaos_registry
from aftershock.engine import admit
from aftershock.engine.outcomes import RunnerSettings
from aftershock.model import DEFAULT_PROTECTED_NAMESPACES, parse_campaign_spec

CHAOS = chaos_registry.authz_rights()
REPO = Path(__file__).resolve().parents[2]

SUBJECT = {"kind": "TiKV", "selector": {"matchLabels": {"app": "tikv"}}}


def spec(**extra: Any) -> Any:
    return parse_campaign_spec({"subject": SUBJECT, "chaos": {"type": "node_kill", "mode": "one"}, **extra})


# --- the rights a Campaign needs ----------------------------------------------------------------


def test_a_pod_kill_needs_delete_pods_and_nothing_else() -> None:
    assert authz.required_rights(spec(), CHAOS) == (Right("delete", "pods"),)


def test_a_dry_run_needs_nothing() -> None:
    assert authz.required_rights(spec(dryRun=True, baseline=True), CHAOS) == ()


def test_recreate_needs_delete_claims_and_restart_only_pods() -> None:
    restart = authz.required_rights(spec(reset={"mode": "Restart"}), CHAOS)
    assert restart == (Right("delete", "pods"),)
    recreate = authz.required_rights(spec(reset={"mode": "Recreate", "acknowledgeDataLoss": True}), CHAOS)
    assert recreate == (Right("delete", "pods"), Right("delete", "persistentvolumeclaims"))


def test_baseline_needs_patch_on_the_named_remediators_scale() -> None:
    rights = authz.required_rights(
        spec(baseline=True, remediator={"kind": "StatefulSet", "name": "healer"}), CHAOS
    )
    assert Right("patch", "statefulsets", "apps", "scale", "healer") in rights
    assert Right("patch", "statefulsets", "apps", "scale", "healer").describe() == (
        "patch statefulsets/scale healer"
    )


def test_every_right_the_operator_asks_for_is_in_the_policy_table() -> None:
    """The policy is generated from RIGHTS; the operator asks required_rights: one table."""
    table = {(c.right.verb, c.right.group, c.right.subresource) for c in authz.conditional_rights(CHAOS)}
    for s in (
        spec(),
        spec(reset={"mode": "Recreate", "acknowledgeDataLoss": True}),
        spec(baseline=True, remediator={"kind": "Deployment", "name": "d"}),
    ):
        for r in authz.required_rights(s, CHAOS):
            assert (r.verb, r.group, r.subresource) in table, r
            assert any(
                c.right.resource == r.resource or c.cel_resource for c in authz.conditional_rights(CHAOS)
            )


# --- the author -----------------------------------------------------------------------------------


def test_the_author_is_read_from_the_policys_json() -> None:
    raw = json.dumps({"username": "alice", "uid": "u-1", "groups": ["dev", "system:authenticated"]})
    assert authz.parse_author({AUTHOR_ANNOTATION: raw}) == Author(
        "alice", "u-1", ("dev", "system:authenticated")
    )


@pytest.mark.parametrize(
    "annotations",
    [
        {},
        {AUTHOR_ANNOTATION: "alice"},
        {AUTHOR_ANNOTATION: '{"username": ""}'},
        {AUTHOR_ANNOTATION: '{"groups": [1]}'},
    ],
)
def test_a_missing_or_unreadable_author_says_what_to_fix(annotations: Mapping[str, str]) -> None:
    with pytest.raises(authz.AuthorError, match=r"aftershock-author|create the Campaign again"):
        authz.parse_author(annotations)


# --- the operator's check before a run --------------------------------------------------------


class FakeAccess:
    def __init__(self, author_rights: set[Right], own: set[Right], labels: Mapping[str, str]) -> None:
        self.author_rights, self.own, self.labels = author_rights, own, labels
        self.asked: list[tuple[str, Right, Author | None]] = []

    async def author_may(self, namespace: str, right: Right, author: Author) -> bool:
        self.asked.append((namespace, right, author))
        return right in self.author_rights

    async def operator_may(self, namespace: str, right: Right) -> bool:
        self.asked.append((namespace, right, None))
        return right in self.own

    async def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self.labels


ALICE = {AUTHOR_ANNOTATION: json.dumps({"username": "alice", "groups": ["dev"]})}
PODS = Right("delete", "pods")
CLAIMS = Right("delete", "persistentvolumeclaims")


def check(
    api: FakeAccess, s: Any, annotations: Mapping[str, str] = ALICE, **settings: Any
) -> admit.Refusal | None:
    opts = RunnerSettings(protected_namespaces=frozenset(), author_check=True, **settings)
    return asyncio.run(admit.refusal(namespace="ns", annotations=annotations, spec=s, settings=opts, api=api))


def test_an_author_who_may_delete_pods_may_run_a_pod_kill() -> None:
    api = FakeAccess({PODS}, {PODS}, {})
    assert check(api, spec()) is None
    assert (("ns", PODS, Author("alice", "", ("dev",)))) in api.asked


def test_an_author_who_may_not_is_refused_naming_the_right() -> None:
    refused = check(FakeAccess(set(), {PODS}, {}), spec())
    assert refused is not None
    assert refused.reason == "Unauthorized"
    assert "alice may not delete pods in namespace ns" in refused.message
    assert refused.field == f"metadata.annotations[{AUTHOR_ANNOTATION}]"


def test_no_author_recorded_is_refused_unless_the_check_is_off() -> None:
    api = FakeAccess({PODS}, {PODS}, {})
    refused = check(api, spec(), annotations={})
    assert refused is not None
    assert refused.reason == "AuthorUnknown"
    opts = RunnerSettings(protected_namespaces=frozenset(), author_check=False)
    assert (
        asyncio.run(admit.refusal(namespace="ns", annotations={}, spec=spec(), settings=opts, api=api))
        is None
    )


def test_recreate_is_refused_where_the_operator_may_not_delete_claims() -> None:
    s = spec(reset={"mode": "Recreate", "acknowledgeDataLoss": True})
    refused = check(FakeAccess({PODS, CLAIMS}, {PODS}, {}), s)
    assert refused is not None
    assert refused.reason == "OperatorNotPermitted"
    assert "create rolebinding aftershock-reset-recreate" in refused.message


def test_node_failure_without_the_operators_node_rights_names_the_component() -> None:
    """The kustomize installs grant node_failure's cluster-wide rights only with its component:
    without it the run is refused up front, saying which component to add."""
    s = spec(
        chaos={"type": "node_failure", "durationSeconds": 5, "acknowledgeNodeFailure": True},
        recovery={"timeoutSeconds": 60, "settleSeconds": 0},
    )
    nodes = set(chaos_registry.authz_rights()["node_failure"])
    assert nodes
    assert all(r.cluster for r in nodes)
    refused = check(FakeAccess(nodes, set(), {}), s)
    assert refused is not None
    assert refused.reason == "OperatorNotPermitted"
    assert "get nodes (cluster-wide)" in refused.message
    assert "add the kustomize component manifests/node-failure" in refused.message
    assert "node_failure to the Helm chart's chaosKinds" in refused.message
    assert "nothing was done" in refused.message
    assert check(FakeAccess(nodes, nodes, {}), s) is None


def test_an_unlabelled_namespace_is_refused_when_namespaces_opt_in() -> None:
    api = FakeAccess({PODS}, {PODS}, {"other": "x"})
    refused = check(api, spec(), namespace_label=("aftershock.dev/campaigns", "enabled"))
    assert refused is not None
    assert refused.reason == "NamespaceNotEnabled"
    assert "kubectl label namespace ns aftershock.dev/campaigns=enabled" in refused.message
    api.labels = {"aftershock.dev/campaigns": "enabled"}
    assert check(api, spec(), namespace_label=("aftershock.dev/campaigns", "enabled")) is None


# --- the generated policies ----------------------------------------------------------------------


def _docs(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / path).read_text()) if d]


def test_the_campaign_policy_checks_every_right_of_the_table_and_protects_the_operators_namespace() -> None:
    policy, binding = _docs("manifests/admission/campaigns.yaml")
    checks = [v["expression"] for v in policy["spec"]["validations"]]
    for c in authz.conditional_rights(CHAOS):
        assert any(f".check('{c.right.verb}')" in e and c.cel in e for e in checks), c
    protected = checks[0]
    for ns in (*DEFAULT_PROTECTED_NAMESPACES, "aftershock-system"):
        assert f"'{ns}'" in protected
    assert binding["spec"] == {"policyName": "aftershock-campaigns", "validationActions": ["Deny"]}
    assert "matchResources" not in binding["spec"], "the shipped binding covers every namespace"


def test_the_author_policy_records_the_same_json_the_validating_policy_compares() -> None:
    mutating, _ = _docs("manifests/admission/author.yaml")
    validating, _ = _docs("manifests/admission/campaigns.yaml")
    (author_var,) = [v for v in mutating["spec"]["variables"] if v["name"] == "author"]
    (same,) = [v for v in validating["spec"]["variables"] if v["name"] == "author"]
    assert author_var == same
    assert mutating["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE", "UPDATE"]


def test_the_operator_policy_is_bound_to_the_operators_own_service_account() -> None:
    policy, _ = _docs("manifests/admission/operator.yaml")
    (cond,) = policy["spec"]["matchConditions"]
    assert "system:serviceaccount:aftershock-system:aftershock" in cond["expression"]


def test_the_namespaced_install_leaves_the_opt_in_out() -> None:
    kust = yaml.safe_load((REPO / "manifests/operator-namespaced/kustomization.yaml").read_text())
    assert "../admission" in kust["resources"]
    admission = yaml.safe_load((REPO / "manifests/admission/kustomization.yaml").read_text())
    assert "opt-in.yaml" not in admission["resources"]


# --- the operator's flags ------------------------------------------------------------------------


def test_the_operators_own_namespace_is_protected_and_the_opt_in_is_cluster_wide_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    args = cli.build_parser().parse_args(
        ["run", "-A", "--namespace-label", "aftershock.dev/campaigns=enabled"]
    )
    settings = cli.runner_settings(args, everywhere=True)
    assert "ops" in settings.protected_namespaces
    assert settings.protected_namespaces > DEFAULT_PROTECTED_NAMESPACES
    assert settings.namespace_label == ("aftershock.dev/campaigns", "enabled")
    assert settings.author_check, "the author check is on by default"
    args = cli.build_parser().parse_args(
        ["run", "-n", "tikv", "--namespace-label", "a=b", "--author-check", "off"]
    )
    settings = cli.runner_settings(args, everywhere=False)
    assert settings.namespace_label is None
    assert not settings.author_check
    monkeypatch.delenv("POD_NAMESPACE")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.runner_settings(args, everywhere=False).protected_namespaces == DEFAULT_PROTECTED_NAMESPACES


def test_the_cluster_wide_manifests_opt_namespaces_in_and_set_the_operators_namespace() -> None:
    (deployment,) = [
        d for d in yaml.safe_load_all((REPO / "manifests/operator/deployment.yaml").read_text()) if d
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = cli.build_parser().parse_args(container["args"])
    assert args.namespace_label == ("aftershock.dev/campaigns", "enabled")
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert env["POD_NAMESPACE"] == "metadata.namespace"


def test_a_chaos_kind_that_declares_no_rights_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chaos_registry, "authz_rights", dict)
    refused = check(FakeAccess({PODS}, {PODS}, {}), spec())
    assert refused is not None
    assert refused.field == "spec.chaos.type"
    assert "declares no rights" in refused.message
