"""The `mpp-proxy` command line: argument parsing and the one place failures become exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from mpp_proxy import __version__
from mpp_proxy.cli.failure import EXIT_CONFIG, EXIT_RUNTIME, Failure

__all__ = ["build_parser", "main"]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _add_config(parser: argparse.ArgumentParser) -> None:
    # The container image sets MPP_PROXY_CONFIG=/config/proxy.toml, so `serve` needs no flag.
    default = os.environ.get("MPP_PROXY_CONFIG") or None
    parser.add_argument(
        "--config",
        "-c",
        required=default is None,
        default=default,
        metavar="PATH",
        help="proxy.toml or .py" + (f" (default: {default})" if default else ""),
    )


def _seconds_of(text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    low_ok = value >= 0 if zero_ok else value > 0
    if not low_ok or value == float("inf"):
        kind = "0 or a positive" if zero_ok else "a positive"
        raise argparse.ArgumentTypeError(f"must be {kind} number of seconds: {text}")
    return value


def _seconds(text: str) -> float:
    return _seconds_of(text, zero_ok=False)


def _seconds_or_zero(text: str) -> float:
    return _seconds_of(text, zero_ok=True)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show tracebacks and verbose server logs"
    )

    parser = argparse.ArgumentParser(
        prog="mpp-proxy",
        description="A payment gateway: callers pay per call over HTTP 402 (Machine Payments "
        "Protocol) for any HTTP API you put behind it.",
        epilog="Start with `mpp-proxy demo`, then `mpp-proxy check --config proxy.toml`.",
    )
    parser.add_argument("--version", action="version", version=f"mpp-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_serve(commands, common)

    check = commands.add_parser(
        "check", parents=[common], help="validate a config and print the banner"
    )
    _add_config(check)

    demo = commands.add_parser(
        "demo", parents=[common], help="offline walk-through: upstream, proxy and a paying client"
    )
    demo.add_argument("--once", action="store_true", help="run the walk-through, then exit")
    demo.add_argument(
        "--port",
        "-p",
        type=_port,
        metavar="N",
        help="proxy port (default 4402; 8000 with --upstream-only)",
    )
    demo.add_argument(
        "--upstream-only",
        action="store_true",
        help="serve only the demo's weather API, as a stand-in for your own",
    )

    _add_pay(commands, common)
    _add_ledger(commands, common)
    return parser


def _add_serve(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """`mpp-proxy serve` and its options."""
    serve = commands.add_parser(
        "serve", parents=[common], help="run the proxy (granian, uvloop, HTTP/1.1)"
    )
    _add_config(serve)
    serve.add_argument(
        "--host",
        metavar="H",
        default=os.environ.get("MPP_PROXY_HOST") or None,
        help="address to bind (default: $MPP_PROXY_HOST, else [proxy] host)",
    )
    serve.add_argument(
        "--port",
        "-p",
        type=_port,
        metavar="N",
        default=os.environ.get("MPP_PROXY_PORT") or None,
        help="default: $MPP_PROXY_PORT, else [proxy] port; 0 picks a free port",
    )
    serve.add_argument(
        "--workers", "-w", type=_positive, default=1, metavar="N", help="worker processes"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request (granian)")
    serve.add_argument(
        "--drain-seconds",
        type=_seconds_or_zero,
        default=5.0,
        metavar="S",
        help="on SIGTERM, /readyz answers 503 while the listener serves on this long (default 5)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=_seconds_or_zero,
        default=30.0,
        metavar="S",
        help="then in-flight requests get this long before they are cancelled (default 30)",
    )
    serve.add_argument("--tls-cert", metavar="PATH", help="serve HTTPS: PEM certificate chain")
    serve.add_argument("--tls-key", metavar="PATH", help="the certificate's private key (PEM)")


def _add_pay(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """`mpp-proxy pay` and its options."""
    pay = commands.add_parser(
        "pay", parents=[common], help="call a URL and pay its 402 challenge (curl that pays)"
    )
    pay.add_argument("url", metavar="URL")
    pay.add_argument("-X", "--request", dest="http_method", metavar="METHOD", help="HTTP method")
    pay.add_argument(
        "-d", "--data", metavar="DATA", help="request body (@file reads a file, @- stdin)"
    )
    pay.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        default=[],
        metavar="HEADER",
        help="extra request header 'Name: value' (repeatable)",
    )
    pay.add_argument(
        "--method",
        dest="payment_method",
        metavar="NAME",
        help="pay only with this payment method (test, tempo); default: the first one offered",
    )
    pay.add_argument(
        "--max-amount",
        metavar="A",
        help="refuse to pay more than A (display units, e.g. 0.10); default 1",
        default="1",
    )
    pay.add_argument("--rpc-url", metavar="URL", help="Tempo RPC URL (key from $MPP_PRIVATE_KEY)")
    pay.add_argument("--timeout", type=_seconds, default=60.0, metavar="S", help="seconds")


def _add_ledger(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """`mpp-proxy ledger` and `mpp-proxy credits`."""
    ledger = commands.add_parser(
        "ledger", parents=[common], help="list payments and revenue from the state store"
    )
    _add_config(ledger)
    ledger.add_argument(
        "--limit", type=_positive, metavar="N", help="payments listed (default 20; JSON/CSV: all)"
    )
    ledger.add_argument("--since", metavar="WHEN", help="created at or after: 2026-11-29[T..Z]")
    ledger.add_argument("--service", metavar="ID", help="one service only")
    ledger.add_argument("--route", metavar="ROUTE", help="one route only, e.g. 'POST /v1/x'")
    ledger.add_argument(
        "--status", metavar="S", help="delivered, credited, forfeited, voided or in_flight"
    )
    output = ledger.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="JSON: payments and days")
    output.add_argument("--csv", action="store_true", help="CSV: one line per payment")

    credits = commands.add_parser(
        "credits", parents=[common], help="list open credits, or void one"
    )
    actions = credits.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[common], help="the open credits")
    _add_config(listing)
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    void = actions.add_parser(
        "void", parents=[common], help="void a credit: it can no longer be redeemed"
    )
    void.add_argument("key", metavar="KEY", help="the ledger key, or its first 8+ characters")
    _add_config(void)
    void.add_argument("--reason", required=True, metavar="TEXT", help="why (kept on the row)")
    void.add_argument("--by", metavar="NAME", help="who (default: user@host)")


def _run(args: argparse.Namespace) -> int:
    # Imported per command so `--version` and `check` never pay for granian or httpx.
    return _COMMANDS[args.command](args)


def _run_serve(args: argparse.Namespace) -> int:
    from mpp_proxy.cli.serve import serve
    from mpp_proxy.cli.server import Shutdown

    return serve(
        args.config,
        host=args.host,
        port=args.port,
        workers=args.workers,
        debug=args.debug,
        access_log=args.access_log,
        shutdown=Shutdown(args.drain_seconds, args.graceful_timeout),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def _run_check(args: argparse.Namespace) -> int:
    from mpp_proxy.cli.serve import check

    return check(args.config)


def _run_demo(args: argparse.Namespace) -> int:
    from mpp_proxy.cli.demo import demo

    if args.upstream_only:
        from mpp_proxy.cli.demo import demo_upstream

        return demo_upstream(port=8000 if args.port is None else args.port, debug=args.debug)
    return demo(once=args.once, port=4402 if args.port is None else args.port, debug=args.debug)


def _run_pay(args: argparse.Namespace) -> int:
    from mpp_proxy.cli.pay import PayRequest, pay

    return pay(
        PayRequest(
            url=args.url,
            http_method=args.http_method,
            data=args.data,
            headers=tuple(args.headers),
            payment_method=args.payment_method,
            max_amount=args.max_amount,
            rpc_url=args.rpc_url,
            timeout=args.timeout,
        )
    )


def _run_ledger(args: argparse.Namespace) -> int:
    from mpp_proxy.cli.ledger import LedgerArgs, ledger

    return ledger(
        args.config,
        LedgerArgs(
            since=args.since,
            service=args.service,
            route=args.route,
            status=args.status,
            limit=args.limit,
            output="json" if args.json else "csv" if args.csv else "text",
        ),
    )


def _run_credits(args: argparse.Namespace) -> int:
    from mpp_proxy.cli.credits import credits_list, credits_void

    if args.action == "list":
        return credits_list(args.config, as_json=args.json)
    return credits_void(args.config, args.key, reason=args.reason, by=args.by)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": _run_serve,
    "check": _run_check,
    "demo": _run_demo,
    "pay": _run_pay,
    "ledger": _run_ledger,
    "credits": _run_credits,
}


def _implied_serve(argv: Sequence[str]) -> list[str]:
    """`mpp-proxy --config proxy.toml` (options, no command) means `mpp-proxy serve ...`."""
    args = list(argv)
    if args and args[0].startswith("-") and args[0] not in ("-h", "--help", "--version"):
        return ["serve", *args]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_implied_serve(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except Failure as failure:
        if args.debug:
            traceback.print_exc()
        print(f"mpp-proxy: {failure.line}", file=sys.stderr)
        return failure.exit_code
    except Exception as exc:  # the last resort: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"mpp-proxy: unexpected error: {type(exc).__name__}: {exc} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_RUNTIME
