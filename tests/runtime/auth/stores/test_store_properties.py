"""Properties of every store: a state machine over save / load / delete / corrupt / expire, and
mode isolation over random mode and key switches in one shared store folder."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from runtime.auth.budget import IssuanceBudget
from runtime.auth.ports import TokenStorePort
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.clock import FakeClock
from tests.support.fakes import FakeBroker

KEYS = ("PSkey-one-000000000000000000000000001", "PSkey-two-000000000000000000000000002")
MARGIN = timedelta(minutes=10)
MACHINE_SETTINGS = settings(
    max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class StoreMachine(RuleBasedStateMachine):
    """The store must behave like a dict per scope: a corrupt entry is a miss, never an error,
    and a cache over it never hands out an expired token or one of another scope."""

    corruptible: ClassVar[bool] = True
    scopes = Bundle("scopes")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = self.make_store()
        self.model: dict[BrokerScope, AccessToken] = {}
        self.brokers = {
            (mode, key): FakeBroker(self.clock, mode=mode, app_key=key) for mode in Mode for key in KEYS
        }
        self.serial = 0

    def make_store(self) -> TokenStorePort:
        raise NotImplementedError

    def corrupt_entry(self, scope: BrokerScope) -> None:
        raise NotImplementedError

    @rule(target=scopes, mode=st.sampled_from(Mode), key=st.sampled_from(KEYS))
    def pick_scope(self, mode: Mode, key: str) -> tuple[Mode, str]:
        return (mode, key)

    @rule(pick=scopes)
    def save(self, pick: tuple[Mode, str]) -> None:
        scope = self.brokers[pick].scope
        self.serial += 1
        token = AccessToken(
            f"saved-{self.serial:06d}-{'y' * 24}",
            "Bearer",
            self.clock.now() + timedelta(hours=24),
            self.clock.now(),
            scope,
        )
        self.store.save(scope, token)
        self.model[scope] = token

    @rule(pick=scopes)
    def delete(self, pick: tuple[Mode, str]) -> None:
        scope = self.brokers[pick].scope
        self.store.delete(scope)
        self.model.pop(scope, None)

    @precondition(lambda self: self.corruptible)
    @rule(pick=scopes)
    def corrupt(self, pick: tuple[Mode, str]) -> None:
        scope = self.brokers[pick].scope
        self.corrupt_entry(scope)
        self.model.pop(scope, None)

    @rule(hours=st.integers(min_value=1, max_value=30))
    def expire(self, hours: int) -> None:
        self.clock.advance(hours * 3600)

    @rule(pick=scopes)
    def get_through_a_new_cache(self, pick: tuple[Mode, str]) -> None:
        broker = self.brokers[pick]
        before = broker.issue_calls
        cache = TokenCache(broker, self.store, self.clock, margin=MARGIN, budget=IssuanceBudget(self.clock))
        held = self.model.get(broker.scope)
        token = cache.get()
        assert token.scope == broker.scope
        assert token.expires_at - self.clock.now() >= MARGIN
        if held is not None and held.expires_at - self.clock.now() > MARGIN:
            assert token == held
            assert broker.issue_calls == before
        else:
            assert broker.issue_calls == before + 1
        self.model[broker.scope] = token

    @invariant()
    def every_scope_loads_what_the_model_says(self) -> None:
        for broker in self.brokers.values():
            assert self.store.load(broker.scope) == self.model.get(broker.scope)


class MemoryMachine(StoreMachine):
    corruptible = False

    def make_store(self) -> TokenStorePort:
        return InMemoryTokenStore()


class FileMachine(StoreMachine):
    def make_store(self) -> TokenStorePort:
        self.folder = Path(tempfile.mkdtemp(prefix="qts-store-machine-"))
        self.file_store = FileTokenStore(self.folder / "qts")
        return self.file_store

    def corrupt_entry(self, scope: BrokerScope) -> None:
        path = self.file_store.path_for(scope)
        if path.exists():
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])

    def teardown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisMachine(StoreMachine):
    url: ClassVar[str] = ""

    def make_store(self) -> TokenStorePort:
        import redis

        from runtime.auth.stores.redis import RedisTokenStore

        self.prefix = f"machine-{uuid.uuid4().hex}"
        self.client = redis.Redis.from_url(self.url)
        return RedisTokenStore(self.client, self.clock, prefix=self.prefix)

    def corrupt_entry(self, scope: BrokerScope) -> None:
        key = f"{self.prefix}:token:{scope.mode.value}:{scope.key_fingerprint}"
        if self.client.exists(key):
            self.client.set(key, b'{"schema": 1, "scope": {"mode": "REAL"')

    def teardown(self) -> None:
        for key in self.client.scan_iter(match=f"{self.prefix}:*"):
            self.client.delete(key)
        self.client.close()


def run_machine(machine: type[StoreMachine]) -> None:
    # Older hypothesis releases leave run_state_machine_as_test unannotated, newer ones do not:
    # an Any-typed alias type-checks with both.
    runner: Any = run_state_machine_as_test
    runner(machine, settings=MACHINE_SETTINGS)


def test_the_memory_store_behaves_like_a_dict_per_scope() -> None:
    run_machine(MemoryMachine)


def test_the_file_store_behaves_like_a_dict_per_scope() -> None:
    run_machine(FileMachine)


def test_the_redis_store_behaves_like_a_dict_per_scope(redis_url: str) -> None:
    RedisMachine.url = redis_url
    run_machine(RedisMachine)


# --- mode isolation end to end -----------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    switches=st.lists(
        st.tuples(st.sampled_from(Mode), st.sampled_from(KEYS), st.integers(min_value=0, max_value=3600)),
        min_size=1,
        max_size=12,
    )
)
def test_random_mode_and_key_switches_never_load_a_token_of_another_scope(
    tmp_path_factory: pytest.TempPathFactory, switches: list[tuple[Mode, str, int]]
) -> None:
    """Each switch is a process start on one shared folder: the token is always its own scope's,
    and each (mode, key) costs exactly one tokenP."""
    folder = tmp_path_factory.mktemp("shared") / "qts"
    clock = FakeClock()
    brokers = {(mode, key): FakeBroker(clock, mode=mode, app_key=key) for mode in Mode for key in KEYS}
    for mode, key, pause_s in switches:
        clock.advance(pause_s)
        broker = brokers[(mode, key)]
        cache = TokenCache(
            broker, FileTokenStore(folder), clock, margin=MARGIN, budget=IssuanceBudget(clock, wait=False)
        )
        token = cache.get()
        assert token.scope == broker.scope
        assert token in broker.issued
    for (mode, key), broker in brokers.items():
        used = any((m, k) == (mode, key) for m, k, _ in switches)
        assert broker.issue_calls == (1 if used else 0)
    for token in FileTokenStore(folder).tokens():
        assert token in brokers[next(k for k, b in brokers.items() if b.scope == token.scope)].issued
