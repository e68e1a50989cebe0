"""The WebSocket shell around ``RealtimeHub``: a ``websockets`` server on loopback, in a thread.

One thread per connection alternates between reading client messages (registrations, PINGPONG
echoes) and writing frames at the configured pace, as KIS's quote server does on one socket.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import EmulatorConfig
from .realtime import RealtimeHub, Session

if TYPE_CHECKING:
    from websockets.sync.server import Server, ServerConnection

_IDLE_POLL_S = 0.2


class _NoFrameLogs(logging.LoggerAdapter[logging.Logger]):
    """No DEBUG frame dumps: client messages carry approval keys, which never reach a log."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        return


_WS_LOG = _NoFrameLogs(logging.getLogger("kis_emulator.websocket"), {})


class RealtimeServer:
    """Serves ``hub`` over WebSocket; ``config`` is read on every loop so admin changes apply."""

    def __init__(self, hub: RealtimeHub, config: Callable[[], EmulatorConfig]) -> None:
        self._hub = hub
        self._config = config
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int = 0) -> str:
        """Listen on ``host:port`` (0 = a free port); return ``ws://HOST:PORT``."""
        from websockets.sync.server import serve  # only when a stream is served

        server = serve(
            self._handle, host, port, ping_interval=None, compression=None, max_size=1 << 16, logger=_WS_LOG
        )
        thread = threading.Thread(target=server.serve_forever, name="kis-emulator-ws", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        bound = server.socket.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        return f"ws://{shown}:{bound[1]}"

    def stop(self) -> None:
        """Stop accepting, cut every connection; safe twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        self._hub.drop_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _handle(self, ws: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.protocol import State

        # A client that closed its socket and reconnects at once is not a second session, even
        # before this thread has seen the close (KIS_API.md §7.1: close the old one first).
        session = self._hub.open(lambda: _cut(ws), lambda: ws.state is State.OPEN)
        try:
            self._serve(ws, session)
        except (ConnectionClosed, OSError):
            pass
        finally:
            self._hub.close(session)

    def _serve(self, ws: ServerConnection, session: Session) -> None:
        now = time.monotonic()
        next_ping = now + self._config().ws_ping_interval
        next_tick = now
        while True:
            config = self._config()
            now = time.monotonic()
            due = min(next_ping, next_tick) if session.registrations else min(next_ping, now + _IDLE_POLL_S)
            try:
                text = ws.recv(timeout=max(due - now, 0.0))
            except TimeoutError:
                text = None
            if isinstance(text, str):
                reaction = self._hub.receive(session, text)
                for reply in reaction.replies:
                    ws.send(reply)
                if reaction.close:
                    _cut(ws)  # OPSP8996: the newcomer is dropped (KIS_API.md §7.1)
                    return
                continue
            now = time.monotonic()
            if now >= next_ping and now >= session.silent_until:
                if session.unanswered_pings >= config.ws_unanswered_pings:
                    _cut(ws)  # KIS closes sessions that never echo PINGPONG
                    return
                ws.send(self._hub.pingpong(session))
                next_ping = now + config.ws_ping_interval
            if session.registrations and now >= next_tick:
                frame = self._hub.next_frame(session, multi_every=config.ws_multi_record_every, now_s=now)
                if frame is not None:
                    ws.send(frame)
                next_tick = now + config.ws_tick_interval


def _cut(ws: ServerConnection) -> None:
    """Drop the TCP connection without a close frame: the client sees 1006, as on a KIS drop."""
    with contextlib.suppress(OSError):
        ws.socket.shutdown(socket.SHUT_RDWR)
    ws.close_socket()
