"""The emulator's state machine: one host, one mode, everything behind one lock.

``EmulatorApp.handle`` turns a ``Request`` into a ``Reply`` without touching a socket; the HTTP
server in ``server.py`` is a thin shell around it, and the admin operations here are what both the
Python API and the ``/__emulator__/`` HTTP API call.
"""

from __future__ import annotations

import dataclasses
import hmac
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from .accounts import EmulatorAccount, Mode, default_accounts, normalize_mode
from .calls import CALL_ROUTES, HASHKEY_PATH, HASHKEY_ROUTE, CallContext, CallRoute, uapi_headers
from .clock import EmulatorClock, ShiftableClock, advance_clock, checked_now
from .codes import (
    BAD_METHOD,
    EXPIRED_TOKEN,
    INVALID_TOKEN,
    NOT_REAL_TR,
    NOT_VTS_TR,
    ORDER_REFUSED,
    RATE_LIMITED,
    REAL_HOST_VTS_KEY,
    TOKEN_ERROR_TEXT,
    UNKNOWN_PATH,
    UNKNOWN_TR,
    VTS_HOST_REAL_KEY,
)
from .config import EmulatorConfig
from .faults import FaultQueue, make_fault, render_fault
from .oauth import KeyProblem, OAuthEndpoints
from .ratelimit import SlidingWindowLimiter
from .realtime import RealtimeHub
from .tokens import TokenBook, TokenStatus
from .wire import Reply, Request, rt_error

ADMIN_PREFIX: Final = "/__emulator__/"
ORDER_MARKER: Final = "/trading/order"


