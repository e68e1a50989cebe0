"""The broker port's values (runtime.broker.base): AccessToken, BrokerScope, Mode, requests, credentials."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

import attrs
import pytest

from runtime.broker.base import AccessToken, AppCredentials, BrokerRequest, BrokerResponse, BrokerScope, Mode
from runtime.masking import fingerprint

SCOPE = BrokerScope(Mode.VTS, "0123456789ab")
ISSUED = datetime(2026, 1, 5, 9, 0, tzinfo=ZoneInfo("Asia/Seoul"))
VALUE = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9.secret-part-of-the-token.signature"
KEY = "PSvaluesKey0000000000000000000000001"
SECRET = "valuesSecret" + "z" * 168


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


def test_a_response_body_given_as_a_dict_is_copied_and_read_only() -> None:
    body = {"rt_cd": "0", "output": {"stck_prpr": "71000"}}
    response = BrokerResponse(200, body)
    body["rt_cd"] = "1"
    assert response.body["rt_cd"] == "0"
    with pytest.raises(TypeError):
        response.body["rt_cd"] = "1"  # type: ignore[index]


def test_a_response_body_given_as_a_read_only_view_is_kept_without_a_copy() -> None:
    # The adapter hands over a view of the dict it has just parsed and holds nowhere else.
    view = MappingProxyType({"rt_cd": "0"})
    assert BrokerResponse(200, view).body is view
