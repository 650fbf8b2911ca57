"""ADR 0004's table of the operator's rights, read from the ADR itself: the one list that the
shipped RBAC (asked of the API server) and the operator's actual requests (the audit log) are
both checked against, so neither can grow a verb the ADR does not name."""

from __future__ import annotations

import re
from typing import Any

from tests.e2e import testbed

ADR = testbed.REPO / "docs" / "adr" / "0004-rbac-and-scoping.md"


def adr_0004_rights() -> dict[str, set[str]]:
    """resource (as `kubectl auth can-i --list` prints it) -> verbs."""
    rights: dict[str, set[str]] = {}
    for line in ADR.read_text().splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) < 3 or not cols[0].startswith("`"):
            continue
        verbs = {v.strip() for v in cols[1].split(",") if v.strip()}
        for resource in re.findall(r"`([^`]+)`", cols[0]):
            rights.setdefault(resource, set()).update(verbs)
    if not rights:
        raise AssertionError(f"no rights table found in {ADR}")
    return rights


def request_right(record: dict[str, Any]) -> tuple[str, str] | None:
    """(resource as can-i prints it, verb) of one audit record; None for a non-resource URL."""
    ref = record.get("objectRef") or {}
    resource = ref.get("resource")
    if not resource:
        return None
    group = ref.get("apiGroup") or ""
    name = f"{resource}.{group}" if group else resource
    if ref.get("subresource"):
        name = f"{name}/{ref['subresource']}"
    return name, str(record.get("verb"))
