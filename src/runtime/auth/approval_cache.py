"""ApprovalKeyCache: the WebSocket approval key, cached exactly like the access token.

Memory, then the shared store (its own entry per scope), then ``/oauth2/Approval`` — under the
store's issuance lock, so N processes starting together send one Approval. KIS documents a 24 h
life but answers no expiry: the key's ``issued_at`` is recorded and it is renewed once
``issued_at + 24 h - margin`` has passed (the same margin as the token's). A key KIS rejects
(OPSP0011) is invalidated here and in the store; the session then asks once for a new one.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
from collections import deque
from datetime import datetime, timedelta

from runtime.auth.ports import ClockPort, TokenStorePort
from runtime.broker.base import ApprovalKey, BrokerAuthPort, BrokerScope
from runtime.deadline import Deadline
from runtime.errors import BrokerUnavailableError, QTSError, ScopeMismatchError, TokenStoreError

__all__ = ["APPROVAL_LIFETIME", "ApprovalKeyCache", "ApprovalSource", "ApprovalState", "approval_state"]

_log = logging.getLogger(__name__)

#: KIS_API.md §7: "접속키의 유효기간은 24시간".
APPROVAL_LIFETIME = timedelta(hours=24)
# A key stamped this far in the future comes from a host whose clock runs ahead: still usable.
_CLOCK_SKEW = timedelta(minutes=5)
_REJECTED_REMEMBERED = 16


class ApprovalSource:
    """Where the last key handed out came from (``qts approval`` shows it)."""

    MEMORY = "memory"
    STORE = "store"
    ISSUED = "issued"


class ApprovalState(enum.Enum):
    """FRESH: use it. STALE: renew it (too old, or stamped implausibly far ahead)."""

    FRESH = "fresh"
    STALE = "stale"


def approval_state(
    key: ApprovalKey, now: datetime, *, margin: timedelta, lifetime: timedelta = APPROVAL_LIFETIME
) -> ApprovalState:
    """Pure rule: fresh while ``issued_at - skew <= now < issued_at + lifetime - margin``."""
    if key.issued_at - _CLOCK_SKEW <= now < key.issued_at + lifetime - margin:
        return ApprovalState.FRESH
    return ApprovalState.STALE


class ApprovalKeyCache:
    """Hands out a fresh approval key for one scope: memory, then store, then the broker."""

    def __init__(
        self,
        broker: BrokerAuthPort,
        store: TokenStorePort,
        clock: ClockPort,
        *,
        margin: timedelta = timedelta(seconds=600),
        lifetime: timedelta = APPROVAL_LIFETIME,
        deadline_s: float = 20.0,
    ) -> None:
        if margin < timedelta(0) or margin >= lifetime:
            raise ValueError("margin must be at least 0 and shorter than the lifetime")
        self._broker = broker
        self._store = store
        self._clock = clock
        self._margin = margin
        self._lifetime = lifetime
        self._deadline_s = deadline_s
        self._scope = broker.scope
        self._key: ApprovalKey | None = None
        self._lock = threading.Lock()
        self._rejected: deque[bytes] = deque(maxlen=_REJECTED_REMEMBERED)
        self.issued_count = 0
        self.last_source: str | None = None

    @property
    def scope(self) -> BrokerScope:
        """The one scope this cache serves."""
        return self._scope

    def peek(self) -> ApprovalKey | None:
        """The key held in memory, whatever its state, without any I/O."""
        return self._key

    def renew_at(self, key: ApprovalKey) -> datetime:
        """When ``key`` stops being handed out."""
        return key.issued_at + self._lifetime - self._margin

    def get(self, *, deadline: Deadline | None = None) -> ApprovalKey:
        """A fresh approval key. Raises what the broker's ``issue_approval_key`` raises, and
        BrokerUnavailableError when another thread's issuance outlasts ``deadline``."""
        deadline = deadline or Deadline.after(self._clock, self._deadline_s)
        key = self._key
        if key is not None and self._fresh(key):
            self.last_source = ApprovalSource.MEMORY
            return key
        if not self._lock.acquire(timeout=deadline.remaining()):
            raise BrokerUnavailableError("timed out waiting for an approval key issuance in progress")
        try:
            key = self._key
            if key is not None and self._fresh(key):
                self.last_source = ApprovalSource.MEMORY
                return key
            with self._store.issuance_lock(self._scope, deadline.remaining()):
                return self._get_locked(deadline)
        finally:
            self._lock.release()

    def invalidate(self, key: ApprovalKey) -> None:
        """KIS rejected ``key`` (OPSP0011): forget it here and in the store if the store has it."""
        with self._lock:
            self._rejected.append(_digest(key.value))
            if self._key is not None and self._key.value == key.value:
                self._key = None
            try:
                # Compare and delete under the issuance lock: another process may have saved a
                # fresh key meanwhile, and that one must survive.
                with self._store.issuance_lock(self._scope, self._deadline_s):
                    stored = self._store.load_approval(self._scope)
                    if stored is not None and stored.value == key.value:
                        self._store.delete_approval(self._scope)
            except TokenStoreError as exc:
                _log.warning("could not drop rejected approval key %s from the store: %s", key.masked, exc)
        _log.info("approval key %s invalidated for %s", key.masked, self._scope)

    def _get_locked(self, deadline: Deadline) -> ApprovalKey:
        stored = self._store.load_approval(self._scope)
        if stored is not None and stored.scope == self._scope and self._fresh(stored):
            self._key = stored
            self.last_source = ApprovalSource.STORE
            return stored
        issued = self._broker.issue_approval_key(deadline=deadline)
        if issued.scope != self._scope:
            raise ScopeMismatchError(f"the broker issued an approval key of {issued.scope} for {self._scope}")
        self.issued_count += 1
        try:
            self._store.save_approval(self._scope, issued)
        except QTSError as exc:
            # The key is good; losing the store costs one more Approval in the next process.
            _log.warning("could not save approval key %s to the store: %s", issued.masked, exc)
        self._key = issued
        self.last_source = ApprovalSource.ISSUED
        _log.info("approval key %s issued for %s", issued.masked, self._scope)
        return issued

    def _fresh(self, key: ApprovalKey) -> bool:
        if _digest(key.value) in self._rejected:
            return False
        state = approval_state(key, self._clock.now(), margin=self._margin, lifetime=self._lifetime)
        return state is ApprovalState.FRESH


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()
