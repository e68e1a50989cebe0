"""Round 2, class 4: Redis trouble blocks no more than it must.

A real ``redis-server`` is paused (SIGSTOP) or killed while memory holds a valid token in its
refresh window: calls are served from memory (one warning), within their deadline. Every store
and lock operation is bounded by the call's remaining time -- a paused Redis costs no 5 s
socket timeout against a 2 s deadline, and ``revoke`` does not wait 30 s on a lock held
elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import filelock
import pytest
import redis

from kis_emulator import EmulatorConfig, KISEmulator
from runtime.auth.session import KISRuntime
from runtime.auth.stores.bounds import within
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.redis import RedisTokenStore
from runtime.bootstrap import build_runtime
from runtime.broker.base import AppCredentials, BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from runtime.errors import QTSError, TokenStoreError
from runtime.settings import Settings
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID
from tests.support.redis import RedisProcess, start_redis
from tests.support.scripted_kis import APP_KEY, APP_SECRET, fresh_token

DEADLINE_S = 2.0
SLACK_S = 0.5
LIFETIME = timedelta(minutes=15)
# Fresh for 1.5 s after issuance, then in the refresh window for the rest of its 15 minutes.
MARGIN = LIFETIME - timedelta(seconds=1.5)


@pytest.fixture(scope="module")
def emulator() -> Iterator[KISEmulator]:
    config = EmulatorConfig(
        max_rps=None,
        token_request_interval=timedelta(0),
        token_lifetime=LIFETIME,
        token_reuse_window=timedelta(0),
    )
    with KISEmulator("VTS", config=config) as emu:
        yield emu


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    with start_redis(tmp_path) as proc:
        yield proc


def _settings(emulator: KISEmulator) -> Settings:
    return Settings(
        mode=Mode.VTS,
        credentials=AppCredentials(APP_KEY, APP_SECRET),
        base_url=emulator.base_url,
        call_deadline_s=DEADLINE_S,
        refresh_margin=MARGIN,
        wait_on_rate_limit=False,
    )


def _quote(runtime: KISRuntime) -> object:
    return runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID, params=PRICE_PARAMS)


def _timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "token store unreachable" in r.getMessage()]


@pytest.mark.parametrize("trouble", ["paused", "gone"])
def test_a_valid_token_in_memory_is_served_while_redis_is_out(
    trouble: str, emulator: KISEmulator, redis_proc: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    emulator.reset()
    store = RedisTokenStore.from_url(redis_proc.url, SystemClock())
    with build_runtime(_settings(emulator), store=store) as runtime:
        _quote(runtime)  # issues the token; Redis holds it too
        time.sleep(1.6)  # now in its refresh window
        if trouble == "paused":
            redis_proc.pause()
        else:
            redis_proc.process.kill()
            redis_proc.process.wait()
        try:
            elapsed = [_timed(lambda: _quote(runtime)) for _ in range(3)]
        finally:
            if trouble == "paused":
                redis_proc.resume()
    assert max(elapsed) <= DEADLINE_S + SLACK_S, elapsed
    assert len(_outage_warnings(caplog)) == 1, "one warning for the outage, not one per call"
    runtime_warnings = [
        r for r in caplog.records if r.name.startswith("runtime") and r.levelno >= logging.WARNING
    ]
    assert len(runtime_warnings) == 1, [r.getMessage() for r in runtime_warnings]
    assert emulator.counters()["token_requests"] == 1, "no tokenP while the store is out"


def test_without_a_valid_token_a_paused_redis_fails_typed_within_the_deadline(
    emulator: KISEmulator, redis_proc: RedisProcess
) -> None:
    store = RedisTokenStore.from_url(redis_proc.url, SystemClock())
    with build_runtime(_settings(emulator), store=store) as runtime, redis_proc.paused():
        started = time.monotonic()
        with pytest.raises(QTSError):
            _quote(runtime)
        elapsed = time.monotonic() - started
    assert elapsed <= DEADLINE_S + SLACK_S


@pytest.mark.parametrize("operation", ["load", "save", "delete", "load_ledger", "lock", "tokens"])
def test_every_redis_operation_keeps_to_the_calls_remaining_time(
    operation: str, redis_proc: RedisProcess
) -> None:
    store = RedisTokenStore.from_url(redis_proc.url, SystemClock())
    vts = BrokerScope(Mode.VTS, AppCredentials(APP_KEY, APP_SECRET).fingerprint)
    store.load(vts)  # connected before the pause
    actions: dict[str, Callable[[], object]] = {
        "load": lambda: store.load(vts),
        "save": lambda: store.save(vts, fresh_token(vts)),
        "delete": lambda: store.delete(vts),
        "load_ledger": lambda: store.load_ledger(vts),
        "lock": lambda: store.issuance_lock(vts, 30.0).__enter__(),
        "tokens": store.tokens,
    }
    with redis_proc.paused(), within(Deadline.after(SystemClock(), 1.0)):
        started = time.monotonic()
        with pytest.raises(TokenStoreError):
            actions[operation]()
        elapsed = time.monotonic() - started
    assert elapsed <= 1.0 + SLACK_S, f"{operation} took {elapsed:.2f} s against a 1 s deadline"


def test_a_lock_held_by_another_host_is_waited_for_the_deadline_only(redis_proc: RedisProcess) -> None:
    vts = BrokerScope(Mode.VTS, AppCredentials(APP_KEY, APP_SECRET).fingerprint)
    other = redis.Redis.from_url(redis_proc.url)
    other.set(f"qts:lock:VTS:{vts.key_fingerprint}", b"another-host", px=60_000)
    store = RedisTokenStore.from_url(redis_proc.url, SystemClock())
    started = time.monotonic()
    with (
        within(Deadline.after(SystemClock(), 1.0)),
        pytest.raises(TokenStoreError),
        store.issuance_lock(vts, 30.0),
    ):
        pass
    assert time.monotonic() - started <= 1.0 + SLACK_S
    other.close()


def test_revoke_does_not_wait_30_s_on_a_lock_held_elsewhere(emulator: KISEmulator, tmp_path: Path) -> None:
    emulator.reset()
    store = FileTokenStore(tmp_path / "tokens")
    with build_runtime(_settings(emulator), store=store) as runtime:
        runtime.access_token()
        held = filelock.FileLock(store.path_for(runtime.scope).with_suffix(".lock"))
        with held:  # another process holds the scope's lock (for 30 s, say)
            started = time.monotonic()
            with contextlib.suppress(QTSError):  # typed, and in time: that is the rule
                runtime.revoke()
            elapsed = time.monotonic() - started
    assert elapsed <= DEADLINE_S + SLACK_S, f"revoke took {elapsed:.2f} s"


def test_revoke_with_redis_paused_ends_within_the_deadline(
    emulator: KISEmulator, redis_proc: RedisProcess
) -> None:
    emulator.reset()
    store = RedisTokenStore.from_url(redis_proc.url, SystemClock())
    with build_runtime(_settings(emulator), store=store) as runtime:
        runtime.access_token()
        with redis_proc.paused():
            started = time.monotonic()
            with contextlib.suppress(QTSError):
                runtime.revoke()
            elapsed = time.monotonic() - started
    assert elapsed <= DEADLINE_S + SLACK_S, f"revoke took {elapsed:.2f} s"
