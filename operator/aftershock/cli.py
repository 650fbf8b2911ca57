"""The `aftershock` command: `run` (the operator), `report`, `export` and `compare` (read the
ledger back), `backup` (a consistent copy of the ledger), `validate` (check manifests offline).

Exit codes of `compare`: 0 Improved or NoChange, 1 Regressed, 2 usage or data error (no ledger,
no such campaign, nothing recovered to compare, the analysis extra missing)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from aftershock.model import DEFAULT_PROTECTED_NAMESPACES

if TYPE_CHECKING:
    from aftershock.engine.outcomes import RunnerSettings
    from aftershock.ledger import Ledger
    from aftershock.report import CampaignReport
    from aftershock.trends import Trend

DEFAULT_DB = "/var/lib/aftershock/ledger.db"


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def _add_scope_arguments(run: argparse.ArgumentParser) -> None:
    """Where the operator serves Campaigns, and how widely it watches their pods."""
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="watch this namespace (repeatable); default: $AFTERSHOCK_NAMESPACES or all namespaces",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument(
        "--pod-watch-scope",
        choices=("auto", "namespace", "cluster"),
        default=os.environ.get("AFTERSHOCK_POD_WATCH_SCOPE") or "namespace",
        help="one pod watch per namespace with running Campaigns (the default: memory follows the "
        "Campaigns, not the cluster's pod count), or one for the whole cluster (needs list/watch on "
        "pods in every namespace); auto: cluster when watching all namespaces",
    )


def _add_schedule_arguments(run: argparse.ArgumentParser) -> None:
    """Scheduled runs and retention (ADR 0015)."""
    run.add_argument(
        "--schedule-clock",
        metavar="ORIGIN:SPEED",
        default=os.environ.get("AFTERSHOCK_SCHEDULE_CLOCK") or None,
        help="for tests: read schedules against a clock running SPEED times faster than wall time from "
        "ORIGIN (Unix seconds) on; default: the wall clock",
    )
    run.add_argument(
        "--keep-runs-days",
        type=float,
        default=float(os.environ.get("AFTERSHOCK_KEEP_RUNS_DAYS") or 0),
        help="prune runs that finished more than this many days ago to a summary row, at start and "
        "every --sweep-interval (each Campaign keeps its newest run and its trend's baseline; 0: never)",
    )


def _label(text: str | None) -> tuple[str, str] | None:
    """``KEY=VALUE`` as a pair; empty: no label."""
    if not text:
        return None
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


_SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def own_namespace() -> list[str]:
    """The namespace the operator runs in: ``$POD_NAMESPACE`` (the manifests set it from the
    downward API), else its ServiceAccount's when in a pod; none for a local process."""
    if ns := os.environ.get("POD_NAMESPACE"):
        return [ns]
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(_SA_NAMESPACE_FILE):
        with open(_SA_NAMESPACE_FILE, encoding="utf-8") as f:
            name = f.read().strip()
        return [name] if name else []
    return []


