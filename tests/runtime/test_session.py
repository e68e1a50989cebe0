"""KISRuntime over the FakeBroker: token injection, one reactive reissue, orders refused,
deadlines, revoke; and the composition root that builds it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.auth.session import KISRuntime
from runtime.auth.stores.file import FileTokenStore
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.stores.redis import RedisTokenStore
from runtime.auth.token_cache import TokenCache, TokenSource
from runtime.bootstrap import build_runtime, build_store
from runtime.broker.base import AccessToken, BrokerRequest, BrokerResponse, Mode
from runtime.clock import FakeClock
from runtime.errors import (
    BrokerUnavailableError,
    ConfigError,
    CredentialsRejectedError,
    InvalidRequestError,
    OrderRefusedError,
    QTSError,
    ScopeMismatchError,
    StaleTokenError,
    TokenRejectedError,
)
from runtime.settings import StoreKind, TokenStoreSpec
from tests.support.fakes import FakeBroker
from tests.support.kis import REAL_KEY, VTS_KEY, settings_for

PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
PRICE_TR = "FHKST01010100"
PRICE_PARAMS = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
HASHKEY = "/uapi/hashkey"  # a POST that is not an order
DEADLINE_S = 20.0


@pytest.fixture
def broker(clock: FakeClock) -> FakeBroker:
    return FakeBroker(clock)


@pytest.fixture
def store() -> InMemoryTokenStore:
    return InMemoryTokenStore()


def make_runtime(broker: FakeBroker, store: InMemoryTokenStore, clock: FakeClock) -> KISRuntime:
    cache = TokenCache(broker, store, clock, margin=timedelta(minutes=10))
    return KISRuntime(broker, cache, clock, call_deadline_s=DEADLINE_S)


@pytest.fixture
def runtime(broker: FakeBroker, store: InMemoryTokenStore, clock: FakeClock) -> KISRuntime:
    return make_runtime(broker, store, clock)


def sent_tokens(broker: FakeBroker) -> list[AccessToken]:
    return [token for _, token in broker.sent]


class StuckTokenBroker(FakeBroker):
    """KIS inside its 6-hour window: tokenP hands back the very token every call rejects."""

    def send(
        self, request: BrokerRequest, token: AccessToken, *, timeout_s: float | None = None
    ) -> BrokerResponse:
        self.sent.append((request, token))
        raise TokenRejectedError("유효하지 않은 token 입니다.", code="EGW00121")


class ClockEatingBroker(FakeBroker):
    """A broker whose calls take longer than the runtime's whole call deadline."""

    def __init__(self, clock: FakeClock, *, send_takes_s: float) -> None:
        super().__init__(clock)
        self._fake_clock = clock
        self._send_takes_s = send_takes_s

    def send(
        self, request: BrokerRequest, token: AccessToken, *, timeout_s: float | None = None
    ) -> BrokerResponse:
        self._fake_clock.advance(self._send_takes_s)
        return super().send(request, token, timeout_s=timeout_s)


# --- the token goes into every call ----------------------------------------------------------


def test_call_injects_the_current_token(runtime: KISRuntime, broker: FakeBroker) -> None:
    answer = runtime.call("GET", PRICE, tr_id=PRICE_TR, params=PRICE_PARAMS)

    assert answer.status == 200
    assert answer.body["rt_cd"] == "0"
    [(request, token)] = broker.sent
    assert token == broker.issued[0] == runtime.access_token()
    assert request.method == "GET"
    assert request.path == PRICE
    assert request.tr_id == PRICE_TR
    assert dict(request.params) == PRICE_PARAMS


def test_consecutive_calls_reuse_the_cached_token(runtime: KISRuntime, broker: FakeBroker) -> None:
    for _ in range(3):
        runtime.call("GET", PRICE, tr_id=PRICE_TR)

    assert broker.issue_calls == 1
    assert set(sent_tokens(broker)) == {broker.issued[0]}


def test_access_token_returns_the_cached_token(
    runtime: KISRuntime, broker: FakeBroker, store: InMemoryTokenStore
) -> None:
    token = runtime.access_token()

    assert runtime.access_token() == token
    assert runtime.cache.last_source == TokenSource.MEMORY
    assert runtime.cache.peek() == token
    assert store.load(runtime.scope) == token
    assert broker.issue_calls == 1


# --- reactive reissue ------------------------------------------------------------------------


