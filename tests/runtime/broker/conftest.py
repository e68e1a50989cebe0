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

from collections.abc import Iterator

import pytest
import urllib3
from pytest_httpserver import HTTPServer

from runtime.broker.base import AppCredentials, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.clock import ClockPort, FakeClock
from tests.support import servers
from tests.support.kis import MakeAdapter, credentials
from tests.support.servers import LOOPBACK, CaptureServer, ResetMidBodyServer, SilentServer


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


@pytest.fixture
def make_adapter(pool: urllib3.PoolManager, clock: FakeClock) -> MakeAdapter:
    """Builds the real adapter over the shared pool; the fake clock unless told otherwise."""

    def build(
        base_url: str | None,
        mode: Mode = Mode.VTS,
        *,
        creds: AppCredentials | None = None,
        clock: ClockPort | None = clock,
    ) -> KISBrokerAdapter:
        return KISBrokerAdapter(
            mode,
            creds or credentials(mode),
            pool,
            base_url=base_url,
            clock=clock,
        )

    return build


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
