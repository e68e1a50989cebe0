"""KIS JSON on the wire: the shapes KIS sends and the one strict reader that structures them.

The domain never sees these classes. Structuring is strict (a number where a string belongs
is malformed, not coerced), and every failure becomes MalformedResponseError whose message
names fields, never values: a hostile body must not smuggle a token into a log line.

The reader is a few lines over ``attrs.fields`` rather than a cattrs converter: five flat
classes need no more, and cattrs' import and set-up were ~10 ms of every process's first tokenP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from runtime import safejson
from runtime.errors import MalformedResponseError

__all__ = [
    "ApprovalReply",
    "CallEnvelope",
    "RevokeReply",
    "TokenErrorReply",
    "TokenReply",
    "decode_json_object",
    "structure",
]

_T = TypeVar("_T")


@attrs.frozen
class TokenReply:
    """``/oauth2/tokenP`` success (KIS_API.md §2)."""

    access_token: str
    token_type: str
    access_token_token_expired: str | None = None
    expires_in: int | None = None


@attrs.frozen
class ApprovalReply:
    """``/oauth2/Approval`` success (KIS_API.md §7): the key alone, no expiry."""

    approval_key: str


@attrs.frozen
class TokenErrorReply:
    """The token endpoints' own error shape (§4): not the rt_cd shape."""

    error_code: str
    error_description: str = ""


@attrs.frozen
class CallEnvelope:
    """The common part of every ``/uapi`` answer (§5)."""

    rt_cd: str
    msg_cd: str = ""
    msg1: str = ""


@attrs.frozen
class RevokeReply:
    """``/oauth2/revokeP`` success (§6); ``code`` is an int although the spec says string."""

    code: int | str
    message: str = ""


def _strict_str(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: Any, _type: Any) -> int:
    # KIS sends expires_in as a number; a digit string is tolerated, a bool or float is not.
    if isinstance(value, bool):
        raise TypeError("expected an integer, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 12:
        return int(value)
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def _int_or_str(value: Any, _type: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"expected an integer or string, got {type(value).__name__}")
    return value


def _optional(check: Callable[[Any, Any], _T]) -> Callable[[Any, Any], _T | None]:
    def optional(value: Any, _type: Any) -> _T | None:
        return None if value is None else check(value, _type)

    return optional


# What each annotation used by the classes above accepts (annotations are strings here).
_CHECKS: dict[str, Callable[[Any, Any], Any]] = {
    "str": _strict_str,
    "int": _strict_int,
    "int | str": _int_or_str,
    "str | None": _optional(_strict_str),
    "int | None": _optional(_strict_int),
}


_Field = tuple[str, Callable[[Any, Any], Any], bool]
_FIELDS: dict[type, tuple[_Field, ...]] = {}


def _fields(cls: type) -> tuple[_Field, ...]:
    """(name, check, required) for each field of ``cls``, in order (worked out once per class)."""
    known = _FIELDS.get(cls)
    if known is None:
        known = tuple((f.name, _CHECKS[str(f.type)], f.default is attrs.NOTHING) for f in attrs.fields(cls))
        _FIELDS[cls] = known
    return known


def structure(data: dict[str, Any], cls: type[_T], what: str) -> _T:
    """Structure KIS JSON into ``cls``; MalformedResponseError naming the bad fields otherwise.

    Keys ``cls`` does not name are ignored; a missing field without a default or a value of
    the wrong type is named in the error (names only, never values)."""
    if not isinstance(data, dict):
        raise MalformedResponseError(f"{what} does not have the expected shape")
    values: dict[str, Any] = {}
    bad: list[str] = []
    for name, check, required in _fields(cls):
        if name not in data:
            if required:
                bad.append(name)
            continue
        try:
            values[name] = check(data[name], None)
        except TypeError:
            bad.append(name)
    if bad:
        raise MalformedResponseError(f"{what} has missing or mistyped fields: {', '.join(sorted(bad))}")
    try:
        return cls(**values)
    except (TypeError, ValueError):
        raise MalformedResponseError(f"{what} does not have the expected shape") from None


def decode_json_object(body: bytes, what: str) -> dict[str, Any]:
    """UTF-8 JSON object or MalformedResponseError (non-UTF-8, not JSON, not an object)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedResponseError(f"{what} is not UTF-8 text") from None
    try:
        # Bounded: nesting, number length, NaN/Infinity and 1e999 (which would become inf).
        data = safejson.loads(text)
    except safejson.JSONRefused:
        raise MalformedResponseError(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedResponseError(f"{what} is JSON but not an object")
    return data
