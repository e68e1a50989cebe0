"""Value objects, masking, errors and clocks: the small pieces everything else relies on."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from runtime import errors
from runtime.broker.base import AccessToken, BrokerRequest, BrokerResponse, BrokerScope, Mode
from runtime.clock import FakeClock, OffsetClock, SystemClock
from runtime.masking import fingerprint, mask
from runtime.settings import AppCredentials

SCOPE = BrokerScope(Mode.VTS, "0123456789ab")
ISSUED = datetime(2026, 1, 5, 9, 0, tzinfo=ZoneInfo("Asia/Seoul"))
VALUE = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.secret-part-of-the-token.signature"
KEY = "PSvaluesKey0000000000000000000000001"
SECRET = "valuesSecret" + "z" * 168

# Token values and app keys are printable ASCII without spaces (AccessToken enforces it).
TOKEN_TEXT = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation, min_size=1)


def make_token(**changes: object) -> AccessToken:
    values: dict[str, object] = {
        "value": VALUE,
        "token_type": "Bearer",
        "expires_at": ISSUED + timedelta(hours=24),
        "issued_at": ISSUED,
        "scope": SCOPE,
    }
    values.update(changes)
    return AccessToken(**values)  # type: ignore[arg-type]


# --- AccessToken -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["expires_at", "issued_at"])
def test_access_token_needs_timezone_aware_datetimes(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make_token(**{field: datetime(2026, 1, 5, 9, 0)})


def test_access_token_accepts_any_timezone_and_compares_instants() -> None:
    token = make_token()
    utc = attrs.evolve(token, expires_at=token.expires_at.astimezone(UTC))

    assert token.expires_at == utc.expires_at
    assert token.time_left(ISSUED) == timedelta(hours=24)
    assert token.time_left(ISSUED + timedelta(hours=25)) == timedelta(hours=-1)


@pytest.mark.parametrize("value", ["", "has space", "new\nline", "탭", "x\x00y", "bearer\r\nX-Evil: 1"])
def test_access_token_value_must_be_header_safe(value: str) -> None:
    with pytest.raises(ValueError, match="token value"):
        make_token(value=value)


def test_access_token_repr_has_no_token_value() -> None:
    token = make_token()

    assert VALUE not in repr(token)
    assert "secret-part" not in repr(token)
    assert "value=" not in repr(token)


def test_access_token_str_shows_the_masked_form() -> None:
    token = make_token()

    assert token.masked in str(token)
    assert VALUE not in str(token)
    assert "secret-part" not in str(token)
    assert str(SCOPE) in str(token)


def test_access_token_authorization_header_is_bearer() -> None:
    assert make_token().authorization == f"Bearer {VALUE}"


def test_access_token_is_frozen() -> None:
    token = make_token()

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        token.value = "other"  # type: ignore[misc]


# --- BrokerScope -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fp", ["", "0123456789a", "0123456789abc", "0123456789AB", "0123456789ag", " 0123456789ab"]
)
def test_broker_scope_refuses_anything_but_12_lowercase_hex(fp: str) -> None:
    with pytest.raises(ValueError, match="key_fingerprint"):
        BrokerScope(Mode.VTS, fp)


def test_broker_scope_differs_by_mode_and_prints_compactly() -> None:
    real = BrokerScope(Mode.REAL, SCOPE.key_fingerprint)

    assert real != SCOPE
    assert str(SCOPE) == "VTS:0123456789ab"


def test_broker_scopes_of_both_modes_can_be_ordered() -> None:
    """BrokerScope declares order=True; InMemoryTokenStore.tokens() sorts scopes for `qts status`."""
    real = BrokerScope(Mode.REAL, "ffffffffffff")
    vts = BrokerScope(Mode.VTS, "000000000000")

    assert sorted([vts, real]) == sorted([real, vts])


def test_mode_parse_accepts_case_and_spaces_and_names_the_allowed_values() -> None:
    assert Mode.parse(" vts ") is Mode.VTS
    assert Mode.parse("Real") is Mode.REAL
    with pytest.raises(ValueError, match="VTS or REAL"):
        Mode.parse("PAPER")


# --- masking ---------------------------------------------------------------------------------


@given(TOKEN_TEXT)
def test_mask_never_returns_its_input_and_keeps_the_length(value: str) -> None:
    masked = mask(value)

    assert masked != value
    assert masked.endswith(f"({len(value)} chars)")


@given(TOKEN_TEXT.filter(lambda v: len(v) >= 8))
def test_mask_never_contains_a_value_of_8_or_more_chars(value: str) -> None:
    assert value not in mask(value)


@given(st.text(min_size=0, max_size=23))
def test_mask_shows_nothing_of_a_short_value(value: str) -> None:
    assert mask(value) == f"****({len(value)} chars)"


@given(st.text(min_size=24))
def test_mask_shows_only_four_characters_at_each_end_of_a_long_value(value: str) -> None:
    assert mask(value) == f"{value[:4]}…{value[-4:]}({len(value)} chars)"


def test_fingerprint_is_12_lowercase_hex_and_stable() -> None:
    fp = fingerprint(KEY)

    assert len(fp) == 12
    assert set(fp) <= set("0123456789abcdef")
    assert fingerprint(KEY) == fp
    assert KEY[:6] not in fp
    BrokerScope(Mode.VTS, fp)  # a valid scope name


@given(TOKEN_TEXT, TOKEN_TEXT)
def test_fingerprint_differs_for_different_keys(one: str, two: str) -> None:
    assume(one != two)

    assert fingerprint(one) != fingerprint(two)


# --- AppCredentials --------------------------------------------------------------------------


def test_app_credentials_repr_and_str_show_only_the_fingerprint() -> None:
    credentials = AppCredentials(KEY, SECRET)

    for text in (repr(credentials), str(credentials), f"{credentials}", f"{credentials!r}"):
        assert KEY not in text
        assert SECRET not in text
        assert credentials.fingerprint in text


def test_app_credentials_fingerprint_is_the_key_fingerprint() -> None:
    assert AppCredentials(KEY, SECRET).fingerprint == fingerprint(KEY)


# --- BrokerRequest / BrokerResponse ----------------------------------------------------------


def test_broker_request_normalises_the_method_and_freezes_params() -> None:
    params = {"FID_INPUT_ISCD": "005930"}
    request = BrokerRequest(
        "get", "/uapi/domestic-stock/v1/quotations/inquire-price", "FHKST01010100", params=params
    )
    params["FID_INPUT_ISCD"] = "000660"

    assert request.method == "GET"
    assert request.params == {"FID_INPUT_ISCD": "005930"}
    with pytest.raises(TypeError):
        request.params["x"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(
    ("tr_cont", "more"), [("F", True), ("M", True), ("D", False), ("E", False), (None, False)]
)
def test_broker_response_next_page_follows_tr_cont(tr_cont: str | None, more: bool) -> None:
    assert BrokerResponse(200, {}, tr_cont=tr_cont).has_next_page is more


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_derives_from_qts_error(name: str) -> None:
    assert issubclass(getattr(errors, name), errors.QTSError)


def test_error_str_carries_the_kis_code() -> None:
    assert str(errors.TokenRejectedError("expired", code="EGW00123")) == "expired [EGW00123]"
    assert errors.TokenRejectedError("expired", code="EGW00123").expired
    assert not errors.TokenRejectedError("invalid", code="EGW00121").expired
    assert str(errors.QTSError("plain")) == "plain"


def test_error_leaves_say_what_the_caller_does() -> None:
    assert issubclass(errors.StaleTokenError, errors.TokenRejectedError)
    assert issubclass(errors.WrongModeError, errors.CredentialsRejectedError)
    assert issubclass(errors.IssuanceRateLimitedError, errors.RateLimitedError)
    assert errors.BrokerUnavailableError("down").retryable
    assert errors.RateLimitedError("slow", retry_after=timedelta(seconds=1)).retryable
    assert not errors.CredentialsRejectedError("bad key").retryable
    assert errors.ConfigError("bad").exit_code == 2


def test_config_error_keeps_its_own_copy_of_problems() -> None:
    problems = {"KIS_MODE": "bad"}
    error = errors.ConfigError("bad", problems=problems)
    problems["QTS_TOKEN_STORE"] = "bad"

    assert error.problems == {"KIS_MODE": "bad"}


# --- clocks ----------------------------------------------------------------------------------


def test_fake_clock_refuses_to_go_backwards() -> None:
    clock = FakeClock()
    before, before_mono = clock.now(), clock.monotonic()

    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)

    assert clock.now() == before
    assert clock.monotonic() == before_mono


def test_fake_clock_moves_wall_and_monotonic_time_together() -> None:
    clock = FakeClock()
    start, mono = clock.now(), clock.monotonic()

    clock.advance(90)
    clock.sleep(10)
    clock.sleep(-5)  # sleeping a negative time is a no-op, as time.sleep(0) would be

    assert clock.now() - start == timedelta(seconds=100)
    assert clock.monotonic() - mono == 100


def test_fake_clock_is_timezone_aware_utc() -> None:
    seoul = datetime(2026, 1, 5, 9, 0, tzinfo=ZoneInfo("Asia/Seoul"))
    clock = FakeClock(seoul)

    assert clock.now() == seoul
    assert clock.now().utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="aware"):
        FakeClock(datetime(2026, 1, 5))


def test_fake_clock_set_wall_steps_wall_time_only() -> None:
    clock = FakeClock()
    mono = clock.monotonic()
    earlier = clock.now() - timedelta(minutes=5)

    clock.set_wall(earlier)

    assert clock.now() == earlier
    assert clock.monotonic() == mono
    with pytest.raises(ValueError, match="aware"):
        clock.set_wall(datetime(2026, 1, 5))


def test_offset_clock_refuses_to_go_backwards_and_jumps_ahead() -> None:
    clock = OffsetClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)

    before = clock.now()
    clock.advance(86400)
    assert clock.now() - before >= timedelta(hours=24)


def test_system_clock_is_timezone_aware_utc() -> None:
    now = SystemClock().now()

    assert now.utcoffset() == timedelta(0)
