"""A raw loopback peer that reads one request and answers with scripted bytes, paced."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

from tests.support.servers import LOOPBACK

DRIP_S = 0.3

Script = Callable[[], Iterator[bytes]]


class DripServer:
    """Reads one request, then sends the pieces ``script`` yields, pausing ``pause_s`` after each."""

    def __init__(self, script: Script, pause_s: float = DRIP_S) -> None:
        self._script = script
        self._pause_s = pause_s
        self._stop = threading.Event()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.05)
        self._threads: list[threading.Thread] = []
        self.requests = 0
        self.finished_sending: list[float] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def script_for(self, head: bytes) -> Script:
        """The script answering the request whose head is ``head`` (one script for all here)."""
        return self._script

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                head = _read_request(conn)
                self.requests += 1
                for piece in self.script_for(head)():
                    if self._stop.is_set():
                        return
                    conn.sendall(piece)
                    self._stop.wait(self._pause_s)
                self.finished_sending.append(time.monotonic())
                self._stop.wait(3)
            except OSError:
                return  # the client shut the connection: what we want


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head
