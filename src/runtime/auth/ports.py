"""Runtime-side ports: where tokens are kept, and where time comes from."""

from __future__ import annotations

from typing import Protocol

from runtime.broker.base import AccessToken, BrokerScope
from runtime.clock import ClockPort

__all__ = ["ClockPort", "TokenStorePort"]


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
