"""One HTTP exchange with KIS over an injected urllib3 PoolManager, with typed failures.

This module is where urllib3 exceptions stop: everything leaves as a QTSError whose text is
ours (never urllib3's, which may quote a broken status, header or chunk-size line), raised
outside any ``except`` block so that no dependency's exception rides along as ``__context__``.

**The deadline is per exchange, not per read.** urllib3's read timeout bounds each socket
read; a server sending one byte every 0.3 s -- in the status line, the headers, the body,
endless ``100 Continue`` or endless trailers -- never trips it. So every exchange runs under a
guard: the sockets it uses are registered with one watchdog thread, which shuts them down
(``shutdown(SHUT_RDWR)``, which wakes any blocked read) when the deadline passes. An answer
completed after the deadline is refused as well: nothing that arrives late is used.

Bodies are read with a cap, and headers have a total cap, so a hostile or broken gateway
cannot make us buffer without limit.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import attrs
import urllib3
from urllib3._collections import RecentlyUsedContainer
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    EmptyPoolError,
    HTTPError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from runtime.broker.kis.routes import pool_and_target
from runtime.deadline import Deadline
from runtime.errors import (
    BrokerUnavailableError,
    MalformedResponseError,
    QTSError,
    TLSVerificationError,
)
from runtime.forksafe import renew_in_child

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_LINE_BYTES",
    "HttpReply",
    "exchange",
    "fork_safe",
]

#: KIS answers are a few KiB; a balance page is well under 100 KiB.
MAX_BODY_BYTES = 1024 * 1024
#: KIS sends about a dozen short headers; 32 KiB in all, 8 KiB for one and 64 of them is generous.
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADER_LINE_BYTES = 8 * 1024
MAX_HEADERS = 64
_CHUNK = 64 * 1024
_CONNECT_TIMEOUT_S = 5.0
# One attempt, no redirects: retries are decided by the adapter, which knows the deadline
# and which calls are safe to repeat (tokenP is rate limited, POSTs may have effects).
_NO_RETRY = urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0, raise_on_redirect=True)


@attrs.frozen
class HttpReply:
    """Status, lower-cased headers and the raw body of one answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def fork_safe(http: urllib3.PoolManager) -> urllib3.PoolManager:
    """Make ``http`` start with no connections in every child forked from now on; returns it."""
    renew_in_child(http, _fresh_pools)
    return http


def _fresh_pools(http: urllib3.PoolManager) -> None:
    # The child must never read from a keep-alive socket the parent also reads from: that hands
    # one process's answer to the other. The inherited pools are dropped, not closed by us; when
    # they are collected urllib3 closes the child's copies of the descriptors, which leaves the
    # parent's connections open (close(2) on a shared descriptor sends no FIN, no TLS alert).
    # A new container also means a fresh lock, in case another parent thread held the old one.
    http.pools = RecentlyUsedContainer(http.pools._maxsize)


def exchange(
    http: urllib3.PoolManager,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    deadline: Deadline,
    body: bytes | None = None,
    query: Mapping[str, Any] | None = None,
) -> HttpReply:
    """Send one request and read the whole answer, all of it before ``deadline`` (wall time).

    Raises BrokerUnavailableError (``request_sent`` False when it never left this host; also
    when the deadline passed, whatever the server was doing), TLSVerificationError,
    MalformedResponseError (body over MAX_BODY_BYTES, headers over MAX_HEADER_BYTES).
    """
    left = deadline.remaining()
    if left <= 0:
        raise BrokerUnavailableError(
            f"the {deadline.total_s:g} s deadline passed before the request went out", request_sent=False
        )
    _guard_pools(http)
    error: QTSError | None = None
    reply: HttpReply | None = None
    # Real time on purpose: sockets wait in real time, whatever clock the caller injected.
    guard = _Guard(time.monotonic() + left)
    _WATCHDOG.add(guard)
    previous = getattr(_current, "guard", None)
    _current.guard = guard
    try:
        reply = _send_and_read(http, method, url, headers, left, body, query)
    except QTSError as exc:
        error = exc
    except MaxRetryError as exc:
        error = _unavailable(exc.reason or exc)
    except (HTTPError, OSError, ValueError) as exc:  # ValueError: a socket shut under http.client
        error = _unavailable(exc)
    finally:
        _current.guard = previous
        guard.finish()
    # Outside every except block: the error carries no urllib3 exception as its context.
    if guard.fired or deadline.expired:
        raise BrokerUnavailableError(
            f"no complete answer from KIS within the {deadline.total_s:g} s deadline",
            request_sent=guard.sent,
        )
    if error is not None:
        raise error
    assert reply is not None  # noqa: S101 - either an error or a reply, by construction
    return reply


