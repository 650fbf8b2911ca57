"""The second half of `make dev` (hack/dev/run.sh starts the cluster and applies the manifests).

Runs, until Ctrl-C (or until the Campaign finishes, with AFTERSHOCK_DEV_WAIT=1):

- the PD stand-in (tests/pdstub) on 127.0.0.1, a simulated store process per Ready tikv pod
  reporting to it (PutStore at Ready, then heartbeats), with PD's and TiKV's intervals x 0.2:
  heartbeats every 2 s, so a replaced store reports its first heartbeat 2 s after its pod is
  Ready, and Disconnected after 4 s without one;
- the operator, a local process authenticated as its ServiceAccount (a bound token from the
  TokenRequest API, never the admin certificate), watching namespace tikv, logging to
  ~/.cache/aftershock/dev/operator.log, its ledger in ~/.cache/aftershock/dev/ledger.db;
- manifests/examples/campaign.yaml adapted for local use (pdURL: the stand-in; shorter pauses).

Everything it starts it stops, in a finally: the operator first (SIGTERM, so a trial in flight
is recorded as interrupted), then the stand-in. It runs in its own session, so Ctrl-C reaches
only this script and the order holds. Needs KUBECONFIG and kubectl on PATH (run.sh sets both).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from kubernetes import config as k8s_config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.e2e import testbed  # noqa: E402  (after the path is set)
from tests.pdstub import PdStandIn, Timing  # noqa: E402
from tests.pdstub.kube_source import KubePodSource  # noqa: E402

NAMESPACE = "tikv"
EXAMPLE = REPO / "manifests" / "examples" / "campaign.yaml"
TIKV_SELECTOR = "app.kubernetes.io/component=tikv,app.kubernetes.io/instance=basic"
#: What the example is changed to for a local run: trials a few seconds apart instead of 30 s.
LOCAL_SPEC: dict[str, Any] = {
    "intervalSeconds": 5,
    "steadyState": {"stableSeconds": 3},
    "recovery": {"settleSeconds": 5},  # two heartbeats of the stand-in, plus margin
}
PD_TIMING = Timing.fast(0.2)
OPERATOR_STOP_SECONDS = 45  # kopf lets a trial in flight be recorded (up to 30 s) before it exits

CACHE = Path(os.environ.get("AFTERSHOCK_CACHE") or Path.home() / ".cache" / "aftershock")
DEV = CACHE / "dev"
LEDGER = DEV / "ledger.db"
OPERATOR_LOG = DEV / "operator.log"
PIDFILE = DEV / "operator.pid"
SA_KUBECONFIG = DEV / "operator.kubeconfig"


def say(msg: str) -> None:
    print(f"[dev {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def kubectl(*args: str, input_: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["kubectl", *args], input=input_, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def home(path: Path | str) -> str:
    """A path as a person would type it (~ for the home directory)."""
    text, h = str(path), str(Path.home())
    return "~" + text[len(h) :] if text.startswith(h + os.sep) else text


# --- the Campaign -----------------------------------------------------------------------------


def build_campaign(pd_url: str) -> dict[str, Any]:
    """The example Campaign, pointed at the stand-in, with pauses short enough to finish in
    about two minutes. Everything else (10 trials, one pod per kill, SLO p95 <= 60 s) is as
    the example has it."""
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = body["spec"]
    spec["subject"]["pdURL"] = pd_url
    spec["intervalSeconds"] = LOCAL_SPEC["intervalSeconds"]
    spec.setdefault("steadyState", {}).update(LOCAL_SPEC["steadyState"])
    spec.setdefault("recovery", {}).update(LOCAL_SPEC["recovery"])
    body["metadata"].setdefault("labels", {})["aftershock.dev/dev"] = "true"
    return body


def remove_previous_campaign(name: str) -> None:
    """Delete the Campaign a previous `make dev` left, before the operator starts: it must not
    resume it (and kill a pod) only to have it deleted a moment later. With no operator
    running, nothing would remove its finalizer, so that goes first. Its subject lock goes too
    when that Campaign holds it (otherwise the new one waits for the lease to expire)."""
    found = kubectl("get", "campaign", name, "-n", NAMESPACE, "-o", "name", check=False)
    if found.returncode == 0 and found.stdout.strip():
        say(f"replacing the previous dev Campaign {NAMESPACE}/{name}")
        kubectl(
            "patch", "campaign", name, "-n", NAMESPACE, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}',
        )  # fmt: skip
        kubectl("delete", "campaign", name, "-n", NAMESPACE, "--ignore-not-found", "--timeout=60s")
    # The subject Leases (one per subject instance, named by a hash of its selector and pdURL).
    leases = kubectl(
        "get", "lease", "-n", NAMESPACE, "-l", "app.kubernetes.io/managed-by=aftershock",
        "-o", "jsonpath={range .items[*]}{.metadata.name} {.spec.holderIdentity}{\"\\n\"}{end}",
        check=False,
    ).stdout  # fmt: skip
    for line in leases.splitlines():
        lease, _, holder = line.partition(" ")
        if holder.startswith(f"{NAMESPACE}/{name}/"):
            kubectl("delete", "lease", lease, "-n", NAMESPACE, "--ignore-not-found")


def campaign_status(name: str) -> dict[str, Any]:
    proc = kubectl("get", "campaign", name, "-n", NAMESPACE, "-o", "json", check=False)
    if proc.returncode != 0:
        return {}
    status: dict[str, Any] = json.loads(proc.stdout).get("status") or {}
    return status


def condition(status: dict[str, Any], type_: str) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


# --- the operator -----------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    if proc.poll() is not None:
        return
    say(f"stopping the {what} (pid {proc.pid})")
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        say(f"the {what} did not stop in time: killing it")
        proc.kill()
        proc.wait(10)


def stop_stale_operator() -> None:
    """An operator a previous run could not stop (its terminal closed, say): the pid it recorded,
    and only if that process is still an aftershock operator."""
    try:
        pid = int(PIDFILE.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        PIDFILE.unlink(missing_ok=True)
        return
    if b"aftershock" in cmdline and b"run" in cmdline:
        say(f"stopping the operator a previous run left behind (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + OPERATOR_STOP_SECONDS
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    PIDFILE.unlink(missing_ok=True)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def choose_port(variable: str, default: int, what: str) -> int:
    """The port in $variable (default `default`); 0 (off) when it is taken, so a second
    operator or anything else on 8080/9090 does not stop `make dev`."""
    port = int(os.environ.get(variable, str(default)))
    if port and not port_free(port):
        say(f"port {port} is taken: the operator runs without {what} (set {variable})")
        return 0
    return port


def operator_kubeconfig(admin_kubeconfig: str) -> str:
    """A kubeconfig holding a bound token of system:serviceaccount:aftershock-system:aftershock,
    built as the e2e tests build theirs. Written owner-only: it is a credential."""
    kubectl_bin = shutil.which("kubectl")
    if kubectl_bin is None:
        raise RuntimeError("kubectl is not on PATH (hack/dev/run.sh puts the test bed's there)")
    cluster = testbed.Cluster(
        kubeconfig=admin_kubeconfig, bin_dir=str(Path(kubectl_bin).parent), started_here=False
    )
    SA_KUBECONFIG.touch(mode=0o600)
    SA_KUBECONFIG.chmod(0o600)
    return cluster.service_account_kubeconfig("aftershock-system", "aftershock", SA_KUBECONFIG, "24h")


def start_operator(kubeconfig: str, liveness: int, metrics: int) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "aftershock", "run",
        "--namespace", NAMESPACE,
        "--db", str(LEDGER),
        "--allow-loopback-pd",
        "--liveness-port", str(liveness),
        "--metrics-port", str(metrics),
        "--kubeconfig", kubeconfig,
    ]  # fmt: skip
    # kopf logs in from $KUBECONFIG: it too must be the ServiceAccount, not the admin.
    env = dict(os.environ, KUBECONFIG=kubeconfig, PYTHONUNBUFFERED="1")
    with OPERATOR_LOG.open("a") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} make dev: {' '.join(args)}\n")
        log.flush()
        # Its own session: Ctrl-C reaches this script, which stops the operator in order.
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    PIDFILE.write_text(f"{proc.pid}\n")
    return proc


def log_tail(lines: int = 30) -> str:
    text = OPERATOR_LOG.read_text(errors="replace") if OPERATOR_LOG.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def wait_started(op: subprocess.Popen[bytes], offset: int, timeout: float = 60) -> None:
    """Until the operator has opened its ledger and connected (it logs so at startup)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if op.poll() is not None:
            raise RuntimeError(f"the operator exited ({op.returncode}):\n{log_tail()}")
        with OPERATOR_LOG.open(errors="replace") as f:
            f.seek(offset)
            if "aftershock started" in f.read():
                return
        time.sleep(0.3)
    raise RuntimeError(f"the operator did not start within {timeout:g}s:\n{log_tail()}")