def runner_settings(args: argparse.Namespace, *, everywhere: bool) -> RunnerSettings:
    """What every Campaign's runner is given, from `aftershock run`'s arguments."""
    from aftershock.engine.outcomes import RunnerSettings

    label = args.namespace_label if isinstance(args.namespace_label, tuple) else _label(args.namespace_label)
    return RunnerSettings(
        # The operator's own namespace too: its ledger, its pod, its ServiceAccount's token.
        protected_namespaces=DEFAULT_PROTECTED_NAMESPACES
        | frozenset(args.protected_namespace)
        | frozenset(own_namespace()),
        allow_loopback_pd=args.allow_loopback_pd,
        probe_interval=args.probe_interval,
        lock_retry_interval=args.lock_retry_interval,
        author_check=args.author_check == "on",
        # Cluster-wide only: a list of namespaces is its own opt-in.
        namespace_label=label if everywhere else None,
        operator_node=args.node_name or None,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aftershock", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument("--db", default=os.environ.get("AFTERSHOCK_DB", DEFAULT_DB), help="ledger file (SQLite)")
    _add_scope_arguments(run)
    run.add_argument("--liveness-port", type=int, default=8080, help="serve /healthz on this port (0: off)")
    run.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME", ""),
        help="the node this operator runs on (default $NODE_NAME, the downward API's spec.nodeName): "
        "node_failure never fails it",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="serve /metrics and the campaigns' reports (read-only) on this port (0: off)",
    )
    run.add_argument(
        "--alert-receiver-port",
        type=int,
        default=int(os.environ.get("AFTERSHOCK_ALERT_RECEIVER_PORT") or 0),
        help="receive Alertmanager's webhook notifications on this port (POST /api/v1/alerts, "
        "bearer token required) for Campaigns with spec.detection (0: off)",
    )
    run.add_argument(
        "--alert-receiver-token-file",
        default=os.environ.get("AFTERSHOCK_ALERT_RECEIVER_TOKEN_FILE"),
        help="file holding the receiver's bearer token (a mounted Secret; re-read when it changes)",
    )
    run.add_argument(
        "--audit-receiver-port",
        type=int,
        default=int(os.environ.get("AFTERSHOCK_AUDIT_RECEIVER_PORT") or 0),
        help="receive the API server's audit webhook batches on this port (POST /audit, bearer "
        "token required): the remediator's writes for Campaigns with spec.remediator (0: off)",
    )
    run.add_argument(
        "--audit-receiver-host",
        default=os.environ.get("AFTERSHOCK_AUDIT_RECEIVER_HOST") or "0.0.0.0",
        help="address the audit receiver binds (127.0.0.1 where the API server is on the same host)",
    )
    run.add_argument(
        "--audit-receiver-token-file",
        default=os.environ.get("AFTERSHOCK_AUDIT_RECEIVER_TOKEN_FILE"),
        help="file holding the audit receiver's bearer token (re-read when it changes)",
    )
    run.add_argument(
        "--audit-receiver-tls-cert-file",
        default=os.environ.get("AFTERSHOCK_AUDIT_RECEIVER_TLS_CERT_FILE"),
        help="serve the audit receiver over HTTPS with this PEM certificate (the API server sends "
        "its webhook token over TLS only)",
    )
    run.add_argument(
        "--audit-receiver-tls-key-file",
        default=os.environ.get("AFTERSHOCK_AUDIT_RECEIVER_TLS_KEY_FILE"),
        help="the certificate's PEM private key",
    )
    run.add_argument(
        "--protected-namespace",
        action="append",
        default=[],
        help="never disturb this namespace (repeatable; added to the built-in "
        + ", ".join(sorted(DEFAULT_PROTECTED_NAMESPACES))
        + ")",
    )
    run.add_argument(
        "--author-check",
        choices=("on", "off"),
        default=os.environ.get("AFTERSHOCK_AUTHOR_CHECK") or "on",
        help="start a run only when the Campaign's author (annotation aftershock.dev/author, recorded by "
        "the admission policy aftershock-author) may do everything it makes the operator do "
        "(SubjectAccessReview; docs/adr/0012-campaign-authors.md); off: rely on the admission policy alone",
    )
    run.add_argument(
        "--namespace-label",
        metavar="KEY=VALUE",
        type=_label,
        default=os.environ.get("AFTERSHOCK_NAMESPACE_LABEL") or None,
        help="watching every namespace: run Campaigns only in namespaces with this label (the cluster-wide "
        "manifests pass aftershock.dev/campaigns=enabled); ignored with --namespace, whose list is "
        "the opt-in",
    )
    run.add_argument(
        "--allow-loopback-endpoints",
        "--allow-loopback-pd",  # its name while PD was the only subject API
        dest="allow_loopback_pd",
        action="store_true",
        default=os.environ.get(
            "AFTERSHOCK_ALLOW_LOOPBACK_ENDPOINTS", os.environ.get("AFTERSHOCK_ALLOW_LOOPBACK_PD")
        )
        == "1",
        help="accept subject API URLs (pdURL, endpoints) on loopback (local development and tests only)",
    )
    run.add_argument("--probe-interval", type=float, default=0.5, help="seconds between PD checks")
    run.add_argument(
        "--max-concurrent-campaigns",
        type=_non_negative_int,
        default=int(os.environ.get("AFTERSHOCK_MAX_CONCURRENT_CAMPAIGNS") or 0),
        help="run at most this many Campaigns at once, the others wait in line as Pending (0: no bound)",
    )
    run.add_argument(
        "--sweep-interval",
        type=float,
        default=300.0,
        help="seconds between sweeps that close attempts and restore remediators that gone or "
        "finished Campaigns left (0: only at start)",
    )
    _add_schedule_arguments(run)
    run.add_argument(
        "--lock-retry-interval",
        type=float,
        default=5.0,
        help="seconds between a waiting Campaign's tries for a slot and its subject's lock",
    )
    run.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster or $KUBECONFIG)")
    run.add_argument(
        "--log-format", choices=["json", "text"], default=os.environ.get("AFTERSHOCK_LOG_FORMAT", "text")
    )
    run.add_argument("--verbose", "-v", action="store_true")

    _add_report(sub)

    _add_export(sub)

    compare = sub.add_parser(
        "compare", help="campaign B against A: Improved, Regressed (exit 1) or NoChange (docs/results.md)"
    )
    compare.add_argument(
        "a",
        metavar="A",
        help="the reference campaign: NAME or NAMESPACE/NAME, @RUN for a run (a number, latest or "
        "previous; default: latest)",
    )
    compare.add_argument(
        "b",
        metavar="B",
        help="the campaign judged against A: NAME or NAMESPACE/NAME, @RUN (a number, latest or previous)",
    )
    compare.add_argument("--namespace", "-n", default="default", help="namespace of a bare NAME")
    compare.add_argument(
        "--db", default=os.environ.get("AFTERSHOCK_DB", DEFAULT_DB), help="ledger of A (and B)"
    )
    compare.add_argument("--db-b", default=None, help="ledger of B, when it is not --db")
    compare.add_argument("--role", help="compare only trials whose victims had this role (etcd: Leader)")
    compare.add_argument("--format", choices=["table", "json", "markdown"], default="table")
    compare.add_argument(
        "--alpha", type=float, default=0.05, help="significance level (CI level is 1 - alpha)"
    )
    compare.add_argument(
        "--min-effect-seconds", type=float, default=0.0, help="ignore median shifts smaller than this"
    )
    _bootstrap_arguments(compare)
    _add_prune(sub)
    _add_backup_parser(sub)
    _add_release_parser(sub)
    _add_validate_parser(sub)
    return parser


