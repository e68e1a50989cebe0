"""Regression tests for what the 30-day soak (benchmarks/soak.py) found in the runtime.

Each test replays, deterministically and in isolation, one interleaving the soak ran into.
"""

from __future__ import annotations

import threading
from pathlib import Path

from runtime.auth.stores.file import FileTokenStore
from runtime.auth.token_cache import TokenCache
from runtime.broker.base import AccessToken, BrokerScope
from runtime.clock import FakeClock
from tests.support.fakes import FakeBroker

JOIN_S = 1.0


class PausingStore(FileTokenStore):
    """A file store that runs ``after_load`` once, right after its next ``load`` returns."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.after_load: list[threading.Thread] = []

    def load(self, scope: BrokerScope) -> AccessToken | None:
        token = super().load(scope)
        if self.after_load:
            other = self.after_load.pop()
            other.start()
            other.join(JOIN_S)  # with the store lock held, the other process cannot finish
        return token


def test_invalidate_never_deletes_the_fresh_token_another_process_saved_meanwhile(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Soak finding 1: after KIS maintenance every worker gets EGW00121 for the same token.

    Process B loaded the rejected token from the store; before B deleted it, process A
    invalidated it too, issued a fresh one and saved it; B's delete then removed A's fresh
    token, so every other worker found an empty store and a tokenP budget that forbade a new
    issuance (IssuanceRateLimitedError to callers, and one more tokenP a minute later).
    """
    broker = FakeBroker(clock)
    folder = tmp_path / "tokens"
    process_a = TokenCache(broker, FileTokenStore(folder), clock)
    process_b = TokenCache(broker, PausingStore(folder), clock)
    old = process_a.get()
    assert process_b.get() == old
    broker.void()  # maintenance: KIS rejects ``old`` from now on

    fresh: list[AccessToken] = []

    def a_recovers() -> None:
        process_a.invalidate(old)
        fresh.append(process_a.get())

    store_b = process_b._store
    assert isinstance(store_b, PausingStore)
    other = threading.Thread(target=a_recovers)
    store_b.after_load.append(other)
    process_b.invalidate(old)
    other.join(10)

    assert fresh, "process A did not recover"
    assert fresh[0] != old
    assert FileTokenStore(folder).load(broker.scope) == fresh[0]
    assert process_b.get() == fresh[0]
    assert broker.issue_calls == 2
