"""The test bed's alerting chain: real Prometheus and Alertmanager, built from their Go modules
(`hack/testbed/monitoring.sh`, cached), started lazily by the tests that need them as host
processes on 127.0.0.1 with ports, configs and data of their own, and stopped with the test.

Prometheus scrapes only loopback targets (etcd members on the real node with hostNetwork, the
PD stand-in and the TiKV stand-ins' status ports, the real node's kubelet) and loads the
repository's own rule files (every `manifests/monitoring/*-rules.yaml`).
Alertmanager has clustering off (no gossip port) and delivers to the operator's receiver.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import testbed
from tests.e2e.operator import free_port

#: The PrometheusRules whose specs Prometheus loads, each as a rule file.
RULES = sorted((testbed.REPO / "manifests" / "monitoring").glob("*-rules.yaml"))
BUILD = testbed.REPO / "hack" / "testbed" / "monitoring.sh"
#: The real node's kubelet (hack/testbed/realnode.sh): HTTPS on loopback, anonymous reads.
KUBELET = "127.0.0.1:10350"


def build() -> Path:
    """The directory with `prometheus` and `alertmanager` (built on first use, then cached)."""
    out = subprocess.run(["bash", str(BUILD)], check=True, capture_output=True, text=True, timeout=3600)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Intervals:
    """The chain's knobs that add to time to detect (and that the tests measure)."""

    #: A 1 s scrape timeout: at 0.5 s, scrapes of healthy members timed out now and then on a
    #: machine at load 25 (`up` flapping to 0 for one scrape).
    scrape: str = "1s"
    evaluation: str = "500ms"
    group_wait: str = "500ms"
    group_interval: str = "1s"


def prometheus_config(
    targets: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    alertmanager: str,
    intervals: Intervals,
    rules_files: Sequence[Path],
    kubelet: bool = True,
) -> dict[str, Any]:
    """Scrape `targets` (job -> loopback addresses, all with `labels`) and the kubelet."""
    scrape: list[dict[str, Any]] = [
        {"job_name": job, "static_configs": [{"targets": list(addrs), "labels": dict(labels)}]}
        for job, addrs in targets.items()
    ]
    if kubelet:
        scrape.append(
            {
                "job_name": "kubelet",
                "scheme": "https",
                # The test bed's kubelet serves a self-signed certificate on loopback.
                "tls_config": {"insecure_skip_verify": True},
                "static_configs": [{"targets": [KUBELET], "labels": {"node": "real-0"}}],
            }
        )
    return {
        "global": {
            "scrape_interval": intervals.scrape,
            "scrape_timeout": intervals.scrape,
            "evaluation_interval": intervals.evaluation,
        },
        "rule_files": [str(f) for f in rules_files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": scrape,
    }


def alertmanager_config(receiver_url: str, token_file: Path, intervals: Intervals) -> dict[str, Any]:
    """README's receiver configuration, with the test bed's intervals."""
    return {
        "route": {
            "receiver": "aftershock",
            "group_by": ["alertname", "namespace", "instance"],
            "group_wait": intervals.group_wait,
            "group_interval": intervals.group_interval,
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "aftershock",
                "webhook_configs": [
                    {
                        "url": receiver_url,
                        "send_resolved": True,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
                        },
                    }
                ],
            }
        ],
    }


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
        return json.loads(resp.read())


@dataclass
class Chain:
    """Prometheus and Alertmanager, running; `stop` ends both (by their own process ids)."""

    prometheus: str  # http://127.0.0.1:PORT
    alertmanager: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text()[-3000:] for p in self.logs if p.exists())

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = get_json(self.prometheus + "/api/v1/alerts")["data"]["alerts"]
        return alerts

    def alertmanager_alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = get_json(self.alertmanager + "/api/v2/alerts")
        return alerts

    def samples(self, query: str) -> list[dict[str, Any]]:
        """An instant query's result (a range selector gives raw samples with their times)."""
        url = self.prometheus + "/api/v1/query?query=" + urllib.parse.quote(query)
        result: list[dict[str, Any]] = get_json(url)["data"]["result"]
        return result


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as resp:  # loopback only
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def start(
    workdir: Path,
    *,
    targets: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    receiver_url: str,
    token_file: Path,
    intervals: Intervals = Intervals(),
) -> Chain:
    """Alertmanager, then Prometheus, in `workdir`; both ready when this returns."""
    bin_dir = build()
    workdir.mkdir(parents=True, exist_ok=True)
    am_port, prom_port = free_port(), free_port()
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
    (workdir / "alertmanager.yml").write_text(
        yaml.safe_dump(alertmanager_config(receiver_url, token_file, intervals))
    )
    # A PrometheusRule's spec is a rule file as it stands.
    rules_files = []
    for rules in RULES:
        rules_file = workdir / rules.name.replace(".yaml", ".yml")
        rules_file.write_text(yaml.safe_dump(yaml.safe_load(rules.read_text())["spec"]))
        rules_files.append(rules_file)
    (workdir / "prometheus.yml").write_text(
        yaml.safe_dump(prometheus_config(targets, labels, f"127.0.0.1:{am_port}", intervals, rules_files))
    )
    chain = Chain(prom_url, am_url)
    commands = [
        (
            "alertmanager",
            [
                str(bin_dir / "alertmanager"),
                f"--config.file={workdir / 'alertmanager.yml'}",
                f"--storage.path={workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                # No cluster: no gossip port, no peers to look for.
                "--cluster.listen-address=",
            ],
            am_url,
        ),
        (
            "prometheus",
            [
                str(bin_dir / "prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            prom_url,
        ),
    ]
    try:
        for name, cmd, url in commands:
            log = workdir / f"{name}.log"
            chain.logs.append(log)
            with open(log, "w") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
            chain.procs.append(proc)
            _wait_ready(url, proc, log)
    except BaseException:
        chain.stop()
        raise
    return chain
