"""InMemoryTokenStore: tokens and ledgers in a dict, for one process (tests, notebooks)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from runtime.auth.ports import IssuanceLedger
from runtime.auth.stores.document import check_scope
from runtime.broker.base import AccessToken, BrokerScope

__all__ = ["InMemoryTokenStore"]


class InMemoryTokenStore:
    """Tokens (and issuance ledgers) in a dict, safe across threads; gone when the process ends."""

    def __init__(self) -> None:
        self._tokens: dict[BrokerScope, AccessToken] = {}
        self._ledgers: dict[BrokerScope, IssuanceLedger] = {}
        self._lock = threading.Lock()

    @property
    def shared(self) -> bool:
        """Never: the dict lives and dies with this process."""
        return False

    @contextlib.contextmanager
    def issuance_lock(self, scope: BrokerScope, timeout_s: float) -> Iterator[None]:
        """A no-op: one process has no one to coordinate with (the cache has its own lock)."""
        yield

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