class EmulatorApp:
    """Request handling and admin operations of one emulated KIS host."""

    def __init__(
        self,
        mode: str,
        accounts: Sequence[EmulatorAccount] | None = None,
        clock: EmulatorClock | None = None,
        config: EmulatorConfig | None = None,
    ) -> None:
        self.mode: Mode = normalize_mode(mode)
        self._accounts: dict[str, EmulatorAccount] = {}
        for account in accounts if accounts is not None else default_accounts():
            if account.app_key in self._accounts:
                raise ValueError(f"app key registered twice: {account.app_key[:6]}...")
            self._accounts[account.app_key] = account
        self.clock: EmulatorClock = clock if clock is not None else ShiftableClock()
        self._config = config if config is not None else EmulatorConfig()
        self._lock = threading.Lock()
        self._tokens = TokenBook()
        self._limiter = SlidingWindowLimiter()
        self._faults = FaultQueue()
        self._orders: list[dict[str, str]] = []
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._token_requests = 0
        self._calls_ok = 0
        self._faults_applied = 0
        #: The WebSocket side (approval keys, sessions, frames); it has its own lock.
        self.realtime = RealtimeHub(lambda: checked_now(self.clock))
        self._approval_requests = 0
        self._oauth = OAuthEndpoints(
            self._tokens, self._check_key, lambda: self._config, self.realtime.issue_approval
        )
        self._mode_mismatch = REAL_HOST_VTS_KEY if self.mode == "REAL" else VTS_HOST_REAL_KEY

    # ------------------------------------------------------------------ request handling
    def handle(self, request: Request) -> Reply:
        """Answer one non-admin request (admin paths are routed by ``admin.handle_admin``)."""
        with self._lock:
            now = checked_now(self.clock)
            path = request.path
            self._requests[path] += 1
            is_order = ORDER_MARKER in path
            if is_order:
                # Recorded before anything else so that every attempt is counted, even a faulted one.
                self._orders.append(
                    {
                        "path": path,
                        "method": request.method,
                        "tr_id": request.header("tr_id") or "",
                        "time": now.isoformat(),
                    }
                )
            if path == "/oauth2/tokenP":
                self._token_requests += 1
            if path == "/oauth2/Approval":
                self._approval_requests += 1
            fault = self._faults.take(path)
            if fault is not None:
                self._faults_applied += 1
            if fault is not None and fault.kind != "slow":
                extra = uapi_headers(request) if path.startswith("/uapi/") else ()
                reply = render_fault(fault, path, extra)
            else:
                reply = self._answer(request, now, is_order)
                if path.startswith("/uapi/") and reply.status == 200 and reply.error_code is None:
                    self._calls_ok += 1
                if fault is not None:
                    reply = dataclasses.replace(reply, delay=float(fault.params.get("seconds", 1.0)))
            if reply.error_code is not None:
                self._errors[reply.error_code] += 1
            return reply

    def _answer(self, request: Request, now: datetime, is_order: bool) -> Reply:
        path = request.path
        if is_order:
            return rt_error(500, *ORDER_REFUSED, headers=uapi_headers(request))
        oauth = {
            "/oauth2/tokenP": self._oauth.token,
            "/oauth2/revokeP": self._oauth.revoke,
            "/oauth2/Approval": self._oauth.approval,
        }.get(path)
        if oauth is not None:
            if request.method != "POST":
                return rt_error(405, *BAD_METHOD)
            return oauth(request, now)
        route = HASHKEY_ROUTE if path == HASHKEY_PATH else CALL_ROUTES.get(path)
        extra = uapi_headers(request) if path.startswith("/uapi/") else ()
        if route is None:
            return rt_error(404, *UNKNOWN_PATH, headers=extra)
        if request.method != route.method:
            return rt_error(405, *BAD_METHOD, headers=extra)
        return self._call(route, request, now)

    def _call(self, route: CallRoute, request: Request, now: datetime) -> Reply:
        """Authenticate a /uapi call in KIS order: key, per-second limit, token, tr_id."""
        headers = uapi_headers(request)
        try:
            app_key = self._check_key(request.header("appkey"), request.header("appsecret"))
        except KeyProblem as failed:
            return rt_error(500, failed.code, failed.text or TOKEN_ERROR_TEXT[failed.code], headers)
        if not self._limiter.admit(app_key, now, self._config.rps_for(self.mode)):
            return rt_error(500, *RATE_LIMITED, headers)
        if route.tr_ids is not None:
            status = self._token_status(app_key, request.header("authorization"), now)
            if status is not TokenStatus.VALID:
                code_text = EXPIRED_TOKEN if status is TokenStatus.EXPIRED else INVALID_TOKEN
                return rt_error(self._config.token_error_status, *code_text, headers)
            tr_problem = self._tr_id_problem(route.tr_ids, request.header("tr_id") or "")
            if tr_problem is not None:
                return rt_error(500, *tr_problem, headers)
        return route.handler(CallContext(request, self.mode, self._config))

    def _check_key(self, app_key: object, app_secret: object) -> str:
        """Gateway key check shared by every endpoint; return the key or raise ``KeyProblem``."""
        if app_key is None or app_key == "":
            raise KeyProblem("EGW00102")
        account = self._accounts.get(app_key) if isinstance(app_key, str) else None
        if account is None:
            raise KeyProblem("EGW00103")
        if account.mode != self.mode:
            raise KeyProblem(*self._mode_mismatch)
        if app_secret is None or app_secret == "":
            raise KeyProblem("EGW00104")
        if not isinstance(app_secret, str) or not hmac.compare_digest(
            app_secret.encode("utf-8"), account.app_secret.encode("utf-8")
        ):
            raise KeyProblem("EGW00105")
        return account.app_key

    def _token_status(self, app_key: str, authorization: str | None, now: datetime) -> TokenStatus:
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return TokenStatus.INVALID
        return self._tokens.check(app_key, token.strip(), now)

    def _tr_id_problem(self, tr_ids: dict[Mode, str], tr_id: str) -> tuple[str, str] | None:
        if tr_id == tr_ids[self.mode]:
            return None
        if self.mode == "VTS" and tr_id[:1] in ("T", "J", "C"):
            return NOT_VTS_TR
        if self.mode == "REAL" and tr_id.startswith("V"):
            return NOT_REAL_TR
        return UNKNOWN_TR

    # ------------------------------------------------------------------ admin operations
    @property
    def config(self) -> EmulatorConfig:
        """The current configuration."""
        with self._lock:
            return self._config

    def set_config(self, **changes: Any) -> EmulatorConfig:
        """Replace config fields (``dataclasses.replace`` semantics) and return the new config.

        Raises:
            TypeError: an unknown field.
            ValueError: an invalid value.
        """
        with self._lock:
            self._config = dataclasses.replace(self._config, **changes)
            return self._config

    def now(self) -> datetime:
        """The emulator clock's current time (aware UTC)."""
        return checked_now(self.clock)

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward and return the new time.

        Raises:
            ClockNotAdvanceableError: the injected clock cannot be advanced.
            ValueError: ``seconds`` is negative (ShiftableClock).
        """
        with self._lock:
            advance_clock(self.clock, seconds)
            return checked_now(self.clock)

    def counters(self) -> dict[str, Any]:
        """A snapshot of the request, error, token, order and call counters."""
        with self._lock:
            return {
                "requests_by_endpoint": dict(self._requests),
                "errors_by_code": dict(self._errors),
                "tokens_issued": self._tokens.minted,
                "token_requests": self._token_requests,
                "orders_attempted": len(self._orders),
                "calls_ok": self._calls_ok,
                "faults_applied": self._faults_applied,
            }

    def stream_counters(self) -> dict[str, Any]:
        """The WebSocket side's counters, with the number of ``/oauth2/Approval`` requests."""
        with self._lock:
            requests = self._approval_requests
        return {"approval_requests": requests, **self.realtime.counters()}

    def orders(self) -> list[dict[str, str]]:
        """Every order attempt so far (path, method, tr_id, time); secrets are never recorded."""
        with self._lock:
            return [dict(order) for order in self._orders]

    def inject_fault(self, kind: str, count: int = 1, path: str | None = None, **params: Any) -> None:
        """Make the next ``count`` requests (under ``path`` if given) misbehave as ``kind``.

        Raises:
            ValueError: unknown kind or bad parameters.
        """
        fault = make_fault(kind, count, path, params)
        with self._lock:
            self._faults.add(fault)

    def pending_faults(self) -> list[dict[str, Any]]:
        """The faults not yet used up."""
        with self._lock:
            return self._faults.pending()

    def void_tokens(self) -> int:
        """Invalidate every currently valid token, as KIS nightly maintenance does; return how many."""
        with self._lock:
            return self._tokens.void_all(checked_now(self.clock))

    def reset(self) -> None:
        """Forget tokens, counters, orders, faults and rate windows (config and clock stay)."""
        with self._lock:
            self._tokens.clear()
            self._limiter.clear()
            self._faults.clear()
            self._orders.clear()
            self._requests.clear()
            self._errors.clear()
            self._token_requests = 0
            self._calls_ok = 0
            self._faults_applied = 0
            self._approval_requests = 0
            self.realtime.reset()
