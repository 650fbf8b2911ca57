"""The CRD is written once, in manifests/crd/; the chart's and the package's copies are made
from it here, with the enums of `subject.kind` and `chaos.target` taken from the subject registry
(its kinds; Any and every role a kind declares).

    python hack/crd/generate.py           # write the copies (make crd)
    python hack/crd/generate.py --check   # fail when any copy, or the enum, drifted (make verify-crd)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from aftershock.model import ANY_TARGET
from aftershock.subjects import registry

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "manifests" / "crd" / "campaigns.aftershock.dev.yaml"
COPIES = (
    REPO / "charts" / "aftershock" / "crds" / SOURCE.name,
    REPO / "operator" / "aftershock" / "crd" / SOURCE.name,
)


def _enum_of(field: str) -> re.Pattern[str]:
    """The enum of a string field: its items, after the field's other keys (type, description,
    default), each on lines indented below the field's name."""
    return re.compile(
        rf"(?P<head>\n(?P<indent> +){field}:\n(?P=indent)  type: string\n(?:(?P=indent)   *[^\n]*\n)*?"
        r"(?P=indent)  enum:\n)(?P<items>(?:(?P=indent)    - [^\n]+\n)+)"
    )


def _set_enum(text: str, field: str, values: list[str]) -> str:
    match = _enum_of(field).search(text)
    if match is None:
        raise SystemExit(f"{SOURCE}: no {field} enum found")
    items = "".join(f"{match['indent']}    - {value}\n" for value in values)
    return text[: match.start("items")] + items + text[match.end("items") :]


def generated() -> str:
    """The source with its subject.kind and chaos.target enums set from the registry."""
    roles = dict.fromkeys(role for info in registry.KINDS.values() for role in info.roles)
    text = _set_enum(SOURCE.read_text(), "kind", list(registry.KINDS))
    return _set_enum(text, "target", [ANY_TARGET, *roles])


def main(argv: list[str]) -> int:
    want = generated()
    check = "--check" in argv
    drifted = [p for p in (SOURCE, *COPIES) if not p.exists() or p.read_text() != want]
    if check:
        for p in drifted:
            print(
                f"{p.relative_to(REPO)} drifted from the CRD source or the subject registry: run `make crd`"
            )
        return 1 if drifted else 0
    for p in drifted:
        p.write_text(want)
        print(f"wrote {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