def _add_validate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser(
        "validate", help="check Campaign manifests offline (CRD schema, CEL rules, operator rules)"
    )
    check.add_argument("files", nargs="+", help="YAML files ('-' for standard input)")
    check.add_argument(
        "--allow-loopback-endpoints",
        "--allow-loopback-pd",
        dest="allow_loopback_pd",
        action="store_true",
        help="as the operator's flag of that name",
    )


def _add_backup_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = sub.add_parser(
        "backup",
        help="write a consistent copy of the ledger to FILE while the operator runs (SQLite VACUUM INTO)",
    )
    backup.add_argument("file", metavar="FILE", help="the new file (never overwritten), on a writable volume")
    backup.add_argument(
        "--db", default=os.environ.get("AFTERSHOCK_DB", DEFAULT_DB), help="the ledger to copy"
    )


def _add_release_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = sub.add_parser(
        "release",
        help="uninstalling: stop the operator (scale its Deployment to 0, wait for its pods), then "
        "remove its finalizer from every Campaign it served (the chart's pre-delete hook)",
    )
    release.add_argument("--namespace", required=True, help="the operator's namespace")
    release.add_argument("--deployment", required=True, help="the operator's Deployment")
    release.add_argument("--selector", required=True, help="label selector of the operator's pods")
    release.add_argument(
        "--watch-namespace",
        action="append",
        default=[],
        help="a namespace the operator served (repeatable); none: every namespace",
    )
    release.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the pods to end")
    release.add_argument("--kubeconfig", default=None)
    crd = sub.add_parser(
        "apply-crd",
        help="server-side apply the Campaign CRD this version ships (the chart's pre-install and "
        "pre-upgrade hook: Helm itself never upgrades a CRD)",
    )
    crd.add_argument("--kubeconfig", default=None)
    agent = sub.add_parser(
        "node-agent",
        help="the node agent node_failure needs: one per node, privileged, host PID namespace (ADR 0021)",
    )
    agent.add_argument("--node-name", default=os.environ.get("NODE_NAME", ""), help="default $NODE_NAME")
    agent.add_argument("--pod-uid", default=os.environ.get("POD_UID", ""), help="its own pod, never frozen")
    agent.add_argument("--cgroup-root", default="/sys/fs/cgroup", help="the host's cgroup tree")
    agent.add_argument("--proc", default="/proc", help="the host's /proc (hostPID)")
    agent.add_argument("--state-dir", default="/var/lib/aftershock-node-agent", help="a host folder")
    agent.add_argument("--thaw", action="store_true", help="by hand: undo what the state file says is frozen")


