"""Runtime-side ports: where tokens are kept, how calls share a key's budget, and where time comes from."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

import attrs

from runtime.broker.base import AccessToken, ApprovalKey, BrokerScope
from runtime.clock import ClockPort
from runtime.deadline import Deadline

__all__ = [
    "Booking",
    "BudgetUsage",
    "CallBudgetPort",
    "ClockPort",
    "IssuanceLedger",
    "LeaseHolder",
    "StreamLease",
    "TokenStorePort",
]


def _aware_or_none(_instance: object, attribute: attrs.Attribute[datetime | None], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must be a timezone-aware datetime or None")


def _aware(_instance: object, attribute: attrs.Attribute[datetime], value: object) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must be a timezone-aware datetime")


@attrs.frozen
class IssuanceLedger:
    """What the issuance budget remembers per scope: when tokenP last went out from this host,
    and until when KIS asked us to hold off (EGW00133). Holds no token and no credential."""

    last_issued_at: datetime | None = attrs.field(default=None, validator=_aware_or_none)
    blocked_until: datetime | None = attrs.field(default=None, validator=_aware_or_none)


@attrs.frozen
class LeaseHolder:
    """Who holds a scope's one WebSocket session: shown to a second process that asks for it."""

    host: str
    pid: int
    since: datetime = attrs.field(validator=_aware)

    def __str__(self) -> str:
        return f"{self.host} (pid {self.pid})"


class StreamLease(Protocol):
    """A held right to open the scope's one WebSocket session (KIS allows one per app key).

    It ends with :meth:`release` or with the holder's death (a file lock dies with its process;
    a Redis lease expires within its TTL once no thread renews it)."""

    @property
    def holder(self) -> LeaseHolder:
        """Who holds it (this process)."""
        ...

    @property
    def lost(self) -> bool:
        """True once the lease can no longer be vouched for (Redis renewal failed): the session
        must then close, as another process may already hold the lease."""
        ...

    def release(self) -> None:
        """Give the lease up; safe to call twice."""
        ...


class TokenStorePort(Protocol):
    """Where tokens and issuance ledgers are kept: one port over every store technology.

    Holds tokens only, never credentials, at most one token per scope. A store never returns a
    token of another scope than the one asked for; an unreadable or corrupt entry is a miss
    (``None``), not an error. Callers never ask which technology they hold: what differs between
    stores is said by :attr:`shared` and by the lock being a no-op where it means nothing.
    """

    @property
    def shared(self) -> bool:
        """True when other processes (file) or hosts (Redis) see the same entries, so that the
        issuance lock and ledger coordinate them; False for a store inside one process."""
        ...

    def load(self, scope: BrokerScope) -> AccessToken | None:
        """The token saved for ``scope``, or None. Raises TokenStoreError only when the
        store itself is unreachable (never for a missing or corrupt entry)."""
        ...

    def save(self, scope: BrokerScope, token: AccessToken) -> None:
        """Keep ``token`` as the one for ``scope``, replacing any other.

        Raises ScopeMismatchError when ``token.scope`` is not ``scope``; TokenStoreError
        when it cannot be written (the previous entry is then left intact)."""
        ...

    def delete(self, scope: BrokerScope) -> None:
        """Forget the token for ``scope``; deleting nothing is fine. Raises TokenStoreError."""
        ...

    def issuance_lock(self, scope: BrokerScope, timeout_s: float) -> AbstractContextManager[None]:
        """Hold the scope's exclusive lock for the ``with`` block, so that re-read -> re-check ->
        issue -> write runs in one process at a time (a no-op for a store that is not shared).
        Raises TokenStoreError when it cannot be had within ``timeout_s``."""
        ...

    def load_ledger(self, scope: BrokerScope) -> IssuanceLedger:
        """The scope's :class:`IssuanceLedger`; an empty one when nothing (or nothing readable)
        is kept. Raises TokenStoreError only when the store itself is unreachable."""
        ...

    def save_ledger(self, scope: BrokerScope, ledger: IssuanceLedger) -> None:
        """Keep ``ledger`` for ``scope``, leaving its token alone. Raises TokenStoreError."""
        ...

    def tokens(self) -> list[AccessToken]:
        """Every readable token in the store, ordered by scope (``qts status``).
        Raises TokenStoreError."""
        ...

    def load_approval(self, scope: BrokerScope) -> ApprovalKey | None:
        """The WebSocket approval key saved for ``scope`` (its own entry, beside the token), or
        None; a corrupt entry is a miss. Raises TokenStoreError only when the store is unreachable."""
        ...

    def save_approval(self, scope: BrokerScope, key: ApprovalKey) -> None:
        """Keep ``key`` as the approval key of ``scope``. Raises ScopeMismatchError for a key of
        another scope, TokenStoreError when it cannot be written."""
        ...

    def delete_approval(self, scope: BrokerScope) -> None:
        """Forget the approval key of ``scope``; deleting nothing is fine. Raises TokenStoreError."""
        ...

    def acquire_stream_lease(self, scope: BrokerScope, holder: LeaseHolder) -> StreamLease:
        """Take the scope's one-WebSocket-session lease for ``holder`` without waiting.

        Raises StreamSessionHeldError naming the current holder when another process (file),
        host (Redis) or, in memory, another session of this process holds it; TokenStoreError
        when the store is unreachable."""
        ...


@attrs.frozen
class BudgetUsage:
    """One key's call budget as ``qts status`` shows it (every process on the key together)."""

    #: The key's limit the last booking was made under (``QTS_MAX_RPS`` or the mode's default).
    limit_per_s: float
    #: Calls that started within the last second.
    used_last_s: int
    #: Calls booked that have not started yet (waiting in some process for their slot).
    queue: int
    #: Seconds until the first free slot: how long a call asking now would wait.
    queue_s: float
    #: True while the budget runs slower after KIS answered EGW00201.
    slowed: bool = False


@attrs.frozen
class Booking:
    """A slot booked from a key's call budget: ``slot`` on the budget's clock, after ``wait_s``."""

    wait_s: float
    slot: float


class CallBudgetPort(Protocol):
    """The per-key call budget shared by every runtime on the key (KIS counts per app key).

    ``shared`` says who shares it: this process only (in-process), every process of the user on
    this host (file) or every host on one Redis server. Slots are booked first come, first served.
    """

    @property
    def shared(self) -> bool:
        """True when other processes or hosts book from the same budget."""
        ...

    def acquire(self, scope: BrokerScope, deadline: Deadline) -> Booking:
        """Book the next free slot of ``scope``'s budget and sleep until it.

        Raises CallBudgetExhaustedError at once, booking nothing, when that slot does not start
        before ``deadline`` (with a little time left for the call itself)."""
        ...

    def release(self, scope: BrokerScope, booking: Booking) -> None:
        """The call sent in ``booking``'s slot has its answer (or failed): KIS has counted it by
        now, which lets the budget space later calls by when KIS saw this one. Never raises."""
        ...

    def rate_limited(self, scope: BrokerScope, retry_after_s: float) -> None:
        """KIS answered EGW00201 on ``scope``: hold every runtime on the key back for
        ``retry_after_s`` and slow the budget for a while. Never raises."""
        ...

    def usage(self, scope: BrokerScope) -> BudgetUsage | None:
        """The budget's current use for ``scope``; None when nothing was ever booked.
        Raises TokenStoreError when the shared state cannot be read."""
        ...
