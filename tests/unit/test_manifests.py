"""The shipped manifests, chart and scripts: what a user applies must agree with what the code expects.

No cluster here. The API server's own checks (structural schema, CEL cost, the CEL rules
themselves) need a real API server; these tests pin down everything that can be read from
the files: names, bounds that must match `aftershock.model`'s parser, RBAC, the Deployment's
safety settings, and that the chart and the plain manifests say the same thing.
"""

from __future__ import annotations

import copy
import json
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from aftershock import cli, endpoints, model
from aftershock.chaos import registry as chaos_registry
from aftershock.subjects import registry

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CHART = ROOT / "charts" / "aftershock"
CRD_PATH = MANIFESTS / "crd" / "campaigns.aftershock.dev.yaml"
CHART_CRD_PATH = CHART / "crds" / "campaigns.aftershock.dev.yaml"


def _yaml_files() -> list[Path]:
    files = [*MANIFESTS.rglob("*.yaml"), *MANIFESTS.rglob("*.yml"), *CHART.joinpath("crds").glob("*.yaml")]
    files += [CHART / "Chart.yaml", CHART / "values.yaml", ROOT / "hack" / "kind" / "kind-config.yaml"]
    return sorted(files)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _objects(directory: Path) -> Iterator[dict[str, Any]]:
    """Every Kubernetes object under `directory` (kustomization files are not objects)."""
    for path in sorted(directory.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        yield from _docs(path)


def _one(objs: Iterator[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    (doc,) = _docs(CRD_PATH)
    return doc


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (v,) = crd["spec"]["versions"]
    return v  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def spec_schema(version: dict[str, Any]) -> dict[str, Any]:
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]  # type: ignore[no-any-return]


def _apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """Structural-schema defaulting as the API server does it: absent fields get their default,
    then defaulting recurses into objects (so `default: {}` fills nested defaults)."""
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    out = dict(value)
    for name, sub in schema["properties"].items():
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = _apply_defaults(sub, out[name])
    return out


def _schema_at(spec_schema: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
    node = spec_schema
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


MINIMAL_SPEC: dict[str, Any] = {
    "subject": {"kind": "TiKV", "selector": {"matchLabels": {"app.kubernetes.io/component": "tikv"}}},
    "chaos": {},
}


# --- Every file parses ---------------------------------------------------------------------


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses_and_objects_are_well_formed(path: Path) -> None:
    docs = _docs(path)
    assert docs, f"{path} holds no YAML document"
    if path.parent == CHART or path.name == "kind-config.yaml":
        return
    for doc in docs:
        assert doc.get("apiVersion"), f"{path}: a document without apiVersion"
        assert doc.get("kind"), f"{path}: a document without kind"
        if doc["kind"] not in ("Kustomization", "Component"):
            assert doc["metadata"]["name"], f"{path}: a {doc['kind']} without a name"


def test_every_kustomization_lists_files_that_exist() -> None:
    for kfile in MANIFESTS.rglob("kustomization.yaml"):
        for res in yaml.safe_load(kfile.read_text()).get("resources", []):
            assert (kfile.parent / res).exists(), f"{kfile}: resource {res} does not exist"


def test_top_kustomization_installs_crd_and_operator_but_not_the_test_subject() -> None:
    resources = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    assert sorted(resources) == [
        "admission",
        "admission/opt-in.yaml",
        "crd",
        "operator",
        "operator/chaos-rbac.yaml",
    ]


# --- The CRD ---------------------------------------------------------------------------------


def test_chart_crd_is_byte_identical_to_manifests_crd() -> None:
    assert CHART_CRD_PATH.read_bytes() == CRD_PATH.read_bytes(), (
        "charts/aftershock/crds/ and manifests/crd/ differ: copy manifests/crd/campaigns.aftershock.dev.yaml"
    )


def test_crd_names(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{model.PLURAL}.{model.GROUP}"
    spec = crd["spec"]
    assert spec["group"] == model.GROUP
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"]) == (model.KIND, model.PLURAL, "campaign")
    assert names["shortNames"] == ["camp"]
    assert names["categories"] == ["chaos"]
    assert version["name"] == model.VERSION
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_printer_columns(version: dict[str, Any]) -> None:
    cols = {c["name"].upper(): c for c in version["additionalPrinterColumns"]}
    default_view = [n for n, c in cols.items() if c.get("priority", 0) == 0]
    wide_only = [n for n, c in cols.items() if c.get("priority", 0) == 1]
    assert default_view == ["PHASE", "PROGRESS", "P50", "P95", "VERDICT", "AGE"]
    assert sorted(wide_only) == [
        "ACT", "DETECT", "LAST RUN", "MESSAGE", "NEXT RUN", "READY", "RUN", "SUBJECT", "TRIALS"
    ]  # fmt: skip
    assert cols["DETECT"]["jsonPath"] == ".status.clocks.detectP50Seconds"
    assert cols["ACT"]["jsonPath"] == ".status.clocks.firstActionP50Seconds"
    # A past time reads as an age; a future one would read "<invalid>" as a date.
    assert cols["LAST RUN"] == {**cols["LAST RUN"], "type": "date", "jsonPath": ".status.lastScheduleTime"}
    assert cols["NEXT RUN"] == {**cols["NEXT RUN"], "type": "string", "jsonPath": ".status.nextScheduleTime"}
    assert cols["P50"] == {**cols["P50"], "type": "number", "jsonPath": ".status.recovery.p50Seconds"}
    assert cols["P95"] == {**cols["P95"], "type": "number", "jsonPath": ".status.recovery.p95Seconds"}
    assert cols["AGE"]["jsonPath"] == ".metadata.creationTimestamp"
    assert cols["READY"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert cols["SUBJECT"]["jsonPath"] == ".spec.subject.kind"


def test_printer_columns_point_at_fields_the_schema_has(version: dict[str, Any]) -> None:
    root = version["schema"]["openAPIV3Schema"]
    for col in version["additionalPrinterColumns"]:
        path = col["jsonPath"].split("[")[0].strip(".").split(".")
        if path[0] == "metadata":
            continue
        node = root
        for part in path:
            assert part in node.get("properties", {}), (
                f"column {col['name']}: {col['jsonPath']} not in schema"
            )
            node = node["properties"][part]


def test_spec_fields_are_the_ones_the_parser_reads(spec_schema: dict[str, Any]) -> None:
    props = spec_schema["properties"]
    assert set(props) == {
        "subject", "chaos", "trials", "intervalSeconds", "steadyState", "recovery",
        "slo", "suspend", "dryRun", "seed", "baseline", "remediator", "reset", "schedule", "trend",
        "detection",
    }  # fmt: skip
    matcher = props["detection"]["properties"]["alertMatchers"]["items"]
    assert set(matcher["properties"]) == {"name", "value", "matchType"}
    assert matcher["properties"]["matchType"]["enum"] == [t.value for t in model.MatchType]
    assert set(props["schedule"]["properties"]) == {
        "cron", "timeZone", "startingDeadlineSeconds", "concurrencyPolicy", "historyLimit",
    }  # fmt: skip
    assert props["schedule"]["properties"]["concurrencyPolicy"]["enum"] == [
        p.value for p in model.ConcurrencyPolicy
    ]
    assert set(props["trend"]["properties"]) == {"baselineRun", "minEffectSeconds", "alpha"}
    assert set(props["reset"]["properties"]) == {"mode", "acknowledgeDataLoss"}
    assert set(spec_schema["required"]) == {"subject", "chaos"}
    assert set(props["subject"]["properties"]) == {"kind", "selector", "pdURL", "endpoints"}
    assert set(props["subject"]["required"]) == {"kind", "selector"}
    assert set(props["chaos"]["properties"]) == {
        "type", "mode", "value", "gracePeriodSeconds", "target", "durationSeconds", "container",
        "direction", "image",
        "nodes", "acknowledgeNodeFailure",
    }  # fmt: skip
    assert set(props["steadyState"]["properties"]) == {"timeoutSeconds", "stableSeconds"}
    assert set(props["recovery"]["properties"]) == {"timeoutSeconds", "settleSeconds", "stopOnUnrecovered"}
    assert set(props["slo"]["properties"]) == {"p95RecoverySeconds"}
    assert set(props["remediator"]["properties"]) == {"kind", "name", "signals", "identities", "quietSeconds"}
    signals = props["remediator"]["properties"]["signals"]
    assert set(signals["properties"]) == {"controller", "detectedReason", "resolvedReason"}
    assert set(signals["required"]) == {"controller", "detectedReason", "resolvedReason"}
    assert props["remediator"]["properties"]["kind"]["enum"] == [k.value for k in model.RemediatorKind]


def test_enums_match_the_model_and_the_subject_registry(spec_schema: dict[str, Any]) -> None:
    assert _schema_at(spec_schema, "subject.kind")["enum"] == list(registry.KINDS)
    roles = [role for info in registry.KINDS.values() for role in info.roles]
    assert _schema_at(spec_schema, "chaos.target")["enum"] == [model.ANY_TARGET, *roles]
    assert _schema_at(spec_schema, "chaos.type")["enum"] == list(chaos_registry.KINDS)
    assert _schema_at(spec_schema, "chaos.mode")["enum"] == [m.value for m in model.ChaosMode]
    ops = _schema_at(spec_schema, "subject.selector.matchExpressions")["items"]["properties"]["operator"]
    assert ops["enum"] == ["In", "NotIn", "Exists", "DoesNotExist"]


def test_schema_defaults_give_the_parsers_defaults(spec_schema: dict[str, Any]) -> None:
    """A minimal Campaign defaulted by the API server means the same as one the parser defaults."""
    defaulted = _apply_defaults(spec_schema, copy.deepcopy(MINIMAL_SPEC))
    assert model.parse_campaign_spec(defaulted) == model.parse_campaign_spec(MINIMAL_SPEC)
    # ...and the defaults are really in the schema, not only in the parser.
    assert defaulted["trials"] == 10
    assert defaulted["steadyState"] == {"timeoutSeconds": 300, "stableSeconds": 10}
    assert defaulted["recovery"] == {"timeoutSeconds": 600, "settleSeconds": 15, "stopOnUnrecovered": True}
    assert defaulted["chaos"] == {
        "type": "node_kill",
        "mode": "one",
        "gracePeriodSeconds": 0,
        "target": "Any",
        "acknowledgeNodeFailure": False,
    }
    assert (defaulted["suspend"], defaulted["dryRun"]) == (False, False)
    assert "slo" not in defaulted
    assert "seed" not in defaulted


# Every bounded number in the spec: dotted path, and the extra spec fields it needs to be valid.
BOUNDED = [
    ("chaos.value", {"chaos": {"mode": "fixed"}}),
    ("chaos.gracePeriodSeconds", {}),
    # A held fault ends before the recovery timeout (the victims are back only after the heal).
    ("chaos.durationSeconds", {"recovery": {"timeoutSeconds": 86_400}}),
    ("trials", {}),
    ("intervalSeconds", {}),
    ("steadyState.timeoutSeconds", {}),
    ("steadyState.stableSeconds", {}),
    ("recovery.timeoutSeconds", {}),
    ("recovery.settleSeconds", {}),
    # The quiet wait must be shorter than the recovery timeout.
    (
        "remediator.quietSeconds",
        {"recovery": {"timeoutSeconds": 86_400}, "remediator": {"kind": "Deployment", "name": "healer"}},
    ),
    ("slo.p95RecoverySeconds", {}),
    ("seed", {}),
    ("schedule.startingDeadlineSeconds", {"schedule": {"cron": "@daily"}}),
    ("schedule.historyLimit", {"schedule": {"cron": "@daily"}}),
    ("trend.baselineRun", {}),
    ("trend.minEffectSeconds", {}),
    ("trend.alpha", {}),
]


def _spec_with(dotted: str, value: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(MINIMAL_SPEC)
    for key, sub in extra.items():
        spec[key] = {**spec.get(key, {}), **sub}
    *parents, leaf = dotted.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return spec


def test_every_bounded_field_is_checked_here(spec_schema: dict[str, Any]) -> None:
    def walk(node: Mapping[str, Any], prefix: str) -> Iterator[str]:
        for name, sub in node.get("properties", {}).items():
            path = f"{prefix}{name}"
            if sub.get("type") in ("integer", "number") and ("minimum" in sub or "maximum" in sub):
                yield path
            if path != "subject":  # selector internals are strings/lists, not numbers
                yield from walk(sub, f"{path}.")

    assert sorted(walk(spec_schema, "")) == sorted(p for p, _ in BOUNDED)


@pytest.mark.parametrize(("dotted", "extra"), BOUNDED, ids=[p for p, _ in BOUNDED])
def test_schema_bounds_agree_with_the_parser(
    spec_schema: dict[str, Any], dotted: str, extra: Mapping[str, Any]
) -> None:
    """What the schema admits at its edges, the parser admits; one step outside, the parser refuses."""
    field = _schema_at(spec_schema, dotted)
    step = 1 if field["type"] == "integer" else 0.0005
    lo, hi = field["minimum"], field["maximum"]
    model.parse_campaign_spec(_spec_with(dotted, lo, extra))
    model.parse_campaign_spec(_spec_with(dotted, hi, extra))
    for outside in (lo - step, hi + step):
        with pytest.raises(model.SpecError) as err:
            model.parse_campaign_spec(_spec_with(dotted, outside, extra))
        assert err.value.field == f"spec.{dotted}"


def test_pd_url_bounds(spec_schema: dict[str, Any]) -> None:
    pd = _schema_at(spec_schema, "subject.pdURL")
    assert pd["maxLength"] == 253
    assert re.search(pd["pattern"], "http://pd:2379")
    assert re.search(pd["pattern"], "https://pd:2379")
    assert not re.search(pd["pattern"], "ftp://pd:2379")


def _rules(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(node.get("x-kubernetes-validations", []))


def test_cel_rules_on_chaos(spec_schema: dict[str, Any]) -> None:
    messages = [r["message"] for r in _rules(spec_schema["properties"]["chaos"])]
    assert any("chaos.value is required" in m and "fixed-percent" in m for m in messages)
    assert any("chaos.value" in m and "100" in m for m in messages)
    assert any("chaos.value must be absent or 1" in m for m in messages)


def test_cel_rule_on_selector(spec_schema: dict[str, Any]) -> None:
    (rule,) = _rules(_schema_at(spec_schema, "subject.selector"))
    assert "an empty selector would match every pod in the namespace" in rule["message"]
    assert "matchLabels" in rule["rule"]
    assert "'In'" in rule["rule"]
    assert "'Exists'" in rule["rule"]


def test_slo_zero_is_refused_by_a_rule_not_only_by_minimum(spec_schema: dict[str, Any]) -> None:
    """The API server checks a whole number against `minimum` truncated to an integer, so
    `p95RecoverySeconds: 0` passes `minimum: 0.001`; a CEL rule has to refuse it (seen on 1.36)."""
    p95 = _schema_at(spec_schema, "slo.p95RecoverySeconds")
    (rule,) = _rules(p95)
    assert rule["rule"] == f"self >= {p95['minimum']}"
    with pytest.raises(model.SpecError):
        model.parse_campaign_spec(_spec_with("slo.p95RecoverySeconds", 0, {}))


#: When and how often a Campaign runs, and how its runs are judged, may change: not the experiment.
MUTABLE = {"suspend", "schedule", "trend"}


def test_spec_is_immutable_except_suspend(spec_schema: dict[str, Any]) -> None:
    (rule,) = _rules(spec_schema)
    assert rule["message"] == (
        "spec is immutable except spec.suspend: create a new Campaign to run a different experiment"
    )
    for name in spec_schema["properties"]:
        mentioned = f"self.{name} " in rule["rule"] or f"self.{name})" in rule["rule"]
        assert mentioned == (name not in MUTABLE), f"transition rule and spec.{name} disagree"
        if name not in spec_schema["required"] and name not in MUTABLE:
            assert f"has(self.{name}) == has(oldSelf.{name})" in rule["rule"], f"adding/removing {name}"


def test_cel_cost_is_bounded(spec_schema: dict[str, Any]) -> None:
    """The API server estimates CEL cost from maxItems/maxLength/maxProperties; unbounded lists,
    maps or strings under a rule make it reject the CRD."""

    def walk(node: Mapping[str, Any], path: str) -> Iterator[str]:
        t = node.get("type")
        if t == "array" and "maxItems" not in node:
            yield f"{path} (array without maxItems)"
        if t == "string" and "maxLength" not in node and "enum" not in node:
            yield f"{path} (string without maxLength)"
        if t == "object" and "additionalProperties" in node and "maxProperties" not in node:
            yield f"{path} (map without maxProperties)"
        for name, sub in node.get("properties", {}).items():
            yield from walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}{{}}")

    assert list(walk(spec_schema, "spec")) == []


def test_status_schema(version: dict[str, Any]) -> None:
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    # kopf writes its own fields: without this the API server prunes them silently.
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    props = status["properties"]
    assert set(props["trials"]["properties"]) == {
        "requested",
        "completed",
        "failed",
        "interrupted",
        "infraErrors",
    }
    assert set(props["recovery"]["properties"]) == {"p50Seconds", "p95Seconds", "maxSeconds", "meanSeconds"}
    assert props["observedGeneration"]["format"] == "int64"
    conditions = props["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    for documented in ("Ready", "Reconciling", "Stalled", "SpecValid", "SubjectLocked", "SubjectBusy",
                       "SteadyState", "SubjectAPIConfigured", "Configured",
                       "HealthFromPodsOnly"):  # fmt: skip
        assert documented in conditions["description"]


# --- RBAC ------------------------------------------------------------------------------------

ROLE_KINDS = ("Role", "ClusterRole")


def _all_rules() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        for doc in _docs(path):
            if doc.get("kind") in ROLE_KINDS:
                for rule in doc.get("rules", []):
                    yield f"{path.relative_to(ROOT)}:{doc['metadata']['name']}", rule
    for name, rules in _chart_rule_blocks().items():
        for rule in rules:
            yield f"chart:{name}", rule


def _chart_rule_blocks() -> dict[str, list[dict[str, Any]]]:
    """The chart's RBAC rules are plain YAML inside `define` blocks of _helpers.tpl."""
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    blocks = {}
    for name, body in re.findall(r'{{-? define "(aftershock\.\w+Rules)" -?}}(.*?){{-? end -?}}', text, re.S):
        blocks[name] = yaml.safe_load(body)
    return blocks


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, res, verb)
        for r in rules
        for group in r.get("apiGroups", [])
        for res in r.get("resources", [])
        for verb in r.get("verbs", [])
    }


def test_no_role_grants_secrets_configmaps_or_wildcards() -> None:
    rules = list(_all_rules())
    assert rules, "no RBAC rules found"
    for where, rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(key, []), f"{where}: wildcard in {key}"
        for res in rule.get("resources", []):
            assert res.split("/")[0] not in ("secrets", "configmaps"), f"{where}: grants {res}"
        assert "nonResourceURLs" not in rule, f"{where}: nonResourceURLs"


def test_cluster_role_grants_exactly_what_the_operator_uses() -> None:
    role = _one(_objects(MANIFESTS / "operator"), "ClusterRole", "aftershock")
    grants = _grants(role["rules"])
    rw = {"get", "list", "watch", "create", "update", "patch", "delete"}
    expected = (
        {("aftershock.dev", "campaigns", v) for v in ("get", "list", "watch", "patch", "update")}
        | {("aftershock.dev", "campaigns/status", v) for v in ("get", "patch", "update")}
        | {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
        # The remediator's Events (spec.remediator.signals): one watch per Campaign.
        | {("", "events", v) for v in ("list", "watch")}
        | {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")}
        # get: the opt-in label (--namespace-label).
        | {("", "namespaces", v) for v in ("get", "list", "watch")}
        | {("", "pods", v) for v in ("get", "list", "watch", "delete")}
        # What a subject's URL names, read before connecting (ExternalName refused).
        | {("", "services", "get")}
        | {("coordination.k8s.io", "leases", v) for v in rw}
        | {
            ("apps", f"{w}/scale", v)
            for w in ("deployments", "statefulsets")
            for v in ("get", "patch", "update")
        }
        | {("apps", w, v) for w in ("deployments", "statefulsets") for v in ("get", "list", "patch")}
    )
    assert grants == expected
    binding = _one(_objects(MANIFESTS / "operator"), "ClusterRoleBinding", "aftershock")
    assert binding["roleRef"]["name"] == "aftershock"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "aftershock", "namespace": "aftershock-system"}
    ]
    # Asking about Campaign authors (ADR 0012): its own ClusterRole, bound to the operator.
    author = _one(_objects(MANIFESTS / "operator"), "ClusterRole", "aftershock-author-check")
    assert _grants(author["rules"]) == {("authorization.k8s.io", "subjectaccessreviews", "create")}
    author_binding = _one(_objects(MANIFESTS / "operator"), "ClusterRoleBinding", "aftershock-author-check")
    assert author_binding["subjects"] == binding["subjects"]
    # spec.reset Recreate's claims: a ClusterRole bound nowhere, for a RoleBinding per namespace.
    recreate = _one(_objects(MANIFESTS / "operator"), "ClusterRole", "aftershock-reset-recreate")
    assert _grants(recreate["rules"]) == {("", "persistentvolumeclaims", v) for v in ("get", "delete")}
    bindings = [o for o in _objects(MANIFESTS / "operator") if o["kind"].endswith("Binding")]
    assert all(b["roleRef"]["name"] != "aftershock-reset-recreate" for b in bindings)


_CLUSTER_SCOPED = ("customresourcedefinitions", "namespaces")


def test_namespaced_variant_grants_the_same_minus_cluster_scoped_things() -> None:
    cluster = _grants(_one(_objects(MANIFESTS / "operator"), "ClusterRole", "aftershock")["rules"])
    objs = list(_objects(MANIFESTS / "operator-namespaced"))
    role = _one(iter(objs), "Role", "aftershock")
    crds = _one(iter(objs), "ClusterRole", "aftershock-crds")
    assert _grants(role["rules"]) == {g for g in cluster if g[1] not in _CLUSTER_SCOPED}
    assert _grants(crds["rules"]) == {g for g in cluster if g[1] == "customresourcedefinitions"}
    assert role["metadata"]["namespace"] not in model.DEFAULT_PROTECTED_NAMESPACES
    kust = yaml.safe_load((MANIFESTS / "operator-namespaced" / "kustomization.yaml").read_text())
    deleted = [p["patch"] for p in kust["patches"] if "$patch: delete" in p.get("patch", "")]
    assert len(deleted) == 2, "the cluster-wide ClusterRole and its binding must be deleted"
    (args_patch,) = [p for p in kust["patches"] if p.get("target", {}).get("kind") == "Deployment"]
    args = yaml.safe_load(args_patch["patch"])[0]["value"]
    parsed = cli.build_parser().parse_args(args)
    assert parsed.namespace == [role["metadata"]["namespace"]]
    assert not parsed.all_namespaces


def test_chart_rules_match_the_manifests() -> None:
    cluster = _grants(_one(_objects(MANIFESTS / "operator"), "ClusterRole", "aftershock")["rules"])
    blocks = _chart_rule_blocks()
    namespaced = _grants(blocks["aftershock.namespacedRules"])
    crd_rules = _grants(blocks["aftershock.crdRules"])
    assert namespaced == {g for g in cluster if g[1] not in _CLUSTER_SCOPED}
    author = _grants(
        _one(_objects(MANIFESTS / "operator"), "ClusterRole", "aftershock-author-check")["rules"]
    )
    assert crd_rules == {g for g in cluster if g[1] == "customresourcedefinitions"} | author
    rbac = (CHART / "templates" / "rbac.yaml").read_text()
    assert 'resources: ["namespaces"]' in rbac
    assert 'verbs: ["get", "list", "watch"]' in rbac
    assert "has . $.Values.protectedNamespaces" in rbac, "the chart must refuse Roles in protected namespaces"


# --- The operator's Deployment -----------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return _one(_objects(MANIFESTS / "operator"), "Deployment", "aftershock")


def test_deployment_is_a_single_writer(deployment: dict[str, Any]) -> None:
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_deployment_runs_unprivileged(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "aftershock"
    # No CPU limit (throttling delays a timing tool); memory bounded with headroom over the
    # measured peak (issue 21).
    assert c["resources"] == {
        "requests": {"cpu": "50m", "memory": "160Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    parsed = cli.build_parser().parse_args(c["args"])
    assert (parsed.max_concurrent_campaigns, parsed.pod_watch_scope) == (20, "namespace")


def test_deployment_args_are_accepted_by_the_cli_and_match_the_volumes(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert (c["image"], c["imagePullPolicy"]) == ("aftershock:dev", "IfNotPresent")
    args = cli.build_parser().parse_args(c["args"])
    assert args.command == "run"
    assert args.all_namespaces
    assert args.db == "/var/lib/aftershock/ledger.db"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes[mounts[str(Path(args.db).parent)]]["persistentVolumeClaim"]["claimName"]
        == "aftershock-ledger"
    )
    assert "emptyDir" in volumes[mounts["/tmp"]], "read-only root: /tmp must be writable"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": args.liveness_port, "metrics": args.metrics_port}
    probe = c["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080


def test_operator_pods_carry_the_label_the_operator_protects(deployment: dict[str, Any]) -> None:
    key, value = model.OPERATOR_POD_LABEL
    assert deployment["spec"]["template"]["metadata"]["labels"][key] == value
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_ledger_pvc_and_metrics_service() -> None:
    objs = list(_objects(MANIFESTS / "operator"))
    pvc = _one(iter(objs), "PersistentVolumeClaim", "aftershock-ledger")
    # One pod only may mount the ledger (ADR 0016); the test bed binds and enforces it.
    assert pvc["spec"]["accessModes"] == ["ReadWriteOncePod"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in pvc["spec"]
    svc = _one(iter(objs), "Service", "aftershock-metrics")
    assert svc["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(9090, "metrics")]
    ns = {
        o["metadata"].get("namespace")
        for o in objs
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")
    }
    assert ns == {"aftershock-system"}


# --- The TiKV test subject and the examples -------------------------------------------------


@pytest.fixture(scope="module")
def tikv_objects() -> list[dict[str, Any]]:
    return list(_objects(MANIFESTS / "tikv"))


def _pod_labels(sts: Mapping[str, Any]) -> dict[str, str]:
    return dict(sts["spec"]["template"]["metadata"]["labels"])


def test_tikv_cluster_shape(tikv_objects: list[dict[str, Any]]) -> None:
    tikv = _one(iter(tikv_objects), "StatefulSet", "tikv")
    pd = _one(iter(tikv_objects), "StatefulSet", "pd")
    assert tikv["spec"]["replicas"] == 3
    assert pd["spec"]["replicas"] == 1
    for sts, image in ((tikv, "pingcap/tikv:v8.5.3"), (pd, "pingcap/pd:v8.5.3")):
        assert sts["metadata"]["namespace"] == "tikv"
        assert sts["spec"]["podManagementPolicy"] == "Parallel"
        (c,) = sts["spec"]["template"]["spec"]["containers"]
        assert c["image"] == image
        assert c.get("readinessProbe"), f"{sts['metadata']['name']}: no readiness probe"
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
        assert "storageClassName" not in claim["spec"]
        headless = _one(iter(tikv_objects), "Service", sts["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["publishNotReadyAddresses"] is True
        assert headless["spec"]["selector"].items() <= _pod_labels(sts).items()
    assert _pod_labels(tikv)["app.kubernetes.io/component"] == "tikv"
    assert _pod_labels(pd)["app.kubernetes.io/component"] == "pd"
    (tikv_c,) = tikv["spec"]["template"]["spec"]["containers"]
    assert "--pd=http://pd:2379" in tikv_c["args"]
    assert tikv_c["readinessProbe"]["tcpSocket"]["port"] in ("server", 20160)
    assert tikv_c["resources"]["limits"]["memory"] == "1Gi"


def test_tikv_config_is_small_footprint(tikv_objects: list[dict[str, Any]]) -> None:

    cm = _one(iter(tikv_objects), "ConfigMap", "tikv-config")
    conf = tomllib.loads(cm["data"]["tikv.toml"])
    assert conf["storage"]["block-cache"]["capacity"] == "256MiB"
    assert conf["storage"]["reserve-space"] == "0MB"
    assert conf["rocksdb"]["max-open-files"] == 256
    assert conf["raftdb"]["max-open-files"] == 256


EXAMPLES = sorted((MANIFESTS / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_campaigns_parse_and_select_only_tikv_pods(
    path: Path, spec_schema: dict[str, Any], tikv_objects: list[dict[str, Any]], deployment: dict[str, Any]
) -> None:
    (campaign,) = _docs(path)
    assert campaign["apiVersion"] == f"{model.GROUP}/{model.VERSION}"
    assert campaign["kind"] == model.KIND
    assert campaign["metadata"]["namespace"] == "tikv"
    assert path.read_text().startswith("#"), "each example opens with comments saying how to use it"
    spec = model.parse_campaign_spec(_apply_defaults(spec_schema, campaign["spec"]))
    tikv = _pod_labels(_one(iter(tikv_objects), "StatefulSet", "tikv"))
    pd = _pod_labels(_one(iter(tikv_objects), "StatefulSet", "pd"))
    operator = deployment["spec"]["template"]["metadata"]["labels"]
    assert spec.subject.selector.matches(tikv)
    assert not spec.subject.selector.matches(pd)
    assert not spec.subject.selector.matches(operator)
    if spec.subject.pd_url is not None:
        model.check_pd_namespace(spec.subject.pd_url, "tikv")
        pd_svc = _one(iter(tikv_objects), "Service", "pd")
        assert spec.subject.pd_url == f"http://pd:{pd_svc['spec']['ports'][0]['port']}"


def test_the_readme_example_is_the_first_example(spec_schema: dict[str, Any]) -> None:
    (campaign,) = _docs(MANIFESTS / "examples" / "campaign.yaml")
    spec = model.parse_campaign_spec(_apply_defaults(spec_schema, campaign["spec"]))
    assert campaign["metadata"]["name"] == "tikv-node-kill"
    assert (spec.trials, spec.slo_p95_recovery_seconds, spec.chaos.mode) == (10, 60.0, model.ChaosMode.ONE)
    assert spec.subject.pd_url == "http://pd:2379"


ETCD_EXAMPLE = MANIFESTS / "examples" / "etcd"


def test_the_etcd_example_names_the_members_its_statefulset_makes(spec_schema: dict[str, Any]) -> None:
    """Issue 21: members as real clusters name them, <pod>.<headless-service>, in any namespace."""
    (campaign,) = _docs(ETCD_EXAMPLE / "campaign.yaml")
    objs = _docs(ETCD_EXAMPLE / "etcd.yaml")
    assert "namespace" not in campaign["metadata"]
    assert all("namespace" not in o["metadata"] for o in objs)  # applied with -n, any namespace
    spec = model.parse_campaign_spec(_apply_defaults(spec_schema, campaign["spec"]))
    registry.check_spec(spec, "etcd-demo")
    sts = _one(iter(objs), "StatefulSet", "etcd")
    svc = _one(iter(objs), "Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"  # headless: a DNS name per member
    assert spec.subject.selector.matches(_pod_labels(sts))
    assert svc["spec"]["selector"].items() <= _pod_labels(sts).items()
    members = [f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])]
    services = {svc["metadata"]["name"]: endpoints.ServiceInfo(type="ClusterIP", headless=True)}
    qualified = [endpoints.resolve_service_name(u, "etcd-demo", services) for u in spec.subject.endpoints]
    (client,) = [p["port"] for p in svc["spec"]["ports"] if p["name"] == "client"]
    assert qualified == [f"http://{m}.etcd.etcd-demo.svc:{client}" for m in members]
    # The names the members advertise are the ones the Campaign names.
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert "--advertise-client-urls=http://$(POD_NAME).etcd:2379" in c["command"]
    assert {u.removeprefix("http://").split(".")[0] for u in spec.subject.endpoints} == set(members)


def test_examples_cover_dry_run_and_fixed_mode(spec_schema: dict[str, Any]) -> None:
    specs = {
        p.name: model.parse_campaign_spec(_apply_defaults(spec_schema, _docs(p)[0]["spec"])) for p in EXAMPLES
    }
    assert specs["campaign-dry-run.yaml"].dry_run
    assert specs["campaign-fixed.yaml"].chaos.mode is model.ChaosMode.FIXED
    assert specs["campaign-fixed.yaml"].chaos.value == 1


def test_each_chaos_kind_has_an_example_its_subject_can_take(
    spec_schema: dict[str, Any], tikv_objects: list[dict[str, Any]]
) -> None:
    specs = [model.parse_campaign_spec(_apply_defaults(spec_schema, _docs(p)[0]["spec"])) for p in EXAMPLES]
    assert {s.chaos.type for s in specs} == set(chaos_registry.KINDS)
    for spec in specs:
        chaos_registry.kind_of(spec.chaos)  # no field the kind refuses
    tikv = _one(iter(tikv_objects), "StatefulSet", "tikv")["spec"]["template"]["spec"]
    (killed,) = [s for s in specs if s.chaos.type == "container_kill"]
    # container_kill refuses pods without one PID namespace, and kills the named container.
    assert tikv["shareProcessNamespace"] is True
    assert killed.chaos.container in [c["name"] for c in tikv["containers"]]


# --- The chart (without helm) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())  # type: ignore[no-any-return]


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "aftershock"
    assert chart["appVersion"] == "0.1.0"


def test_values_defaults_match_the_plain_manifests(
    values: dict[str, Any], deployment: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert values["watchNamespaces"] == []
    assert set(values["protectedNamespaces"]) >= {"kube-system", "kube-public", "kube-node-lease"}
    assert values["resources"] == c["resources"]
    assert values["securityContext"] == c["securityContext"]
    assert values["podSecurityContext"] == pod["securityContext"]
    assert values["persistence"]["size"] == "1Gi"
    assert values["persistence"]["enabled"] is True
    assert values["metrics"]["port"] == 9090
    assert values["livenessPort"] == 8080
    assert values["metrics"]["serviceMonitor"]["enabled"] is False
    parsed = cli.build_parser().parse_args(c["args"])
    assert values["maxConcurrentCampaigns"] == parsed.max_concurrent_campaigns == 20
    assert values["podWatchScope"] == parsed.pod_watch_scope == "namespace"
    assert values["image"]["tag"] == c["image"].rsplit(":", 1)[1] == "dev"  # what make images builds


def _lookup(values: Mapping[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def test_every_value_a_template_reads_is_in_values_yaml(values: dict[str, Any]) -> None:
    missing = []
    for tpl in sorted((CHART / "templates").iterdir()):
        for ref in re.findall(r"\$?\.Values\.([A-Za-z0-9_.]+)", tpl.read_text()):
            if not _lookup(values, ref.rstrip(".")):
                missing.append(f"{tpl.name}: .Values.{ref}")
    assert missing == []


def _validate(schema: Mapping[str, Any], value: Any, root: Mapping[str, Any], path: str = "") -> list[str]:
    """The subset of JSON Schema that values.schema.json uses (Helm validates the rest)."""
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    errors: list[str] = []
    types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "integer": int,
        "number": (int, float),
    }
    if "type" in schema:
        ok = isinstance(value, types[schema["type"]]) and not (
            schema["type"] in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            return [f"{path}: expected {schema['type']}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for req in schema.get("required", []):
            if req not in value:
                errors.append(f"{path}.{req}: required")
        for k, v in value.items():
            if k in schema.get("properties", {}):
                errors += _validate(schema["properties"][k], v, root, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{k}: not in values.schema.json")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += _validate(schema["additionalProperties"], v, root, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _validate(schema["items"], item, root, f"{path}[{i}]")
    return errors


def test_values_yaml_satisfies_values_schema(values: dict[str, Any]) -> None:

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _validate(schema, values, schema) == []
    # The schema is not a rubber stamp.
    assert _validate(schema, {**values, "logFormat": "xml"}, schema)
    assert _validate(schema, {**values, "watchNamespaces": ["Not_A_Namespace"]}, schema)
    assert _validate(schema, {**values, "typo": 1}, schema)


def test_chart_deployment_template_keeps_the_safety_settings() -> None:
    text = (CHART / "templates" / "deployment.yaml").read_text()
    assert "replicas: 1" in text
    assert "type: Recreate" in text
    assert "- --all-namespaces" in text
    assert "- --namespace" in text
    assert "- --protected-namespace" in text
    assert "toYaml .Values.securityContext" in text
    assert "toYaml .Values.podSecurityContext" in text


# --- Image and local cluster ---------------------------------------------------------------


def test_dockerfile_runs_the_cli_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim|^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert re.search(r"^USER 65532(:65532)?$", text, re.M)
    assert 'ENTRYPOINT ["aftershock"]' in text
    assert 'CMD ["run", "--all-namespaces"]' in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    assert "HOME=/tmp" in text
    cli.build_parser().parse_args(["run", "--all-namespaces"])


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*") :][:1] == ["*"], "allowlist: ignore everything first"
    assert "!operator/" in lines
    assert "!pyproject.toml" in lines


def test_kind_config_has_three_workers_in_three_zones() -> None:
    conf = yaml.safe_load((ROOT / "hack" / "kind" / "kind-config.yaml").read_text())
    roles = [n["role"] for n in conf["nodes"]]
    assert roles.count("control-plane") == 1
    assert roles.count("worker") == 3
    zones = [n["labels"]["topology.kubernetes.io/zone"] for n in conf["nodes"] if n["role"] == "worker"]
    assert len(set(zones)) == 3
    assert conf["name"] == "aftershock"


@pytest.mark.parametrize("name", ["kind-up.sh", "kind-down.sh", "tikv-up.sh", "image.sh", "deploy.sh"])
def test_kind_scripts_are_strict_and_check_their_tools(name: str) -> None:
    path = ROOT / "hack" / "kind" / name
    assert path.stat().st_mode & stat.S_IXUSR, f"{name} is not executable"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert re.search(r"^need .*kind", text, re.M), f"{name} does not check for its tools"


def test_the_etcd_container_kill_example_fits_its_statefulset(spec_schema: dict[str, Any]) -> None:
    (campaign,) = _docs(ETCD_EXAMPLE / "campaign-container-kill.yaml")
    spec = model.parse_campaign_spec(_apply_defaults(spec_schema, campaign["spec"]))
    registry.check_spec(spec, "etcd-demo")
    assert spec.chaos.type == "container_kill"
    sts = _one(iter(_docs(ETCD_EXAMPLE / "etcd.yaml")), "StatefulSet", "etcd")
    pod = sts["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True  # container_kill refuses pods without it
    assert spec.chaos.container in {c["name"] for c in pod["containers"]}
    assert spec.subject.selector.matches(_pod_labels(sts))