def _send_and_read(
    http: urllib3.PoolManager,
    method: str,
    url: str,
    headers: Mapping[str, str],
    left: float,
    body: bytes | None,
    query: Mapping[str, Any] | None,
) -> HttpReply:
    response = _send(http, method, url, headers, left, body, query)
    broke: str | None = None
    data = b""
    received: dict[str, str] = {}
    try:
        received = _checked_headers(response.headers)
        data = _read_capped(response, received)
    except (HTTPError, OSError, ValueError) as exc:
        broke = type(exc).__name__
    finally:
        if broke is not None or sys.exc_info()[0] is not None:
            response.close()  # never hand a half-read or shut connection back to the pool
        response.release_conn()
    if broke is not None:  # raised here, not in the except block: no urllib3 text as context
        raise BrokerUnavailableError(f"the connection broke while reading KIS's answer ({broke})")
    return HttpReply(response.status, received, data)


def _send(
    http: urllib3.PoolManager,
    method: str,
    url: str,
    headers: Mapping[str, str],
    left: float,
    body: bytes | None,
    query: Mapping[str, Any] | None,
) -> urllib3.BaseHTTPResponse:
    timeout = urllib3.Timeout(connect=min(_CONNECT_TIMEOUT_S, left), read=left)
    route = pool_and_target(http, url)
    if route is None:
        fields = dict(query) if query else None
        return http.request(
            method, url, headers=headers, body=body, fields=fields, timeout=timeout,
            retries=_NO_RETRY, redirect=False, preload_content=False,
        )  # fmt: skip
    pool, target = route
    if query:
        target = f"{target}{'&' if '?' in target else '?'}{urlencode(query)}"  # as urllib3 encodes fields
    # What PoolManager.urlopen does once it has found the pool, without finding it again.
    return pool.urlopen(  # type: ignore[no-any-return]
        method, target, body=body, headers=headers, timeout=timeout, retries=_NO_RETRY,
        redirect=False, assert_same_host=False, preload_content=False, release_conn=False,
    )  # fmt: skip


def _checked_headers(received: Mapping[str, str]) -> dict[str, str]:
    """The answer's headers as a plain dict (lower-case names, repeats joined by ", "), once
    they are known to be within the caps; MalformedResponseError otherwise.

    A plain dict because every later lookup (content-encoding, tr_id, tr_cont, gt_uid) on
    urllib3's case-insensitive HTTPHeaderDict goes through ``Mapping.get``, a few times slower."""
    count = 0
    size = 0
    longest = 0
    plain: dict[str, str] = {}
    store = getattr(received, "_container", None)
    # HTTPHeaderDict's own store when it has urllib3 2's layout ({lower: [name, *values]}):
    # its items() does a case-insensitive lookup per header, a third of the check's time.
    entries = store.values() if isinstance(store, dict) else _header_entries(received)
    for name, *values in entries:
        for value in values:
            count += 1
            line = len(name) + len(value) + 4
            size += line
            if line > longest:
                longest = line
        plain[name.lower()] = ", ".join(values)
    if count > MAX_HEADERS or size > MAX_HEADER_BYTES or longest > MAX_HEADER_LINE_BYTES:
        raise MalformedResponseError(
            f"KIS's answer has {count} headers of {size} bytes in all, the longest {longest} (at most "
            f"{MAX_HEADERS}, {MAX_HEADER_BYTES} and {MAX_HEADER_LINE_BYTES} bytes are accepted); refused"
        )
    return plain


def _header_entries(headers: Mapping[str, str]) -> list[list[str]]:
    """[name, *values] for each header name, from any mapping (HTTPHeaderDict keeps repeats)."""
    getlist = getattr(headers, "getlist", None)
    return [[name, *(getlist(name) if getlist is not None else [headers[name]])] for name in headers]


