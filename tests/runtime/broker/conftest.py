"""Fixtures for the KIS adapter tests: real sockets on 127.0.0.1, never a mocked urllib3.

- ``httpserver`` (pytest-httpserver) plays KIS for status/body scenarios.
- ``capture`` is a stdlib ``http.server`` that records every request with its raw headers:
  werkzeug (behind pytest-httpserver) drops request headers containing ``_`` (``tr_id``,
  ``tr_cont``), so header assertions are made here.
- ``silent_server`` accepts connections and never answers; ``reset_server`` sends half a body
  and then resets the connection; ``closed_url`` is a port nobody listens on.

The servers themselves live in ``tests.support.servers`` (the hostile tests use them too).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Protocol

import pytest
import urllib3
from pytest_httpserver import HTTPServer

from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.clock import ClockPort, FakeClock
from runtime.masking import fingerprint
from runtime.settings import AppCredentials
from tests.support import servers
from tests.support.kis import REAL_KEY, REAL_SECRET, VTS_KEY, VTS_SECRET, credentials, jwt
from tests.support.servers import LOOPBACK, CaptureServer, ResetMidBodyServer, SilentServer

#: Every secret the tests hand to an adapter; no error text may ever carry one of them.
KNOWN_SECRETS = (VTS_KEY, VTS_SECRET, REAL_KEY, REAL_SECRET)
#: FakeClock's default start (09:00 KST): when the tokens from ``own_token`` were issued.
NOW = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)


def own_token(mode: Mode = Mode.VTS, value: str | None = None) -> AccessToken:
    """A 24-hour Bearer token issued at NOW in the scope of ``mode``'s test app key.

    Its value is a KIS-shaped JWT naming that key, unless ``value`` says otherwise.
    """
    key = VTS_KEY if mode is Mode.VTS else REAL_KEY
    return AccessToken(
        value=value or jwt(key, NOW),
        token_type="Bearer",
        expires_at=NOW + timedelta(hours=24),
        issued_at=NOW,
        scope=BrokerScope(mode, fingerprint(key)),
    )


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    """pytest-httpserver on IPv4 loopback and a free port."""
    return (LOOPBACK, 0)


@pytest.fixture
def kis_url(httpserver: HTTPServer) -> str:
    """The pytest-httpserver base URL, as the adapter wants it (no trailing slash)."""
    return httpserver.url_for("/").rstrip("/")


@pytest.fixture
def pool() -> Iterator[urllib3.PoolManager]:
    """A plain PoolManager, as the composition root would inject one."""
    manager = urllib3.PoolManager()
    yield manager
    manager.clear()


class MakeAdapter(Protocol):
    def __call__(
        self,
        base_url: str | None,
        mode: Mode = ...,
        *,
        creds: AppCredentials | None = ...,
        clock: ClockPort | None = ...,
        timeout_s: float = ...,
    ) -> KISBrokerAdapter: ...


@pytest.fixture
def make_adapter(pool: urllib3.PoolManager, clock: FakeClock) -> MakeAdapter:
    """Builds the real adapter over the shared pool; the fake clock unless told otherwise."""

    def build(
        base_url: str | None,
        mode: Mode = Mode.VTS,
        *,
        creds: AppCredentials | None = None,
        clock: ClockPort | None = clock,
        timeout_s: float = 3.0,
    ) -> KISBrokerAdapter:
        return KISBrokerAdapter(
            mode,
            creds or credentials(mode),
            pool,
            base_url=base_url,
            clock=clock,
            timeout_s=timeout_s,
        )

    return build


def assert_no_secrets(exc: BaseException, *extra: str) -> None:
    """Neither str nor repr of ``exc`` (nor of what it was raised from) shows a key, secret or token."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    for secret in (*KNOWN_SECRETS, *extra):
        for text in texts:
            assert secret not in text, f"a secret ({len(secret)} chars) leaked into {type(exc).__name__}"


def reachable_text(root: object, *, limit: int = 20000) -> Iterator[str]:
    """Every str/bytes reachable from ``root`` through containers, attributes and slots."""
    seen: set[int] = set()
    todo: deque[object] = deque([root])
    while todo and len(seen) < limit:
        item = todo.popleft()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, str):
            yield item
        elif isinstance(item, bytes | bytearray | memoryview):
            yield bytes(item).decode("latin-1")
        elif isinstance(item, dict | MappingProxyType):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset | deque):
            todo.extend(item)
        elif not isinstance(item, int | float | type(None) | type):
            attributes = getattr(item, "__dict__", None)
            if isinstance(attributes, dict):
                todo.extend(attributes.values())
            for cls in type(item).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if isinstance(slot, str) and hasattr(item, slot):
                        todo.append(getattr(item, slot))


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    server = CaptureServer()
    yield server
    server.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def reset_server() -> Iterator[ResetMidBodyServer]:
    server = ResetMidBodyServer()
    yield server
    server.close()


@pytest.fixture
def closed_url() -> str:
    """A loopback port that was free a moment ago and has no listener: connection refused."""
    return servers.closed_url()
