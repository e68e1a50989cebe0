"""Runtime token cache: stores the token, tracks its expiry, decides when to reissue.

It holds tokens and never credentials: issuing is delegated to the broker port. A warm
``get()`` reads one attribute and the clock, takes no lock and touches no store; only a
stale or missing token takes the lock, so N threads arriving together cause one issuance.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import NamedTuple

from runtime.auth.budget import IssuanceBudget
from runtime.auth.freshness import Decision, Held, Step, TokenState, decide, refresh_at, token_state
from runtime.auth.ports import ClockPort, TokenStorePort
from runtime.auth.stores.bounds import within
from runtime.auth.stores.document import token_belongs_to
from runtime.broker.base import AccessToken, BrokerAuthPort, BrokerScope
from runtime.deadline import Deadline
from runtime.errors import (
    BrokerUnavailableError,
    ForeignTokenError,
    IssuanceRateLimitedError,
    QTSError,
    RateLimitedError,
    ScopeMismatchError,
    StaleTokenError,
    TokenStoreError,
)
from runtime.forksafe import renew_in_child
from runtime.settings import DEFAULT_CALL_DEADLINE_S, DEFAULT_REFRESH_MARGIN

__all__ = ["TokenCache", "TokenSource"]

_log = logging.getLogger(__name__)

# After a failed proactive refresh we keep serving the still-valid token and try again only
# after this pause: tokenP accepts one request per minute per key (KIS_API.md §3).
_REFRESH_RETRY_PAUSE = timedelta(seconds=60)
_REJECTED_REMEMBERED = 16
# The lock-free path trusts the monotonic clock for at most this long before the wall clock
# (which token expiry is measured on) is read again under the lock.
_WALL_RECHECK_S = 1.0
# With the store unreachable, a valid token in memory is served this long before the store is
# tried again (one warning per outage), so a paused Redis does not cost every call its wait.
_STORE_RETRY_PAUSE = timedelta(seconds=10)


_MEMORY = "memory"  # TokenSource.MEMORY, one global load away for the hot path


class TokenSource:
    """Where the last token handed out came from (shown by ``qts token``)."""

    MEMORY = _MEMORY
    STORE = "store"
    ISSUED = "issued"


class _Entry(NamedTuple):
    """The token in memory, its refresh hold, and until when the lock-free path may serve it."""

    held: Held
    serve_until: datetime
    token: AccessToken  # held.token, one attribute away for the hot path


class _Fast(NamedTuple):
    """What the lock-free path serves, and until when on the monotonic clock."""

    until: float
    token: AccessToken


class _Blocked(NamedTuple):
    """The budget forbids tokenP for ``wait`` and no valid token is held."""

    wait: timedelta
    cause: IssuanceRateLimitedError | None


class TokenCache:
    """Hands out a token valid for at least ``margin``: memory, then store, then the broker.

    With a ``budget``, tokenP goes out only when the budget allows it (see
    :mod:`runtime.auth.budget`); without one, whenever a token is needed. What to do next is
    decided by the pure :func:`runtime.auth.freshness.decide`; this class does the I/O around it.
    """

    def __init__(
        self,
        broker: BrokerAuthPort,
        store: TokenStorePort,
        clock: ClockPort,
        *,
        margin: timedelta = DEFAULT_REFRESH_MARGIN,
        budget: IssuanceBudget | None = None,
    ) -> None:
        if margin < timedelta(0):
            raise ValueError("margin must not be negative")
        self._broker = broker
        self._store = store
        self._clock = clock
        self._monotonic = clock.monotonic  # bound once: the hot path reads it with one attribute load
        self._margin = margin
        self._budget = budget
        self._scope = broker.scope
        self._entry: _Entry | None = None
        # The lock-free path's copy of the entry, on the monotonic clock: set under the lock by
        # a wall-clock check, and good for at most _WALL_RECHECK_S, so a stepped wall clock (an
        # NTP correction) is noticed within a second. Cleared with the entry, under the lock.
        self._fast: _Fast | None = None
        self._lock = threading.Lock()
        self._rejected: collections.deque[bytes] = collections.deque(maxlen=_REJECTED_REMEMBERED)
        # The last token KIS rejected while still within its life: served again, rather than
        # failing locally, while a reissue is blocked (a one-off EGW00123 seconds after issuance).
        self._suspect: AccessToken | None = None
        self._store_down = False
        self.issued_count = 0
        self.last_source: str | None = None
        renew_in_child(self, TokenCache._renew_after_fork)

    @property
    def scope(self) -> BrokerScope:
        """The one scope this cache serves."""
        return self._scope

    @property
    def margin(self) -> timedelta:
        """How long a handed-out token is valid at least (unless KIS will not renew it)."""
        return self._margin

    def peek(self) -> AccessToken | None:
        """The token held in memory, whatever its state, without any I/O."""
        entry = self._entry
        return entry.held.token if entry else None

    def held(self) -> AccessToken | None:
        """The token in memory, else the store's, whatever its state; nothing is changed."""
        entry = self._entry
        if entry is not None:
            return entry.held.token
        with self._lock:
            return self._load_from_store()

    def get(self, *, deadline: Deadline | None = None, budget_wait_s: float = 0.0) -> AccessToken:
        """A token for this scope that stays valid for at least the margin.

        A stale token that KIS will not renew yet (it hands back the same one within 6 h)
        or that failed to refresh for a retryable reason is kept until it expires. Raises
        whatever the broker's ``issue_token`` raises, StaleTokenError when KIS hands back a
        token it has rejected, and BrokerUnavailableError when another thread's issuance
        does not finish before ``deadline``.

        With a budget, a tokenP it holds off is waited for only if the wait fits in the time
        ``deadline`` has left plus ``budget_wait_s`` (time granted for that wait alone, on top
        of the deadline: ``qts token`` gives it 65 s); otherwise IssuanceRateLimitedError at
        once. Without a deadline (tools, tests) budget waits are bounded only by the budget,
        and each lock wait and tokenP by the default call deadline.
        """
        # The hot path, inlined (the method call was a fifth of it): one attribute, one
        # monotonic clock read (cheaper than an aware datetime), no lock, no store.
        fast = self._fast
        if fast is not None and self._monotonic() < fast.until:
            self.last_source = _MEMORY
            return fast.token
        lock_wait = self._time_left(deadline)
        if not self._lock.acquire(timeout=lock_wait):
            raise BrokerUnavailableError(
                f"timed out after {lock_wait:g} s waiting for a token issuance in progress"
            )
        try:
            return self._get_or_wait(deadline, max(budget_wait_s, 0.0))
        finally:
            self._lock.release()

    def invalidate(self, token: AccessToken, *, deadline: Deadline | None = None) -> None:
        """KIS rejected ``token``: forget it here and in the store (if the store still has it)."""
        with self._lock:
            self._rejected.append(_digest(token.value))
            self._suspect = token if self._clock.now() < token.expires_at else None
            if self._entry is not None and self._entry.held.token.value == token.value:
                self._entry = self._fast = None
            try:
                # Compare and delete under the store's issuance lock: without it, another process
                # could save its fresh token between our load and our delete, and we would delete
                # that one (found by the soak: every worker then waits out the tokenP budget).
                with self._store_lock(self._time_left(deadline)):
                    stored = self._store.load(self._scope)  # raw: _load_from_store hides rejected ones
                    if stored is not None and stored.value == token.value:
                        self._store.delete(self._scope)
            except TokenStoreError as exc:
                # This cache never serves the token again (it is in _rejected); another process
                # still holding it learns of the rejection from KIS on its next call.
                _log.warning("could not drop rejected token %s from the store: %s", token.masked, exc)
        _log.info("token %s invalidated for %s", token.masked, self._scope)

    def forget(self) -> AccessToken | None:
        """Drop the token from memory and store (after a revoke); returns what was held."""
        with self._lock:
            held = self._entry.held.token if self._entry else self._load_from_store()
            self._entry = self._fast = None
            self._store.delete(self._scope)
        return held

    # --- the slow path, under the lock -----------------------------------------------------------

    def _serve_from_memory(self) -> AccessToken | None:
        # Under the lock: the wall-clock check, which also opens the lock-free path for a while.
        entry = self._entry
        if entry is None:
            return None
        now = self._clock.now()
        if now >= entry.serve_until:
            return None
        fresh_for = min(_WALL_RECHECK_S, (entry.serve_until - now).total_seconds())
        self._fast = _Fast(self._clock.monotonic() + fresh_for, entry.token)
        self.last_source = TokenSource.MEMORY
        return entry.held.token

    def _get_or_wait(self, deadline: Deadline | None, allowance_s: float) -> AccessToken:
        waited = timedelta(0)
        while True:
            served = self._serve_from_memory()
            if served is None:
                with within(self._store_deadline(deadline)):  # a paused store gets its share only
                    served = self._fresh_from_store()
            if served is not None:
                return served  # another thread or process refreshed while we waited
            try:
                with within(self._store_deadline(deadline)), self._store_lock(self._time_left(deadline)):
                    outcome = self._get_locked(deadline)
            except TokenStoreError as exc:
                return self._serve_without_store(exc)
            self._store_down = False
            if isinstance(outcome, AccessToken):
                return outcome
            # Blocked by the budget: wait outside the store lock so that other processes can
            # still read the store, then start over (one of them may have issued). A wait that
            # cannot be had falls back on the token KIS rejected once, if it is still valid.
            try:
                deadline, allowance_s = self._wait_for_budget(outcome, deadline, allowance_s, waited)
            except IssuanceRateLimitedError:
                kept = self._keep_suspect(outcome.wait)
                if kept is None:
                    raise
                return kept
            waited += outcome.wait

    def _store_deadline(self, deadline: Deadline | None) -> Deadline | None:
        """The store's share of the call: all of it, or half while a valid token is held (the
        refresh is optional then, and the call itself must keep time to be sent)."""
        if deadline is None or self._valid_in_memory(self._clock.now()) is None:
            return deadline
        return Deadline.after(self._clock, deadline.remaining() / 2)

    def _valid_in_memory(self, now: datetime) -> AccessToken | None:
        token = self._entry.held.token if self._entry else None
        if token is not None and now < token.expires_at and _digest(token.value) not in self._rejected:
            return token
        suspect = self._suspect
        return suspect if suspect is not None and now < suspect.expires_at else None

    def _serve_without_store(self, exc: TokenStoreError) -> AccessToken:
        """The store is unreachable: serve a valid token held in memory, or raise ``exc``."""
        now = self._clock.now()
        token = self._valid_in_memory(now)
        if token is None:
            raise exc
        if not self._store_down:
            _log.warning(
                "token store unreachable (%s); serving %s from memory, valid for %s more",
                exc,
                token.masked,
                token.time_left(now),
            )
        self._store_down = True
        self._remember(token, now + _STORE_RETRY_PAUSE)
        self.last_source = TokenSource.MEMORY
        return token

    def _keep_suspect(self, wait: timedelta) -> AccessToken | None:
        """A reissue is blocked for ``wait``: keep serving the token KIS last rejected, if valid."""
        now = self._clock.now()
        suspect = self._suspect
        if suspect is None or now >= suspect.expires_at:
            return None
        _log.warning(
            "tokenP is blocked for %s; serving %s again although KIS rejected it once",
            wait,
            suspect.masked,
        )
        self._remember(suspect, now + wait)
        self.last_source = TokenSource.MEMORY
        return suspect

    def _wait_for_budget(
        self, blocked: _Blocked, deadline: Deadline | None, allowance_s: float, waited: timedelta
    ) -> tuple[Deadline | None, float]:
        if self._budget is None:  # pragma: no cover - only the budget blocks
            raise AssertionError("blocked without a budget")
        # Time granted for budget waits (``budget_wait_s``) is spent before the deadline's.
        time_left = None if deadline is None else deadline.at - self._clock.monotonic() + allowance_s
        self._budget.wait(blocked.wait, time_left_s=time_left, already_waited=waited, cause=blocked.cause)
        if deadline is None:
            return None, allowance_s
        excused = min(blocked.wait.total_seconds(), allowance_s)
        return deadline.extended(excused), allowance_s - excused

    def _get_locked(self, deadline: Deadline | None) -> AccessToken | _Blocked:
        now = self._clock.now()
        memory = self._entry.held if self._entry else None
        stored = self._load_from_store()
        decision = decide(now, self._margin, memory, stored)
        if decision.step is Step.ISSUE and self._budget is not None:
            wait = self._budget.tokenp_wait(self._store, self._scope, now)
            decision = decide(now, self._margin, memory, stored, wait)
        if decision.step is Step.WAIT:
            return _Blocked(decision.wait, None)
        if decision.step is Step.ISSUE:
            return self._issue(decision, now, deadline)
        return self._serve(decision)

    def _serve(self, decision: Decision) -> AccessToken:
        token = decision.token
        if token is None:  # pragma: no cover - SERVE and REUSE always carry a token
            raise AssertionError(f"{decision.step} without a token")
        self._remember(token, decision.hold_until)
        if decision.wait:
            _log.info("tokenP budget: keeping %s, refresh allowed in %s", token.masked, decision.wait)
        self.last_source = TokenSource.STORE if decision.from_store else TokenSource.MEMORY
        return token

    def _issue(self, decision: Decision, now: datetime, deadline: Deadline | None) -> AccessToken | _Blocked:
        budget = self._budget
        before = budget.start_tokenp(self._store, self._scope, now) if budget is not None else None
        try:
            issued = self._broker.issue_token(deadline=deadline or self._default_deadline())
        except QTSError as exc:
            if budget is not None and before is not None:
                budget.tokenp_failed(self._store, self._scope, now, before, exc)
                if decision.token is None and isinstance(exc, IssuanceRateLimitedError):
                    return _Blocked(budget.tokenp_wait(self._store, self._scope, now), exc)
            return self._keep_after_failure(exc, decision.token, now)
        with within(deadline):  # saving the new token gets the whole call's time, not the share
            return self._accept_issued(issued, decision.token, now)

    def _keep_after_failure(self, exc: QTSError, current: AccessToken | None, now: datetime) -> AccessToken:
        if current is None and self._suspect is not None and now < self._suspect.expires_at:
            current = self._suspect  # failing locally is never better than trying it once more
        if current is None or not isinstance(exc, BrokerUnavailableError | RateLimitedError):
            raise exc
        pause = exc.retry_after if isinstance(exc, RateLimitedError) else _REFRESH_RETRY_PAUSE
        self._remember(current, now + pause)
        _log.warning(
            "proactive refresh failed (%s); keeping %s, valid for %s more",
            exc,
            current.masked,
            current.time_left(now),
        )
        self.last_source = TokenSource.MEMORY
        return current

    def _accept_issued(self, issued: AccessToken, current: AccessToken | None, now: datetime) -> AccessToken:
        if issued.scope != self._scope:
            raise ScopeMismatchError(f"the broker issued a token of {issued.scope} for {self._scope}")
        if not token_belongs_to(issued.value, self._scope):
            raise ForeignTokenError("the broker issued a token of another app key (JWT jti); discarded")
        if _digest(issued.value) in self._rejected:
            raise StaleTokenError(
                "KIS handed back the token it had just rejected (it returns the same token for 6 hours "
                "after issuing it); revoke it with `qts revoke` or wait before retrying",
                code="EGW00121",
            )
        self.issued_count += 1
        self._suspect = None
        hold = None
        if current is not None and issued.value == current.value:
            # KIS answers tokenP with the previous token for 6 hours: asking again would loop.
            hold = issued.expires_at
            _log.info(
                "KIS returned the same token %s; keeping it until it expires at %s", issued.masked, hold
            )
        elif token_state(issued, now, self._margin) is not TokenState.FRESH:
            # A short-lived token (shorter than the margin): use it, but do not ask again at once.
            hold = issued.expires_at
            _log.warning("issued token %s lives less than the refresh margin", issued.masked)
        self._save_to_store(issued)
        self._remember(issued, hold)
        self.last_source = TokenSource.ISSUED
        _log.info(
            "token %s issued for %s, expires %s", issued.masked, self._scope, issued.expires_at.isoformat()
        )
        return issued

    # --- small helpers ---------------------------------------------------------------------------

    def _time_left(self, deadline: Deadline | None) -> float:
        return DEFAULT_CALL_DEADLINE_S if deadline is None else deadline.remaining()

    def _default_deadline(self) -> Deadline:
        return Deadline.after(self._clock, DEFAULT_CALL_DEADLINE_S)

    def _fresh_from_store(self) -> AccessToken | None:
        """A fresh token another process saved, read without the store's issuance lock: a host
        that died holding that lock must not keep the others from a token that is already there."""
        try:
            stored = self._load_from_store()
        except TokenStoreError:
            return None  # the locked path reports the store's failure
        if stored is None or token_state(stored, self._clock.now(), self._margin) is not TokenState.FRESH:
            return None
        self._remember(stored)
        self.last_source = TokenSource.STORE
        return stored

    def _renew_after_fork(self) -> None:
        # Another parent thread may have held the lock at fork(); the token itself is kept.
        self._lock = threading.Lock()

    def _store_lock(self, timeout_s: float) -> AbstractContextManager[None]:
        return self._store.issuance_lock(self._scope, timeout_s)

    def _remember(self, token: AccessToken, hold_until: datetime | None = None) -> None:
        # Held tokens are handed out until the hold ends (or they expire), so their entry does
        # not go stale on the hot path; everything else goes stale at expires_at - margin.
        stale_from = (
            refresh_at(token, self._margin) if hold_until is None else min(hold_until, token.expires_at)
        )
        self._entry = _Entry(Held(token, hold_until), stale_from, token)
        self._fast = None  # the next get() checks the new entry on the wall clock first

    def _load_from_store(self) -> AccessToken | None:
        stored = self._store.load(self._scope)
        if stored is None:
            return None
        if stored.scope != self._scope:
            _log.warning("store returned a token of %s for %s; ignored", stored.scope, self._scope)
            return None
        if _digest(stored.value) in self._rejected:
            return None
        if not token_belongs_to(stored.value, self._scope):
            # Every token entering memory is checked, whatever store (or adapter) it came from.
            _log.warning("store returned a token of another app key (JWT jti) for %s; ignored", self._scope)
            return None
        return stored

    def _save_to_store(self, token: AccessToken) -> None:
        try:
            self._store.save(self._scope, token)
        except ScopeMismatchError:
            raise
        except QTSError as exc:
            # The token is good; losing the store only costs a reissue in the next process.
            _log.warning("could not save token %s to the store: %s", token.masked, exc)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()
