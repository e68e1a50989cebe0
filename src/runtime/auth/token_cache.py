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
from runtime.auth.freshness import TokenState, refresh_at, token_state
from runtime.auth.ports import (
    ClockPort,
    IssuanceLedger,
    TokenStorePort,
)
from runtime.broker.base import AccessToken, BrokerAuthPort, BrokerScope
from runtime.errors import (
    BrokerUnavailableError,
    CredentialsRejectedError,
    IssuanceRateLimitedError,
    QTSError,
    RateLimitedError,
    ScopeMismatchError,
    StaleTokenError,
    TokenStoreError,
)
from runtime.forksafe import renew_in_child

__all__ = ["TokenCache", "TokenSource"]

_log = logging.getLogger(__name__)

# After a failed proactive refresh we keep serving the still-valid token and try again only
# after this pause: tokenP accepts one request per minute per key (KIS_API.md §3).
_REFRESH_RETRY_PAUSE = timedelta(seconds=60)
_REJECTED_REMEMBERED = 16


class TokenSource:
    """Where the last token handed out came from (shown by ``qts token``)."""

    MEMORY = "memory"
    STORE = "store"
    ISSUED = "issued"


class _Entry(NamedTuple):
    token: AccessToken
    refresh_at: datetime


class _Blocked(NamedTuple):
    """The budget forbids tokenP for ``wait`` and no valid token is held."""

    wait: timedelta
    cause: IssuanceRateLimitedError | None


