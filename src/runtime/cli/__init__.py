"""The ``qts`` command: demo, token, status, quote, revoke, emulator.

Exit codes: 0 ok; 2 configuration or usage; 3 credentials rejected (a key of the other mode
included); 4 broker unavailable, malformed answer or failed TLS; 5 rate limited; 1 anything
else. Errors are one or two plain lines on stderr; a traceback only with ``-v``.
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qts`` with ``argv`` (default: the process arguments); returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    from runtime.cli.output import Output

    out = Output(as_json=args.json)
    if args.verbose:
        import logging

        logging.basicConfig(
            level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args, out)
    except KeyboardInterrupt:
        out.error("qts: interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (qts ... | head): not an error worth a message.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit, silences the final flush
        return 0
    except Exception as exc:  # the one place that turns any error into an exit code
        return _report(exc, out, verbose=args.verbose)


def _report(exc: Exception, out: Output, *, verbose: bool) -> int:
    from runtime import scrub
    from runtime.errors import QTSError

    if verbose:
        import traceback

        # The one scrubber sees every byte: a dependency's exception text in the chain too.
        out.error(scrub.scrub("".join(traceback.format_exception(exc))).rstrip("\n"))
    if isinstance(exc, QTSError):
        out.error(f"qts: {exc}")
        hint = _HINTS.get(type(exc).__name__)
        if hint:
            out.error(f"     {hint}")
        return exc.exit_code
    out.error(f"qts: internal error ({type(exc).__name__}); run again with -v for details and report it")
    return 1


_HINTS = {
    "ConfigError": "Fix the setting named above (.env, environment or command line; see .env.example).",
    "CredentialsRejectedError": "Check the app key/secret for this mode in .env (no stray spaces).",
    "WrongModeError": "KIS_MODE and the key pair disagree: use the VTS pair for VTS, the REAL pair for REAL.",
    "IssuanceRateLimitedError": "KIS issues one token per minute per app key; try again in a minute.",
    "CallRateLimitedError": "Too many calls per second; slow down and try again.",
    "BrokerUnavailableError": "KIS could not be reached; check the network and try again later.",
    "TLSVerificationError": "Behind a corporate proxy? Set KIS_CA_BUNDLE to its CA certificate file.",
    "MalformedResponseError": "KIS answered something unexpected; try again, and report it if it persists.",
    "ForeignTokenError": "The token named another app key; nothing was cached. Report this if it persists.",
    "TokenRejectedError": "Run `qts revoke` and then `qts token` to start with a new token.",
    "StaleTokenError": "KIS keeps handing back a rejected token; run `qts revoke`, then retry.",
}


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


def _lazy(name: str) -> Handler:
    """The subcommand ``name`` of ``runtime.cli.commands``, imported only when it runs."""

    def run(args: argparse.Namespace, out: Output) -> int:
        from runtime.cli import commands

        handler: Handler = getattr(commands, name)
        return handler(args, out)

    run.__name__ = run.__qualname__ = name
    return run


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is two plain lines like every other qts error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"qts: {message}\n     run `{self.prog} --help` for usage\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qts",
        description="QTS Runtime: a safe connection to the KIS Open API (한국투자증권). Never sends orders.",
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        _common(p, top=False)
        p.set_defaults(handler=handler)
        return p

    command(
        "demo",
        _lazy("demo"),
        "walk the whole Phase 2 flow against the embedded KIS emulator (no account needed)",
    )
    token = command(
        "token", _lazy("token"), "ensure a valid token for the configured mode and show it (masked)"
    )
    token.add_argument("--reveal", action="store_true", help="print only the raw token on stdout, for pipes")
    command("status", _lazy("status"), "show cached tokens per (mode, key fingerprint); no network")
    quote = command("quote", _lazy("quote"), "read-only current price of a stock through the runtime")
    quote.add_argument("code", help="6-digit stock code, e.g. 005930")
    quote.add_argument("--market", default="J", choices=["J", "NX", "UN", "W"], help="FID_COND_MRKT_DIV_CODE")
    command("revoke", _lazy("revoke"), "revoke the cached token at KIS and drop it from the store")
    emulator = command(
        "emulator", _lazy("emulator"), "run the offline KIS emulator in the foreground until Ctrl-C"
    )
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    return parser