def _add_export(sub: Any) -> None:
    export = sub.add_parser(
        "export", help="every attempt (or Campaign), one row each, as CSV or JSON (docs/results.md)"
    )
    export.add_argument("name", nargs="?", help="the campaign (or --all)")
    export.add_argument("--namespace", "-n", default="default")
    export.add_argument("--all", action="store_true", help="every campaign in the ledger, every run")
    export.add_argument("--run", type=_positive_int, default=None, help="which run (default: the latest)")
    export.add_argument("--db", default=os.environ.get("AFTERSHOCK_DB", DEFAULT_DB))
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument(
        "--per",
        choices=["attempt", "campaign"],
        default="attempt",
        help="one row per attempt (default), or per Campaign run: its clocks' p50/p95 and counts",
    )


def _add_report(sub: Any) -> None:
    report = sub.add_parser("report", help="show a campaign's trials from the ledger")
    report.add_argument("name")
    report.add_argument("--namespace", "-n", default="default")
    report.add_argument("--run", type=_positive_int, default=None, help="which run (default: the latest)")
    report.add_argument("--db", default=os.environ.get("AFTERSHOCK_DB", DEFAULT_DB))
    report.add_argument(
        "--format", choices=["table", "json", "csv", "markdown"], default="table", help="what goes to stdout"
    )
    report.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report")
    report.add_argument("--png", metavar="FILE", help="also write the plots as PNG (aftershock[analysis])")
    report.add_argument("--svg", metavar="FILE", help="also write the plots as SVG (aftershock[analysis])")
    report.add_argument("--role", help="only trials whose victims had this role when chosen (etcd: Leader)")
    report.add_argument(
        "--runs",
        action="store_true",
        help="one row per run (p50, p95, verdict, each against the previous and the baseline run)",
    )
    _bootstrap_arguments(report)


def _add_prune(sub: Any) -> None:
    prune = sub.add_parser(
        "prune",
        help="delete old runs' attempts from the ledger, keeping one summary row per run for the trend",
    )
    prune.add_argument("name", nargs="?", help="the campaign (or --all)")
    prune.add_argument("--namespace", "-n", default="default")
    prune.add_argument("--all", action="store_true", help="every campaign in the ledger")
    prune.add_argument(
        "--keep", type=_positive_int, default=None, help="keep this many newest runs whole (at least 1)"
    )
    prune.add_argument(
        "--older-than-days", type=float, default=None, help="prune only runs that finished this many days ago"
    )
    prune.add_argument("--db", default=os.environ.get("AFTERSHOCK_DB", DEFAULT_DB))


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _bootstrap_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resamples", type=_positive_int, default=10_000, help="bootstrap resamples")
    parser.add_argument(
        "--seed", type=int, default=20_240_501, help="bootstrap seed (results are reproducible)"
    )


def _validate(args: argparse.Namespace) -> int:
    """Exit 0 when every Campaign is valid, 1 when any is not, 2 when a file cannot be read."""
    from pathlib import Path

    from aftershock import validate

    bad = 0
    seen = 0
    for name in args.files:
        try:
            docs = validate.load_documents(Path(name))
        except (OSError, ValueError) as exc:
            print(f"{name}: cannot read: {exc}", file=sys.stderr)
            return 2
        for campaign, problems in validate.validate_documents(docs, allow_loopback_pd=args.allow_loopback_pd):
            seen += 1
            if problems:
                bad += 1
                for problem in problems:
                    print(f"{name}: {campaign}: {problem}")
            else:
                print(f"{name}: {campaign}: valid")
    if seen == 0:
        print("no Campaign found", file=sys.stderr)
        return 2
    return 1 if bad else 0


