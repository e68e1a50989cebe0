"""Loopback peers shared by the broker and hostile tests: real sockets on 127.0.0.1, nothing mocked.

- ``LoopbackHTTPServer``: a stdlib HTTP/1.1 server on a background thread (optionally TLS);
  a subclass says what to answer. ``CaptureServer`` is one that records every request with
  its raw headers (werkzeug, behind pytest-httpserver, drops header names containing ``_``
  such as ``tr_id``, so header assertions are made against this one).
- Raw socket misbehaviour: ``SilentServer`` accepts and never answers, ``ResetMidBodyServer``
  sends half a body and then resets, ``BacklogFullServer`` never accepts (a true connect
  timeout), and ``closed_url()`` is a port nobody listens on.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from tests.support.kis import recorded

LOOPBACK = "127.0.0.1"

JSON_HEADERS = (("content-type", "application/json; charset=utf-8"),)


@attrs.frozen
class Reply:
    """One answer: status, body bytes and the headers before content-length and connection."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = JSON_HEADERS


# --- stdlib HTTP servers ---------------------------------------------------------------------


class LoopbackHTTPServer:
    """A stdlib HTTP/1.1 server on loopback and a free port; every answer closes the connection."""

    #: The request methods answered through ``answer``; any other gets the stdlib's 501.
    methods: frozenset[str] = frozenset({"GET", "POST"})
    #: Handler threads are daemons (not joined on close).
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._scheme = "http" if tls is None else "https"
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._server.daemon_threads = self.daemon_threads
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self._scheme}://{LOOPBACK}:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(self, request: BaseHTTPRequestHandler, body: bytes) -> Reply:
        """The reply to ``request`` (method, path and headers on it; ``body`` already read)."""
        raise NotImplementedError

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
                if self.command not in owner.methods:
                    self.send_error(501, f"Unsupported method ({self.command!r})")
                    return
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = owner.answer(self, body)
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(reply.body)
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


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


class CaptureServer(LoopbackHTTPServer):
    """Records every request and answers from a queue of replies (default: an inquire-price success)."""

    daemon_threads = False

    def __init__(self) -> None:
        self.requests: list[Captured] = []
        self._replies: deque[Reply] = deque()
        self._default = Reply(200, json.dumps(recorded("inquire_price_success")).encode())
        self._lock = threading.Lock()
        super().__init__()

    def reply(
        self, status: int, body: bytes | Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        """Queue the answer to the next request (the default is an inquire-price success)."""
        data = body if isinstance(body, bytes) else json.dumps(dict(body)).encode()
        extra = tuple((headers or {}).items())
        self._replies.append(Reply(status, data, JSON_HEADERS + extra))

    def answer(self, request: BaseHTTPRequestHandler, body: bytes) -> Reply:
        split = urlsplit(request.path)
        captured = Captured(
            method=request.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=tuple(request.headers.items()),
            body=body,
        )
        with self._lock:
            self.requests.append(captured)
            return self._replies.popleft() if self._replies else self._default


# --- raw socket misbehaviour --------------------------------------------------------------


class RawServer:
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


class SilentServer(RawServer):
    """Accepts connections and never says a word (a read timeout on the client's side)."""

    def serve(self, conn: socket.socket) -> None:
        pass


class ResetMidBodyServer(RawServer):
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


class BacklogFullServer:
    """A listener that never accepts and whose accept queue is already full.

    Linux drops further SYNs (``tcp_abort_on_overflow`` is 0 by default), so ``connect()``
    waits for the SYN to be retransmitted: a real connect timeout on loopback, without root.
    """

    _FILLERS = 8

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(0)
        self._fillers: list[socket.socket] = []
        for _ in range(self._FILLERS):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(self._listener.getsockname())
            self._fillers.append(filler)
        time.sleep(0.05)  # let the handshakes that can complete, complete

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._listener.close()


def closed_url() -> str:
    """A loopback port that was free a moment ago and has no listener: connection refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    return f"http://{LOOPBACK}:{port}"
