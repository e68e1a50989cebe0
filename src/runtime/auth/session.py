"""KISRuntime: injects the cached token into every call and recovers once from a rejected token."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from runtime.auth.call_budget.memory import InProcessCallBudget
from runtime.auth.ports import CallBudgetPort, ClockPort
from runtime.auth.stores.bounds import within
from runtime.auth.token_cache import TokenCache
from runtime.broker.base import AccessToken, BrokerAuthPort, BrokerRequest, BrokerResponse, BrokerScope
from runtime.deadline import Deadline
from runtime.errors import (
    CallBudgetExhaustedError,
    CallRateLimitedError,
    InvalidRequestError,
    OrderRefusedError,
    TokenRejectedError,
)
from runtime.settings import DEFAULT_CALL_DEADLINE_S, DEFAULT_MAX_RPS

__all__ = ["KISRuntime"]

_log = logging.getLogger(__name__)

# EGW00201 despite the shared budget (another tool on the key, KIS counting differently): the
# budget is told, which holds back every process on the key, and a GET books a new slot while
# the call's deadline allows. The attempt cap only guards against a zero retry_after.
_RATE_LIMIT_ATTEMPTS = 8


class KISRuntime:
    """The stateful half: owns the token cache, holds no credentials.

    Build it with :func:`runtime.bootstrap.build_runtime`. Every method raises only
    :class:`runtime.errors.QTSError` subclasses. Each call gets one :class:`Deadline`, made
    here from the clock and handed to the cache, the call budget, the stores and the broker.
    """

    def __init__(
        self,
        broker: BrokerAuthPort,
        cache: TokenCache,
        clock: ClockPort,
        *,
        call_deadline_s: float = DEFAULT_CALL_DEADLINE_S,
        call_budget: CallBudgetPort | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._broker = broker
        self._cache = cache
        self._clock = clock
        self._deadline_s = call_deadline_s
        self._on_close = on_close
        self._budget = call_budget or InProcessCallBudget(clock, DEFAULT_MAX_RPS[cache.scope.mode])
        self._scope = cache.scope  # read on every call: one attribute, not two properties

    @property
    def scope(self) -> BrokerScope:
        """The (mode, key fingerprint) this runtime works for."""
        return self._scope

    @property
    def call_budget(self) -> CallBudgetPort:
        """The key's call budget this runtime books its calls from."""
        return self._budget

    @property
    def cache(self) -> TokenCache:
        """The token cache (for inspection: ``issued_count``, ``last_source``, ``peek``)."""
        return self._cache

    def access_token(self, *, budget_wait_s: float = 0.0) -> AccessToken:
        """A token valid for at least the refresh margin, for callers that need it themselves.

        ``budget_wait_s`` is time granted on top of the call deadline for waiting out KIS's
        one-tokenP-a-minute rule (``qts token`` grants it; a call does not)."""
        deadline = self._deadline()
        with within(deadline):
            return self._cache.get(deadline=deadline, budget_wait_s=budget_wait_s)

    def call(
        self,
        method: str,
        path: str,
        *,
        tr_id: str,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        tr_cont: str = "",
    ) -> BrokerResponse:
        """Send one authenticated REST call and return KIS's successful answer.

        ``tr_id`` is the REAL TR id; the adapter maps it for VTS. On EGW00121/122/123 the
        token is invalidated, reissued and a GET is retried exactly once; a POST is never
        retried automatically. Order endpoints are refused before the network.
        """
        try:
            request = BrokerRequest(method, path, tr_id, params=params, body=body, tr_cont=tr_cont)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"invalid call: {exc}") from exc
        if request.is_order:
            raise OrderRefusedError(f"{request.path} is an order endpoint; Phase 2 sends no orders")
        deadline = self._deadline()
        # One deadline for the whole call: every store and lock operation on the way keeps to it.
        with within(deadline):
            return self._call(request, deadline)

    def _call(self, request: BrokerRequest, deadline: Deadline) -> BrokerResponse:
        token = self._cache.get(deadline=deadline)
        try:
            return self._send(request, token, deadline)
        except TokenRejectedError as rejected:
            self._cache.invalidate(token, deadline=deadline)
            if request.method != "GET":
                raise  # the call may have had an effect; the caller decides about resending it
            _log.info("token %s rejected (%s); reissuing and retrying once", token.masked, rejected.code)
            deadline.left_or_raise()  # the rejected call may have used the rest
            fresh = self._cache.get(deadline=deadline)
            if fresh.value == token.value:
                # The reissue is blocked (EGW00133 or the budget) and the cache kept the token:
                # a one-off rejection deserves one more try rather than a local failure.
                _log.warning("reissue blocked; retrying once with %s", token.masked)
            return self._send(request, fresh, deadline)

    def revoke(self) -> AccessToken | None:
        """Revoke the held token at KIS and drop it from the store; returns what was revoked.

        All of it within the call deadline: a store lock held elsewhere is not waited out."""
        deadline = self._deadline()
        with within(deadline):
            token = self._cache.held()
            if token is None:
                return None
            self._broker.revoke_token(token, deadline=deadline)
            self._cache.forget()
            return token

    def close(self) -> None:
        """Release connections. The runtime is not usable afterwards."""
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __enter__(self) -> KISRuntime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, request: BrokerRequest, token: AccessToken, deadline: Deadline) -> BrokerResponse:
        limited: CallRateLimitedError | None = None
        for attempt in range(_RATE_LIMIT_ATTEMPTS):
            try:
                # Raises CallBudgetExhaustedError at once when no slot starts before the deadline.
                booking = self._budget.acquire(self._scope, deadline)
            except CallBudgetExhaustedError:
                if limited is not None:
                    raise limited from None  # KIS's own answer says more than our budget's
                raise
            try:
                deadline.left_or_raise()  # the wait for the slot may have used the rest
                return self._broker.send(request, token, deadline=deadline)
            except CallRateLimitedError as answer:
                limited = answer
                self._budget.rate_limited(self._scope, answer.retry_after.total_seconds())
                if request.method != "GET" or attempt + 1 == _RATE_LIMIT_ATTEMPTS:
                    raise
                _log.info(
                    "EGW00201 on %s; the key's budget slows down, the call books a new slot", request.path
                )
            finally:
                # KIS has counted the call by now: later slots are spaced from this moment.
                self._budget.release(self._scope, booking)
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    def _deadline(self) -> Deadline:
        # The one place a call's deadline is made: every step after this spends from it.
        return Deadline.after(self._clock, self._deadline_s)
