"""Token stores that live inside one process."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from runtime.auth.ports import IssuanceLedger, TokenStorePort
from runtime.broker.base import AccessToken, BrokerScope
from runtime.errors import ScopeMismatchError

__all__ = ["InMemoryTokenStore", "check_scope", "load_all"]


def check_scope(scope: BrokerScope, token: AccessToken) -> None:
    """Refuse to file a token under another scope than its own (REAL and VTS never mix)."""
    if token.scope != scope:
        raise ScopeMismatchError(f"a token of {token.scope} cannot be stored for {scope}")


def load_all(store: TokenStorePort, scopes: Iterable[BrokerScope]) -> list[AccessToken]:
    """Every readable token among ``scopes``, ordered by scope (``qts status``)."""
    found = [token for token in map(store.load, scopes) if token is not None]
    return sorted(found, key=lambda token: token.scope)


class InMemoryTokenStore:
    """Tokens (and issuance ledgers) in a dict, safe across threads; gone when the process ends."""

    def __init__(self) -> None:
        self._tokens: dict[BrokerScope, AccessToken] = {}
        self._ledgers: dict[BrokerScope, IssuanceLedger] = {}
        self._lock = threading.Lock()

    def load(self, scope: BrokerScope) -> AccessToken | None:
        with self._lock:
            return self._tokens.get(scope)

    def save(self, scope: BrokerScope, token: AccessToken) -> None:
        check_scope(scope, token)
        with self._lock:
            self._tokens[scope] = token

    def delete(self, scope: BrokerScope) -> None:
        with self._lock:
            self._tokens.pop(scope, None)

    def load_ledger(self, scope: BrokerScope) -> IssuanceLedger:
        with self._lock:
            return self._ledgers.get(scope, IssuanceLedger())

    def save_ledger(self, scope: BrokerScope, ledger: IssuanceLedger) -> None:
        with self._lock:
            self._ledgers[scope] = ledger

    def tokens(self) -> list[AccessToken]:
        """Every saved token, ordered by scope (for ``qts status``)."""
        with self._lock:
            return [self._tokens[scope] for scope in sorted(self._tokens)]
