"""The composition root (runtime.bootstrap): build_runtime checks the broker's scope and wires the
injected store and clock; build_store builds the store each kind names; importing reads no environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.stores.redis import RedisTokenStore
from runtime.bootstrap import build_runtime, build_store
from runtime.broker.base import Mode
from runtime.clock import FakeClock
from runtime.errors import ConfigError, ScopeMismatchError
from runtime.settings import StoreKind, TokenStoreSpec
from tests.support.fakes import FakeBroker
from tests.support.kis import REAL_KEY, VTS_KEY, settings_for

# --- the composition root --------------------------------------------------------------------


def test_build_runtime_refuses_a_broker_of_another_app_key(clock: FakeClock) -> None:
    settings = settings_for(Mode.VTS.official_base_url)

    with pytest.raises(ScopeMismatchError):
        build_runtime(settings, clock=clock, store=InMemoryTokenStore(), broker=FakeBroker(clock))


def test_build_runtime_refuses_a_broker_of_another_mode(clock: FakeClock) -> None:
    settings = settings_for(Mode.REAL.official_base_url, Mode.REAL)
    vts_broker = FakeBroker(clock, mode=Mode.VTS, app_key=REAL_KEY)

    with pytest.raises(ScopeMismatchError):
        build_runtime(settings, clock=clock, store=InMemoryTokenStore(), broker=vts_broker)


def test_build_runtime_uses_the_injected_store_and_clock(clock: FakeClock) -> None:
    settings = settings_for(Mode.VTS.official_base_url, refresh_margin=timedelta(minutes=30))
    broker = FakeBroker(clock, app_key=VTS_KEY)
    store = InMemoryTokenStore()

    with build_runtime(settings, clock=clock, store=store, broker=broker) as runtime:
        token = runtime.access_token()
        assert runtime.scope == settings.scope == token.scope
        assert store.load(settings.scope) == token
        assert token.issued_at == clock.now()
        assert runtime.cache.margin == settings.refresh_margin

        clock.advance(timedelta(hours=23, minutes=30).total_seconds())
        assert runtime.access_token() != token  # stale by the settings' margin on the injected clock
        assert broker.issue_calls == 2


def test_build_store_builds_the_store_each_kind_names(tmp_path: Path) -> None:
    assert isinstance(build_store(TokenStoreSpec(StoreKind.MEMORY)), InMemoryTokenStore)
    default_file = build_store(TokenStoreSpec(StoreKind.FILE))
    assert isinstance(default_file, FileTokenStore)
    chosen = build_store(TokenStoreSpec(StoreKind.FILE, str(tmp_path / "tokens")))
    assert isinstance(chosen, FileTokenStore)
    # Redis connects lazily: building it sends nothing, so no server is needed here.
    assert isinstance(build_store(TokenStoreSpec(StoreKind.REDIS, "redis://127.0.0.1:1/0")), RedisTokenStore)


def test_build_store_refuses_a_redis_url_redis_py_cannot_use() -> None:
    with pytest.raises(ConfigError, match="QTS_TOKEN_STORE"):
        build_store(TokenStoreSpec(StoreKind.REDIS, "redis://127.0.0.1:notaport/0"))


def test_an_injected_store_wins_over_the_configured_kind(clock: FakeClock) -> None:
    settings = settings_for(Mode.VTS.official_base_url, token_store=TokenStoreSpec(StoreKind.FILE))
    store = InMemoryTokenStore()

    runtime = build_runtime(settings, clock=clock, store=store, broker=FakeBroker(clock, app_key=VTS_KEY))

    token = runtime.access_token()

    assert store.load(settings.scope) == token


def test_build_store_memory_gives_an_in_memory_store() -> None:
    assert isinstance(build_store(TokenStoreSpec(StoreKind.MEMORY)), InMemoryTokenStore)


def test_importing_the_runtime_reads_no_environment() -> None:
    env = {
        **os.environ,
        "KIS_MODE": "bogus",
        "QTS_TOKEN_STORE": "junk",
        "QTS_REFRESH_MARGIN_S": "not-a-number",
        "KIS_CA_BUNDLE": "/nonexistent/ca.pem",
    }
    modules = (
        "runtime, runtime.bootstrap, runtime.config, runtime.settings, runtime.auth.session, "
        "runtime.auth.token_cache, runtime.auth.stores, runtime.broker.kis.adapter"
    )

    done = subprocess.run(  # noqa: S603 - fixed arguments, our own interpreter
        [sys.executable, "-c", f"import {modules}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