def test_a_get_rejected_with_egw00121_is_reissued_and_retried_once(
    runtime: KISRuntime, broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    old = runtime.access_token()
    broker.void()  # KIS voided every token (maintenance, another process revoked it)

    with caplog.at_level(logging.INFO, logger="runtime.auth.session"):
        answer = runtime.call("GET", PRICE, tr_id=PRICE_TR)

    assert answer.status == 200
    new = broker.issued[1]
    assert sent_tokens(broker) == [old, new]
    assert broker.issue_calls == 2
    assert runtime.cache.peek() == new
    assert "EGW00121" in caplog.text


def test_a_get_rejected_with_egw00123_is_reissued_and_retried_once(
    clock: FakeClock, store: InMemoryTokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """KIS's clock runs ahead of ours: it reports the token expired while we think it valid."""
    kis_clock = FakeClock(clock.now())
    broker = FakeBroker(kis_clock)
    runtime = make_runtime(broker, store, clock)
    old = runtime.access_token()
    kis_clock.advance(timedelta(hours=24, seconds=1).total_seconds())

    with caplog.at_level(logging.INFO, logger="runtime.auth.session"):
        answer = runtime.call("GET", PRICE, tr_id=PRICE_TR)

    assert answer.status == 200
    assert sent_tokens(broker) == [old, broker.issued[1]]
    assert broker.issue_calls == 2
    assert "EGW00123" in caplog.text


def test_a_post_with_a_rejected_token_is_not_retried(
    runtime: KISRuntime, broker: FakeBroker, store: InMemoryTokenStore
) -> None:
    old = runtime.access_token()
    broker.void()

    with pytest.raises(TokenRejectedError) as raised:
        runtime.call("POST", HASHKEY, tr_id="HASHKEY0", body={"PDNO": "005930"})

    assert raised.value.code == "EGW00121"
    assert sent_tokens(broker) == [old]
    assert broker.issue_calls == 1
    assert runtime.cache.peek() is None  # the rejected token is forgotten all the same


def test_a_reissue_handing_back_the_rejected_token_raises_stale_without_looping(
    clock: FakeClock, store: InMemoryTokenStore
) -> None:
    broker = StuckTokenBroker(clock, reuse_window=timedelta(hours=6))
    runtime = make_runtime(broker, store, clock)

    with pytest.raises(StaleTokenError) as raised:
        runtime.call("GET", PRICE, tr_id=PRICE_TR)

    assert isinstance(raised.value, TokenRejectedError)
    assert len(broker.sent) <= 2
    assert broker.issue_calls == 2
    assert len(broker.issued) == 1
    assert runtime.cache.peek() is None


def test_the_retry_after_a_rejection_respects_the_call_deadline(
    clock: FakeClock, store: InMemoryTokenStore
) -> None:
    broker = ClockEatingBroker(clock, send_takes_s=DEADLINE_S + 1)
    runtime = make_runtime(broker, store, clock)
    runtime.access_token()
    broker.void()

    with pytest.raises(BrokerUnavailableError, match="deadline"):
        runtime.call("GET", PRICE, tr_id=PRICE_TR)

    assert len(broker.sent) == 1
    assert broker.issue_calls == 1


def test_an_issuance_failure_inside_call_is_raised_as_is(runtime: KISRuntime, broker: FakeBroker) -> None:
    broker.issue_errors.append(CredentialsRejectedError("유효하지 않은 AppKey입니다.", code="EGW00103"))

    with pytest.raises(CredentialsRejectedError):
        runtime.call("GET", PRICE, tr_id=PRICE_TR)

    assert broker.sent == []


# --- orders and malformed calls never leave the process -------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        # urllib3 removes dot segments, so these would reach /trading/order-cash on the wire:
        "/uapi/domestic-stock/v1/trading/./order-cash",
        "/uapi/domestic-stock/v1/quotations/../trading/order-cash",
        "/uapi/domestic-stock/v1/trading//order-cash",
    ],
)
def test_dot_segments_that_could_hide_an_order_are_refused_before_any_token_or_send(
    runtime: KISRuntime, broker: FakeBroker, path: str
) -> None:
    with pytest.raises(InvalidRequestError):
        runtime.call("POST", path, tr_id="TTTC0012U", body={"PDNO": "005930", "ORD_QTY": "1"})

    assert broker.sent == []
    assert broker.issue_calls == 0


