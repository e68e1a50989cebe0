"""The ``qts`` command: demo, token, status, quote, call, revoke, forget, doctor, init, approval,
stream, emulator.

Exit codes: see :data:`runtime.errors.EXIT_CODES` (0 ok; 2 configuration or usage; 3 credentials
rejected; 4 broker unavailable, malformed answer or failed TLS; 5 rate limited; 6 KIS refused
the request; 7 the app key's one WebSocket session is held elsewhere; 1 a bug). Errors are one
or two plain lines on stderr, and with ``--json`` also one ``{"error": {...}}`` object on stdout;
a traceback only with ``-v``.
Heavy modules are imported inside each command so ``qts --help`` starts fast.
"""

from __future__ import annotations

import argparse
import os
import sys

# Only for the type checker (which treats any TYPE_CHECKING as true): `qts --help` imports
# neither typing nor the output module (json, zoneinfo, datetime).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn, TypeAlias

    from runtime.cli.output import Output

    Handler: TypeAlias = Callable[[argparse.Namespace, Output], int]

__all__ = ["main"]


class _UsageProblem(Exception):
    """argparse's complaint, carried to ``main`` so it is reported like every other error."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qts`` with ``argv`` (default: the process arguments); returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(args_list)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except _UsageProblem as problem:
        return _usage_error(problem, args_list)
    from runtime.cli.output import Output

    out = Output(as_json=args.json)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    restore = _configure_logging(verbose=args.verbose)
    try:
        return handler(args, out)
    except KeyboardInterrupt:
        out.fail("Interrupted", "interrupted", exit_code=130, hint="")
        return 130
    except BrokenPipeError:
        # The reader went away (qts ... | head): not an error worth a message.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit, silences the final flush
        return 0
    except Exception as exc:  # the one place that turns any error into an exit code
        return _report(exc, out, verbose=args.verbose)
    finally:
        restore()


def _report(exc: Exception, out: Output, *, verbose: bool) -> int:
    from runtime import scrub
    from runtime.errors import QTSError

    if verbose:
        import traceback

        # The one scrubber sees every byte: a dependency's exception text in the chain too.
        out.error(scrub.scrub("".join(traceback.format_exception(exc))).rstrip("\n"))
    if isinstance(exc, QTSError):
        out.fail_with(exc)
        return exc.exit_code
    out.fail(
        "InternalError",
        f"internal error ({type(exc).__name__})",
        exit_code=1,
        hint="Run again with -v for details and report it (a bug in qts).",
    )
    return 1


def _usage_error(problem: _UsageProblem, argv: Sequence[str]) -> int:
    from runtime.cli.output import Output
    from runtime.errors import UsageError

    error = UsageError(problem.args[0])
    error.hint = f"Run `{_help_target(problem.prog, argv)} --help` for usage."
    Output(as_json="--json" in argv).fail_with(error)
    return error.exit_code


def _help_target(prog: str, argv: Sequence[str]) -> str:
    """The subcommand whose ``--help`` answers a usage error: the one named on the line, if any."""
    if prog != "qts":
        return prog
    names = {name for name, _, _ in COMMANDS}
    named = next((arg for arg in argv if arg in names), None)
    return f"qts {named}" if named else "qts"


def _configure_logging(*, verbose: bool) -> Callable[[], None]:
    """Warnings (a corrupt token file, a folder tightened) on stderr, each at most once per run;
    with ``-v`` every debug log too. Returns what undoes it (``main`` may run in a test process)."""
    import logging

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "qts: warning: %(message)s")
    )
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    handler.addFilter(_OncePerRun())
    level = root.level
    if verbose:
        root.setLevel(logging.DEBUG)
    root.addHandler(handler)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(level)

    return restore


class _OncePerRun:
    """A logging filter that lets each distinct message through once."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def filter(self, record: Any) -> bool:
        text = record.getMessage()
        if text in self._seen:
            return False
        self._seen.add(text)
        return True


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On subcommands the defaults are suppressed so options given before the subcommand survive.
    default: Any = None if top else argparse.SUPPRESS
    flag_default: Any = False if top else argparse.SUPPRESS
    parser.add_argument(
        "--env-file", metavar="PATH", default=default, help="settings file (default: ./.env if present)"
    )
    parser.add_argument(
        "--mode", choices=["VTS", "REAL", "vts", "real"], default=default, help="override KIS_MODE"
    )
    parser.add_argument("--json", action="store_true", default=flag_default, help="machine-readable output")
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=flag_default, help="debug logs and tracebacks"
    )


