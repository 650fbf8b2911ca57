"""The `aftershock` command: `run` (the operator), `report` (read the ledger back)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from aftershock.model import DEFAULT_PROTECTED_NAMESPACES

DEFAULT_DB = "/var/lib/aftershock/ledger.db"


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aftershock", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument("--db", default=os.environ.get("AFTERSHOCK_DB", DEFAULT_DB), help="ledger file (SQLite)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="watch this namespace (repeatable); default: $AFTERSHOCK_NAMESPACES or all namespaces",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument("--liveness-port", type=int, default=8080, help="serve /healthz on this port (0: off)")
    run.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="serve /metrics and the campaigns' reports (read-only) on this port (0: off)",
    )
    run.add_argument(
        "--protected-namespace",
        action="append",
        default=[],
        help="never disturb this namespace (repeatable; added to kube-system, kube-public, kube-node-lease)",
    )
    run.add_argument(
        "--allow-loopback-pd",
        action="store_true",
        default=os.environ.get("AFTERSHOCK_ALLOW_LOOPBACK_PD") == "1",
        help="accept pdURL on 127.0.0.1/localhost (local development and tests only)",
    )
    run.add_argument("--probe-interval", type=float, default=0.5, help="seconds between PD checks")
    run.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster or $KUBECONFIG)")
    run.add_argument(
        "--log-format", choices=["json", "text"], default=os.environ.get("AFTERSHOCK_LOG_FORMAT", "text")
    )
    run.add_argument("--verbose", "-v", action="store_true")

    report = sub.add_parser("report", help="show a campaign's trials from the ledger")
    report.add_argument("name")
    report.add_argument("--namespace", "-n", default="default")
    report.add_argument("--db", default=os.environ.get("AFTERSHOCK_DB", DEFAULT_DB))
    report.add_argument("--format", choices=["table", "json"], default="table")
    check = sub.add_parser(
        "validate", help="check Campaign manifests offline (CRD schema, CEL rules, operator rules)"
    )
    check.add_argument("files", nargs="+", help="YAML files ('-' for standard input)")
    check.add_argument("--allow-loopback-pd", action="store_true", help="as the operator's flag of that name")
    return parser


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


def _run_operator(args: argparse.Namespace) -> int:
    import kopf

    from aftershock import handlers

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="campaign" if args.log_format == "json" else None,
    )
    # httpx logs every PD request at INFO: a few per second per Campaign drowns the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    namespaces = args.namespace or _env_list("AFTERSHOCK_NAMESPACES")
    protected = DEFAULT_PROTECTED_NAMESPACES | frozenset(args.protected_namespace)
    config = handlers.OperatorConfig(
        db_path=args.db,
        protected_namespaces=protected,
        allow_loopback_pd=args.allow_loopback_pd,
        kubeconfig=args.kubeconfig,
        probe_interval=args.probe_interval,
        metrics_port=args.metrics_port,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
    memo = kopf.Memo(config=config)
    kopf.run(
        standalone=True,
        clusterwide=args.all_namespaces or not namespaces,
        namespaces=[] if args.all_namespaces else namespaces,
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
        memo=memo,
    )
    return 0


async def _report(args: argparse.Namespace) -> int:
    from aftershock import report
    from aftershock.ledger import Ledger

    ledger = await Ledger.open(args.db)
    try:
        try:
            data = await report.load_report(ledger, args.namespace, args.name)
        except LookupError as exc:
            print(f"aftershock: {exc}", file=sys.stderr)
            return 1
        print(report.render_json(data) if args.format == "json" else report.render_table(data))
    finally:
        await ledger.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run_operator(args)
    if args.command == "validate":
        return _validate(args)
    if args.command == "report":
        logging.basicConfig(level=logging.WARNING)
        if not os.path.exists(args.db):
            print(f"aftershock: no ledger at {args.db}", file=sys.stderr)
            return 2
        return asyncio.run(_report(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
