"""ADR 0004's table of the operator's rights, read as data: the e2e and reliability tests compare
what the API server grants (`kubectl auth can-i --list`) with it, so the table stays true."""

from __future__ import annotations

import re

from tests.e2e import testbed

ADR = testbed.REPO / "docs" / "adr" / "0004-rbac-and-scoping.md"
#: Granted only where ClusterRole aftershock-reset-recreate is bound (spec.reset Recreate).
RECREATE_ONLY = "persistentvolumeclaims"


def adr_table() -> dict[str, set[str]]:
    """Resource (as `kubectl auth can-i --list` names it) -> verbs, from the ADR's table."""
    rows: dict[str, set[str]] = {}
    for line in ADR.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        verbs = {v.strip() for v in cells[1].split(",")}
        for resource in re.findall(r"`([^`]+)`", cells[0]):
            rows[resource] = verbs
    return rows