@pytest.mark.parametrize(
    "path",
    [
        "/uapi/domestic-stock/v1/trading/order-cash",
        "/UAPI/DOMESTIC-STOCK/V1/TRADING/ORDER-CASH",
        "/uapi/Domestic-Stock/v1/Trading/Order-Cash",
        "/uapi/domestic-stock/v1/trading/order-credit",
        "/uapi/domestic-stock/v1/trading/order-rvsecncl",
        "/uapi/domestic-stock/v1/trading/order-resv",
        "/uapi/domestic-futureoption/v1/trading/order",
        "/uapi/overseas-stock/v1/trading/order",
        "/uapi/overseas-stock/v1/trading/order-rvsecncl",
        # Real KIS order endpoints whose path has no "/trading/order" (open-trading-api examples):
        "/uapi/overseas-stock/v1/trading/daytime-order",  # 해외주식 미국주간주문 TTTS6036U/6037U
        "/uapi/domestic-bond/v1/trading/buy",  # 장내채권 매수주문 TTTC0952U
        "/uapi/domestic-bond/v1/trading/sell",  # 장내채권 매도주문 TTTC0958U
    ],
)
def test_order_endpoints_are_refused_before_any_token_or_send(
    runtime: KISRuntime, broker: FakeBroker, path: str
) -> None:
    with pytest.raises(OrderRefusedError):
        runtime.call("POST", path, tr_id="TTTC0012U", body={"PDNO": "005930", "ORD_QTY": "1"})

    assert broker.sent == []
    assert broker.issue_calls == 0


@pytest.mark.parametrize(
    ("method", "path", "tr_id", "extra"),
    [
        ("PUT", PRICE, PRICE_TR, {}),
        ("DELETE", PRICE, PRICE_TR, {}),
        ("", PRICE, PRICE_TR, {}),
        ("GET", "https://evil.example/uapi/x", PRICE_TR, {}),
        ("GET", "uapi/domestic-stock/v1/quotations/inquire-price", PRICE_TR, {}),
        ("GET", "/uapi/../oauth2/tokenP", PRICE_TR, {}),
        ("GET", "/uapi//domestic-stock", PRICE_TR, {}),
        ("GET", "/uapi/x?y=1", PRICE_TR, {}),
        ("GET", PRICE, "fhkst01010100", {}),
        ("GET", PRICE, "", {}),
        ("GET", PRICE, "FHKST 01010100", {}),
        ("GET", PRICE, "F" * 21, {}),
        ("GET", PRICE, PRICE_TR, {"tr_cont": "X"}),
        ("GET", PRICE, PRICE_TR, {"params": [1, 2, 3]}),
    ],
)
def test_an_invalid_call_is_refused_before_any_token_or_send(
    runtime: KISRuntime, broker: FakeBroker, method: str, path: str, tr_id: str, extra: Mapping[str, Any]
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        runtime.call(method, path, tr_id=tr_id, **extra)

    assert isinstance(raised.value, QTSError)
    assert broker.sent == []
    assert broker.issue_calls == 0


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "get", "POST", "PUT", "HEAD"]) | st.text(max_size=8),
    path=st.sampled_from([PRICE, HASHKEY, "/uapi/domestic-stock/v1/trading/order-cash"])
    | st.text(alphabet="/abcdefghijklmnopqrstuvwxyz-._?%", max_size=40),
    tr_id=st.sampled_from([PRICE_TR, "VTTC8434R"]) | st.text(max_size=24),
    void_first=st.booleans(),
)
def test_every_error_escaping_call_is_a_qts_error(
    method: str, path: str, tr_id: str, void_first: bool
) -> None:
    clock = FakeClock()
    broker = FakeBroker(clock)
    runtime = make_runtime(broker, InMemoryTokenStore(), clock)
    runtime.access_token()
    if void_first:
        broker.void()

    try:
        answer = runtime.call(method, path, tr_id=tr_id)
    except QTSError:
        return
    assert answer.status == 200
    assert len(broker.sent) in (1, 2)


# --- revoke ----------------------------------------------------------------------------------


def test_revoke_revokes_the_held_token_and_clears_memory_and_store(
    runtime: KISRuntime, broker: FakeBroker, store: InMemoryTokenStore
) -> None:
    token = runtime.access_token()

    assert runtime.revoke() == token

    assert broker.revoked == [token]
    assert runtime.cache.peek() is None
    assert store.load(runtime.scope) is None
    assert runtime.access_token() != token
    assert broker.issue_calls == 2


def test_revoke_with_nothing_held_returns_none(runtime: KISRuntime, broker: FakeBroker) -> None:
    assert runtime.revoke() is None
    assert broker.revoked == []
    assert broker.issue_calls == 0


def test_revoke_in_a_new_process_revokes_the_stored_token(
    runtime: KISRuntime, broker: FakeBroker, store: InMemoryTokenStore, clock: FakeClock
) -> None:
    token = runtime.access_token()
    next_process = make_runtime(broker, store, clock)

    assert next_process.revoke() == token
    assert broker.revoked == [token]
    assert store.load(runtime.scope) is None
    assert broker.issue_calls == 1


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
