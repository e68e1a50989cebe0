"""Hypothesis over the KIS parsers: whatever the gateway sends, only QTSError leaves them.

Bodies are arbitrary bytes, arbitrary JSON values, and dicts that mix the real keys with
wrong-typed values. A returned AccessToken must always be usable: expiring in the future and
within two days. ``QTS_FUZZ_EXAMPLES`` raises the example count (the tox ``fuzz`` env: 10000).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.broker.kis.auth import (
    MAX_TOKEN_LIFETIME,
    classify_call,
    format_kst,
    parse_kst,
    parse_revoke_reply,
    parse_token_reply,
)
from runtime.broker.kis.transport import HttpReply
from runtime.errors import QTSError
from runtime.masking import fingerprint, mask
from tests.support.kis import VTS_KEY, VTS_SECRET, jwt, recorded, token_reply

_T = TypeVar("_T")

# When a property fails, hypothesis's pytest plugin imports libcst to print a patch; libcst
# trips mypy_extensions' TypedDict DeprecationWarning, which the project's warnings-as-errors
# turns into an INTERNALERROR that aborts the whole session. Let a failure stay a failure.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
EXAMPLES = int(os.environ.get("QTS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NOW = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
SCOPE = BrokerScope(Mode.VTS, fingerprint(VTS_KEY))
CODES = [
    "EGW00001", "EGW00002", "EGW00102", "EGW00103", "EGW00104", "EGW00105", "EGW00112",
    "EGW00115", "EGW00121", "EGW00122", "EGW00123", "EGW00133", "EGW00201", "EGW02004",
    "MCA00000", "EGW99999", "",
]  # fmt: skip


def scrub(text: str) -> str:
    return text.replace(VTS_SECRET, mask(VTS_SECRET)).replace(VTS_KEY, mask(VTS_KEY))


# --- strategies ------------------------------------------------------------------------------

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


def _kst_text(moment: datetime) -> str:
    # Zero-padded by hand: strftime("%Y") does not pad years below 1000 on every platform.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )


#: One fixed JWT for the whole run: generated data must not depend on hidden randomness.
OUR_JWT = jwt(VTS_KEY, NOW)
FOREIGN_JWT = jwt("PSother00000000000000000000000000001", NOW)

expiry_texts = st.one_of(
    st.integers(-3 * 86400, 3 * 86400).map(lambda s: format_kst(NOW + timedelta(seconds=s))),
    st.datetimes().map(_kst_text),
    st.text(max_size=30),
)
tokens = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=127), min_size=1, max_size=60),
    st.sampled_from([OUR_JWT, FOREIGN_JWT, OUR_JWT.replace(".", " ", 1), f"{OUR_JWT}\n"]),
    st.integers(4090, 4100).map(lambda n: "a" * n),
)
mixed_fields: dict[str, st.SearchStrategy[Any]] = {
    "access_token": tokens | json_values,
    "token_type": st.sampled_from(["Bearer", "bearer", "BEARER", "MAC", ""]) | json_values,
    "access_token_token_expired": expiry_texts | json_values,
    "expires_in": st.integers(-10, 10**7) | st.from_regex(r"\A[0-9]{1,14}\Z") | json_values,
    "error_code": st.sampled_from(CODES) | json_values,
    "error_description": st.text(max_size=40) | st.just(f"secret {VTS_SECRET}") | json_values,
    "rt_cd": st.sampled_from(["0", "1", "7", 0, 1, None]) | json_values,
    "msg_cd": st.sampled_from(CODES) | json_values,
    "msg1": st.text(max_size=40) | st.just(f"key {VTS_KEY}") | json_values,
    "code": st.sampled_from([200, "200", 400, "EGW00121"]) | json_values,
    "message": st.text(max_size=40) | json_values,
}
mixed_dicts = st.fixed_dictionaries({}, optional=mixed_fields)

#: Expiry strings near NOW, and the edges of what datetime can hold (year 1 KST is before
#: datetime.min in UTC; year 9999 is far beyond two days).
EDGE_EXPIRIES = [_kst_text(datetime.min), _kst_text(datetime.max), "2026-02-30 00:00:00"]
token_bases = st.one_of(
    st.integers(-2 * 86400, 3 * 86400).map(lambda s: format_kst(NOW + timedelta(seconds=s))),
    st.sampled_from(EDGE_EXPIRIES),
).map(
    lambda expiry: {
        "access_token": OUR_JWT,
        "access_token_token_expired": expiry,
        "token_type": "Bearer",
        "expires_in": 86400,
    }
)
call_bases = st.sampled_from(
    [
        recorded("inquire_price_success"),
        recorded("call_egw00121"),
        recorded("call_egw00123"),
        recorded("call_egw00201"),
        recorded("call_egw02004"),
        recorded("token_egw00133"),
    ]
)
revoke_bases = st.sampled_from(
    [recorded("revoke_success"), recorded("call_egw00121"), recorded("token_egw00103")]
)


@st.composite
def mutated(draw: st.DrawFn, bases: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A real KIS shape with up to three keys dropped or given a wrong-typed value."""
    body = dict(draw(bases))
    for key in draw(st.lists(st.sampled_from(sorted(mixed_fields)), max_size=3, unique=True)):
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(mixed_fields[key])
    return body


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def replies(bases: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[HttpReply]:
    """Arbitrary bytes, arbitrary JSON, mixed dicts, and mutations of real answers."""
    bodies = st.one_of(
        st.binary(max_size=256),
        json_values.map(_encode),
        mixed_dicts.map(_encode),
        mutated(bases).map(_encode),
        mutated(bases).map(_encode),
    )
    return st.builds(
        HttpReply,
        status=st.sampled_from([200, 200, 403, 500, 502, 404]),
        headers=st.sampled_from([{}, {"content-type": "application/json; charset=utf-8"}]),
        body=bodies,
    )


def _outcome(parse: Callable[[], _T]) -> _T | QTSError:
    """What a parser returned, or the QTSError it raised; anything else propagates and fails."""
    try:
        return parse()
    except QTSError as error:
        return error


def _assert_usable(token: AccessToken) -> None:
    assert token.issued_at == NOW
    assert NOW < token.expires_at <= NOW + MAX_TOKEN_LIFETIME
    assert token.expires_at.utcoffset() == timedelta(0)
    assert token.scope == SCOPE
    assert token.token_type == "Bearer"
    assert token.value.isascii()
    assert token.value.isprintable()
    assert " " not in token.value


# --- properties ------------------------------------------------------------------------------


@FUZZ
@given(replies(token_bases))
def test_token_parser_raises_only_qts_errors_and_returns_only_usable_tokens(reply: HttpReply) -> None:
    result = _outcome(lambda: parse_token_reply(reply, scope=SCOPE, app_key=VTS_KEY, now=NOW, scrub=scrub))

    if isinstance(result, QTSError):
        assert VTS_SECRET not in str(result)
    else:
        _assert_usable(result)
        assert reply.status == 200


@FUZZ
@given(replies(call_bases))
def test_call_classifier_raises_only_qts_errors_and_passes_only_rt_cd_0(reply: HttpReply) -> None:
    result = _outcome(lambda: classify_call(reply, scrub))

    if isinstance(result, QTSError):
        assert VTS_SECRET not in str(result)
    else:
        data, envelope = result
        assert reply.status == 200
        assert data["rt_cd"] == envelope.rt_cd == "0"
        assert not (isinstance(data.get("error_code"), str) and data["error_code"])


@FUZZ
@given(replies(revoke_bases))
def test_revoke_parser_raises_only_qts_errors(reply: HttpReply) -> None:
    result = _outcome(lambda: parse_revoke_reply(reply, scrub))

    if isinstance(result, QTSError):
        assert VTS_SECRET not in str(result)


@FUZZ
@given(
    issued=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    lifetime=st.integers(1, int(MAX_TOKEN_LIFETIME.total_seconds())),
)
def test_any_well_formed_token_reply_within_two_days_parses_to_its_expiry(
    issued: datetime, lifetime: int
) -> None:
    now = issued.replace(microsecond=0)
    body = token_reply(VTS_KEY, now, timedelta(seconds=lifetime))
    reply = HttpReply(200, {}, _encode(body))

    token = parse_token_reply(reply, scope=SCOPE, app_key=VTS_KEY, now=now, scrub=scrub)

    assert token.expires_at == now + timedelta(seconds=lifetime)
    assert token.value == body["access_token"]


fixed_offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@FUZZ
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 12, 31),
        timezones=st.timezones() | fixed_offsets,
    )
)
def test_kst_text_round_trips_any_aware_datetime_to_the_second(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)

    parsed = parse_kst(format_kst(moment))

    # Same instant. (``==`` across zones is False for ambiguous wall times, per PEP 495.)
    assert parsed == moment.astimezone(UTC)
    assert parsed.timestamp() == moment.timestamp()
    assert parsed.utcoffset() == timedelta(0)
