"""RealtimeSession: the one WebSocket session of an app key, shared by every subscriber.

KIS allows one session per app key (KIS_API.md §7.1), so the session takes the store's stream
lease before it connects and holds it while it lives: a second process gets
StreamSessionHeldError naming the holder, never a kicked session. Inside the holder one reader
thread owns the connection: it (re)connects with jittered backoff behind a breaker, re-sends
every registration, echoes PINGPONG (in the adapter), judges liveness by silence, reissues a
rejected approval key once, and hands each event to the subscribers registered for it, who
read with a blocking iterator or ``async for``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import random
import socket
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Self

from runtime.auth.approval_cache import ApprovalKeyCache
from runtime.auth.ports import ClockPort, LeaseHolder, StreamLease, TokenStorePort
from runtime.auth.reconnect import Breaker, backoff_delay
from runtime.broker.base import ApprovalKey, BrokerScope
from runtime.broker.realtime import (
    MAX_REGISTRATIONS,
    Ack,
    AckKind,
    BadFrame,
    Heartbeat,
    RealtimeConnectionPort,
    RealtimeConnectorPort,
    Registration,
    StreamEvent,
)
from runtime.deadline import Deadline
from runtime.errors import (
    ApprovalKeyRejectedError,
    BrokerUnavailableError,
    InvalidRequestError,
    QTSError,
    StreamBreakerOpenError,
    StreamSessionHeldError,
    SubscriptionLimitError,
)

__all__ = ["RealtimeSession", "StreamStats", "Subscription"]

_log = logging.getLogger(__name__)

_POLL_S = 0.25  # how often the reader looks at registration changes and the stop flag
_QUEUE_EVENTS = 100_000
_IN_USE_TRIES = 3  # OPSP8996 right after our own reconnect may be our old socket's ghost


class _End:
    """Queued when the subscription ends; ``error`` is raised to the reader if set."""

    def __init__(self, error: QTSError | None) -> None:
        self.error = error


class StreamStats:
    """Counters of one session (the benchmark and ``qts stream -v`` read them)."""

    def __init__(self) -> None:
        self.connects = 0
        self.drops = 0
        self.events = 0
        self.bad_frames = 0
        self.heartbeats = 0
        self.approval_reissues = 0
        self.silences = 0
        self.overflowed = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class Subscription:
    """The events of some registrations; iterate it (blocking) or ``async for`` over it."""

    def __init__(self, session: RealtimeSession, registrations: tuple[Registration, ...]) -> None:
        self._session = session
        self.registrations = registrations
        self._queue: queue.Queue[StreamEvent | _End] = queue.Queue(_QUEUE_EVENTS)
        self._ended: _End | None = None

    def get(self, timeout_s: float | None = None) -> StreamEvent | None:
        """The next event, or None after ``timeout_s``. Raises StopIteration once closed and
        the session's fatal QTSError (breaker open, session held, key rejected...) if it died."""
        if self._ended is not None:
            return self._finish(self._ended)
        try:
            item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if isinstance(item, _End):
            self._ended = item
            return self._finish(item)
        return item

    def close(self) -> None:
        """Stop receiving; registrations no other subscriber needs are released at KIS."""
        self._session._remove(self)
        self._offer(_End(None))

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        while True:
            event = self.get(timeout_s=_POLL_S)
            if event is not None:
                return event

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self

    async def __anext__(self) -> StreamEvent:
        loop = asyncio.get_running_loop()
        while True:
            event = await loop.run_in_executor(None, self._get_or_end, _POLL_S)
            if isinstance(event, _End):
                raise StopAsyncIteration
            if event is not None:
                return event

    def _get_or_end(self, timeout_s: float) -> StreamEvent | _End | None:
        # asyncio futures refuse StopIteration, so the end crosses the executor as a value.
        try:
            return self.get(timeout_s)
        except StopIteration:
            return _End(None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _offer(self, item: StreamEvent | _End) -> bool:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            if isinstance(item, _End):  # the end must arrive: make room for it
                self._ended = item
            return False
        return True

    @staticmethod
    def _finish(end: _End) -> StreamEvent | None:
        if end.error is not None:
            raise end.error
        raise StopIteration


class RealtimeSession:
    """One scope's WebSocket session; see the module docstring. Start it by subscribing."""

    def __init__(
        self,
        connector: RealtimeConnectorPort,
        approvals: ApprovalKeyCache,
        store: TokenStorePort,
        clock: ClockPort,
        *,
        silence_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        breaker: Breaker | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if connector.scope != approvals.scope:
            raise ValueError("the connector and the approval cache serve different scopes")
        self._connector = connector
        self._approvals = approvals
        self._store = store
        self._clock = clock
        self._silence_s = silence_s
        self._connect_timeout_s = connect_timeout_s
        self._breaker = breaker or Breaker()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._subscribers: list[Subscription] = []
        self._wanted: collections.Counter[Registration] = collections.Counter()
        self._routes: dict[tuple[str, str], tuple[Subscription, ...]] = {}
        self._thread: threading.Thread | None = None
        self._lease: StreamLease | None = None
        self._fatal: QTSError | None = None
        self.stats = StreamStats()

    @property
    def scope(self) -> BrokerScope:
        """The (mode, key fingerprint) of the app key whose one session this is."""
        return self._connector.scope

    @property
    def approvals(self) -> ApprovalKeyCache:
        """The approval-key cache the session draws its keys from."""
        return self._approvals

    @property
    def registrations(self) -> list[Registration]:
        """What the subscribers want now, sorted."""
        with self._lock:
            return sorted(self._wanted)

    def subscribe(self, registrations: Iterable[Registration]) -> Subscription:
        """A new subscriber for ``registrations``; the first one takes the lease and connects.

        Raises SubscriptionLimitError (more than 41 registrations in all, or an encrypted TR)
        before anything is sent; StreamSessionHeldError when another process holds the session;
        TokenStoreError when the store cannot be reached; the session's fatal error if it died.
        """
        wanted = tuple(dict.fromkeys(registrations))  # Registration itself refuses encrypted TRs
        with self._lock:
            if self._fatal is not None:
                raise self._fatal
            if self._stop.is_set():
                raise InvalidRequestError("this stream session is closed; build a new one")
            total = set(self._wanted) | set(wanted)
            if len(total) > MAX_REGISTRATIONS:
                raise SubscriptionLimitError(
                    f"{len(total)} registrations asked for; KIS allows {MAX_REGISTRATIONS} per app key "
                    "(one per TR and code); nothing was sent"
                )
            if self._thread is None:
                self._lease = self._store.acquire_stream_lease(self.scope, self._holder())
                self._thread = threading.Thread(target=self._run, name="qts-stream", daemon=True)
                start = True
            else:
                start = False
            subscription = Subscription(self, wanted)
            self._subscribers.append(subscription)
            self._wanted.update(wanted)
            self._reroute()
        if start and self._thread is not None:
            self._thread.start()
        return subscription

    def close(self) -> None:
        """Close the connection, release the lease and end every subscription; safe twice."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._end_all(None)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- subscribers -------------------------------------------------------------------------

    def _holder(self) -> LeaseHolder:
        return LeaseHolder(host=socket.gethostname() or "localhost", pid=os.getpid(), since=self._clock.now())

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)
                self._wanted.subtract(subscription.registrations)
                self._wanted = +self._wanted  # drop zero counts
                self._reroute()

    def _reroute(self) -> None:
        routes: dict[tuple[str, str], list[Subscription]] = {}
        for sub in self._subscribers:
            for reg in sub.registrations:
                routes.setdefault((reg.tr_id, reg.code), []).append(sub)
        self._routes = {key: tuple(subs) for key, subs in routes.items()}  # swapped whole: read lock-free

    def _end_all(self, error: QTSError | None) -> None:
        with self._lock:
            if error is not None and self._fatal is None:
                self._fatal = error
            subscribers, self._subscribers = self._subscribers, []
            self._wanted.clear()
            self._routes = {}
        for sub in subscribers:
            sub._offer(_End(error))

    def _deliver(self, event: StreamEvent) -> None:
        self.stats.events += 1
        for sub in self._routes.get((event.tr_id, event.code), ()):
            if not sub._offer(event):
                self.stats.overflowed += 1

    # --- the reader thread --------------------------------------------------------------------

    def _run(self) -> None:
        error: QTSError | None = None
        try:
            self._connect_loop()
        except QTSError as exc:
            error = exc
        except Exception as exc:  # never let the thread die silently: subscribers must learn of it
            _log.exception("the stream reader failed")
            error = BrokerUnavailableError(f"the stream reader failed ({type(exc).__name__})")
        finally:
            lease, self._lease = self._lease, None
            if lease is not None:
                lease.release()
        if error is not None:
            _log.error("stream of %s stopped: %s", self.scope, error)
        self._end_all(error)

    def _connect_loop(self) -> None:
        reissued = False  # an approval key is reissued once per rejection streak, never in a loop
        in_use = 0
        while not self._stop.is_set():
            now = self._clock.monotonic()
            if self._breaker.is_open(now):
                raise StreamBreakerOpenError(
                    f"the WebSocket failed {self._breaker.max_failures} times within "
                    f"{self._breaker.window_s:g} s; stopped reconnecting (KIS may block keys that loop)"
                )
            outcome, lived = self._one_connection()
            ended = self._clock.monotonic()
            if outcome == "stopped":
                return
            if outcome == "approval_rejected":
                if reissued:
                    raise ApprovalKeyRejectedError(
                        "KIS rejected a freshly issued approval key too; check the key's WebSocket access",
                        code="OPSP0011",
                    )
                reissued = True
                self.stats.approval_reissues += 1
                continue  # at once: the key, not the network, was the problem
            if outcome == "subscribed":
                reissued, in_use = False, 0
            if outcome == "in_use":
                in_use += 1
                if in_use >= _IN_USE_TRIES:
                    raise StreamSessionHeldError(
                        "stream session held by another process or host that does not share this store "
                        "(KIS answered OPSP8996 ALREADY IN USE appkey); stop it first",
                        code="OPSP8996",
                    )
            self._breaker = (
                self._breaker.record_connected(lived, ended)
                if lived is not None
                else self._breaker.record_failure(ended)
            )
            delay = backoff_delay(self._breaker.attempt(ended) - 1, self._rng.random())
            _log.info("stream of %s: %s; reconnecting in %.2f s", self.scope, outcome, delay)
            self._stop.wait(delay)

    def _one_connection(self) -> tuple[str, float | None]:
        """Connect, serve until the connection ends; the outcome and when it connected (if it did)."""
        try:
            # An Approval that cannot reach KIS is a failed connect like any other (backoff,
            # breaker); a refused key pair is not, and ends the stream with its typed error.
            approval = self._approvals.get()
            connection = self._connector.connect(
                deadline=Deadline.after(self._clock, self._connect_timeout_s)
            )
        except BrokerUnavailableError as exc:
            _log.warning("stream of %s: %s", self.scope, exc)
            return "connect_failed", None
        connected_at = self._clock.monotonic()
        self.stats.connects += 1
        try:
            outcome = self._serve(connection, approval)
        finally:
            connection.close()  # closed before any reconnect: KIS allows one session per key
        if outcome == "approval_rejected":
            self._approvals.invalidate(approval)
        return outcome, connected_at

    def _serve(self, connection: RealtimeConnectionPort, approval: ApprovalKey) -> str:
        registered: set[Registration] = set()
        last_heard = self._clock.monotonic()
        outcome = "dropped"
        try:
            while not self._stop.is_set():
                if self._lease is not None and self._lease.lost:
                    raise StreamSessionHeldError(
                        "stream session held by someone else now: the lease was lost (store unreachable)"
                    )
                self._sync(connection, approval, registered)
                messages = connection.receive(_POLL_S)
                now = self._clock.monotonic()
                if not messages:
                    if now - last_heard > self._silence_s:
                        self.stats.silences += 1
                        return "silence"
                    continue
                last_heard = now
                verdict = self._handle(messages)
                if verdict == "subscribed":
                    outcome = "subscribed"
                elif verdict is not None:
                    return verdict
            return "stopped"
        except BrokerUnavailableError as exc:
            self.stats.drops += 1
            _log.warning("stream of %s dropped: %s", self.scope, exc)
            return outcome if outcome == "subscribed" else "dropped"

    def _sync(
        self, connection: RealtimeConnectionPort, approval: ApprovalKey, registered: set[Registration]
    ) -> None:
        with self._lock:
            wanted = set(self._wanted)
        for reg in sorted(wanted - registered):
            connection.register(reg, approval, subscribe=True)
            registered.add(reg)
        for reg in sorted(registered - wanted):
            connection.register(reg, approval, subscribe=False)
            registered.discard(reg)

    def _handle(self, messages: Iterable[object]) -> str | None:
        verdict: str | None = None
        for message in messages:
            if isinstance(message, Heartbeat):
                self.stats.heartbeats += 1
            elif isinstance(message, BadFrame):
                self.stats.bad_frames += 1
                _log.warning(
                    "stream of %s: bad frame skipped (StreamFrameError: %s)", self.scope, message.reason
                )
            elif isinstance(message, Ack):
                verdict = self._on_ack(message) or verdict
                if verdict not in (None, "subscribed"):
                    return verdict
            else:
                self._deliver(message)  # type: ignore[arg-type]
        return verdict

    def _on_ack(self, ack: Ack) -> str | None:
        kind = ack.kind
        if kind == AckKind.OK:
            _log.debug("stream of %s: %s %s %s", self.scope, ack.msg_cd, ack.tr_id, ack.code)
            return "subscribed" if ack.msg_cd in ("OPSP0000", "OPSP0002") else None
        if kind == AckKind.APPROVAL_REJECTED:
            _log.warning("stream of %s: KIS rejected the approval key (OPSP0011)", self.scope)
            return "approval_rejected"
        if kind == AckKind.SESSION_IN_USE:
            _log.warning("stream of %s: KIS answered OPSP8996 ALREADY IN USE appkey", self.scope)
            return "in_use"
        _log.error("stream of %s: %s %s for %s %s", self.scope, ack.msg_cd, ack.msg1, ack.tr_id, ack.code)
        return None
