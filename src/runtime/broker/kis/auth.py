"""KIS OAuth2 on the wire: tokenP/revokeP bodies, answer parsing and KIS error mapping.

Pure functions over bytes and values; the adapter does the I/O. Facts cite KIS_API.md.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from runtime.broker.base import AccessToken, ApprovalKey, BrokerScope
from runtime.broker.kis.transport import HttpReply
from runtime.broker.kis.wire import (
    ApprovalReply,
    CallEnvelope,
    RevokeReply,
    TokenReply,
    decode_json_object,
    structure,
)
from runtime.errors import (
    BrokerCallError,
    BrokerUnavailableError,
    CallRateLimitedError,
    CredentialsRejectedError,
    ForeignTokenError,
    IssuanceRateLimitedError,
    MalformedResponseError,
    QTSError,
    TokenRejectedError,
    WrongModeError,
)

__all__ = [
    "APPROVAL_PATH",
    "KST",
    "MAX_TOKEN_LIFETIME",
    "REVOKE_PATH",
    "TOKEN_PATH",
    "approval_body",
    "error_for_code",
    "format_kst",
    "jwt_claim",
    "parse_approval_reply",
    "parse_kst",
    "parse_revoke_reply",
    "parse_token_reply",
    "revoke_body",
    "token_body",
]

# Korea has kept UTC+9 without daylight saving since 1988: a fixed offset is exact for any token
# date, and spares the first tokenP loading zoneinfo and the tz database (~2 ms).
KST = timezone(timedelta(hours=9), "KST")
# parse_kst's accepted shape: d is an ASCII digit, anything else itself.
_KST_SHAPE = "dddd-dd-dd dd:dd:dd"
_DIGITS = frozenset("0123456789")
TOKEN_PATH = "/oauth2/tokenP"  # noqa: S105 (a URL path, not a password)
REVOKE_PATH = "/oauth2/revokeP"
APPROVAL_PATH = "/oauth2/Approval"
_MAX_APPROVAL_CHARS = 512  # SPEC gives length 286; UUID-like keys are 36
_KST_FORMAT = "%Y-%m-%d %H:%M:%S"
#: Individual customers get 24 h tokens (§2). Anything beyond two days is not a KIS answer we trust.
MAX_TOKEN_LIFETIME = timedelta(days=2)
_MAX_TOKEN_CHARS = 4096
#: §3: "1분당 1회" — one issuance per minute per app key.
ISSUANCE_RETRY_AFTER = timedelta(seconds=60)
_CALL_RETRY_AFTER = timedelta(seconds=1)
_MESSAGE_CHARS = 200  # KIS's msg1 is at most 80 characters (§5); anything longer is noise

_CREDENTIAL_CODES = frozenset({"EGW00102", "EGW00103", "EGW00104", "EGW00105", "EGW00112", "EGW00115"})
_TOKEN_CODES = frozenset({"EGW00121", "EGW00122", "EGW00123"})
_TEMPORARY_CODES = frozenset({"EGW00001", "EGW00002"})

Scrub = Callable[[str], str]


def token_body(app_key: str, app_secret: str) -> bytes:
    """The tokenP request body (§2)."""
    return json.dumps(
        {"grant_type": "client_credentials", "appkey": app_key, "appsecret": app_secret}
    ).encode()


def approval_body(app_key: str, app_secret: str) -> bytes:
    """The Approval request body (§7): the secret goes in ``secretkey``, not ``appsecret``."""
    return json.dumps(
        {"grant_type": "client_credentials", "appkey": app_key, "secretkey": app_secret}
    ).encode()


def parse_approval_reply(reply: HttpReply, *, scope: BrokerScope, now: datetime, scrub: Scrub) -> ApprovalKey:
    """An Approval answer to an ApprovalKey (issued ``now``), or the typed error it stands for."""
    data = _decode_or_raise(reply, "the Approval answer", scrub)
    _raise_for_kis_error(reply, data, scrub)
    if reply.status != 200:
        raise _status_error(reply.status, "Approval")
    fields = structure(data, ApprovalReply, "the Approval answer")
    if len(fields.approval_key) > _MAX_APPROVAL_CHARS:
        raise MalformedResponseError("the Approval answer carries an implausibly long key")
    try:
        return ApprovalKey(value=fields.approval_key, scope=scope, issued_at=now)
    except ValueError:
        raise MalformedResponseError("the Approval answer carries a key with forbidden characters") from None


def revoke_body(app_key: str, app_secret: str, token: str) -> bytes:
    """The revokeP request body (§6): no grant_type."""
    return json.dumps({"appkey": app_key, "appsecret": app_secret, "token": token}).encode()


def parse_kst(text: str) -> datetime:
    """KIS's naive ``YYYY-MM-DD HH:MM:SS`` in Korea time, as an aware UTC datetime.

    ValueError for anything else. ``fromisoformat`` behind an exact shape check, not
    ``strptime``: the latter costs ~3 ms on its first use (it imports and compiles its locale
    tables), all of it on a process's first tokenP."""
    value = text.strip()
    if len(value) != len(_KST_SHAPE) or any(
        (c in _DIGITS) != (shape == "d") or (shape != "d" and c != shape)
        for c, shape in zip(value, _KST_SHAPE, strict=True)
    ):
        raise ValueError("not YYYY-MM-DD HH:MM:SS")
    return datetime.fromisoformat(value).replace(tzinfo=KST).astimezone(UTC)