# --- the session ------------------------------------------------------------------------------


def banner(name: str, pd_url: str, liveness: int, metrics: int) -> str:
    bin_dir = str(Path(shutil.which("kubectl") or "kubectl").parent)
    venv_bin = home(Path(sys.executable).parent)
    lines = [
        "",
        "aftershock is running locally (operator as system:serviceaccount:aftershock-system:aftershock)",
        f"  export KUBECONFIG={home(os.environ['KUBECONFIG'])}",
        f"  export PATH={home(bin_dir)}:$PATH",
        f"  campaign      {NAMESPACE}/{name}: {home(EXAMPLE)} with pdURL={pd_url},",
        "                intervalSeconds=5, steadyState.stableSeconds=3",
        f"  PD stand-in   {pd_url} (a store per tikv pod, heartbeat every {PD_TIMING.heartbeat_interval:g}s)",
        f"  operator log  {home(OPERATOR_LOG)}",
        f"  ledger        {home(LEDGER)}",
    ]
    if liveness:
        lines.append(f"  health        http://127.0.0.1:{liveness}/healthz")
    if metrics:
        lines.append(
            f"  metrics       http://127.0.0.1:{metrics}/metrics    "
            f"http://127.0.0.1:{metrics}/campaigns/{NAMESPACE}/{name}"
        )
    lines += [
        f"  report        {venv_bin}/aftershock report {name} -n {NAMESPACE} --db {home(LEDGER)}",
        "  try           kubectl -n tikv describe campaign " + name + "    kubectl -n tikv get pods -w",
        "Ctrl-C stops the operator and the PD stand-in; the cluster stays (make cluster-down).",
        "",
    ]
    return "\n".join(lines)


