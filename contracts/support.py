"""What the contracts need to run on their own, without tests/: the reference fake broker and a
throwaway redis-server.

Why here and not in tests/support: the contracts are the gate a Phase 3 adapter or store is held
to, and they must run without the test suite. The fake broker is itself held to the broker
contract (contracts/test_broker_contract.py), so it lives beside it; tests/support re-exports both
(tests.support.fakes, tests.support.redis) so a test author still has one place to look.
"""

from __future__ import annotations

import itertools
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from runtime.broker.base import AccessToken, ApprovalKey, BrokerRequest, BrokerResponse, BrokerScope, Mode
from runtime.clock import ClockPort
from runtime.deadline import Deadline
from runtime.errors import OrderRefusedError, QTSError, ScopeMismatchError, TokenRejectedError
from runtime.masking import fingerprint


class FakeBroker:
    """Implements BrokerAuthPort. Issues numbered tokens on ``clock``; KIS's 6-hour reuse is on
    when ``reuse_window`` is set. ``fail_next_issue`` queues errors; tokens it issued are valid
    until expiry or ``void``/``revoke``."""

    def __init__(
        self,
        clock: ClockPort,
        *,
        mode: Mode = Mode.VTS,
        app_key: str = "PSfake00000000000000000000000000001",
        lifetime: timedelta = timedelta(hours=24),
        reuse_window: timedelta | None = None,
        issue_delay_s: float = 0.0,
    ) -> None:
        self._clock = clock
        self._scope = BrokerScope(mode, fingerprint(app_key))
        self._lifetime = lifetime
        self._reuse_window = reuse_window
        self._issue_delay_s = issue_delay_s
        self._serial = itertools.count(1)
        self._valid: dict[str, AccessToken] = {}
        self._last: AccessToken | None = None
        self._lock = threading.Lock()
        self.issue_errors: deque[QTSError] = deque()
        self.issued: list[AccessToken] = []
        self.issue_calls = 0
        self.sent: list[tuple[BrokerRequest, AccessToken]] = []
        self.revoked: list[AccessToken] = []
        self.approval_errors: deque[QTSError] = deque()
        self.approvals: list[ApprovalKey] = []

    @property
    def scope(self) -> BrokerScope:
        return self._scope

    def issue_token(self, *, deadline: Deadline) -> AccessToken:
        if self._issue_delay_s:
            threading.Event().wait(self._issue_delay_s)  # real time: lets other threads pile up
        with self._lock:
            self.issue_calls += 1
            if self.issue_errors:
                raise self.issue_errors.popleft()
            now = self._clock.now()
            last = self._last
            if (
                self._reuse_window is not None
                and last is not None
                and last.value in self._valid
                and now < last.issued_at + self._reuse_window
            ):
                return last
            token = AccessToken(
                value=f"fake-token-{next(self._serial):06d}-{'x' * 24}",
                token_type="Bearer",
                expires_at=now + self._lifetime,
                issued_at=now,
                scope=self._scope,
            )
            self._valid[token.value] = token
            self._last = token
            self.issued.append(token)
            return token

    def issue_approval_key(self, *, deadline: Deadline) -> ApprovalKey:
        """A new numbered approval key each call (KIS documents no reuse for Approval)."""
        deadline.left_or_raise("Approval")
        with self._lock:
            if self.approval_errors:
                raise self.approval_errors.popleft()
            key = ApprovalKey(
                value=f"fake-approval-{len(self.approvals) + 1:06d}-{'a' * 20}",
                scope=self._scope,
                issued_at=self._clock.now(),
            )
            self.approvals.append(key)
            return key

    def revoke_token(self, token: AccessToken, *, deadline: Deadline) -> None:
        self._check(token)
        with self._lock:
            self._valid.pop(token.value, None)
            self.revoked.append(token)

    def send(self, request: BrokerRequest, token: AccessToken, *, deadline: Deadline) -> BrokerResponse:
        self._check(token)
        if request.is_order:
            raise OrderRefusedError(f"{request.path} is an order endpoint; Phase 2 sends no orders")
        with self._lock:
            self.sent.append((request, token))
            known = self._valid.get(token.value)
            if known is None:
                raise TokenRejectedError("유효하지 않은 token 입니다.", code="EGW00121")
            if self._clock.now() >= known.expires_at:
                raise TokenRejectedError("기간이 만료된 token 입니다.", code="EGW00123")
        return BrokerResponse(
            status=200, body={"rt_cd": "0", "output": {"path": request.path}}, tr_id=request.tr_id
        )

    def void(self) -> None:
        """Server-side maintenance: every token becomes invalid."""
        with self._lock:
            self._valid.clear()

    def _check(self, token: AccessToken) -> None:
        if token.scope != self._scope:
            raise ScopeMismatchError(f"token of {token.scope} offered to {self._scope}")


# --- a throwaway redis-server ------------------------------------------------------------------

SKIP_REASON = "redis-server is not installed (apt-get install redis-server); the Redis store tests need it"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@attrs.define
class RedisProcess:
    """A running throwaway redis-server: its URL, and its process (to pause it or kill it)."""

    url: str
    process: subprocess.Popen[bytes]

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung host)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()


@contextmanager
def start_redis(folder: Path) -> Iterator[RedisProcess]:
    """Start redis-server (no persistence) and yield it; skip when the binary is absent."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(SKIP_REASON)
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - the installed redis-server with fixed arguments
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer PING on port {port}")
            time.sleep(0.02)
        yield RedisProcess(f"redis://127.0.0.1:{port}/0", process)
    finally:
        process.send_signal(signal.SIGCONT)  # a paused server must be able to stop
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """Start redis-server (no persistence) and yield its URL; skip when the binary is absent."""
    with start_redis(folder) as server:
        yield server.url
