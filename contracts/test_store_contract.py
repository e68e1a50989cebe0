"""TokenStorePort contract, run against every store implementation."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from contracts.support import redis_server
from runtime.auth.ports import (
    IssuanceLedger,
    LeaseHolder,
    TokenStorePort,
)
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.broker.base import AccessToken, ApprovalKey, BrokerScope, Mode
from runtime.clock import FakeClock
from runtime.errors import ScopeMismatchError, StreamSessionHeldError
from runtime.masking import fingerprint


def _file_store(request: pytest.FixtureRequest) -> TokenStorePort:
    return FileTokenStore(request.getfixturevalue("tmp_path") / "qts")


def _redis_store(request: pytest.FixtureRequest) -> TokenStorePort:
    from runtime.auth.stores.redis import RedisTokenStore

    url = request.getfixturevalue("redis_url")
    # A clock at T0 so the tokens below have their whole life left as the key's TTL.
    return RedisTokenStore.from_url(url, FakeClock(T0), prefix=f"contract-{uuid.uuid4().hex}")


#: Every store, built for one test (the request gives it a folder or a server).
STORES: dict[str, Callable[[pytest.FixtureRequest], TokenStorePort]] = {
    "memory": lambda _request: InMemoryTokenStore(),
    "file": _file_store,
    "redis": _redis_store,
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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> TokenStorePort:
    return STORES[request.param](request)


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


def test_every_store_lists_what_it_holds(store: TokenStorePort) -> None:
    assert store.tokens() == []
    store.save(REAL, token(REAL))
    store.save(VTS, token(VTS))
    assert store.tokens() == sorted([token(VTS), token(REAL)], key=lambda t: t.scope)


def test_the_issuance_ledger_round_trips_per_scope_and_leaves_the_token_alone(store: TokenStorePort) -> None:
    assert store.load_ledger(VTS) == IssuanceLedger()
    store.save(VTS, token(VTS))
    ledger = IssuanceLedger(last_issued_at=T0, blocked_until=T0 + timedelta(seconds=61))
    store.save_ledger(VTS, ledger)
    assert store.load_ledger(VTS) == ledger
    assert store.load_ledger(REAL) == IssuanceLedger()
    assert store.load(VTS) == token(VTS)
    store.delete(VTS)
    assert store.load_ledger(VTS) == ledger  # the budget outlives the token


def test_every_store_says_whether_it_is_shared_and_offers_a_per_scope_issuance_lock(
    request: pytest.FixtureRequest,
) -> None:
    for name, build in STORES.items():
        built = build(request)
        assert built.shared is (name != "memory")  # one process: the lock is a no-op
        with built.issuance_lock(VTS, 1.0), built.issuance_lock(REAL, 1.0):
            built.save(VTS, token(VTS))  # a save inside the lock does not wait for it
        assert built.load(VTS) == token(VTS)


# --- the WebSocket approval key and the one-session stream lease ------------------------------


def approval(scope: BrokerScope, n: int = 1) -> ApprovalKey:
    return ApprovalKey(value=f"approval-{scope.mode.value}-{n:04d}-0000-0000", scope=scope, issued_at=T0)


def holder(pid: int = 4242) -> LeaseHolder:
    return LeaseHolder(host="host-a", pid=pid, since=T0)


def test_an_approval_key_has_its_own_entry_per_scope_beside_the_token(store: TokenStorePort) -> None:
    assert store.load_approval(VTS) is None
    store.save(VTS, token(VTS))
    store.save_approval(VTS, approval(VTS))
    assert store.load_approval(VTS) == approval(VTS)
    assert store.load_approval(REAL) is None
    assert store.load_approval(VTS_OTHER_KEY) is None
    assert store.load(VTS) == token(VTS)  # the token is untouched
    store.save_approval(VTS, approval(VTS, 2))
    assert store.load_approval(VTS) == approval(VTS, 2)
    store.delete_approval(VTS)
    store.delete_approval(VTS)  # idempotent
    assert store.load_approval(VTS) is None
    assert store.load(VTS) == token(VTS)
    assert store.tokens() == [token(VTS)]  # approval keys are not tokens


def test_an_approval_key_is_never_filed_under_another_scope(store: TokenStorePort) -> None:
    with pytest.raises(ScopeMismatchError):
        store.save_approval(REAL, approval(VTS))
    assert store.load_approval(REAL) is None


def test_the_stream_lease_is_exclusive_per_scope_and_names_its_holder(store: TokenStorePort) -> None:
    lease = store.acquire_stream_lease(VTS, holder(1))
    assert lease.holder == holder(1)
    assert not lease.lost
    with pytest.raises(StreamSessionHeldError, match=r"held by host-a \(pid 1\)") as refused:
        store.acquire_stream_lease(VTS, holder(2))
    assert (refused.value.holder_host, refused.value.holder_pid) == ("host-a", 1)
    assert refused.value.exit_code == 7
    other = store.acquire_stream_lease(REAL, holder(3))  # another scope is another session
    lease.release()
    lease.release()  # twice is fine
    again = store.acquire_stream_lease(VTS, holder(2))
    assert again.holder.pid == 2
    again.release()
    other.release()