def format_kst(moment: datetime) -> str:
    """An aware datetime as KIS writes it (naive KST)."""
    return moment.astimezone(KST).strftime(_KST_FORMAT)


def parse_token_reply(
    reply: HttpReply, *, scope: BrokerScope, app_key: str, now: datetime, scrub: Scrub
) -> AccessToken:
    """A tokenP answer to an AccessToken, or the typed error it stands for."""
    data = _decode_or_raise(reply, "the tokenP answer", scrub)
    _raise_for_kis_error(reply, data, scrub)
    if reply.status != 200:
        raise _status_error(reply.status, "tokenP")
    fields = structure(data, TokenReply, "the tokenP answer")
    if fields.token_type.lower() != "bearer":
        raise MalformedResponseError("the tokenP answer has a token_type other than Bearer")
    if len(fields.access_token) > _MAX_TOKEN_CHARS:
        raise MalformedResponseError("the tokenP answer carries an implausibly long token")
    expires_at = _expiry(fields, now)
    jti = jwt_claim(fields.access_token, "jti")
    if jti is not None and jti != app_key:
        raise ForeignTokenError(
            "KIS issued a token that belongs to another app key (JWT jti); it was discarded"
        )
    try:
        return AccessToken(
            value=fields.access_token,
            token_type="Bearer",  # noqa: S106 (the scheme name)
            expires_at=expires_at,
            issued_at=now,
            scope=scope,
        )
    except ValueError:
        raise MalformedResponseError("the tokenP answer carries a token with forbidden characters") from None


def parse_revoke_reply(reply: HttpReply, scrub: Scrub) -> None:
    """Accept a revokeP answer; an unknown or already revoked token counts as revoked."""
    data = _decode_or_raise(reply, "the revokeP answer", scrub)
    code = _kis_code(data)
    if code in _TOKEN_CODES:
        return
    _raise_for_kis_error(reply, data, scrub)
    if reply.status != 200:
        raise _status_error(reply.status, "revokeP")
    answer = structure(data, RevokeReply, "the revokeP answer")
    if str(answer.code) != "200":
        raise MalformedResponseError(f"the revokeP answer reports code {str(answer.code)[:8]!r}, not 200")


def error_for_code(code: str, message: str, *, status: int | None) -> QTSError:
    """Map a KIS error code to our error leaf (classified by code, never by HTTP status alone)."""
    text = f"{message} " if message else ""
    if code in _CREDENTIAL_CODES:
        return CredentialsRejectedError(
            f"KIS rejected the app key or secret: {text}— check KIS_<MODE>_APP_KEY / KIS_<MODE>_APP_SECRET",
            code=code,
        )
    if code == "EGW02004":
        return WrongModeError(
            f"this app key belongs to the other mode's host: {text}— check KIS_MODE and the key pair",
            code=code,
        )
    if code == "EGW00133":
        return IssuanceRateLimitedError(
            f"KIS allows one token issuance per minute per app key: {text}— wait a minute",
            retry_after=ISSUANCE_RETRY_AFTER,
            code=code,
        )
    if code == "EGW00201":
        return CallRateLimitedError(
            f"too many calls per second: {text}— slow down", retry_after=_CALL_RETRY_AFTER, code=code
        )
    if code in _TOKEN_CODES:
        return TokenRejectedError(f"KIS rejected the access token: {text}".rstrip(": "), code=code)
    if code in _TEMPORARY_CODES:
        return BrokerUnavailableError(f"KIS reported a temporary error: {text}".rstrip(": "), code=code)
    return BrokerCallError(f"KIS refused the request: {text}".rstrip(": "), code=code, status=status)