def pod_watch_scope(choice: str, *, all_namespaces: bool) -> Literal["namespace", "cluster"]:
    """`--pod-watch-scope` resolved (docs/adr/0009-shared-pod-watch.md): `auto` is one
    cluster-wide watch exactly when the operator serves every namespace, the install whose
    ClusterRole already lets it list and watch pods everywhere; one watch per namespace when it
    serves named namespaces, where its Roles grant nothing wider."""
    if choice == "cluster" or (choice == "auto" and all_namespaces):
        return "cluster"
    return "namespace"


def _trace_memory(directory: str | None) -> None:
    """``AFTERSHOCK_TRACEMALLOC=<dir>``: trace allocations, and on each SIGUSR1 write a snapshot
    there (``snapshot-<n>.tracemalloc``) to diff offline (`tracemalloc.Snapshot.load`,
    ``compare_to``). For finding what holds memory in a long run; slows the operator down."""
    if not directory:
        return
    import signal
    import tracemalloc

    os.makedirs(directory, exist_ok=True)
    tracemalloc.start(10)
    taken = [0]

    def snapshot(_signum: int, _frame: object) -> None:
        taken[0] += 1
        tracemalloc.take_snapshot().dump(os.path.join(directory, f"snapshot-{taken[0]}.tracemalloc"))

    signal.signal(signal.SIGUSR1, snapshot)


#: `aftershock run`'s exit code when another operator holds the ledger.
EXIT_LEDGER_IN_USE = 3


def _run_operator(args: argparse.Namespace) -> int:
    # kopf imports the synchronous `kubernetes` client, when installed, only to recognise its
    # model objects and to log in with it. The operator hands kopf no such objects and
    # logs in through kubernetes_asyncio instead, so keep the sync client out of this
    # process: ~15 MiB of generated models less per operator (the tests still use it).
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    # kubernetes_asyncio's package initialisers import ~860 generated modules (~32 MiB) of
    # which the operator uses a handful: load each name on first use instead.
    from aftershock import lazyimport

    lazyimport.install()
    _trace_memory(os.environ.get("AFTERSHOCK_TRACEMALLOC"))
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it
    import kopf

    from aftershock.kube import client as kube_client

    # A watch per namespace must not cost 256 KiB of TLS buffer each (ADR 0013).
    kube_client.bound_tls_read_buffers()

    from aftershock import handlers

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="campaign" if args.log_format == "json" else None,
    )
    # httpx logs every PD request at INFO: a few per second per Campaign drowns the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    namespaces = args.namespace or _env_list("AFTERSHOCK_NAMESPACES")
    settings = runner_settings(args, everywhere=args.all_namespaces or not namespaces)
    config = handlers.OperatorConfig(
        db_path=args.db,
        runner=settings,
        kubeconfig=args.kubeconfig,
        max_concurrent_campaigns=args.max_concurrent_campaigns,
        sweep_interval=args.sweep_interval,
        keep_runs_days=args.keep_runs_days,
        namespaces=() if args.all_namespaces else tuple(namespaces),
        pod_watch_scope=pod_watch_scope(
            args.pod_watch_scope, all_namespaces=args.all_namespaces or not namespaces
        ),
        metrics_port=args.metrics_port,
        alert_receiver_port=args.alert_receiver_port,
        alert_receiver_token_file=args.alert_receiver_token_file,
        audit_receiver_port=args.audit_receiver_port,
        audit_receiver_host=args.audit_receiver_host,
        audit_receiver_token_file=args.audit_receiver_token_file,
        audit_receiver_tls=(args.audit_receiver_tls_cert_file or "", args.audit_receiver_tls_key_file or "")
        if args.audit_receiver_tls_cert_file or args.audit_receiver_tls_key_file
        else None,
        instance=os.environ.get("POD_ID") or f"{socket.gethostname()}/{os.getpid()}",
    )
    for which, port, token_file in (
        ("alert", args.alert_receiver_port, args.alert_receiver_token_file),
        ("audit", args.audit_receiver_port, args.audit_receiver_token_file),
    ):
        if not port:
            continue
        from aftershock import receiver

        if not token_file:
            print(
                f"aftershock: --{which}-receiver-port needs --{which}-receiver-token-file (the "
                "receiver never runs without a token)",
                file=sys.stderr,
            )
            return 2
        try:
            receiver.TokenFile(token_file, f"{which} receiver")
        except receiver.TokenError as exc:
            print(f"aftershock: {exc}", file=sys.stderr)
            return 2
    if config.audit_receiver_tls is not None:
        from aftershock import receiver

        cert, key = config.audit_receiver_tls
        if not cert or not key:
            print(
                "aftershock: --audit-receiver-tls-cert-file and --audit-receiver-tls-key-file go together",
                file=sys.stderr,
            )
            return 2
        try:
            receiver.tls_context(cert, key)
        except (OSError, ValueError) as exc:
            print(f"aftershock: audit receiver TLS ({cert}, {key}): {exc}", file=sys.stderr)
            return 2
    if args.schedule_clock:
        from aftershock.engine import schedule

        config.schedule_clock = schedule.parse_clock(args.schedule_clock)
    os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
    from aftershock.ledger import LedgerError, owner

    # One operator per ledger (ADR 0016): taken before the ledger is opened or the API server
    # is asked anything, and kept until the process ends (the kernel drops it on any exit).
    try:
        ledger_hold = owner.hold(args.db, who=f"{config.instance}, pid {os.getpid()}")
    except owner.LedgerInUseError as exc:
        print(f"aftershock: refused to start: {exc}", file=sys.stderr)
        return EXIT_LEDGER_IN_USE
    except LedgerError as exc:
        print(f"aftershock: {exc}", file=sys.stderr)
        return 2
    memo = kopf.Memo(config=config, ledger_hold=ledger_hold)
    kopf.run(
        standalone=True,
        clusterwide=args.all_namespaces or not namespaces,
        namespaces=[] if args.all_namespaces else namespaces,
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
        memo=memo,
    )
    return 0


