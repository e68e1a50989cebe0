"""Adapter ↔ runtime scenarios, run unchanged against the KIS emulator and (opt-in) the real KIS VTS host.

Each scenario asserts what both hosts let us see: the runtime's own account of where tokens
came from and the answers KIS gave. Where the host can be observed (the emulator), the
requests it received are checked as well. No scenario sends an order.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from runtime.auth.session import KISRuntime
from runtime.auth.token_cache import TokenSource
from runtime.broker.base import BrokerRequest, BrokerResponse
from runtime.errors import TokenRejectedError
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID, REVOKE_PATH, TOKEN_PATH
from tests.verified.conftest import Target

# KIS hands back the same token for 6 h, so a live token may be that old: at least 18 h left.
MIN_TIME_LEFT = timedelta(hours=17)


def quote(kis: KISRuntime) -> BrokerResponse:
    return kis.call("GET", PRICE_PATH, tr_id=PRICE_TR_ID, params=PRICE_PARAMS)


def seen(target: Target, path: str) -> int | None:
    """How many requests to ``path`` the host received, or None when it cannot tell."""
    counters = target.counters()
    if counters is None:
        return None
    count = counters["requests_by_endpoint"].get(path, 0)
    assert isinstance(count, int)
    return count


def assert_price(answer: BrokerResponse) -> None:
    assert answer.body["rt_cd"] == "0", answer.body
    assert str(answer.body["output"]["stck_prpr"]).isdigit(), answer.body


def test_issue_gets_a_bearer_token_for_this_scope(target: Target, kis: KISRuntime) -> None:
    token = kis.access_token()

    assert token.scope == kis.scope == target.settings.scope
    assert token.token_type == "Bearer"
    assert token.time_left(target.clock.now()) > MIN_TIME_LEFT
    assert kis.cache.last_source == TokenSource.ISSUED
    assert kis.cache.issued_count == 1
    assert seen(target, TOKEN_PATH) in (1, None)


def test_reuse_serves_the_cached_token_without_a_second_tokenp(target: Target, kis: KISRuntime) -> None:
    first = kis.access_token()

    second = kis.access_token()

    assert second == first
    assert second.value == first.value
    assert kis.cache.last_source == TokenSource.MEMORY
    assert kis.cache.issued_count == 1
    assert seen(target, TOKEN_PATH) in (1, None)


def test_inject_sends_the_cached_token_with_a_read_only_call(target: Target, kis: KISRuntime) -> None:
    token = kis.access_token()

    answer = quote(kis)

    assert_price(answer)
    assert kis.cache.peek() == token
    assert kis.cache.issued_count == 1
    assert seen(target, TOKEN_PATH) in (1, None)
    assert seen(target, PRICE_PATH) in (1, None)


def test_reissue_recovers_from_a_token_invalidated_on_the_server_and_retries_once(
    target: Target, kis: KISRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    first = kis.access_token()
    target.invalidate_on_server(first)
    target.wait_for_issuance_window()
    caplog.set_level(logging.INFO, logger="runtime.auth.session")

    answer = quote(kis)

    assert_price(answer)
    fresh = kis.cache.peek()
    assert fresh is not None
    assert fresh.value != first.value
    assert kis.cache.issued_count == 2
    rejections = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejections) == 1, [r.getMessage() for r in caplog.records]
    assert seen(target, PRICE_PATH) in (2, None)  # the rejected call and its one retry
    assert seen(target, TOKEN_PATH) in (2, None)
    counters = target.counters()
    if counters is not None:
        assert counters["errors_by_code"] == {"EGW00121": 1}


def test_revoke_voids_the_token_at_kis_and_drops_it(target: Target, kis: KISRuntime) -> None:
    token = kis.access_token()

    revoked = kis.revoke()

    assert revoked == token
    assert kis.cache.peek() is None
    assert seen(target, REVOKE_PATH) in (1, None)
    request = BrokerRequest("GET", PRICE_PATH, PRICE_TR_ID, params=PRICE_PARAMS)
    with pytest.raises(TokenRejectedError):
        target.adapter().send(request, token, deadline=target.deadline())
