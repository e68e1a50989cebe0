"""Hostile peers on 127.0.0.1 for the fault matrix, deadline, audit and TLS tests.

Every peer is a real socket: a scripted KIS that answers chosen bytes, a listener whose
backlog is full (a true connect timeout on loopback, no root needed), one that accepts and
never answers, and a port nobody listens on. Plus the one place that runs ``qts`` in-process
with a hard time limit, so a command that overruns its deadline fails the test instead of
hanging the suite.

The raw socket peers are shared with the broker tests and live in ``tests.support.servers``;
they are re-exported here for the hostile tests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import attrs
import pytest

from kis_emulator import demo_account
from runtime.broker.base import AccessToken, BrokerScope
from tests.support.kis import (
    REVOKE_PATH,
    TOKEN_PATH,
    jwt,
    recorded,
    token_reply,
)
from tests.support.servers import LOOPBACK as LOOPBACK
from tests.support.servers import BacklogFullServer as BacklogFullServer
from tests.support.servers import LoopbackHTTPServer, Reply
from tests.support.servers import SilentServer as SilentServer
from tests.support.servers import closed_url as closed_url

#: The credentials every hostile test uses: the emulator's VTS demo pair (36/180 chars).
ACCOUNT = demo_account("VTS")
APP_KEY = ACCOUNT.app_key
APP_SECRET = ACCOUNT.app_secret


def fresh_token(scope: BrokerScope, *, expired: bool = False) -> AccessToken:
    """A KIS-shaped token of ``scope`` (jti = the app key), valid 24 h or expired an hour ago."""
    now = datetime.now(UTC)
    issued = now - timedelta(hours=25) if expired else now
    return AccessToken(
        value=jwt(APP_KEY, issued),
        token_type="Bearer",
        expires_at=issued + timedelta(hours=24),
        issued_at=issued,
        scope=scope,
    )


# --- a scripted KIS ---------------------------------------------------------------------------


@attrs.frozen
class Canned:
    """One answer: status, body bytes and content type."""

    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"

    @classmethod
    def json(cls, status: int, payload: object) -> Canned:
        return cls(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def _normal(path: str) -> Canned:
    if path == TOKEN_PATH:
        return Canned.json(200, token_reply(APP_KEY, datetime.now(UTC)))
    if path == REVOKE_PATH:
        return Canned.json(200, {"code": 200, "message": "접근토큰 폐기에 성공하였습니다"})
    return Canned.json(200, recorded("inquire_price_success"))


class ScriptedKIS(LoopbackHTTPServer):
    """A stdlib HTTP/1.1 server playing KIS: well-formed answers, except on armed paths."""

    def __init__(self) -> None:
        self._armed: dict[str, Canned] = {}
        self._lock = threading.Lock()
        self.requests: list[str] = []
        super().__init__()

    def arm(self, path: str, canned: Canned) -> None:
        """Answer every request to ``path`` with ``canned`` from now on."""
        with self._lock:
            self._armed[path] = canned

    def disarm(self) -> None:
        with self._lock:
            self._armed.clear()

    def answer(self, request: BaseHTTPRequestHandler, body: bytes) -> Reply:
        path = request.path.split("?", 1)[0]
        with self._lock:
            self.requests.append(path)
            canned = self._armed.get(path) or _normal(path)
        return Reply(canned.status, canned.body, (("content-type", canned.content_type),))


# --- qts in-process, with a hard time limit ------------------------------------------------


@attrs.frozen
class CliRun:
    """One finished (or abandoned) in-process ``qts`` run."""

    argv: tuple[str, ...]
    exit_code: int | None  # None: still running when the limit passed
    stdout: str
    stderr: str
    seconds: float
    raised: BaseException | None = None

    def __str__(self) -> str:
        return (
            f"qts {' '.join(self.argv)} -> exit {self.exit_code} in {self.seconds:.2f} s\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}---"
        )


def run_cli(
    argv: Sequence[str],
    capsys: pytest.CaptureFixture[str],
    *,
    limit_s: float,
    unblock: Callable[[], None] | None = None,
) -> CliRun:
    """Run ``runtime.cli.main(argv)`` on a worker thread; give up waiting after ``limit_s``.

    When the command overruns, ``unblock`` (e.g. closing the peer) is called so the worker
    ends, and the run is returned with ``exit_code`` None for the caller to fail on.
    """
    from runtime.cli import main

    capsys.readouterr()  # drop anything captured before
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["code"] = main(list(argv))
        except BaseException as exc:  # reported to the test, which fails on it
            box["raised"] = exc

    worker = threading.Thread(target=work, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(limit_s)
    overran = worker.is_alive()
    if overran:
        if unblock is not None:
            unblock()
        worker.join(30)
    seconds = time.monotonic() - started
    out, err = capsys.readouterr()
    code = None if overran else box.get("code")
    return CliRun(tuple(argv), code, out, err, seconds, box.get("raised"))


def cli_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    base_url: str,
    *,
    deadline_s: float,
    store: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Point ``qts`` at ``base_url`` with the demo VTS pair; cwd = ``tmp_path``; returns the store folder."""
    folder = tmp_path / "tokens"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KIS_MODE", "VTS")
    monkeypatch.setenv("KIS_VTS_BASE_URL", base_url)
    monkeypatch.setenv("KIS_VTS_APP_KEY", APP_KEY)
    monkeypatch.setenv("KIS_VTS_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("QTS_TOKEN_STORE", store or f"file:{folder}")
    monkeypatch.setenv("QTS_CALL_DEADLINE_S", str(deadline_s))
    monkeypatch.setenv("QTS_WAIT_ON_RATE_LIMIT", "false")
    for name, value in (extra or {}).items():
        monkeypatch.setenv(name, value)
    return folder


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it was raised from or while handling, once each."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
