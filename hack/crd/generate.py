"""The CRD is written once, in manifests/crd/; the chart's and the package's copies are made
from it here, with `subject.kind`'s enum taken from the subject registry.

    python hack/crd/generate.py           # write the copies (make crd)
    python hack/crd/generate.py --check   # fail when any copy, or the enum, drifted (make verify-crd)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from aftershock.subjects import registry

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "manifests" / "crd" / "campaigns.aftershock.dev.yaml"
COPIES = (
    REPO / "charts" / "aftershock" / "crds" / SOURCE.name,
    REPO / "operator" / "aftershock" / "crd" / SOURCE.name,
)
_KIND_ENUM = re.compile(
    r"(?P<head>\n(?P<indent> +)kind:\n(?P=indent)  type: string\n(?P=indent)  description: [^\n]*\n"
    r"(?P=indent)  enum:\n)(?P<items>(?:(?P=indent)    - [^\n]+\n)+)"
)


def generated() -> str:
    """The source with its subject.kind enum set from the registry."""
    text = SOURCE.read_text()
    match = _KIND_ENUM.search(text)
    if match is None:
        raise SystemExit(f"{SOURCE}: no subject.kind enum found")
    items = "".join(f"{match['indent']}    - {kind}\n" for kind in registry.KINDS)
    return text[: match.start("items")] + items + text[match.end("items") :]


def main(argv: list[str]) -> int:
    want = generated()
    check = "--check" in argv
    drifted = [p for p in (SOURCE, *COPIES) if not p.exists() or p.read_text() != want]
    if check:
        for p in drifted:
            print(f"{p.relative_to(REPO)} drifted from the CRD source or the subject registry: run `make crd`")
        return 1 if drifted else 0
    for p in drifted:
        p.write_text(want)
        print(f"wrote {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
