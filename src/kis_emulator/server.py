"""HTTP/1.1 shell around ``EmulatorApp``: keep-alive, one write per response, no request logging.

Performance notes (a urllib3 client may send thousands of calls): responses are written in a
single ``sendall`` with TCP_NODELAY, because a header write followed by a body write trips the
Nagle/delayed-ACK stall (~40 ms per request); ``server_bind`` skips the reverse-DNS lookup
``HTTPServer`` does; and the accept backlog is raised for concurrent clients.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import sys
import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from .admin import handle_admin
from .app import ADMIN_PREFIX, EmulatorApp
from .wire import JSON_CONTENT_TYPE, Reply, Request, encode_json

MAX_BODY_BYTES: Final = 4 * 1024 * 1024


class _BadBodyError(Exception):
    """The request body could not be framed; answer ``status`` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _status_line(status: int) -> str:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return f"HTTP/1.1 {status} {reason}"


class EmulatorRequestHandler(BaseHTTPRequestHandler):
    """One connection; serves requests until the client or the server closes it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: EmulatorHTTPServer

    def setup(self) -> None:
        """Register the connection so ``stop`` can close idle keep-alive sockets."""
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        """Unregister the connection."""
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        """Stay silent: per-request logging to stderr costs more than the request."""

    def do_GET(self) -> None:
        """Serve a GET."""
        self._serve()

    def do_POST(self) -> None:
        """Serve a POST."""
        self._serve()

    def do_PUT(self) -> None:
        """Serve a PUT (only order paths and 405s expect it)."""
        self._serve()

    def do_DELETE(self) -> None:
        """Serve a DELETE."""
        self._serve()

    def do_PATCH(self) -> None:
        """Serve a PATCH."""
        self._serve()

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except _BadBodyError as bad:
            self.close_connection = True
            self._send(Reply(status=bad.status, body=encode_json({"error": "bad request body"})))
            return
        request = Request.build(self.command, self.path, dict(self.headers.items()), body)
        app = self.server.app
        is_admin = request.path.startswith(ADMIN_PREFIX)
        try:
            reply = handle_admin(app, request) if is_admin else app.handle(request)
        except Exception as exc:
            # An emulator bug or a broken injected clock: answer (rather than drop the connection)
            # with a body no client can mistake for KIS.
            self.close_connection = True
            reply = Reply(status=500, body=encode_json({"emulator_error": f"{type(exc).__name__}: {exc}"}))
        if reply.delay > 0:
            time.sleep(reply.delay)  # real time, outside the state lock
        if reply.reset:
            self._reset(reply)
        else:
            self._send(reply)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise _BadBodyError(400) from None
        if length < 0:
            raise _BadBodyError(400)
        if length > MAX_BODY_BYTES:
            raise _BadBodyError(413)
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _BadBodyError(400) from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadBodyError(413)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)  # CRLF after the chunk

    def _send(self, reply: Reply) -> None:
        lines = [
            _status_line(reply.status),
            f"Date: {self._date()}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in reply.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        try:
            self.wfile.write(head + reply.body)
        except ConnectionError:
            # The client gave up first (e.g. its read timeout beat a ``slow`` fault): not our error.
            self.close_connection = True

    def _date(self) -> str:
        """RFC 9110 ``Date`` from the emulator's clock (so a moved clock shows as skew, as KIS's would)."""
        try:
            now = self.server.app.now()
        except Exception:  # a broken injected clock must not break every answer
            now = datetime.now(UTC)
        return format_datetime(now.astimezone(UTC), usegmt=True)

    def _reset(self, reply: Reply) -> None:
        """Send a response prefix, then abort the connection so the peer sees ECONNRESET."""
        head = (
            f"{_status_line(reply.status)}\r\nContent-Type: {JSON_CONTENT_TYPE}\r\n"
            f"Content-Length: {len(reply.body) + 4096}\r\n\r\n"
        ).encode("latin-1")
        with contextlib.suppress(OSError):
            self.wfile.write(head + reply.body)
        # SO_LINGER with a zero timeout turns close() into an RST instead of a FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.rfile.close()
        self.connection.close()


class EmulatorHTTPServer(ThreadingHTTPServer):
    """Threading HTTP server bound to one ``EmulatorApp``."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: EmulatorApp) -> None:
        self.app = app
        self._live: set[socket.socket] = set()
        self._live_lock = threading.Lock()
        super().__init__(address, EmulatorRequestHandler)

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse-DNS lookup of the host (slow without DNS)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        """Ignore clients that vanish mid-request; report anything else as the stdlib does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def shutdown_now(self) -> None:
        """Stop ``serve_forever`` without waiting out its poll interval.

        ``shutdown`` only sets a flag that the accept loop reads between polls; a throwaway
        connection wakes the loop at once, so stopping costs milliseconds, not half a second.
        """
        stopper = threading.Thread(target=self.shutdown, name="kis-emulator-stop", daemon=True)
        stopper.start()
        host, port = self.server_address[:2]
        address = (str(host), int(port))
        while stopper.is_alive():
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.5):
                pass
            stopper.join(0.01)

    def track(self, connection: socket.socket) -> None:
        """Remember an open connection."""
        with self._live_lock:
            self._live.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        """Forget a closed connection."""
        with self._live_lock:
            self._live.discard(connection)

    def drop_connections(self) -> None:
        """Shut down every open connection (idle keep-alive handlers then exit)."""
        with self._live_lock:
            live = list(self._live)
        for connection in live:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
