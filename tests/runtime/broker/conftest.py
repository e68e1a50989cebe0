"""Fixtures for the KIS adapter tests: real sockets on 127.0.0.1, never a mocked urllib3.

- ``httpserver`` (pytest-httpserver) plays KIS for status/body scenarios.
- ``capture`` is a stdlib ``http.server`` that records every request with its raw headers:
  werkzeug (behind pytest-httpserver) drops request headers containing ``_`` (``tr_id``,
  ``tr_cont``), so header assertions are made here.
- ``silent_url`` accepts connections and never answers; ``reset_url`` sends half a body and
  then resets the connection; ``closed_url`` is a port nobody listens on.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest
import urllib3
from pytest_httpserver import HTTPServer

from runtime.broker.base import Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.clock import ClockPort, FakeClock
from runtime.settings import AppCredentials
from tests.support.kis import REAL_KEY, REAL_SECRET, VTS_KEY, VTS_SECRET, credentials, recorded

LOOPBACK = "127.0.0.1"
#: Every secret the tests hand to an adapter; no error text may ever carry one of them.
KNOWN_SECRETS = (VTS_KEY, VTS_SECRET, REAL_KEY, REAL_SECRET)


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


# --- a capturing stdlib server ------------------------------------------------------------


@attrs.frozen
class Captured:
    """One request exactly as it arrived, raw header names included."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or None when it was not sent."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_names(self) -> set[str]:
        return {key.lower() for key, _value in self.headers}

    def json(self) -> Any:
        return json.loads(self.body)


_JSON_HEADERS = (("content-type", "application/json; charset=utf-8"),)


@attrs.frozen
class Canned:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = _JSON_HEADERS


class CaptureServer:
    """A stdlib HTTP/1.1 server that records requests and answers from a queue of replies."""

    def __init__(self) -> None:
        self.requests: list[Captured] = []
        self._replies: deque[Canned] = deque()
        self._default = Canned(200, json.dumps(recorded("inquire_price_success")).encode())
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply(
        self, status: int, body: bytes | Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        """Queue the answer to the next request (the default is an inquire-price success)."""
        data = body if isinstance(body, bytes) else json.dumps(dict(body)).encode()
        extra = tuple((headers or {}).items())
        self._replies.append(Canned(status, data, _JSON_HEADERS + extra))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self, captured: Captured) -> Canned:
        with self._lock:
            self.requests.append(captured)
            return self._replies.popleft() if self._replies else self._default

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 5

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                canned = owner._next(
                    Captured(
                        method=self.command,
                        path=split.path,
                        query=parse_qs(split.query, keep_blank_values=True),
                        headers=tuple(self.headers.items()),
                        body=body,
                    )
                )
                self.send_response(canned.status)
                for name, value in canned.headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(canned.body)))
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(canned.body)
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    server = CaptureServer()
    yield server
    server.close()


# --- raw socket misbehaviour --------------------------------------------------------------


class _RawServer:
    """Accepts connections on loopback and hands each to ``serve`` on one background thread."""

    def __init__(self) -> None:
        self.connections = 0
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.05)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._listener.getsockname()[1]}"

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._held.append(conn)
            self.serve(conn)


class SilentServer(_RawServer):
    """Accepts and then says nothing at all."""

    def serve(self, conn: socket.socket) -> None:
        pass


class ResetMidBodyServer(_RawServer):
    """Promises 1000 body bytes, sends 10, then resets the connection (SO_LINGER 0 -> RST)."""

    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
                + b'{"access_t'
            )
            self._stop.wait(0.1)  # let the headers and the 10 bytes arrive before the reset
        except OSError:
            pass
        finally:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    return f"http://{LOOPBACK}:{port}"