async def _read_report(args: argparse.Namespace) -> CampaignReport:
    from aftershock import analysis, report
    from aftershock.ledger import Ledger

    bootstrap = analysis.Bootstrap(resamples=args.resamples, seed=args.seed)
    async with await Ledger.open(args.db) as ledger:
        try:
            return await report.load_report(
                ledger, args.namespace, args.name, bootstrap=bootstrap, role=args.role, run=args.run
            )
        except analysis.AnalysisUnavailableError as exc:
            print(f"aftershock: reporting without confidence intervals: {exc}", file=sys.stderr)
            return await report.load_report(ledger, args.namespace, args.name, role=args.role, run=args.run)


async def _read_trend(args: argparse.Namespace) -> Trend:
    from aftershock import trends
    from aftershock.ledger import Ledger

    async with await Ledger.open(args.db) as ledger:
        return await trends.load_trend(ledger, args.namespace, args.name)


def _report(args: argparse.Namespace) -> int:
    """Exit 0, 1 when there is no such campaign, 2 when a plot cannot be drawn."""
    from pathlib import Path

    from aftershock import analysis, export, page, plots, report, trends

    try:
        data = asyncio.run(_read_report(args))
        trend = asyncio.run(_read_trend(args))
    except LookupError as exc:
        print(f"aftershock: {exc}", file=sys.stderr)
        return 1
    if args.runs:
        if args.format == "csv":
            print("aftershock report --runs: formats table, json, markdown", file=sys.stderr)
            return 2
        render_trend = {"json": trends.render_json, "markdown": trends.render_markdown}.get(args.format)
        sys.stdout.write((render_trend or trends.render_table)(trend))
    elif args.format == "csv":
        sys.stdout.write(export.render_csv(export.build_rows(data.campaign, data.attempts)))
    else:
        render = {"json": report.render_json, "markdown": report.render_markdown}.get(args.format)
        sys.stdout.write((render or report.render_table)(data))
    if args.html:
        Path(args.html).write_text(page.render_html(data, source=args.db, trend=trend), encoding="utf-8")
    figures: tuple[tuple[Literal["png", "svg"], str | None], ...] = (("png", args.png), ("svg", args.svg))
    for fmt, path in figures:
        if path:
            try:
                plots.write_figure(data, path, fmt)
            except analysis.AnalysisUnavailableError as exc:
                print(f"aftershock: {exc}", file=sys.stderr)
                return 2
    return 0


