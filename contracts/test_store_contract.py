"""TokenStorePort contract, run against every store implementation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from runtime.auth.ports import TokenStorePort
from runtime.auth.stores import InMemoryTokenStore
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.errors import ScopeMismatchError
from runtime.masking import fingerprint

STORES: dict[str, Callable[[], TokenStorePort]] = {
    "memory": InMemoryTokenStore,
}

VTS = BrokerScope(Mode.VTS, fingerprint("PSvts-key-one"))
REAL = BrokerScope(Mode.REAL, fingerprint("PSreal-key-one"))
VTS_OTHER_KEY = BrokerScope(Mode.VTS, fingerprint("PSvts-key-two"))
T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def token(scope: BrokerScope, n: int = 1) -> AccessToken:
    return AccessToken(
        value=f"token-{scope.mode.value}-{scope.key_fingerprint}-{n:04d}-abcdefgh",
        token_type="Bearer",
        expires_at=T0 + timedelta(hours=24),
        issued_at=T0,
        scope=scope,
    )


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> TokenStorePort:
    return STORES[request.param]()


def test_an_empty_store_loads_nothing(store: TokenStorePort) -> None:
    assert store.load(VTS) is None


def test_a_saved_token_loads_back_equal(store: TokenStorePort) -> None:
    saved = token(VTS)
    store.save(VTS, saved)
    loaded = store.load(VTS)
    assert loaded == saved
    assert loaded is not None
    assert loaded.value == saved.value


def test_saving_again_replaces_the_token(store: TokenStorePort) -> None:
    store.save(VTS, token(VTS, 1))
    store.save(VTS, token(VTS, 2))
    assert store.load(VTS) == token(VTS, 2)


def test_scopes_are_isolated_by_mode_and_key(store: TokenStorePort) -> None:
    store.save(VTS, token(VTS))
    assert store.load(REAL) is None
    assert store.load(VTS_OTHER_KEY) is None
    store.save(REAL, token(REAL))
    assert store.load(VTS) == token(VTS)
    assert store.load(REAL) == token(REAL)


def test_a_token_is_never_filed_under_another_scope(store: TokenStorePort) -> None:
    with pytest.raises(ScopeMismatchError):
        store.save(REAL, token(VTS))
    assert store.load(REAL) is None


def test_delete_forgets_only_that_scope_and_is_idempotent(store: TokenStorePort) -> None:
    store.save(VTS, token(VTS))
    store.save(REAL, token(REAL))
    store.delete(VTS)
    store.delete(VTS)
    assert store.load(VTS) is None
    assert store.load(REAL) == token(REAL)
