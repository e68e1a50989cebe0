"""The issuance budget: at most one tokenP per scope per minute from this host, and EGW00133 remembered.

KIS accepts one tokenP a minute per app key (KIS_API.md §3) and, on REAL accounts, sends a
KakaoTalk notice for each. The budget turns that rule into a decision taken before the request
instead of an error after it: the per-scope :class:`~runtime.auth.ports.IssuanceLedger` says
when tokenP last went out and until when KIS told us to hold off. The budget owns that ledger:
it reads it from the token store (merged with what this process saw itself, in case the store
lost it), records each tokenP before it goes out and each EGW00133 after, says how long to wait,
and either waits (on the injected clock, never more than :data:`MAX_WAIT`) or raises
:class:`~runtime.errors.IssuanceRateLimitedError` carrying ``retry_after``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta

import attrs

from runtime.auth.ports import ClockPort, IssuanceLedger, TokenStorePort
from runtime.broker.base import BrokerScope
from runtime.errors import (
    BrokerUnavailableError,
    CredentialsRejectedError,
    IssuanceRateLimitedError,
    QTSError,
    TLSVerificationError,
)

__all__ = ["ISSUE_INTERVAL", "ISSUE_MARGIN", "MAX_WAIT", "IssuanceBudget", "WaitHook"]

#: KIS's rule: one tokenP per minute per app key.
ISSUE_INTERVAL = timedelta(seconds=60)
#: Added to the spacing between processes: the ledger holds when a tokenP was *sent*, and one
#: killed in flight may be counted by KIS from its answer, seconds later.
ISSUE_MARGIN = timedelta(seconds=5)
#: The longest the budget ever waits in one ``get``, whatever KIS's retry time says.
MAX_WAIT = timedelta(seconds=65)

_log = logging.getLogger(__name__)

# Enough for the current entries and a few superseded ones.
_ANCHORS_KEPT = 8

#: Called about once a second while waiting with the whole seconds still to wait, 0 at the end.
WaitHook = Callable[[int], None]


class IssuanceBudget:
    """Decides whether tokenP may go out now, and waits for it when allowed to.

    ``min_interval`` is the spacing between two tokenP of one scope (0 disables it, leaving
    only the memory of EGW00133); ``wait`` says whether a block is waited out or raised at
    once; ``on_wait`` lets a CLI show a countdown.
    """

    def __init__(
        self,
        clock: ClockPort,
        *,
        wait: bool = True,
        min_interval: timedelta = ISSUE_INTERVAL,
        max_wait: timedelta = MAX_WAIT,
        on_wait: WaitHook | None = None,
    ) -> None:
        if min_interval < timedelta(0) or max_wait < timedelta(0):
            raise ValueError("min_interval and max_wait must not be negative")
        self._clock = clock
        self.wait_enabled = wait
        self.min_interval = min_interval
        self.max_wait = max_wait
        self._on_wait = on_wait
        # Ledger entries (kind, wall time) -> when they expire on the monotonic clock.
        self._deadlines: dict[tuple[str, datetime], float] = {}
        # What this process saw itself, per scope, in case the store loses its ledger (a corrupt file).
        self._local: dict[BrokerScope, IssuanceLedger] = {}

    # --- the ledger, kept in the token store -------------------------------------------------

    def ledger(self, store: TokenStorePort, scope: BrokerScope) -> IssuanceLedger:
        """The store's ledger for ``scope``; what this process saw itself still counts if the
        store lost it."""
        local = self._local.get(scope, IssuanceLedger())
        shared = store.load_ledger(scope)
        return IssuanceLedger(
            last_issued_at=_latest(shared.last_issued_at, local.last_issued_at),
            blocked_until=_latest(shared.blocked_until, local.blocked_until),
        )

    def tokenp_wait(self, store: TokenStorePort, scope: BrokerScope, now: datetime) -> timedelta:
        """How long from ``now`` until tokenP for ``scope`` may go out (zero: at once)."""
        return self.wait_needed(self.ledger(store, scope), now)

    def start_tokenp(self, store: TokenStorePort, scope: BrokerScope, now: datetime) -> IssuanceLedger:
        """Record that tokenP goes out at ``now``; returns the ledger before, for :meth:`tokenp_failed`.

        Counted before the request: a crash after KIS issued must still hold the next one off."""
        before = self.ledger(store, scope)
        self._save(store, scope, self.issuing(before, now))
        return before

    def tokenp_failed(
        self, store: TokenStorePort, scope: BrokerScope, now: datetime, before: IssuanceLedger, exc: QTSError
    ) -> None:
        """Record how the tokenP started at ``now`` (ledger ``before``) failed."""
        if isinstance(exc, IssuanceRateLimitedError):
            self._save(store, scope, self.rate_limited(before, now, exc.retry_after))
        elif isinstance(exc, CredentialsRejectedError | TLSVerificationError) or (
            isinstance(exc, BrokerUnavailableError) and not exc.request_sent
        ):
            # Refused outright or never sent (connection refused, DNS, a TLS handshake that
            # failed before any byte of the request): no token came of it, so it does not count.
            self._save(store, scope, before)

    def _save(self, store: TokenStorePort, scope: BrokerScope, ledger: IssuanceLedger) -> None:
        self._local[scope] = ledger
        try:
            store.save_ledger(scope, ledger)
        except QTSError as exc:
            # This process still keeps the budget; only other processes lose it.
            _log.warning("could not save the issuance ledger for %s: %s", scope, exc)

    # --- the decision and the wait -------------------------------------------------------------

    def wait_needed(self, ledger: IssuanceLedger, now: datetime) -> timedelta:
        """How long from ``now`` until tokenP may go out (zero: at once).

        The ledger holds wall-clock times (it is shared with other processes), but KIS counts
        real time. So each ledger entry is turned into a deadline on the monotonic clock the
        first time this process sees it (or when it writes it) and never re-read from the wall
        clock afterwards: a wall clock stepped forward cannot let a tokenP out early, and one
        stepped back cannot block for longer than one interval (or :data:`MAX_WAIT` after
        EGW00133). An entry another process wrote is read from the wall clock once, capped."""
        mono = self._clock.monotonic()
        waits = [0.0]
        if ledger.last_issued_at is not None and self.min_interval:
            wall_wait = ledger.last_issued_at + self.min_interval - now
            waits.append(
                self._anchored(("issued", ledger.last_issued_at), wall_wait, self.min_interval, mono)
            )
        if ledger.blocked_until is not None:
            wall_wait = ledger.blocked_until - now
            waits.append(self._anchored(("blocked", ledger.blocked_until), wall_wait, self.max_wait, mono))
        return timedelta(seconds=max(waits))

    def issuing(self, ledger: IssuanceLedger, now: datetime) -> IssuanceLedger:
        """The ledger once tokenP is about to go out at ``now``; an earlier block is over."""
        self._anchor(("issued", now), self.min_interval)
        return attrs.evolve(ledger, last_issued_at=now, blocked_until=None)

    def rate_limited(self, ledger: IssuanceLedger, now: datetime, retry_after: timedelta) -> IssuanceLedger:
        """The ledger after KIS answered EGW00133 at ``now`` asking to wait ``retry_after``."""
        hold = min(max(retry_after, timedelta(0)), self.max_wait)
        self._anchor(("blocked", now + hold), hold)
        return attrs.evolve(ledger, blocked_until=now + hold)

    def _anchor(self, key: tuple[str, datetime], hold: timedelta) -> None:
        if len(self._deadlines) >= _ANCHORS_KEPT:
            self._deadlines.pop(next(iter(self._deadlines)))  # oldest first: dicts keep order
        self._deadlines[key] = self._clock.monotonic() + hold.total_seconds()

    def _anchored(
        self, key: tuple[str, datetime], wall_wait: timedelta, cap: timedelta, mono: float
    ) -> float:
        if key not in self._deadlines:
            self._anchor(key, min(max(wall_wait, timedelta(0)), cap))
        return max(self._deadlines[key] - mono, 0.0)

    def wait(
        self,
        duration: timedelta,
        *,
        time_left_s: float | None,
        already_waited: timedelta = timedelta(0),
        cause: IssuanceRateLimitedError | None = None,
    ) -> None:
        """Let ``duration`` pass on the clock, or raise IssuanceRateLimitedError at once.

        It raises when waiting is off, when ``duration`` does not fit in ``time_left_s`` (the
        caller's deadline; None means no deadline), or when this ``get`` would have waited more
        than :data:`MAX_WAIT` in all."""
        seconds = duration.total_seconds()
        reason = None
        if not self.wait_enabled:
            reason = "waiting is off (QTS_WAIT_ON_RATE_LIMIT=false)"
        elif already_waited + duration > self.max_wait:
            reason = f"it would wait more than {self.max_wait.total_seconds():g} s in all"
        elif time_left_s is not None and seconds >= time_left_s:
            reason = f"the wait does not fit in the {max(time_left_s, 0):.1f} s left before the deadline"
        if reason is not None:
            error = IssuanceRateLimitedError(
                f"KIS answers one tokenP request per minute per app key (one token per minute; a "
                f"rejected request counts too); the next tokenP for this key may go "
                f"out in {math.ceil(seconds)} s and {reason}",
                retry_after=duration,
                code=cause.code if cause is not None else None,
            )
            if cause is not None:
                raise error from cause
            raise error
        self._countdown(seconds)

    def _countdown(self, seconds: float) -> None:
        left = seconds
        while left > 0:
            if self._on_wait is not None:
                self._on_wait(math.ceil(left))
            step = min(1.0, left)
            self._clock.sleep(step)
            left -= step
        if self._on_wait is not None:
            self._on_wait(0)


def _latest(*moments: datetime | None) -> datetime | None:
    return max((m for m in moments if m is not None), default=None)