async def _export(args: argparse.Namespace) -> int:
    from aftershock import export
    from aftershock.ledger import Ledger

    if args.all == (args.name is not None):
        print("aftershock export: give a campaign NAME or --all (not both)", file=sys.stderr)
        return 2
    async with await Ledger.open(args.db) as ledger:
        try:
            if args.per == "campaign":
                rows = await export.load_campaign_rows(ledger, args.namespace, args.name, args.run)
            else:
                rows = await export.load_rows(ledger, args.namespace, args.name, args.run)
        except LookupError as exc:
            print(f"aftershock: {exc}", file=sys.stderr)
            return 2
    columns = export.CAMPAIGN_COLUMN_NAMES if args.per == "campaign" else None
    render = export.render_csv if args.format == "csv" else export.render_json
    sys.stdout.write(render(rows, columns))
    return 0


async def _compare(args: argparse.Namespace) -> int:
    """Exit 0 Improved/NoChange, 1 Regressed, 2 when the comparison cannot be made."""
    from aftershock import analysis, comparison, report
    from aftershock.ledger import Ledger

    bootstrap = analysis.Bootstrap(resamples=args.resamples, seed=args.seed)
    loaded = []
    for ref, db in ((args.a, args.db), (args.b, args.db_b or args.db)):
        namespace, _, name = ref.rpartition("/")
        name, at, run_text = name.partition("@")
        if at and not (run_text.isdigit() or run_text in ("latest", "previous")):
            print(
                f"aftershock compare: {ref!r}: the run after '@' is a number, latest or previous",
                file=sys.stderr,
            )
            return 2
        async with await Ledger.open(db) as ledger:
            try:
                run = await _run_number(ledger, namespace or args.namespace, name, run_text if at else None)
                loaded.append(
                    await report.load_report(
                        ledger, namespace or args.namespace, name, role=args.role, run=run
                    )
                )
            except LookupError as exc:
                print(f"aftershock: {exc}", file=sys.stderr)
                return 2
    try:
        cmp = comparison.compare_reports(
            loaded[0],
            loaded[1],
            alpha=args.alpha,
            min_effect_seconds=args.min_effect_seconds,
            bootstrap=bootstrap,
            a_source=args.db,
            b_source=args.db_b or args.db,
        )
    except (ValueError, analysis.AnalysisUnavailableError) as exc:
        print(f"aftershock compare: {exc}", file=sys.stderr)
        return 2
    render = {"json": comparison.render_comparison_json, "markdown": comparison.render_comparison_markdown}
    sys.stdout.write(render.get(args.format, comparison.render_comparison_table)(cmp))
    return cmp.result.verdict.exit_code


async def _run_number(ledger: Ledger, namespace: str, name: str, text: str | None) -> int | None:
    """`@N`, `@latest` (the newest run) or `@previous` (the one before it) as a run number."""
    if text is None or text == "latest":
        return None
    if text.isdigit():
        return int(text)
    latest = await ledger.find_campaign(namespace, name)
    if latest is None:
        raise LookupError(f"no campaign {namespace}/{name} in the ledger at {ledger.path}")
    if latest.run < 2:
        raise LookupError(f"{namespace}/{name} has one run only: there is no previous run")
    return latest.run - 1


async def _prune(args: argparse.Namespace) -> int:
    """Prune runs beyond --keep (and/or finished more than --older-than-days ago); 2 on misuse."""
    import time

    from aftershock.engine import retention
    from aftershock.ledger import Ledger

    if args.all == (args.name is not None):
        print("aftershock prune: give a campaign NAME or --all (not both)", file=sys.stderr)
        return 2
    if args.keep is None and args.older_than_days is None:
        print("aftershock prune: give --keep N and/or --older-than-days D", file=sys.stderr)
        return 2
    now = time.time()
    before = None if args.older_than_days is None else now - args.older_than_days * 86_400
    async with await Ledger.open(args.db) as ledger:
        if args.all:
            uids = await ledger.campaign_uids()
        else:
            found = await ledger.find_campaign(args.namespace, args.name)
            if found is None:
                print(f"aftershock: no campaign {args.namespace}/{args.name} in {args.db}", file=sys.stderr)
                return 2
            uids = [found.object_uid]
        for uid in uids:
            pruned = await retention.prune(ledger, uid, keep=args.keep or 1, finished_before=before, now=now)
            run = await ledger.latest_run(uid)
            latest = None if run is None else await ledger.get_campaign(run.run_uid)
            name = f"{latest.namespace}/{latest.name}" if latest is not None else uid
            print(f"{name}: pruned runs {', '.join(map(str, pruned)) or 'none'}")
    return 0


