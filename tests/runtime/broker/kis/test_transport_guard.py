"""The per-exchange deadline on kept-alive connections, over a raw loopback peer.

The guard keeps one duplicate descriptor per kept-alive socket instead of one per call, and the
watchdog thread is woken only for a deadline earlier than the one it sleeps towards. These
tests pin what that must not change: a reused connection is still cut at the deadline, a short
deadline added behind a long one still fires on time, and closing a connection really closes
it (the duplicate does not keep the peer's connection open).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import urllib3

from runtime.broker.kis.transport import exchange
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from runtime.errors import BrokerUnavailableError
from tests.support.servers import RawServer

_OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"rt_cd":0}'
_SLOW_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"


class KeepAlivePeer(RawServer):
    """Keeps connections alive; answers ``/fast`` at once and drips any other answer."""

    def __init__(self, drip_s: float = 0.2) -> None:
        self._drip_s = drip_s
        self.peer_closed = threading.Event()  # a client closed its end of a connection
        super().__init__()

    @property
    def slow_url(self) -> str:
        return self.url + "/uapi/slow"

    @property
    def fast_url(self) -> str:
        return self.url + "/uapi/fast"

    def serve(self, conn: socket.socket) -> None:
        # One thread per connection: a test keeps two connections busy at once.
        threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            while not self._stop.is_set():
                head = _read_head(conn)
                if not head:
                    self.peer_closed.set()
                    return
                if b" /uapi/fast " in head.split(b"\r\n", 1)[0] + b" ":
                    conn.sendall(_OK)
                    continue
                conn.sendall(_SLOW_HEAD)
                while not self._stop.wait(self._drip_s):
                    conn.sendall(b" ")
        except OSError:
            return


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


@pytest.fixture
def peer() -> Iterator[KeepAlivePeer]:
    server = KeepAlivePeer()
    try:
        yield server
    finally:
        server.close()


def _get(http: urllib3.PoolManager, url: str, seconds: float) -> None:
    exchange(http, "GET", url, headers={}, deadline=Deadline.after(SystemClock(), seconds))


def test_a_reused_connection_that_drips_is_cut_at_the_deadline(peer: KeepAlivePeer) -> None:
    http = urllib3.PoolManager()
    _get(http, peer.fast_url, 5.0)  # answered at once; the connection goes back to the pool
    started = time.monotonic()
    _get(http, peer.fast_url, 5.0)  # reused once: the connection keeps a duplicate descriptor now
    with pytest.raises(BrokerUnavailableError, match="deadline"):
        _get(http, peer.slow_url, 1.0)  # the same connection, now dripping a byte every 0.2 s
    assert time.monotonic() - started < 1.0 + 0.5
    assert peer.connections == 1  # it really was the kept-alive connection


def test_a_short_deadline_behind_a_long_one_still_fires_on_time(peer: KeepAlivePeer) -> None:
    # The watchdog sleeps towards the earliest deadline it knows; a later, shorter one must wake it.
    long_http = urllib3.PoolManager()
    short_http = urllib3.PoolManager()
    _get(long_http, peer.fast_url, 5.0)
    _get(short_http, peer.fast_url, 5.0)
    outcome: list[BaseException] = []

    def long_call() -> None:
        try:
            _get(long_http, peer.slow_url, 30.0)
        except BrokerUnavailableError as exc:
            outcome.append(exc)

    threading.Thread(target=long_call, daemon=True).start()
    time.sleep(0.2)  # the 30 s guard is registered first
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError):
        _get(short_http, peer.slow_url, 0.8)
    assert time.monotonic() - started < 0.8 + 0.5
    long_http.clear()  # ends the long call's connection; its thread is a daemon either way


def test_closing_a_kept_alive_connection_closes_it_for_the_peer(peer: KeepAlivePeer) -> None:
    http = urllib3.PoolManager()
    _get(http, peer.fast_url, 5.0)
    _get(http, peer.fast_url, 5.0)  # reused: its duplicate descriptor is made now
    http.clear()  # the pool closes its connections: no duplicate descriptor may keep one open
    assert peer.peer_closed.wait(5.0)
    assert peer.connections == 1


def test_many_calls_on_one_connection_leave_no_descriptor_behind(peer: KeepAlivePeer) -> None:
    http = urllib3.PoolManager()
    _get(http, peer.fast_url, 5.0)
    before = _client_descriptors(peer)
    for _ in range(3):
        # Each slow call fails at its deadline and closes its connection; the next makes a new one.
        with pytest.raises(BrokerUnavailableError):
            _get(http, peer.slow_url, 0.3)
        _get(http, peer.fast_url, 5.0)
    http.clear()
    assert _client_descriptors(peer) <= before


def _client_descriptors(peer: KeepAlivePeer) -> int:
    # The peer keeps its ends of every connection open until it is closed: not counted.
    return len(os.listdir("/proc/self/fd")) - len(peer._held)