def classify_call(reply: HttpReply, scrub: Scrub) -> tuple[dict[str, Any], CallEnvelope]:
    """A ``/uapi`` answer's JSON and envelope when it succeeded (rt_cd "0"); else the typed error."""
    data = _decode_or_raise(reply, "KIS's answer", scrub)
    _raise_for_kis_error(reply, data, scrub)
    if reply.status != 200:
        raise _status_error(reply.status, "the call")
    return data, _envelope(data)


def _envelope(data: dict[str, Any]) -> CallEnvelope:
    rt_cd, msg_cd, msg1 = data.get("rt_cd"), data.get("msg_cd", ""), data.get("msg1", "")
    if type(rt_cd) is str and type(msg_cd) is str and type(msg1) is str:
        # The usual answer, three strings: built directly (cattrs' dispatch is most of the cost).
        return CallEnvelope(rt_cd, msg_cd, msg1)
    return structure(data, CallEnvelope, "KIS's answer")  # anything else: cattrs decides, and names it


def _decode_or_raise(reply: HttpReply, what: str, scrub: Scrub) -> dict[str, Any]:
    try:
        return decode_json_object(reply.body, what)
    except MalformedResponseError:
        if reply.status >= 500 or reply.status == 429:
            raise _status_error(reply.status, what) from None
        raise


def _raise_for_kis_error(reply: HttpReply, data: dict[str, Any], scrub: Scrub) -> None:
    if "rt_cd" in data and not isinstance(data["rt_cd"], str):
        # rt_cd is a string flag ("0" = success, §5); a number there is a gateway we cannot read.
        raise MalformedResponseError("KIS's answer has a non-string rt_cd")
    code = _kis_code(data)
    if code is not None:
        # Mask before cutting: a cut could leave a partial secret that no longer matches.
        raise error_for_code(code, scrub(_kis_message(data))[:_MESSAGE_CHARS], status=reply.status)
    rt_cd = data.get("rt_cd")
    if rt_cd is not None and rt_cd != "0":
        raise BrokerCallError(
            f"KIS refused the request (rt_cd {str(rt_cd)[:4]!r}) without a code", status=reply.status
        )


def _kis_code(data: dict[str, Any]) -> str | None:
    # tokenP errors say error_code (§4); calls say msg_cd with rt_cd != "0" (§5). A successful
    # call also has a msg_cd (MCA00000), so msg_cd counts only when rt_cd says failure.
    error_code = data.get("error_code")
    if isinstance(error_code, str) and error_code:
        return error_code[:16]
    msg_cd = data.get("msg_cd")
    if data.get("rt_cd", "0") != "0" and isinstance(msg_cd, str) and msg_cd:
        return msg_cd[:16]
    return None


def _kis_message(data: dict[str, Any]) -> str:
    message = data.get("error_description") or data.get("msg1") or ""
    return message[: 64 * 1024] if isinstance(message, str) else ""


def _status_error(status: int, what: str) -> QTSError:
    if status >= 500 or status == 429:
        return BrokerUnavailableError(f"KIS answered {what} with HTTP {status} and no KIS error code")
    return MalformedResponseError(f"KIS answered {what} with HTTP {status} and no KIS error code")


def _expiry(fields: TokenReply, now: datetime) -> datetime:
    # §3: expires_in has no documented reference time when KIS hands back the previous token,
    # so the expiry string wins; expires_in is the fallback only.
    if fields.access_token_token_expired is not None:
        try:
            expires_at = parse_kst(fields.access_token_token_expired)
        except (ValueError, OverflowError):  # year 1 in KST is before UTC's year 1
            raise MalformedResponseError(
                "the tokenP answer's access_token_token_expired is not 'YYYY-MM-DD HH:MM:SS'"
            ) from None
    elif fields.expires_in is not None:
        if not 0 < fields.expires_in <= MAX_TOKEN_LIFETIME.total_seconds():
            raise MalformedResponseError("the tokenP answer's expires_in is out of range")
        expires_at = now + timedelta(seconds=fields.expires_in)
    else:
        raise MalformedResponseError(
            "the tokenP answer has neither access_token_token_expired nor expires_in"
        )
    if expires_at <= now:
        raise MalformedResponseError("the tokenP answer's token is already expired (check the system clock)")
    if expires_at - now > MAX_TOKEN_LIFETIME:
        raise MalformedResponseError("the tokenP answer's expiry is more than two days ahead")
    return expires_at


def jwt_claim(token: str, claim: str) -> str | None:
    """A string claim of a JWT's payload, or None when the token is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError, RecursionError):
        return None
    value = claims.get(claim) if isinstance(claims, dict) else None
    return value if isinstance(value, str) else None
