"""`aftershock validate` judges Campaigns offline like the API server and the operator would."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from aftershock import validate

REPO = Path(__file__).resolve().parents[2]

VALID: dict[str, Any] = {
    "apiVersion": "aftershock.dev/v1alpha1",
    "kind": "Campaign",
    "metadata": {"name": "ok", "namespace": "tikv"},
    "spec": {
        "subject": {
            "kind": "TiKV",
            "selector": {"matchLabels": {"app.kubernetes.io/component": "tikv"}},
            "pdURL": "http://pd:2379",
        },
        "chaos": {"type": "node_kill"},
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(VALID)
    node = obj
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return obj


def test_packaged_crd_is_the_one_in_manifests() -> None:
    packaged = (REPO / "operator" / "aftershock" / "crd" / validate.CRD_RESOURCE).read_bytes()
    assert packaged == (REPO / "manifests" / "crd" / validate.CRD_RESOURCE).read_bytes()


def test_the_examples_are_valid() -> None:
    examples = sorted((REPO / "manifests" / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        results = validate.validate_documents(validate.load_documents(path))
        assert results, path
        for name, problems in results:
            assert problems == [], (path, name, problems)


@pytest.mark.parametrize(
    ("path", "value", "field", "text"),
    [
        ("spec.trials", 0, "spec.trials", "greater than or equal to 1"),
        ("spec.chaos.type", "network_delay", "spec.chaos.type", "Unsupported value"),
        ("spec.chaos.mode", "fixed", "spec.chaos", "chaos.value is required"),
        ("spec.subject.selector", {"matchLabels": {}}, "spec.subject.selector", "every pod"),
        ("spec.subject.pdURL", "ftp://pd:2379", "spec.subject.pdURL", "should match"),
        ("spec.slo", {"p95RecoverySeconds": 0}, "spec.slo.p95RecoverySeconds", "greater than 0"),
    ],
)
def test_schema_and_cel_rules(path: str, value: Any, field: str, text: str) -> None:
    problems = validate.validate_object(_with(path, value))
    assert any(p.field == field and text in p.message for p in problems), problems


def test_operator_rules_apply_after_the_schema() -> None:
    metadata = validate.validate_object(_with("spec.subject.pdURL", "http://169.254.169.254/"))
    assert [(p.source, p.field) for p in metadata] == [("operator", "spec.subject.pdURL")]
    other_ns = validate.validate_object(_with("spec.subject.pdURL", "http://pd.kube-system.svc:2379"))
    assert [(p.source, p.field) for p in other_ns] == [("operator", "spec.subject.pdURL")]
    protected = validate.validate_object(_with("metadata.namespace", "kube-system"))
    assert [(p.source, p.field) for p in protected] == [("operator", "metadata.namespace")]


ETCD_SUBJECT = {"kind": "Etcd", "selector": {"matchLabels": {"app": "etcd"}}}


@pytest.mark.parametrize(
    ("subject", "field", "words"),
    [
        # Offline and in the operator alike (issue 21): once only pdURL's namespace was checked.
        (
            {**ETCD_SUBJECT, "endpoints": ["http://etcd-0.etcd.kube-system.svc:2379"]},
            "spec.subject.endpoints[0]",
            "outside the Campaign's namespace 'tikv'",
        ),
        (
            {**ETCD_SUBJECT, "endpoints": ["http://etcd-0.etcd:2379", "http://etcd.other.svc:2379"]},
            "spec.subject.endpoints[1]",
            "outside the Campaign's namespace",
        ),
        ({**ETCD_SUBJECT, "pdURL": "http://pd:2379"}, "spec.subject.pdURL", "is a TiKV field"),
        (ETCD_SUBJECT, "spec.subject.endpoints", "is required for Etcd"),
        (
            {**VALID["spec"]["subject"], "endpoints": ["http://pd:2379"]},
            "spec.subject.endpoints",
            "not a TiKV field",
        ),
    ],
)
def test_the_subject_kinds_rules_are_the_operators(subject: dict[str, Any], field: str, words: str) -> None:
    problems = validate.validate_object(_with("spec.subject", subject))
    assert [(p.source, p.field) for p in problems] == [("operator", field)], problems
    assert words in problems[0].message


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://etcd-0.etcd:2379",
        "http://etcd-0.etcd-headless.tikv.svc.cluster.local:2379",
        "http://etcd-client.tikv.svc:2379",
    ],
)
def test_etcd_members_named_as_real_clusters_name_them_are_valid(endpoint: str) -> None:
    assert validate.validate_object(_with("spec.subject", {**ETCD_SUBJECT, "endpoints": [endpoint]})) == []


def test_unknown_fields_are_reported() -> None:
    problems = validate.validate_object(_with("spec.trails", 3))
    assert [p.field for p in problems] == ["spec.trails"]


def test_a_valid_campaign_has_no_problems() -> None:
    assert validate.validate_object(copy.deepcopy(VALID)) == []


def test_documents_of_other_kinds_are_skipped(tmp_path: Path) -> None:
    f = tmp_path / "mixed.yaml"
    f.write_text(
        yaml.safe_dump_all([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, VALID])
    )
    results = validate.validate_documents(validate.load_documents(f))
    assert results == [("tikv/ok", [])]


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aftershock import cli

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(VALID))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with("spec.trials", 0)))
    assert cli.main(["validate", str(good)]) == 0
    assert cli.main(["validate", str(good), str(bad)]) == 1
    assert "spec.trials" in capsys.readouterr().out
    assert cli.main(["validate", str(tmp_path / "missing.yaml")]) == 2
