"""Screenshot of the HTML report of a campaign in a ledger file, for docs/report-screenshot.png.

Usage: .venv/bin/python -m tests.browser.screenshot LEDGER OUT.png [NAMESPACE/NAME]
(default: the newest campaign in the ledger). Needs Chromium (`apt-get install -y chromium`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import tempfile
from pathlib import Path

from tests.browser import chromium

from aftershock import cli
from aftershock.ledger import Ledger


async def _newest(db: str) -> tuple[str, str]:
    async with await Ledger.open(db) as ledger:
        campaigns = sorted(await ledger.list_campaigns(), key=lambda c: c.created_at)
    if not campaigns:
        raise SystemExit(f"{db}: no campaign in this ledger")
    return campaigns[-1].namespace, campaigns[-1].name


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    db, out = argv[0], Path(argv[1])
    namespace, name = argv[2].split("/", 1) if len(argv) == 3 else asyncio.run(_newest(db))
    browser = chromium.find()
    if browser is None:
        print("no chromium: apt-get install -y chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["report", name, "-n", namespace, "--db", db, "--html", str(page)])
        if code != 0:
            return code
        seen = chromium.visit(browser, page, screenshot=out.resolve())
    if seen.console or seen.fetched:
        print(f"the page logged {seen.console} and fetched {seen.fetched}", file=sys.stderr)
        return 1
    print(f"{out}: {namespace}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
