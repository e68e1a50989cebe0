"""Runtime-side ports: where tokens are kept, and where time comes from."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from runtime.broker.base import AccessToken, BrokerScope
from runtime.clock import ClockPort

__all__ = ["ClockPort", "IssuanceLockPort", "TokenStorePort"]


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
