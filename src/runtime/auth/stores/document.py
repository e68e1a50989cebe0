"""The stored document: one JSON object per scope, the same in a file and in a Redis value.

It holds the scope's token and issuance ledger, never a credential. Parsing is strict: anything
that is not exactly what this version writes becomes :class:`UnreadableEntry`, which every
store turns into a miss with a warning, never an error and never a served bad token.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from runtime import safejson, scrub
from runtime.auth.ports import IssuanceLedger, LeaseHolder
from runtime.broker.base import AccessToken, ApprovalKey, BrokerScope
from runtime.errors import ScopeMismatchError, StreamSessionHeldError
from runtime.masking import fingerprint

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "SCHEMA_VERSION",
    "UnreadableEntry",
    "approval_document",
    "check_approval_scope",
    "check_scope",
    "empty_document",
    "holder_document",
    "holder_from_raw",
    "iso_or_none",
    "ledger_from_document",
    "load_all",
    "parse_approval_document",
    "parse_document",
    "read_token",
    "session_held_error",
    "token_belongs_to",
    "token_from_document",
    "token_to_json",
]

#: The ``schema`` field of every document this version writes; documents with another one are misses.
SCHEMA_VERSION = 1
#: A document is well under 1 KiB; every store reads at most this much of one.
MAX_DOCUMENT_BYTES = 64 * 1024
_MAX_DEPTH = 4  # the document nests 3 levels: {"token": {...}}


class UnreadableEntry(Exception):
    """A stored entry that must be treated as a miss; the message says why (never the token)."""


class _Loads(Protocol):
    def load(self, scope: BrokerScope) -> AccessToken | None: ...


def check_scope(scope: BrokerScope, token: AccessToken) -> None:
    """Refuse to file a token under another scope than its own (REAL and VTS never mix)."""
    if token.scope != scope:
        raise ScopeMismatchError(f"a token of {token.scope} cannot be stored for {scope}")


def load_all(store: _Loads, scopes: Iterable[BrokerScope]) -> list[AccessToken]:
    """Every readable token among ``scopes``, ordered by scope (``qts status``)."""
    found = [token for token in map(store.load, scopes) if token is not None]
    return sorted(found, key=lambda token: token.scope)


def empty_document(scope: BrokerScope) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "scope": {"mode": scope.mode.value, "key_fingerprint": scope.key_fingerprint},
        "token": None,
        "last_issued_at": None,
        "blocked_until": None,
    }


def parse_document(raw: bytes, scope: BrokerScope) -> dict[str, Any]:
    """The checked document of ``scope`` (file or Redis value), or UnreadableEntry saying why not."""
    data = _checked_object(raw, scope)
    for field in ("last_issued_at", "blocked_until"):
        _datetime_or_none(data.get(field), field)
    token = data.get("token")
    if token is not None:
        _token_from_raw(token, scope)  # validated here so a bad token makes the whole file a miss
    return data


def read_token(raw: bytes, scope: BrokerScope) -> AccessToken | None:
    """The token in the stored document ``raw`` (None if it holds none), checked exactly as
    :func:`parse_document` checks it, built once; UnreadableEntry saying why not."""
    data = _checked_object(raw, scope)
    for field in ("last_issued_at", "blocked_until"):
        _datetime_or_none(data.get(field), field)
    token = data.get("token")
    return None if token is None else _token_from_raw(token, scope)


def token_to_json(token: AccessToken) -> dict[str, Any]:
    return {
        "value": token.value,
        "token_type": token.token_type,
        "expires_at": token.expires_at.isoformat(),
        "issued_at": token.issued_at.isoformat(),
    }


def token_from_document(data: dict[str, Any], scope: BrokerScope) -> AccessToken | None:
    raw = data.get("token")
    return None if raw is None else _token_from_raw(raw, scope)


def _token_from_raw(raw: object, scope: BrokerScope) -> AccessToken:
    if not isinstance(raw, dict) or set(raw) != {"value", "token_type", "expires_at", "issued_at"}:
        raise UnreadableEntry("the token entry does not have the expected fields")
    value, token_type = raw["value"], raw["token_type"]
    if not isinstance(value, str) or not isinstance(token_type, str) or not token_type:
        raise UnreadableEntry("the token entry has a value or type that is not text")
    expires_at = _datetime_or_none(raw["expires_at"], "expires_at")
    issued_at = _datetime_or_none(raw["issued_at"], "issued_at")
    if expires_at is None or issued_at is None:
        raise UnreadableEntry("the token entry lacks its times")
    if not token_belongs_to(value, scope):
        raise UnreadableEntry(f"the token names another app key than {scope} (JWT jti); never sent")
    try:
        token = AccessToken(
            value=value, token_type=token_type, expires_at=expires_at, issued_at=issued_at, scope=scope
        )
    except ValueError:
        raise UnreadableEntry("the token entry does not pass validation") from None
    scrub.register(token.value)  # held by this process from now on: never printable, even in part
    return token


def token_belongs_to(value: str, scope: BrokerScope) -> bool:
    """False when ``value`` is a JWT whose ``jti`` (KIS puts the app key there) is another key's.

    The runtime holds no app key, but it holds the key's fingerprint: the jti's fingerprint must
    match the scope's. A token of the other mode (another key) or of another account planted in
    a store is refused here, whatever store it came from. A token that is not a readable JWT
    carries no claim to check and passes (KIS's tokens are JWTs; test doubles may not be)."""
    jti = _jwt_jti(value)
    return jti is None or fingerprint(jti) == scope.key_fingerprint


def _jwt_jti(value: str) -> str | None:
    parts = value.split(".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = safejson.loads(payload.decode("utf-8"), max_depth=8)
    except (binascii.Error, ValueError):
        return None
    jti = claims.get("jti") if isinstance(claims, dict) else None
    return jti if isinstance(jti, str) else None


def ledger_from_document(data: dict[str, Any]) -> IssuanceLedger:
    return IssuanceLedger(
        last_issued_at=_datetime_or_none(data.get("last_issued_at"), "last_issued_at"),
        blocked_until=_datetime_or_none(data.get("blocked_until"), "blocked_until"),
    )


def _datetime_or_none(value: object, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise UnreadableEntry(f"{field} is not an ISO datetime")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UnreadableEntry(f"{field} is not an ISO datetime") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UnreadableEntry(f"{field} has no timezone")
    return moment


def iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def check_approval_scope(scope: BrokerScope, key: ApprovalKey) -> None:
    """Refuse to file an approval key under another scope than its own."""
    if key.scope != scope:
        raise ScopeMismatchError(f"an approval key of {key.scope} cannot be stored for {scope}")


def approval_document(scope: BrokerScope, key: ApprovalKey) -> dict[str, Any]:
    """The approval key's own document (a file or a Redis value of its own, never the token's)."""
    return {
        "schema": SCHEMA_VERSION,
        "scope": {"mode": scope.mode.value, "key_fingerprint": scope.key_fingerprint},
        "approval": {"value": key.value, "issued_at": key.issued_at.isoformat()},
    }


def parse_approval_document(raw: bytes, scope: BrokerScope) -> ApprovalKey:
    """The approval key in ``raw``, or UnreadableEntry saying why not (never the value)."""
    data = _checked_object(raw, scope)
    entry = data.get("approval")
    if not isinstance(entry, dict) or set(entry) != {"value", "issued_at"}:
        raise UnreadableEntry("the approval entry does not have the expected fields")
    issued_at = _datetime_or_none(entry["issued_at"], "issued_at")
    if not isinstance(entry["value"], str) or issued_at is None:
        raise UnreadableEntry("the approval entry has a value that is not text or no issue time")
    try:
        key = ApprovalKey(value=entry["value"], scope=scope, issued_at=issued_at)
    except ValueError:
        raise UnreadableEntry("the approval entry does not pass validation") from None
    scrub.register(key.value)  # held by this process from now on: never printable, even in part
    return key


def holder_document(holder: LeaseHolder) -> dict[str, Any]:
    """Who holds a stream lease, as stored beside the lease."""
    return {"host": holder.host, "pid": holder.pid, "since": holder.since.isoformat()}


def holder_from_raw(raw: bytes) -> LeaseHolder | None:
    """The holder stored beside a lease, or None when it cannot be read."""
    try:
        data = _bounded_json(raw)
        since = _datetime_or_none(data.get("since"), "since") if isinstance(data, dict) else None
    except UnreadableEntry:
        return None
    if since is None or not isinstance(data.get("host"), str) or type(data.get("pid")) is not int:
        return None
    return LeaseHolder(host=data["host"][:255], pid=data["pid"], since=since)


def _checked_object(raw: bytes, scope: BrokerScope) -> dict[str, Any]:
    """The one bounded, typed reader of every stored document (token, ledger, approval key)."""
    data = _bounded_json(raw)
    if not isinstance(data, dict):
        raise UnreadableEntry("not a JSON object")
    if data.get("schema") != SCHEMA_VERSION:
        raise UnreadableEntry(f"unknown schema {data.get('schema')!r} (this version reads {SCHEMA_VERSION})")
    if data.get("scope") != {"mode": scope.mode.value, "key_fingerprint": scope.key_fingerprint}:
        raise UnreadableEntry(f"it names another scope than {scope}")
    return data


def _bounded_json(raw: bytes) -> Any:
    # Size, nesting and number length bounded: a planted value is a miss, never RecursionError.
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise UnreadableEntry(f"{len(raw)} bytes is far too large for a stored document")
    try:
        return safejson.loads(raw.decode("utf-8"), max_depth=_MAX_DEPTH)
    except UnicodeDecodeError:
        raise UnreadableEntry("not UTF-8 text") from None
    except safejson.JSONRefused as why:  # corrupt, truncated, too deep, a 5000-digit number...
        raise UnreadableEntry(f"not a stored document ({why})") from None


def session_held_error(scope: BrokerScope, holder: LeaseHolder | None) -> StreamSessionHeldError:
    """The typed refusal a second process gets: it names the holder, it never kicks it."""
    who = str(holder) if holder is not None else "another process (holder unknown)"
    return StreamSessionHeldError(
        f"stream session held by {who} for {scope}: KIS allows one WebSocket session per app key; "
        "stop that stream or subscribe through it",
        holder_host=holder.host if holder else None,
        holder_pid=holder.pid if holder else None,
    )