class TokenCache:
    """Hands out a token valid for at least ``margin``: memory, then store, then the broker.

    With a ``budget``, tokenP goes out only when the budget allows it (see
    :mod:`runtime.auth.budget`); without one, whenever a token is needed.
    """

    def __init__(
        self,
        broker: BrokerAuthPort,
        store: TokenStorePort,
        clock: ClockPort,
        *,
        margin: timedelta = timedelta(seconds=600),
        lock_timeout_s: float = 30.0,
        budget: IssuanceBudget | None = None,
    ) -> None:
        if margin < timedelta(0):
            raise ValueError("margin must not be negative")
        self._broker = broker
        self._store = store
        self._clock = clock
        self._margin = margin
        self._lock_timeout_s = lock_timeout_s
        self._budget = budget
        # What this process saw itself, in case the store loses its ledger (a corrupt file).
        self._local_ledger = IssuanceLedger()
        self._scope = broker.scope
        self._entry: _Entry | None = None
        self._lock = threading.Lock()
        # Tokens KIS handed back unchanged or that failed to refresh: kept while valid,
        # not refreshed again before this instant.
        self._no_refresh_before: dict[str, datetime] = {}
        self._rejected: collections.deque[bytes] = collections.deque(maxlen=_REJECTED_REMEMBERED)
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
        return entry.token if entry else None

    def held(self) -> AccessToken | None:
        """The token in memory, else the store's, whatever its state; nothing is changed."""
        entry = self._entry
        if entry is not None:
            return entry.token
        with self._lock:
            return self._load_from_store()

    def get(self, *, timeout_s: float | None = None, budget_wait_s: float = 0.0) -> AccessToken:
        """A token for this scope that stays valid for at least the margin.

        A stale token that KIS will not renew yet (it hands back the same one within 6 h)
        or that failed to refresh for a retryable reason is kept until it expires. Raises
        whatever the broker's ``issue_token`` raises, StaleTokenError when KIS hands back a
        token it has rejected, and BrokerUnavailableError when another thread's issuance
        does not finish within ``timeout_s``.

        With a budget, a tokenP it holds off is waited for only if the wait fits in
        ``timeout_s`` plus ``budget_wait_s`` (time granted for that wait alone, on top of the
        deadline: ``qts token`` gives it 65 s); otherwise IssuanceRateLimitedError at once.
        """
        entry = self._entry
        if entry is not None and self._clock.now() < entry.refresh_at:
            self.last_source = TokenSource.MEMORY
            return entry.token
        started = self._clock.monotonic()
        timeout = self._lock_timeout_s if timeout_s is None else max(timeout_s, 0.0)
        if not self._lock.acquire(timeout=timeout):
            raise BrokerUnavailableError(
                f"timed out after {timeout:g} s waiting for a token issuance in progress"
            )
        allowance = max(budget_wait_s, 0.0)
        waited = timedelta(0)

        def left() -> float | None:
            # Time spent waiting for the budget is charged to the allowance first.
            if timeout_s is None:
                return None
            excused = min(waited.total_seconds(), allowance)
            return timeout - (self._clock.monotonic() - started - excused)

        try:
            while True:
                entry = self._entry
                if entry is not None and self._clock.now() < entry.refresh_at:
                    self.last_source = TokenSource.MEMORY
                    return entry.token  # another thread refreshed while we waited
                served = self._fresh_from_store()
                if served is not None:
                    return served
                remaining = left()
                with self._store_lock(timeout if remaining is None else max(remaining, 0.0)):
                    outcome = self._get_locked(remaining)
                if isinstance(outcome, AccessToken):
                    return outcome
                # Blocked by the budget: wait outside the store lock so that other processes
                # can still read the store, then start over (one of them may have issued).
                if self._budget is None:  # pragma: no cover - only the budget blocks
                    raise AssertionError("blocked without a budget")
                remaining = left()
                if remaining is not None:
                    remaining += allowance - min(waited.total_seconds(), allowance)
                self._budget.wait(
                    outcome.wait, time_left_s=remaining, already_waited=waited, cause=outcome.cause
                )
                waited += outcome.wait
        finally:
            self._lock.release()

    def invalidate(self, token: AccessToken) -> None:
        """KIS rejected ``token``: forget it here and in the store (if the store still has it)."""
        with self._lock:
            self._rejected.append(_digest(token.value))
            self._no_refresh_before.pop(token.value, None)
            if self._entry is not None and self._entry.token.value == token.value:
                self._entry = None
            try:
                # Compare and delete under the store's issuance lock: without it, another process
                # could save its fresh token between our load and our delete, and we would delete
                # that one (found by the soak: every worker then waits out the tokenP budget).
                with self._store_lock(self._lock_timeout_s):
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
            held = self._entry.token if self._entry else self._load_from_store()
            self._entry = None
            self._no_refresh_before.clear()
            self._store.delete(self._scope)
        return held

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

    def _get_locked(self, timeout_s: float | None) -> AccessToken | _Blocked:
        now = self._clock.now()
        held = self._entry.token if self._entry else None
        if held is not None and token_state(held, now, self._margin) is TokenState.FRESH:
            self.last_source = TokenSource.MEMORY
            return held  # another thread refreshed while we waited for the lock

        stored = self._load_from_store()
        if stored is not None and token_state(stored, now, self._margin) is TokenState.FRESH:
            self._remember(stored)
            self.last_source = TokenSource.STORE
            return stored

        current = self._best_valid(now, held, stored)
        if current is not None and now < self._no_refresh_before.get(current.value, now):
            self._remember(current)
            self.last_source = TokenSource.MEMORY
            return current

        ledger = self._load_ledger() if self._budget is not None else None
        if self._budget is not None and ledger is not None:
            wait = self._budget.wait_needed(ledger, now)
            if wait > timedelta(0):
                if current is None:
                    return _Blocked(wait, None)
                # Still valid: keep it and ask again once the budget allows.
                self._no_refresh_before[current.value] = now + wait
                self._remember(current)
                _log.info("tokenP budget: keeping %s, refresh allowed in %s", current.masked, wait)
                self.last_source = TokenSource.MEMORY
                return current
            # Counted before the request: a crash after KIS issued must still hold the next one off.
            self._save_ledger(self._budget.issuing(ledger, now))

        try:
            issued = self._broker.issue_token(timeout_s=timeout_s)
        except QTSError as exc:
            if self._budget is not None and ledger is not None:
                if isinstance(exc, IssuanceRateLimitedError):
                    self._save_ledger(self._budget.rate_limited(ledger, now, exc.retry_after))
                    if current is None:
                        return _Blocked(self._budget.wait_needed(self._load_ledger(), now), exc)
                elif isinstance(exc, CredentialsRejectedError) or (
                    isinstance(exc, BrokerUnavailableError) and not exc.request_sent
                ):
                    # Refused outright or never sent: no token came of it, so it does not count.
                    self._save_ledger(ledger)
            if current is None or not isinstance(exc, BrokerUnavailableError | RateLimitedError):
                raise
            pause = exc.retry_after if isinstance(exc, RateLimitedError) else _REFRESH_RETRY_PAUSE
            self._no_refresh_before[current.value] = now + pause
            self._remember(current)
            _log.warning(
                "proactive refresh failed (%s); keeping %s, valid for %s more",
                exc,
                current.masked,
                current.time_left(now),
            )
            self.last_source = TokenSource.MEMORY
            return current
        return self._accept_issued(issued, current, now)

    def _accept_issued(self, issued: AccessToken, current: AccessToken | None, now: datetime) -> AccessToken:
        if issued.scope != self._scope:
            raise ScopeMismatchError(f"the broker issued a token of {issued.scope} for {self._scope}")
        if _digest(issued.value) in self._rejected:
            raise StaleTokenError(
                "KIS handed back the token it had just rejected (it returns the same token for 6 hours "
                "after issuing it); revoke it with `qts revoke` or wait before retrying",
                code="EGW00121",
            )
        self.issued_count += 1
        # Only the newest token can still be blocked from refreshing; older entries are dead weight.
        self._no_refresh_before = {k: v for k, v in self._no_refresh_before.items() if k == issued.value}
        if current is not None and issued.value == current.value:
            # KIS answers tokenP with the previous token for 6 hours: asking again would loop.
            self._no_refresh_before[issued.value] = issued.expires_at
            _log.info(
                "KIS returned the same token %s; keeping it until it expires at %s",
                issued.masked,
                issued.expires_at.isoformat(),
            )
        elif token_state(issued, now, self._margin) is not TokenState.FRESH:
            # A short-lived token (shorter than the margin): use it, but do not ask again at once.
            self._no_refresh_before[issued.value] = issued.expires_at
            _log.warning("issued token %s lives less than the refresh margin", issued.masked)
        self._save_to_store(issued)
        self._remember(issued)
        self.last_source = TokenSource.ISSUED
        _log.info(
            "token %s issued for %s, expires %s", issued.masked, self._scope, issued.expires_at.isoformat()
        )
        return issued

    def _best_valid(self, now: datetime, *tokens: AccessToken | None) -> AccessToken | None:
        valid = [
            t
            for t in tokens
            if t is not None
            and token_state(t, now, self._margin) is not TokenState.EXPIRED
            and _digest(t.value) not in self._rejected
        ]
        return max(valid, key=lambda t: t.expires_at, default=None)

    def _remember(self, token: AccessToken) -> None:
        # Reissue-blocked tokens are handed out until expiry, so their entry never goes stale
        # on the hot path; everything else goes stale at expires_at - margin.
        until = self._no_refresh_before.get(token.value)
        stale_from = refresh_at(token, self._margin) if until is None else min(until, token.expires_at)
        self._entry = _Entry(token, stale_from)

    def _load_ledger(self) -> IssuanceLedger:
        local = self._local_ledger
        shared = self._store.load_ledger(self._scope)
        # What this process saw itself still counts if the store lost it (a corrupt file).
        return IssuanceLedger(
            last_issued_at=_latest(shared.last_issued_at, local.last_issued_at),
            blocked_until=_latest(shared.blocked_until, local.blocked_until),
        )

    def _save_ledger(self, ledger: IssuanceLedger) -> None:
        self._local_ledger = ledger
        try:
            self._store.save_ledger(self._scope, ledger)
        except QTSError as exc:
            # This process still keeps the budget; only other processes lose it.
            _log.warning("could not save the issuance ledger for %s: %s", self._scope, exc)

    def _load_from_store(self) -> AccessToken | None:
        stored = self._store.load(self._scope)
        if stored is None:
            return None
        if stored.scope != self._scope:
            _log.warning("store returned a token of %s for %s; ignored", stored.scope, self._scope)
            return None
        if _digest(stored.value) in self._rejected:
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


def _latest(*moments: datetime | None) -> datetime | None:
    return max((m for m in moments if m is not None), default=None)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()
