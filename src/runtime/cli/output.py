"""How ``qts`` speaks: plain lines or one JSON object on stdout, warnings and errors on stderr."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TextIO

from runtime.scrub import scrub

if TYPE_CHECKING:
    from runtime.errors import QTSError

__all__ = ["REAL_MARKER", "Output", "format_kst", "format_left"]

REAL_MARKER = "[REAL 실전]"
_KST = timezone(timedelta(hours=9), "KST")  # no daylight saving in Korea since 1988: exact


def format_kst(moment: datetime) -> str:
    """``2026-11-25 17:33:53 KST``."""
    return moment.astimezone(_KST).strftime("%Y-%m-%d %H:%M:%S KST")


def format_left(left: timedelta) -> str:
    """``23h 59m`` / ``4m 10s`` / ``expired``."""
    seconds = int(left.total_seconds())
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


class Output:
    """Writes human text, or JSON when ``--json`` was given; marks REAL mode on every command."""

    def __init__(self, *, as_json: bool, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        #: The base URL a command talks to, named when it cannot be reached.
        self.target: str | None = None
        self._marked = False

    def real_marker(self, *, machine_stdout: bool) -> None:
        """Announce live trading (once per run): on stderr when stdout carries machine output."""
        if self._marked:
            return
        self._marked = True
        stream = self.stderr if machine_stdout or self.as_json else self.stdout
        print(f"{REAL_MARKER} live trading account / 실전투자 계좌", file=stream, flush=True)

    # Everything but ``raw`` (``qts token --reveal``, whose point is the token) goes through the
    # secret scrubber: no fragment of a key, secret or token reaches qts output by accident.

    def line(self, text: str) -> None:
        if not self.as_json:
            print(scrub(text), file=self.stdout, flush=True)

    def data(self, payload: dict[str, Any]) -> None:
        if self.as_json:
            text = json.dumps(payload, ensure_ascii=False, sort_keys=True)
            print(scrub(text), file=self.stdout, flush=True)

    def raw(self, text: str) -> None:
        print(text, file=self.stdout, flush=True)

    def error(self, text: str) -> None:
        print(scrub(text), file=self.stderr, flush=True)

    def fail_with(self, error: QTSError) -> None:
        """Report ``error``: two lines on stderr and, with ``--json``, ``{"error": {...}}`` on stdout.

        An unreachable broker is named by the URL that was tried."""
        from runtime.errors import BrokerUnavailableError, TLSVerificationError

        payload = error.as_dict()
        text = str(error)
        if self.target and isinstance(error, BrokerUnavailableError | TLSVerificationError):
            payload["message"] = f"{error.message} (tried {self.target})"
            text = f"{payload['message']} [{error.code}]" if error.code else payload["message"]
        self.fail_payload(payload, text=text)

    def fail(self, kind: str, message: str, *, exit_code: int, hint: str) -> None:
        """Report a failure that is not a QTSError (a bug, Ctrl-C) in the same two shapes."""
        payload = {
            "type": kind,
            "code": None,
            "message": message,
            "hint": hint,
            "retryable": False,
            "exit_code": exit_code,
        }
        self.fail_payload(payload, text=message)

    def fail_payload(self, payload: dict[str, Any], *, text: str) -> None:
        self.error(f"qts: {text}")
        if payload.get("hint"):
            self.error(f"     {payload['hint']}")
        if self.as_json:
            text = json.dumps({"error": payload}, ensure_ascii=False)
            print(scrub(text), file=self.stdout, flush=True)
