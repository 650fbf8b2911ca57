"""Headless Chromium, run once per page: the DOM after load, console messages, page fetches, a
screenshot. No DevTools protocol, no driver: the browser's own switches do it all.

- ``--dump-dom`` prints the DOM after the page loaded (scripts run, SVG parsed).
- ``--enable-logging=stderr --v=0`` logs every console message (``console.*`` calls and uncaught
  exceptions) to stderr as ``INFO:CONSOLE(<line>)] "<message>", source: <url>``.
- ``--log-net-log`` records every network request; the page's own carry the page's origin
  (``file://``) in their network isolation key, the browser's background requests do not.
- ``--proxy-server`` points at a closed port on 127.0.0.1: nothing leaves the machine, whatever
  the page or the browser tries.

`tests/browser/test_html_report.py` proves on deliberately broken pages that these detectors see
what they are meant to see, so a clean result means something.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The Debian package; CI installs it with `apt-get install -y chromium`.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--proxy-server=http://127.0.0.1:9",
    "--enable-logging=stderr",
    "--v=0",
)
_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)\] (.*)")


def find() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass(frozen=True)
class Visit:
    dom: str
    console: list[str]  # console messages, uncaught errors included
    fetched: list[str]  # URLs the page requested
    stderr: str


def _page_requests(netlog: Path) -> list[str]:
    data = json.loads(netlog.read_text() or "{}")
    if not data:
        return []
    names = {v: k for k, v in data["constants"]["logEventTypes"].items()}
    urls = []
    for event in data.get("events", []):
        params = event.get("params") or {}
        if names.get(event.get("type")) == "URL_REQUEST_START_JOB" and "file://" in str(
            params.get("network_isolation_key", "")
        ):
            urls.append(str(params.get("url")))
    return urls


def visit(
    browser: str,
    page: Path,
    *,
    screenshot: Path | None = None,
    window: tuple[int, int] = (1200, 900),
    timeout: float = 90,
) -> Visit:
    """Load ``page`` in a fresh profile; with ``screenshot``, also save the window as a PNG."""
    with tempfile.TemporaryDirectory(prefix="aftershock-chromium-") as tmp:
        netlog = Path(tmp) / "netlog.json"
        argv = [
            browser,
            *FLAGS,
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--log-net-log={netlog}",
            f"--window-size={window[0]},{window[1]}",
            *([f"--screenshot={screenshot}"] if screenshot is not None else ["--dump-dom"]),
            page.resolve().as_uri(),
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("http_proxy", "https_proxy", "all_proxy")}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
        fetched = _page_requests(netlog) if netlog.exists() else []
    console = [m.group(1) for line in done.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return Visit(dom=done.stdout, console=console, fetched=fetched, stderr=done.stderr)
