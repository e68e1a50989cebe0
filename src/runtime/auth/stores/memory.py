"""InMemoryTokenStore: tokens and ledgers in a dict, for one process (tests, notebooks)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from runtime.auth.ports import IssuanceLedger, LeaseHolder
from runtime.auth.stores.document import check_approval_scope, check_scope, session_held_error
from runtime.broker.base import AccessToken, ApprovalKey, BrokerScope

__all__ = ["InMemoryTokenStore"]


class InMemoryTokenStore:
    """Tokens (and issuance ledgers) in a dict, safe across threads; gone when the process ends."""

    def __init__(self) -> None:
        self._tokens: dict[BrokerScope, AccessToken] = {}
        self._ledgers: dict[BrokerScope, IssuanceLedger] = {}
        self._approvals: dict[BrokerScope, ApprovalKey] = {}
        self._leases: dict[BrokerScope, LeaseHolder] = {}
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

    def load_approval(self, scope: BrokerScope) -> ApprovalKey | None:
        with self._lock:
            return self._approvals.get(scope)

    def save_approval(self, scope: BrokerScope, key: ApprovalKey) -> None:
        check_approval_scope(scope, key)
        with self._lock:
            self._approvals[scope] = key

    def delete_approval(self, scope: BrokerScope) -> None:
        with self._lock:
            self._approvals.pop(scope, None)

    def acquire_stream_lease(self, scope: BrokerScope, holder: LeaseHolder) -> _MemoryLease:
        """Within this process only: a second session on the same store is refused."""
        with self._lock:
            current = self._leases.get(scope)
            if current is not None:
                raise session_held_error(scope, current)
            self._leases[scope] = holder
        return _MemoryLease(self, scope, holder)

    def _release(self, scope: BrokerScope, holder: LeaseHolder) -> None:
        with self._lock:
            if self._leases.get(scope) is holder:
                del self._leases[scope]


class _MemoryLease:
    """A lease in an InMemoryTokenStore; never lost while the process lives."""

    def __init__(self, store: InMemoryTokenStore, scope: BrokerScope, holder: LeaseHolder) -> None:
        self._store, self._scope, self._holder = store, scope, holder

    @property
    def holder(self) -> LeaseHolder:
        return self._holder

    @property
    def lost(self) -> bool:
        return False

    def release(self) -> None:
        self._store._release(self._scope, self._holder)
