"""The pure decisions behind ``qts call`` paging, ``qts doctor`` and the error object, as properties."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import runtime.errors as errors
from runtime.cli.call import next_page_params, parse_params
from runtime.cli.doctor import CLOCK_SKEW_WARN_S, _budget_check, clock_verdict
from runtime.errors import InvalidRequestError, QTSError

KEYS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789", min_size=1, max_size=20)
VALUES = st.text(max_size=30)
MOMENTS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_the_clock_warns_exactly_above_the_threshold_either_way(skew: float) -> None:
    assert clock_verdict(skew) == clock_verdict(-skew)
    assert (clock_verdict(skew) == "warn") is (abs(skew) > CLOCK_SKEW_WARN_S)


@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_params_round_trip_through_key_value_words(params: dict[str, str]) -> None:
    assert parse_params([f"{k}={v}" for k, v in params.items()]) == params


@pytest.mark.parametrize("word", ["NOEQUALS", "=value", " =x"])
def test_a_word_without_a_key_is_an_invalid_request(word: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_params([word])


@given(
    st.dictionaries(KEYS, VALUES, max_size=6),
    st.dictionaries(st.sampled_from(["ctx_area_fk100", "ctx_area_nk100", "CTX_AREA_FK200"]), VALUES),
    st.dictionaries(st.sampled_from(["output1", "rt_cd", "msg1"]), VALUES),
)
def test_the_next_page_keeps_the_query_and_passes_the_continuation_keys_back_upper_cased(
    params: dict[str, str], continuation: dict[str, str], other: dict[str, str]
) -> None:
    following = next_page_params(params, {**continuation, **other})

    for key, value in continuation.items():
        assert following[key.upper()] == value
    for key, value in params.items():
        if key not in {k.upper() for k in continuation}:
            assert following[key] == value
    assert not {k.upper() for k in other} & (set(following) - set(params))


@given(MOMENTS, st.one_of(st.none(), MOMENTS), st.one_of(st.none(), MOMENTS))
def test_the_next_tokenp_is_never_before_a_minute_after_the_last_nor_before_a_block(
    now: datetime, last: datetime | None, blocked: datetime | None
) -> None:
    check = _budget_check(last, blocked, now)

    assert check.status == "ok"
    waiting = (last is not None and last + timedelta(seconds=60) > now) or (
        blocked is not None and blocked > now
    )
    assert ("allowed now" in check.detail) is not waiting


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_says_what_to_do_and_serialises_to_the_documented_object(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, QTSError)
    error = cls.__new__(cls)
    QTSError.__init__(error, "something happened", code="EGW00000")

    document = json.loads(json.dumps({"error": error.as_dict()}))

    assert set(document["error"]) == {"type", "code", "message", "hint", "retryable", "exit_code"}
    assert document["error"]["type"] == name
    assert document["error"]["exit_code"] == cls.exit_code
    assert document["error"]["hint"].strip()
    assert document["error"]["exit_code"] in {1, 2, 3, 4, 5, 6, 7}
