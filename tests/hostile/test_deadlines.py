"""Deadlines everywhere: one call's whole budget (connect + read + retries + pacing + the
token it may need first) is QTS_CALL_DEADLINE_S, and waiting on the token cache's lock is bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import filelock
import pytest

from kis_emulator import KISEmulator
from runtime.auth.call_budget.memory import InProcessCallBudget
from runtime.auth.session import KISRuntime
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache
from runtime.bootstrap import build_runtime
from runtime.broker.base import AccessToken, AppCredentials, BrokerRequest, BrokerResponse, Mode
from runtime.clock import ClockPort, FakeClock, SystemClock
from runtime.deadline import Deadline
from runtime.errors import BrokerUnavailableError, CallBudgetExhaustedError, TokenStoreError
from runtime.settings import Settings
from tests.support.emulator import running_emulator
from tests.support.fakes import FakeBroker
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID, TOKEN_PATH
from tests.support.scripted_kis import APP_KEY, APP_SECRET

DEADLINE_S = 1.0  # the rule, not the number, is under test: short keeps the suite fast
SLACK_S = 0.5
PACED_DEADLINE_S = 2.0  # on the fake clock: room for one 1.05 s pacing wait


@pytest.fixture(scope="module")
def emulator() -> Iterator[KISEmulator]:
    with running_emulator("VTS", max_rps=None, token_request_interval=0) as emu:
        yield emu


@pytest.fixture
def settings(emulator: KISEmulator) -> Settings:
    emulator.reset()
    return Settings(
        mode=Mode.VTS,
        credentials=AppCredentials(APP_KEY, APP_SECRET),
        base_url=emulator.base_url,
        call_deadline_s=DEADLINE_S,
        wait_on_rate_limit=False,
    )


def _quote(runtime: KISRuntime) -> BrokerResponse:
    return runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID, params=PRICE_PARAMS)


def test_a_call_slower_than_the_deadline_ends_at_the_deadline(
    emulator: KISEmulator, settings: Settings
) -> None:
    with build_runtime(settings) as runtime:
        runtime.access_token()
        emulator.inject_fault("slow", count=10, path=PRICE_PATH, seconds=6)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            _quote(runtime)
        elapsed = time.monotonic() - started
    assert elapsed <= DEADLINE_S + SLACK_S, f"took {elapsed:.2f} s"


def test_a_get_meeting_502_after_502_gives_up_within_the_deadline(
    emulator: KISEmulator, settings: Settings
) -> None:
    with build_runtime(settings) as runtime:
        runtime.access_token()
        emulator.inject_fault("html_502", count=100, path=PRICE_PATH)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            _quote(runtime)
        elapsed = time.monotonic() - started
    assert elapsed <= DEADLINE_S + SLACK_S, f"took {elapsed:.2f} s"
    attempts = emulator.counters()["requests_by_endpoint"][PRICE_PATH]
    assert 2 <= attempts <= 3, "a GET is retried after a 502, but only a bounded number of times"


def test_issuing_the_token_first_counts_in_the_same_deadline(
    emulator: KISEmulator, settings: Settings
) -> None:
    """A slow tokenP (0.6 s) leaves only the rest of the 1 s for the call itself."""
    emulator.inject_fault("slow", count=1, path=TOKEN_PATH, seconds=0.6)
    emulator.inject_fault("slow", count=10, path=PRICE_PATH, seconds=6)
    with build_runtime(settings) as runtime:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            _quote(runtime)
        elapsed = time.monotonic() - started
        assert runtime.cache.peek() is not None, "the token issued on the way is kept"
    assert elapsed <= DEADLINE_S + SLACK_S, f"took {elapsed:.2f} s"


class RecordingBroker(FakeBroker):
    """A FakeBroker that records the time budget each call was given."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.budgets: list[float | None] = []

    def send(self, request: BrokerRequest, token: AccessToken, *, deadline: Deadline) -> BrokerResponse:
        self.budgets.append(deadline.remaining())
        return super().send(request, token, deadline=deadline)


class StuckIssuanceBroker(FakeBroker):
    """tokenP that says when it is entered and returns only when released: orders threads by events."""

    def __init__(self, clock: ClockPort) -> None:
        super().__init__(clock)
        self.entered = threading.Event()
        self.release = threading.Event()

    def issue_token(self, *, deadline: Deadline) -> AccessToken:
        self.entered.set()
        self.release.wait(30)
        return super().issue_token(deadline=deadline)


def _fake_runtime(clock: FakeClock, max_rps: float) -> tuple[KISRuntime, RecordingBroker]:
    broker = RecordingBroker(clock)
    cache = TokenCache(broker, InMemoryTokenStore(), clock)
    runtime = KISRuntime(
        broker,
        cache,
        clock,
        call_deadline_s=PACED_DEADLINE_S,
        call_budget=InProcessCallBudget(clock, max_rps),
    )
    return runtime, broker


def test_a_pacing_wait_is_spent_from_the_call_deadline(clock: FakeClock) -> None:
    runtime, broker = _fake_runtime(clock, max_rps=1)
    _quote(runtime)
    _quote(runtime)  # the call budget makes this one wait about a second on the fake clock
    first, second = broker.budgets
    assert first == pytest.approx(PACED_DEADLINE_S)
    assert second is not None
    assert second <= PACED_DEADLINE_S - 1.0, "the pacing wait came out of the deadline"


def test_a_pacing_wait_longer_than_the_deadline_is_refused_without_waiting(clock: FakeClock) -> None:
    runtime, _broker = _fake_runtime(clock, max_rps=0.25)  # one call per 4 s
    _quote(runtime)
    before = clock.monotonic()
    with pytest.raises(CallBudgetExhaustedError) as caught:
        _quote(runtime)
    assert clock.monotonic() == before, "no time was spent on a wait that could not fit"
    assert caught.value.retry_after.total_seconds() > PACED_DEADLINE_S


def test_waiting_for_another_threads_issuance_is_bounded() -> None:
    """Thread A is stuck in tokenP until released; thread B's call gives up at its 0.5 s deadline."""
    clock = SystemClock()
    broker = StuckIssuanceBroker(clock)
    cache = TokenCache(broker, InMemoryTokenStore(), clock)
    slow = threading.Thread(target=cache.get, daemon=True)
    slow.start()
    assert broker.entered.wait(10), "thread A never reached tokenP"  # A holds the lock now
    runtime = KISRuntime(broker, cache, clock, call_deadline_s=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(BrokerUnavailableError, match="waiting for a token issuance"):
            _quote(runtime)
        elapsed = time.monotonic() - started
    finally:
        broker.release.set()
    slow.join(5)
    assert elapsed <= 0.5 + SLACK_S, f"took {elapsed:.2f} s"


def test_waiting_for_another_processs_file_lock_is_bounded(settings: Settings, tmp_path: Path) -> None:
    """Another process holds the store's issuance lock: the call fails at its deadline, typed."""
    store = FileTokenStore(tmp_path / "tokens")
    held = filelock.FileLock(store.path_for(settings.scope).with_suffix(".lock"))
    (tmp_path / "tokens").mkdir(mode=0o700)
    with held, build_runtime(settings, store=store) as runtime:
        started = time.monotonic()
        with pytest.raises(TokenStoreError):
            _quote(runtime)
        elapsed = time.monotonic() - started
    assert elapsed <= DEADLINE_S + SLACK_S, f"took {elapsed:.2f} s"