def _read_capped(response: urllib3.BaseHTTPResponse, headers: Mapping[str, str]) -> bytes:
    length = response.length_remaining if isinstance(response, urllib3.HTTPResponse) else None
    identity = headers.get("content-encoding", "identity") == "identity"
    if length is not None and length <= MAX_BODY_BYTES and identity:
        # The usual KIS answer: an unencoded body of known size under the cap. One read takes
        # exactly that many bytes; streaming in chunks costs a second read and a buffer per call.
        return response.read()
    chunks: list[bytes] = []
    size = 0
    for chunk in response.stream(_CHUNK, decode_content=True):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise MalformedResponseError(f"KIS's answer is larger than {MAX_BODY_BYTES} bytes; refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _unavailable(reason: BaseException) -> BrokerUnavailableError | TLSVerificationError:
    """Our own words for a urllib3/socket failure: type names only, never its text."""
    if isinstance(reason, SSLError | ssl.SSLError):
        return TLSVerificationError(
            "TLS verification of the KIS host failed; if a corporate proxy re-signs traffic, "
            "point KIS_CA_BUNDLE at its CA file"
        )
    if isinstance(reason, ClosedPoolError | EmptyPoolError):
        # The pool was closed under the call (the runtime closed, or evicted by the manager):
        # nothing was sent, so the adapter may send it again on a fresh pool.
        return BrokerUnavailableError(
            "the connection pool was closed before the request went out", request_sent=False
        )
    if isinstance(reason, NameResolutionError):
        return BrokerUnavailableError("cannot resolve the KIS host name (DNS)", request_sent=False)
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
    if isinstance(reason, NewConnectionError):
        return BrokerUnavailableError(
            "could not connect to KIS (connection refused or unreachable)", request_sent=False
        )
    if isinstance(reason, ConnectTimeoutError):
        return BrokerUnavailableError("timed out connecting to KIS", request_sent=False)
    if isinstance(reason, ReadTimeoutError):
        return BrokerUnavailableError("KIS did not answer in time (read timeout)")
    if isinstance(reason, ProtocolError):
        return BrokerUnavailableError("the connection to KIS broke (reset, closed early or garbled)")
    return BrokerUnavailableError(f"network error talking to KIS: {type(reason).__name__}")


# --- the guard: one deadline for every socket an exchange touches ----------------------------


class _Guard:
    """The sockets of one exchange, shut down together when its deadline passes."""

    __slots__ = ("_fds", "_watches", "at", "done", "fired", "sent")

    # One lock for every guard (held for a few list operations at a time): a lock per guard
    # was an allocation on every call.
    _lock = threading.Lock()

    def __init__(self, at: float) -> None:
        self.at = at
        self.done = False
        self.fired = False
        self.sent = False  # a socket was connected: the request may have left this host
        self._fds: list[int] = []  # duplicates this guard made and closes
        self._watches: list[_Watch] = []  # duplicates kept by reused connections

    def watch(self, sock: socket.socket) -> None:
        """A new connection's socket, as soon as TCP connects."""
        # A duplicate descriptor: shutdown() acts on the socket, whatever object wraps it
        # later (the TLS wrapper detaches the plain socket object it was given).
        try:
            fd = os.dup(sock.fileno())
        except (OSError, ValueError):
            return
        with self._lock:
            self.sent = True
            if not self.done and not self.fired:
                self._fds.append(fd)
                return
            late = self.fired
        if late:
            _shutdown(fd)
        os.close(fd)

    def watch_reused(self, watch: _Watch) -> None:
        """A kept-alive connection's socket, when a request starts on it."""
        with self._lock:
            self.sent = True
            if not self.done and not self.fired:
                self._watches.append(watch)
                return
            late = self.fired
        if late:
            watch.shutdown()

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            for fd in self._fds:
                _shutdown(fd)
            for watch in self._watches:
                watch.shutdown()

    def finish(self) -> None:
        with self._lock:
            self.done = True
            fds, self._fds = self._fds, []
            self._watches = []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


class _Watch:
    """A duplicate descriptor of a kept-alive connection's socket, made once per socket.

    A reused connection would otherwise cost a dup() and a close() per call. The duplicate
    lives while the connection keeps that socket: closed with it (``release``), or when the
    last reference goes (a pool dropped without closing, a forked child's copy). Every change
    of ``fd`` and every shutdown through it happen under one lock, so a deadline never shuts
    a descriptor number that has been closed and handed to another socket meanwhile."""

    __slots__ = ("fd", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = os.dup(sock.fileno())

    def shutdown(self) -> None:
        with _WATCH_LOCK:
            if self.fd >= 0:
                _shutdown(self.fd)

    def release(self) -> None:
        with _WATCH_LOCK:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)


_WATCH_LOCK = threading.Lock()


def _shutdown(fd: int) -> None:
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()


class _Watchdog:
    """One daemon thread that fires guards at their deadlines (a heap, not a thread per call)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Guard]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._wake_at = math.inf  # when the thread will look at the heap again by itself

    def add(self, guard: _Guard) -> None:
        with self._cond:
            while self._heap and self._heap[0][2].done:
                heapq.heappop(self._heap)  # finished calls: most of them, and in order
            heapq.heappush(self._heap, (guard.at, next(self._seq), guard))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="qts-deadline", daemon=True)
                self._thread.start()
            # Wake the thread only when this deadline comes before the one it sleeps towards:
            # with one deadline for every call, that is about once per deadline, not once per
            # call (a wake-up per call cost a thread switch on every request).
            if guard.at < self._wake_at:
                self._wake_at = guard.at
                self._cond.notify()

    def _next_due(self) -> _Guard:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake_at = math.inf
                    self._cond.wait()
                    continue
                due = self._heap[0][0]
                delay = due - time.monotonic()
                if delay <= 0:
                    return heapq.heappop(self._heap)[2]
                self._wake_at = due
                self._cond.wait(delay)

    def _run(self) -> None:
        while True:
            self._next_due().fire()

    def reset_after_fork(self) -> None:
        self._heap = []
        self._cond = threading.Condition()
        self._thread = None
        self._wake_at = math.inf


_WATCHDOG = _Watchdog()
_current = threading.local()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG.reset_after_fork)


def _arm(sock: socket.socket | None) -> None:
    guard: _Guard | None = getattr(_current, "guard", None)
    if guard is not None and sock is not None:
        guard.watch(sock)


def _arm_reused(connection: Any) -> None:
    guard: _Guard | None = getattr(_current, "guard", None)
    sock: socket.socket | None = connection.sock
    if guard is None or sock is None:
        return  # no exchange, or a new connection: _new_conn arms its socket once TCP connects
    watch: _Watch | None = connection.__dict__.get("_qts_watch")
    if watch is None or watch.sock is not sock or watch.fd < 0:
        if watch is not None:
            watch.release()
        try:
            watch = _Watch(sock)
        except (OSError, ValueError):
            return  # a socket already closed: the request fails without sending
        connection.__dict__["_qts_watch"] = watch
    guard.watch_reused(watch)


# urllib3 creates and reuses connections inside its pool; these subclasses tell the current
# exchange's guard about every socket: a new one as soon as TCP connects (before the TLS
# handshake, which a slow server could stretch too), a reused one when the request starts.
_GUARDED: dict[type[Any], type[Any]] = {}


def _guarded_class(base: type[Any]) -> type[Any]:
    cls = _GUARDED.get(base)
    if cls is not None:
        return cls

    def _new_conn(self: Any) -> socket.socket:
        sock: socket.socket = base._new_conn(self)
        _arm(sock)
        return sock

    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        _arm_reused(self)
        return base.request(self, *args, **kwargs)

    def close(self: Any) -> None:
        watch: _Watch | None = self.__dict__.pop("_qts_watch", None)
        if watch is not None:
            watch.release()  # the socket's last descriptor goes with it: the peer sees the close
        base.close(self)

    members = {"_new_conn": _new_conn, "request": request, "close": close}
    cls = type(f"Guarded{base.__name__}", (base,), members)
    _GUARDED[base] = cls
    _GUARDED[cls] = cls
    return cls


def _guard_pools(http: urllib3.PoolManager) -> None:
    """Make every pool of ``http``, present and future, open guarded connections (once per manager).

    Future pools through the manager's pool classes, so the per-call work is two dict lookups
    (looking the pool up for each call cost as much as the rest of the guard)."""
    classes = http.pool_classes_by_scheme
    for cls in classes.values():
        if _GUARDED_POOLS.get(cls) is not cls:
            break
    else:
        return  # every pool class is one of ours: nothing to do (the per-call case)
    http.pool_classes_by_scheme = {scheme: _guarded_pool_class(cls) for scheme, cls in classes.items()}
    for key in list(http.pools.keys()):
        pool: Any = http.pools.get(key)
        if pool is not None and _GUARDED.get(pool.ConnectionCls) is not pool.ConnectionCls:
            pool.ConnectionCls = _guarded_class(pool.ConnectionCls)


_GUARDED_POOLS: dict[type[Any], type[Any]] = {}


def _guarded_pool_class(base: type[Any]) -> type[Any]:
    cls = _GUARDED_POOLS.get(base)
    if cls is None:
        connection = _guarded_class(base.ConnectionCls)
        cls = type(f"Guarded{base.__name__}", (base,), {"ConnectionCls": connection})
        _GUARDED_POOLS[base] = cls
        _GUARDED_POOLS[cls] = cls
    return cls
