"""Runtime-side ports: where tokens are kept, and where time comes from."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from runtime.broker.base import AccessToken, BrokerScope
from runtime.clock import ClockPort

__all__ = [
    "ClockPort",
    "IssuanceLedger",
    "IssuanceLedgerPort",
    "IssuanceLockPort",
    "TokenListingPort",
    "TokenStorePort",
]


def _aware_or_none(_instance: object, attribute: attrs.Attribute[datetime | None], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must be a timezone-aware datetime or None")


@attrs.frozen
class IssuanceLedger:
    """What the issuance budget remembers per scope: when tokenP last went out from this host,
    and until when KIS asked us to hold off (EGW00133). Holds no token and no credential."""

    last_issued_at: datetime | None = attrs.field(default=None, validator=_aware_or_none)
    blocked_until: datetime | None = attrs.field(default=None, validator=_aware_or_none)


class TokenStorePort(Protocol):
    """Keeps at most one token per scope. Holds tokens only, never credentials.

    A store never returns a token of another scope than the one asked for; an unreadable
    or corrupt entry is a miss (``None``), not an error.
    """

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


@runtime_checkable
class IssuanceLockPort(Protocol):
    """A store shared between processes also offers one exclusive lock per scope, so that the
    whole re-read -> re-check -> issue -> write sequence runs in one process at a time."""

    def issuance_lock(self, scope: BrokerScope, timeout_s: float) -> AbstractContextManager[None]:
        """Hold the scope's lock for the ``with`` block. Raises TokenStoreError when it cannot
        be had within ``timeout_s`` (another process is stuck issuing)."""
        ...


@runtime_checkable
class IssuanceLedgerPort(Protocol):
    """A store that also keeps each scope's :class:`IssuanceLedger`, so the issuance budget
    survives restarts and is shared by every process using the store."""

    def load_ledger(self, scope: BrokerScope) -> IssuanceLedger:
        """The scope's ledger; an empty one when nothing (or nothing readable) is kept.
        Raises TokenStoreError only when the store itself is unreachable."""
        ...

    def save_ledger(self, scope: BrokerScope, ledger: IssuanceLedger) -> None:
        """Keep ``ledger`` for ``scope``, leaving its token alone. Raises TokenStoreError."""
        ...


@runtime_checkable
class TokenListingPort(Protocol):
    """A store that can list what it holds (for ``qts status``)."""

    def tokens(self) -> list[AccessToken]:
        """Every readable token in the store, ordered by scope. Raises TokenStoreError."""
        ...
