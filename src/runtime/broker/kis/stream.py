"""KISRealtimeConnector: one WebSocket connection to KIS's quote server, over ``websockets``.

Stateless like the REST adapter: it opens a connection, sends the registration messages it is
given, parses frames and echoes PINGPONG. It keeps no approval key and never reconnects by
itself: the runtime's session decides that (KIS_API.md §7.1: one session per app key).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from urllib.parse import urlsplit

import websockets.exceptions
from websockets.sync.client import ClientConnection, connect

from runtime.broker.base import ApprovalKey, BrokerScope
from runtime.broker.kis.realtime_wire import parse_frame, registration_message
from runtime.broker.realtime import Heartbeat, Registration, StreamMessage
from runtime.deadline import Deadline
from runtime.errors import BrokerUnavailableError

__all__ = ["KISRealtimeConnection", "KISRealtimeConnector"]

_log = logging.getLogger(__name__)

# The official client opens one socket at {ws}/tryitout and multiplexes every TR (KIS_API.md §7.1).
_PATH = "/tryitout"
_MAX_MESSAGE_BYTES = 1 << 20
_CLOSE_TIMEOUT_S = 2.0


class _NoFrameLogs(logging.LoggerAdapter[logging.Logger]):
    """websockets logs every frame at DEBUG, subscribe messages (and so the approval key)
    included; this logger never enables DEBUG, so frames are never formatted at all."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        return


_WS_LOG = _NoFrameLogs(logging.getLogger("runtime.broker.kis.websocket"), {})


class KISRealtimeConnector:
    """Implements ``RealtimeConnectorPort`` for KIS (or the emulator on loopback)."""

    def __init__(self, scope: BrokerScope, url: str) -> None:
        self._scope = scope
        parts = urlsplit(url)
        self._url = url.rstrip("/") + ("" if parts.path not in ("", "/") else _PATH)

    @property
    def scope(self) -> BrokerScope:
        return self._scope

    @property
    def url(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"KISRealtimeConnector(scope={self._scope}, url={self._url!r})"

    def connect(self, *, deadline: Deadline) -> KISRealtimeConnection:
        left = deadline.left_or_raise("WebSocket connect")
        stack = contextlib.ExitStack()
        try:
            # KIS keeps sessions alive with its own PINGPONG; the official samples switch the
            # library's WS-level ping off (KIS_API.md §7.1), and so do we. Entered as a context
            # (websockets 17 deprecates bare connections); the connection object exits it.
            ws = stack.enter_context(
                connect(
                    self._url,
                    open_timeout=left,
                    close_timeout=_CLOSE_TIMEOUT_S,
                    ping_interval=None,
                    max_size=_MAX_MESSAGE_BYTES,
                    compression=None,
                    user_agent_header="qts-runtime",
                    logger=_WS_LOG,
                )
            )
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise BrokerUnavailableError(
                f"cannot open the WebSocket to {self._url}: {type(exc).__name__}", request_sent=False
            ) from None
        return KISRealtimeConnection(ws, self._url, stack)


class KISRealtimeConnection:
    """Implements ``RealtimeConnectionPort``: send from any thread, receive from one."""

    def __init__(self, ws: ClientConnection, url: str, stack: contextlib.ExitStack | None = None) -> None:
        self._ws = ws
        self._stack = stack or contextlib.ExitStack()
        self._url = url
        self._closed = threading.Event()

    def register(self, registration: Registration, approval: ApprovalKey, *, subscribe: bool) -> None:
        self._send(registration_message(registration, approval, subscribe=subscribe))

    def receive(self, timeout_s: float) -> Sequence[StreamMessage]:
        try:
            frame = self._ws.recv(timeout=max(timeout_s, 0.0))
        except TimeoutError:
            return ()
        except websockets.exceptions.ConnectionClosed as exc:
            raise self._dropped(exc) from None
        if not isinstance(frame, str):
            return parse_frame("")  # KIS sends text only; a binary frame is a BadFrame
        messages = parse_frame(frame)
        if messages and isinstance(messages[0], Heartbeat):
            # Echo the same JSON as a text frame, as python-kis and the samples do (§7.1).
            self._send(frame)
        return messages

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._ws.close()
            self._stack.close()
        except (OSError, websockets.exceptions.WebSocketException) as exc:  # pragma: no cover - best effort
            _log.debug("closing the WebSocket failed: %s", type(exc).__name__)

    def _send(self, text: str) -> None:
        try:
            self._ws.send(text)
        except websockets.exceptions.ConnectionClosed as exc:
            raise self._dropped(exc) from None
        except OSError as exc:
            raise BrokerUnavailableError(
                f"the WebSocket to {self._url} failed: {exc.strerror or exc}"
            ) from None

    def _dropped(self, exc: websockets.exceptions.ConnectionClosed) -> BrokerUnavailableError:
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        return BrokerUnavailableError(f"the WebSocket to {self._url} closed (code {code})")
