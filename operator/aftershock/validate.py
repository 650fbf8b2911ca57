"""`aftershock validate`: check Campaign manifests offline, before `kubectl apply`.

Three layers, the same ones a Campaign meets in a cluster:
1. the CRD's OpenAPI schema (types, enums, bounds, patterns, required fields), with the
   schema's defaults applied as the API server would;
2. the CRD's CEL rules (`x-kubernetes-validations`), evaluated with cel-python. Transition
   rules (those reading `oldSelf`: spec immutability) need the stored object and are skipped;
3. the operator's own rules (`model.parse_campaign_spec`: pdURL rule, selector sanity;
   protected namespaces).

The CRD is the one shipped inside the package (kept byte-identical to manifests/crd by a test).
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from aftershock.model import (
    DEFAULT_PROTECTED_NAMESPACES,
    GROUP,
    KIND,
    VERSION,
    SpecError,
    check_endpoint_namespace,
    parse_campaign_spec,
)
from aftershock.subjects import registry

CRD_RESOURCE = "campaigns.aftershock.dev.yaml"


@dataclass(frozen=True)
class Problem:
    source: str  # "schema", "cel" or "operator"
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} ({self.source})"


def load_crd_schema() -> dict[str, Any]:
    text = resources.files("aftershock").joinpath("crd", CRD_RESOURCE).read_text()
    crd = yaml.safe_load(text)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _type_ok(value: Any, expected: str) -> bool:
    if isinstance(value, bool) and expected in ("integer", "number"):
        return False
    return isinstance(value, _TYPES.get(expected, (object,)))


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """Fill in defaults the way the API server does (recursively, for present objects)."""
    if not isinstance(value, dict):
        return value
    for key, sub in (schema.get("properties") or {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            value[key] = apply_defaults(sub, value[key])
    return value


def _check_schema(schema: Mapping[str, Any], value: Any, path: str, out: list[Problem]) -> None:  # noqa: PLR0912 - one branch per document shape, in the order a reader checks them
    expected = schema.get("type")
    if expected and not _type_ok(value, expected):
        out.append(Problem("schema", path, f"must be of type {expected}, got {type(value).__name__}"))
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        out.append(Problem("schema", path, f"Unsupported value {value!r}: supported values: {allowed}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(Problem("schema", path, f"should be greater than or equal to {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            out.append(Problem("schema", path, f"should be less than or equal to {schema['maximum']}"))
        if schema.get("exclusiveMinimum") is True and value <= schema.get("minimum", float("-inf")):
            out.append(Problem("schema", path, f"should be greater than {schema['minimum']}"))
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(Problem("schema", path, f"may not be longer than {schema['maxLength']}"))
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(Problem("schema", path, f"should be at least {schema['minLength']} chars long"))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(Problem("schema", path, f"should match '{schema['pattern']}'"))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(Problem("schema", path, f"must have at most {schema['maxItems']} items"))
        for i, item in enumerate(value):
            if "items" in schema:
                _check_schema(schema["items"], item, f"{path}[{i}]", out)
    if isinstance(value, dict):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            out.append(Problem("schema", path, f"must have at most {schema['maxProperties']} items"))
        for req in schema.get("required") or ():
            if req not in value:
                out.append(Problem("schema", f"{path}.{req}", "Required value"))
        props = schema.get("properties")
        for key, sub in value.items():
            child = f"{path}.{key}"
            if props is not None and key in props:
                _check_schema(props[key], sub, child, out)
            elif isinstance(schema.get("additionalProperties"), Mapping):
                _check_schema(schema["additionalProperties"], sub, child, out)
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                out.append(Problem("schema", child, "unknown field (the API server would drop it)"))
    _check_cel(schema, value, path, out)


def _check_cel(schema: Mapping[str, Any], value: Any, path: str, out: list[Problem]) -> None:
    rules = schema.get("x-kubernetes-validations") or ()
    if not rules:
        return
    import celpy  # lazy: only `aftershock validate` needs it

    env = celpy.Environment()
    activation = {"self": celpy.json_to_cel(_as_declared(schema, value))}
    for rule in rules:
        expr = str(rule["rule"])
        if "oldSelf" in expr:
            continue  # a transition rule: needs the stored object
        try:
            ok = env.program(env.compile(expr)).evaluate(activation)
        except Exception as exc:  # a rule cel-python cannot evaluate: say so, do not guess
            out.append(Problem("cel", path, f"could not evaluate rule {expr!r} offline: {exc}"))
            continue
        if isinstance(ok, celpy.celtypes.BoolType | bool) and not bool(ok):
            out.append(Problem("cel", path, str(rule.get("message") or f"failed rule: {expr}")))


def _as_declared(schema: Mapping[str, Any], value: Any) -> Any:
    """Values as the API server hands them to CEL: a `number` field is a double even when the
    manifest wrote an integer (otherwise `0 >= 0.001` is a type error, not false)."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        return {
            k: _as_declared(props.get(k) or (extra if isinstance(extra, Mapping) else {}), v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_as_declared(schema.get("items") or {}, v) for v in value]
    return value


def validate_object(
    obj: Any,
    *,
    schema: Mapping[str, Any] | None = None,
    protected_namespaces: Iterable[str] = DEFAULT_PROTECTED_NAMESPACES,
    allow_loopback_pd: bool = False,
) -> list[Problem]:
    """Everything wrong with one Campaign object, in the order a cluster would report it."""
    if not isinstance(obj, dict):
        return [Problem("schema", "", "a Campaign must be a mapping")]
    if obj.get("apiVersion") != f"{GROUP}/{VERSION}" or obj.get("kind") != KIND:
        return [Problem("schema", "apiVersion/kind", f"not a {GROUP}/{VERSION} {KIND}")]
    problems: list[Problem] = []
    meta = obj.get("metadata") or {}
    if not meta.get("name"):
        problems.append(Problem("schema", "metadata.name", "Required value"))
    schema = schema or load_crd_schema()
    spec_schema = schema["properties"]["spec"]
    spec = apply_defaults(spec_schema, copy.deepcopy(obj.get("spec")))
    if spec is None:
        return [*problems, Problem("schema", "spec", "Required value")]
    _check_schema(spec_schema, spec, "spec", problems)
    if problems:
        return problems
    namespace = meta.get("namespace") or "default"
    if namespace in set(protected_namespaces):
        problems.append(Problem("operator", "metadata.namespace", f"namespace {namespace!r} is protected"))
    try:
        parsed = parse_campaign_spec(spec, allow_loopback_pd=allow_loopback_pd)
        # The operator's rules, all of them that need no cluster: every subject URL's namespace
        # rule (pdURL and each of etcd's endpoints), and the kind's own (another kind's field,
        # a required one missing, a target its members have no role for). Only what the API
        # server says of the Services the URLs name (ExternalName, headless) needs the cluster.
        for path, url in parsed.subject.api_url_fields:
            check_endpoint_namespace(url, namespace, path)
        registry.check_spec(parsed, namespace)
    except SpecError as exc:
        problems.append(Problem("operator", exc.field, exc.reason))
    return problems


def validate_documents(docs: Sequence[Any], **kwargs: Any) -> list[tuple[str, list[Problem]]]:
    """(name, problems) for every Campaign among the documents; other kinds are skipped."""
    results = []
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        meta = doc.get("metadata") or {}
        name = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
        results.append((name, validate_object(doc, **kwargs)))
    return results


def load_documents(path: Path) -> list[Any]:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    return [d for d in yaml.safe_load_all(text) if d is not None]