def _lazy(name: str, module: str = "runtime.cli.commands") -> Handler:
    """The function ``name`` of ``module``, imported only when the subcommand runs."""

    def run(args: argparse.Namespace, out: Output) -> int:
        import importlib

        handler: Handler = getattr(importlib.import_module(module), name)
        return handler(args, out)

    run.__name__ = run.__qualname__ = name
    return run


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is reported like every other qts error (and as JSON with --json)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageProblem(message, self.prog)


def _token_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reveal", action="store_true", help="print only the raw token on stdout, for pipes")


def _quote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("code", help="6-digit stock code, e.g. 005930")
    p.add_argument("--market", default="J", choices=["J", "NX", "UN", "W"], help="FID_COND_MRKT_DIV_CODE")


def _call_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("tr_id", metavar="TR_ID", help="the REAL tr_id, e.g. FHKST01010100 (mapped for VTS)")
    p.add_argument(
        "path", metavar="PATH", help="API path, e.g. /uapi/domestic-stock/v1/quotations/inquire-price"
    )
    p.add_argument("params", metavar="KEY=VALUE", nargs="*", help="query parameters")
    pages = p.add_mutually_exclusive_group()
    pages.add_argument(
        "--pages", type=int, default=1, metavar="N", help="follow tr_cont for up to N pages (default 1)"
    )
    pages.add_argument("--all", action="store_true", help="follow tr_cont until the last page")


def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force", action="store_true", help="overwrite an existing file (--env-file, else ./.env)"
    )


def _forget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="every token in the store, of every mode and key")


def _stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("codes", nargs="+", metavar="CODE", help="6-character stock codes, e.g. 005930")
    p.add_argument("--depth", action="store_true", help="also stream the 10-level order book (H0STASP0)")
    p.add_argument("--count", type=_positive_int, metavar="N", help="exit 0 after N events in all")
    p.add_argument("--seconds", type=_positive_float, metavar="S", help="exit 0 after S seconds")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError("must be a number of seconds above 0")
    return value


def _emulator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")


def _no_args(p: argparse.ArgumentParser) -> None:
    """A subcommand with only the common options."""


#: Every subcommand: name, (function, module), help text. Add one line (and its arguments) here.
COMMANDS: list[tuple[str, tuple[str, str], str]] = [
    ("demo", ("demo", "runtime.cli.commands"), "walk the Phase 2 flow against the embedded KIS emulator"),
    ("token", ("token", "runtime.cli.commands"), "ensure a valid token for the mode and show it (masked)"),
    (
        "status",
        ("status", "runtime.cli.commands"),
        "show cached tokens per (mode, key fingerprint); no network",
    ),
    ("quote", ("quote", "runtime.cli.commands"), "read-only current price of a stock through the runtime"),
    (
        "call",
        ("call", "runtime.cli.call"),
        "any read-only GET through the runtime, JSON out (orders refused)",
    ),
    (
        "revoke",
        ("revoke", "runtime.cli.commands"),
        "revoke the cached token at KIS and drop it from the store",
    ),
    ("forget", ("forget", "runtime.cli.call"), "drop the local token without asking KIS (KIS unreachable)"),
    (
        "doctor",
        ("doctor", "runtime.cli.doctor"),
        "check the set-up: one line per check (ok / warn / fail + fix)",
    ),
    ("init", ("init", "runtime.cli.init"), "write a commented .env (mode 0600) to fill in"),
    (
        "approval",
        ("approval", "runtime.cli.stream"),
        "get or reuse the WebSocket approval key for the mode and show it (masked)",
    ),
    (
        "stream",
        ("stream", "runtime.cli.stream"),
        "read-only real-time trades (and the order book with --depth) over KIS's WebSocket",
    ),
    ("emulator", ("emulator", "runtime.cli.commands"), "run the offline KIS emulator until Ctrl-C"),
]

#: Extra arguments per subcommand (those not named take only the common options).
ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "token": _token_args,
    "quote": _quote_args,
    "call": _call_args,
    "init": _init_args,
    "forget": _forget_args,
    "stream": _stream_args,
    "emulator": _emulator_args,
}


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qts",
        description="QTS Runtime: a safe connection to the KIS Open API (한국투자증권). Never sends orders.",
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for name, (function, module), text in COMMANDS:
        p = sub.add_parser(name, help=text, description=text)
        _common(p, top=False)
        ARGUMENTS.get(name, _no_args)(p)
        p.set_defaults(handler=_lazy(function, module), command=name)
    return parser
