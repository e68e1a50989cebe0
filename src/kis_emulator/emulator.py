"""``KISEmulator``: one emulated KIS host (one mode) on a local port, with its admin API."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

from .accounts import EmulatorAccount, Mode
from .app import EmulatorApp
from .clock import EmulatorClock
from .config import EmulatorConfig
from .server import EmulatorHTTPServer
from .ws_server import RealtimeServer


class EmulatorNotRunningError(RuntimeError):
    """``base_url`` was read before ``start`` or after ``stop``."""


class KISEmulator:
    """An offline KIS Open API host for one mode (``"VTS"`` or ``"REAL"``).

    It accepts only app keys registered for its own mode; keys of the other mode get EGW02004,
    like the real pair of hosts. Nothing runs until ``start``; use it as a context manager::

        with KISEmulator("VTS") as emulator:
            base_url = emulator.base_url

    Args:
        mode: the host's mode, case-insensitive.
        accounts: registered app keys of both modes; default: both demo accounts.
        clock: anything with ``now() -> aware datetime``; default ``ShiftableClock``.
            ``advance`` works only if the clock has ``advance(seconds)``.
        config: behaviour knobs; default ``EmulatorConfig()``.
    """

    def __init__(
        self,
        mode: Literal["VTS", "REAL"] | str,
        accounts: Sequence[EmulatorAccount] | None = None,
        clock: EmulatorClock | None = None,
        config: EmulatorConfig | None = None,
    ) -> None:
        self._app = EmulatorApp(mode, accounts, clock, config)
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        self._ws = RealtimeServer(self._app.realtime, lambda: self._app.config)
        self._ws_url: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = any free port) in a daemon thread; return the base URL.

        The WebSocket quote server starts too, on its own free port of ``host`` (``ws_url``).

        Raises:
            RuntimeError: already started.
            OSError: the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("emulator already started")
        server = EmulatorHTTPServer((host, port), self._app)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"kis-emulator-{self.mode}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        bound_port = server.server_address[1]
        self._base_url = f"http://{host}:{bound_port}"
        try:
            self._ws_url = self._ws.start(host, 0)
        except OSError:
            self.stop()
            raise
        return self._base_url

    def stop(self) -> None:
        """Stop serving and close every connection; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = self._base_url = self._ws_url = None
        if server is None:
            return
        self._ws.stop()
        server.shutdown_now()
        server.drop_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running emulator.

        Raises:
            EmulatorNotRunningError: not started.
        """
        if self._base_url is None:
            raise EmulatorNotRunningError("the emulator is not running; call start() first")
        return self._base_url

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT`` of the running emulator's WebSocket quote server.

        Raises:
            EmulatorNotRunningError: not started.
        """
        if self._ws_url is None:
            raise EmulatorNotRunningError("the emulator is not running; call start() first")
        return self._ws_url

    @property
    def running(self) -> bool:
        """Whether the server is running."""
        return self._server is not None

    @property
    def mode(self) -> Mode:
        """``"VTS"`` or ``"REAL"``."""
        return self._app.mode

    @property
    def clock(self) -> EmulatorClock:
        """The clock every time-based rule reads."""
        return self._app.clock

    @property
    def config(self) -> EmulatorConfig:
        """The current configuration."""
        return self._app.config

    @property
    def app(self) -> EmulatorApp:
        """The socket-free core, for in-process use without HTTP."""
        return self._app

    # ------------------------------------------------------------------ admin API
    def now(self) -> datetime:
        """The emulator clock's current time (aware UTC)."""
        return self._app.now()

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward ``seconds`` and return the new time.

        Raises:
            ClockNotAdvanceableError: (a ``TypeError``) the clock has no ``advance``.
        """
        return self._app.advance(seconds)

    def counters(self) -> dict[str, Any]:
        """``requests_by_endpoint``, ``errors_by_code``, ``tokens_issued``, ``token_requests``,
        ``orders_attempted``, ``calls_ok`` and ``faults_applied``."""
        return self._app.counters()

    def orders(self) -> list[dict[str, str]]:
        """Every order attempt (path, method, tr_id, time)."""
        return self._app.orders()

    def inject_fault(self, kind: str, count: int = 1, path: str | None = None, **params: Any) -> None:
        """Make the next ``count`` matching requests misbehave; see ``faults.FAULT_KINDS``."""
        self._app.inject_fault(kind, count, path, **params)

    def pending_faults(self) -> list[dict[str, Any]]:
        """Faults not yet used up."""
        return self._app.pending_faults()

    def void_tokens(self) -> int:
        """Invalidate every valid token (nightly maintenance); return how many."""
        return self._app.void_tokens()

    def stream_counters(self) -> dict[str, Any]:
        """``approval_requests``, ``approval_keys_issued``, ``ws_connections``, ``ws_subscribes``,
        ``ws_frames_sent``, ``ws_records_sent``, ``ws_drops``, ``ws_sessions_refused``,
        ``ws_pingpong_sent``/``_echoed``, ``ws_errors_by_code`` (OPSP codes), ``ws_open_sessions``."""
        return self._app.stream_counters()

    def void_approval_keys(self) -> int:
        """Forget every WebSocket approval key (subscribes then get OPSP0011); return how many."""
        return self._app.realtime.void_approval_keys()

    def drop_streams(self) -> int:
        """Cut every WebSocket connection without a close frame (clients see 1006)."""
        return self._app.realtime.drop_all()

    def inject_stream_fault(self, kind: str, *, after_frames: int = 0, seconds: float = 0.0) -> None:
        """Queue a stream fault: ``drop`` the connection, a ``bad_frame`` (one field short), or
        ``silence`` (no frame and no PINGPONG for ``seconds``) after ``after_frames`` data frames."""
        self._app.realtime.inject(kind, after_frames=after_frames, seconds=seconds)

    def reset(self) -> None:
        """Clear tokens, counters, orders, faults and rate windows."""
        self._app.reset()

    def set_config(self, **changes: Any) -> EmulatorConfig:
        """Change config fields (e.g. ``token_error_status=200``, ``max_rps=None``)."""
        return self._app.set_config(**changes)


def run_forever(
    host: str = "127.0.0.1",
    port: int = 0,
    mode: str = "VTS",
    on_start: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve one emulator until ``stop`` is set (or KeyboardInterrupt); ``on_start`` gets the base URL."""
    emulator = KISEmulator(mode)
    url = emulator.start(host, port)
    try:
        if on_start is not None:
            on_start(url)
        (stop if stop is not None else threading.Event()).wait()
    finally:
        emulator.stop()
