"""KISRuntime over the FakeBroker: token injection, one reactive reissue, orders refused,
deadlines, revoke. The composition root that builds it is tested in tests/runtime/test_bootstrap.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.auth.session import KISRuntime
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.token_cache import TokenCache, TokenSource
from runtime.broker.base import AccessToken, BrokerRequest, BrokerResponse
from runtime.clock import FakeClock
from runtime.deadline import Deadline
from runtime.errors import (
    BrokerUnavailableError,
    CredentialsRejectedError,
    InvalidRequestError,
    OrderRefusedError,
    QTSError,
    StaleTokenError,
    TokenRejectedError,
)
from tests.support.fakes import FakeBroker
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID

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

    def send(self, request: BrokerRequest, token: AccessToken, *, deadline: Deadline) -> BrokerResponse:
        self.sent.append((request, token))
        raise TokenRejectedError("유효하지 않은 token 입니다.", code="EGW00121")


class ClockEatingBroker(FakeBroker):
    """A broker whose calls take longer than the runtime's whole call deadline."""

    def __init__(self, clock: FakeClock, *, send_takes_s: float) -> None:
        super().__init__(clock)
        self._fake_clock = clock
        self._send_takes_s = send_takes_s

    def send(self, request: BrokerRequest, token: AccessToken, *, deadline: Deadline) -> BrokerResponse:
        self._fake_clock.advance(self._send_takes_s)
        return super().send(request, token, deadline=deadline)


# --- the token goes into every call ----------------------------------------------------------


def test_call_injects_the_current_token(runtime: KISRuntime, broker: FakeBroker) -> None:
    answer = runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID, params=PRICE_PARAMS)

    assert answer.status == 200
    assert answer.body["rt_cd"] == "0"
    [(request, token)] = broker.sent
    assert token == broker.issued[0] == runtime.access_token()
    assert request.method == "GET"
    assert request.path == PRICE_PATH
    assert request.tr_id == PRICE_TR_ID
    assert dict(request.params) == PRICE_PARAMS


def test_consecutive_calls_reuse_the_cached_token(runtime: KISRuntime, broker: FakeBroker) -> None:
    for _ in range(3):
        runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID)

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
        answer = runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID)

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
        answer = runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID)

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
        runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID)

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
        runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID)

    assert len(broker.sent) == 1
    assert broker.issue_calls == 1


def test_an_issuance_failure_inside_call_is_raised_as_is(runtime: KISRuntime, broker: FakeBroker) -> None:
    broker.issue_errors.append(CredentialsRejectedError("유효하지 않은 AppKey입니다.", code="EGW00103"))

    with pytest.raises(CredentialsRejectedError):
        runtime.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID)

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
        ("PUT", PRICE_PATH, PRICE_TR_ID, {}),
        ("DELETE", PRICE_PATH, PRICE_TR_ID, {}),
        ("", PRICE_PATH, PRICE_TR_ID, {}),
        ("GET", "https://evil.example/uapi/x", PRICE_TR_ID, {}),
        ("GET", "uapi/domestic-stock/v1/quotations/inquire-price", PRICE_TR_ID, {}),
        ("GET", "/uapi/../oauth2/tokenP", PRICE_TR_ID, {}),
        ("GET", "/uapi//domestic-stock", PRICE_TR_ID, {}),
        ("GET", "/uapi/x?y=1", PRICE_TR_ID, {}),
        ("GET", PRICE_PATH, "fhkst01010100", {}),
        ("GET", PRICE_PATH, "", {}),
        ("GET", PRICE_PATH, "FHKST 01010100", {}),
        ("GET", PRICE_PATH, "F" * 21, {}),
        ("GET", PRICE_PATH, PRICE_TR_ID, {"tr_cont": "X"}),
        ("GET", PRICE_PATH, PRICE_TR_ID, {"params": [1, 2, 3]}),
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
    path=st.sampled_from([PRICE_PATH, HASHKEY, "/uapi/domestic-stock/v1/trading/order-cash"])
    | st.text(alphabet="/abcdefghijklmnopqrstuvwxyz-._?%", max_size=40),
    tr_id=st.sampled_from([PRICE_TR_ID, "VTTC8434R"]) | st.text(max_size=24),
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