def start_watch() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["kubectl", "get", "campaigns", "-n", NAMESPACE, "-w"])


def watch_campaign(
    name: str, wait: bool, timeout: float, broken: Callable[[], str | None]
) -> dict[str, Any] | None:
    """Show `kubectl get campaigns -w` until Ctrl-C, or (wait) until the Campaign finishes; its
    status then, or None when it did not finish in time or `broken()` said why not."""
    watch = start_watch()
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    try:
        while True:
            time.sleep(1)
            if (why := broken()) is not None:
                say(why)
                return None
            if watch.poll() is not None:
                watch = start_watch()  # the server ended the watch: look again
            if not wait:
                continue
            status = campaign_status(name)
            if status.get("phase") in ("Succeeded", "Failed"):
                return status
            if time.monotonic() > deadline:
                say(f"the Campaign did not finish within {timeout:g}s")
                return None
    finally:
        if watch.poll() is None:
            watch.terminate()
            watch.wait(10)


def finished(status: dict[str, Any], report_rc: int) -> int:
    """Print the Campaign's line and its verdict; exit code 0 when Ready and reported."""
    ready = condition(status, "Ready")
    say(
        f"Campaign {status.get('phase')}, verdict {status.get('verdict') or '-'}, Ready={ready}"
        + ("" if report_rc == 0 else f"; report exited {report_rc}")
    )
    return 0 if ready == "True" and report_rc == 0 else 1


def follow(name: str, op: subprocess.Popen[bytes], wait: bool, timeout: float) -> int:
    def broken() -> str | None:
        if op.poll() is None:
            return None
        return f"the operator exited ({op.returncode}); its log ends with:\n{log_tail()}"

    status = watch_campaign(name, wait, timeout, broken)
    if status is None:
        print(log_tail(), file=sys.stderr, flush=True)
        return 1
    print(flush=True)
    print(kubectl("get", "campaigns", "-n", NAMESPACE).stdout, flush=True)
    report = subprocess.run(
        [sys.executable, "-m", "aftershock", "report", name, "-n", NAMESPACE, "--db", str(LEDGER)],
        check=False,
    )
    return finished(status, report.returncode)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="[pd-stand-in] %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    wait = os.environ.get("AFTERSHOCK_DEV_WAIT") == "1"
    timeout = float(os.environ.get("AFTERSHOCK_DEV_TIMEOUT", "900"))
    admin = os.environ["KUBECONFIG"]
    DEV.mkdir(parents=True, exist_ok=True)
    name = str(yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"])

    stop_stale_operator()
    remove_previous_campaign(name)

    source: KubePodSource | None = None
    pd: PdStandIn | None = None
    op: subprocess.Popen[bytes] | None = None
    try:
        source = KubePodSource(k8s_config.new_client_from_config(config_file=admin), NAMESPACE, TIKV_SELECTOR)
        source.start()
        if not source.wait_synced(30):
            raise RuntimeError(f"could not list the tikv pods in namespace {NAMESPACE}")
        pd = PdStandIn(source, timing=PD_TIMING, headless_service="tikv-peer", namespace=NAMESPACE)
        pd_url = pd.start()
        say(f"PD stand-in on {pd_url}")

        liveness = choose_port("AFTERSHOCK_DEV_LIVENESS_PORT", 8080, "/healthz")
        metrics = choose_port("AFTERSHOCK_DEV_METRICS_PORT", 9090, "/metrics")
        offset = OPERATOR_LOG.stat().st_size if OPERATOR_LOG.exists() else 0
        op = start_operator(operator_kubeconfig(admin), liveness, metrics)
        wait_started(op, offset)
        say(f"operator running (pid {op.pid}), log {home(OPERATOR_LOG)}")

        kubectl("apply", "-f", "-", input_=yaml.safe_dump(build_campaign(pd_url)))
        print(banner(name, pd_url, liveness, metrics), file=sys.stderr, flush=True)
        return follow(name, op, wait, timeout)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 0
    except RuntimeError as exc:
        say(str(exc))
        return 1
    finally:
        # Ctrl-C again while stopping would skip the cleanup: let it finish.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if op is not None:
            stop_process(op, "operator", OPERATOR_STOP_SECONDS)
            PIDFILE.unlink(missing_ok=True)
        if pd is not None:
            pd.stop()
        if source is not None:
            source.stop()
        if op is not None or pd is not None:
            say("operator and PD stand-in stopped; the cluster keeps running")


if __name__ == "__main__":
    sys.exit(main())