async def _backup(args: argparse.Namespace) -> int:
    from aftershock.ledger import backup

    done = await backup.backup(args.db, args.file)
    print(
        f"{done.path}: {done.bytes} bytes, ledger schema {done.schema_version}, "
        f"{done.campaigns} campaign runs, {done.attempts} attempts; integrity ok"
    )
    return 0


async def _release(args: argparse.Namespace) -> int:
    import time

    from aftershock.kube import Kube, release
    from aftershock.model import FINALIZER

    kube = await Kube.connect(args.kubeconfig)
    try:
        waited = await release.stop_operator(
            kube,
            args.namespace,
            args.deployment,
            args.selector,
            timeout=args.timeout,
            monotonic=time.monotonic,
        )
        print(f"operator {args.namespace}/{args.deployment} stopped ({waited} pod(s) waited for)")
        let_go = await release.release_campaigns(kube, args.watch_namespace, FINALIZER)
    finally:
        await kube.close()
    print(f"finalizer {FINALIZER} removed from {len(let_go)} Campaign(s): {', '.join(let_go) or '-'}")
    return 0


async def _apply_crd(args: argparse.Namespace) -> int:
    from importlib import resources

    import yaml

    from aftershock.kube import Kube

    text = resources.files("aftershock").joinpath("crd", "campaigns.aftershock.dev.yaml").read_text()
    crd = yaml.safe_load(text)
    kube = await Kube.connect(args.kubeconfig)
    try:
        version = await kube.apply_crd(crd, field_manager="aftershock-chart")
    finally:
        await kube.close()
    print(f"customresourcedefinition {crd['metadata']['name']} applied (resourceVersion {version})")
    return 0


def _missing_ledgers(*paths: str | None) -> int:
    """2 (after saying which) when a ledger file does not exist: opening would create an empty one."""
    for path in paths:
        if path is not None and not os.path.exists(path):
            print(f"aftershock: no ledger at {path}", file=sys.stderr)
            return 2
    return 0


def _node_agent(args: argparse.Namespace) -> int:
    from pathlib import Path

    from aftershock import nodeagent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.node_name:
        print("aftershock node-agent: --node-name (or $NODE_NAME) is required", file=sys.stderr)
        return 2
    paths = (Path(args.state_dir), Path(args.cgroup_root), Path(args.proc))
    if args.thaw:
        print(nodeagent.thaw_left_behind(args.node_name, *paths))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(nodeagent.run(args.node_name, args.pod_uid, paths[1], paths[0], paths[2]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run_operator(args)
    if args.command == "validate":
        return _validate(args)
    if args.command == "release":
        logging.basicConfig(level=logging.INFO)
        return asyncio.run(_release(args))
    if args.command == "apply-crd":
        return asyncio.run(_apply_crd(args))
    if args.command == "node-agent":
        return _node_agent(args)
    if args.command in ("report", "export", "compare", "backup", "prune"):
        logging.basicConfig(level=logging.WARNING)
        if _missing_ledgers(args.db, getattr(args, "db_b", None)):
            return 2
        from aftershock.ledger import LedgerError

        try:
            if args.command == "report":
                return _report(args)
            if args.command == "prune":
                return asyncio.run(_prune(args))
            if args.command == "backup":
                return asyncio.run(_backup(args))
            return asyncio.run(_export(args) if args.command == "export" else _compare(args))
        except LedgerError as exc:  # not a ledger, a newer schema, unreadable: say so, no traceback
            print(f"aftershock: {exc}", file=sys.stderr)
            return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
