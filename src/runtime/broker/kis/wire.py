"""KIS JSON on the wire: the shapes KIS sends and the one cattrs converter that reads them.

The domain never sees these classes. Structuring is strict (a number where a string belongs
is malformed, not coerced), and every failure becomes MalformedResponseError whose message
names fields, never values: a hostile body must not smuggle a token into a log line.
"""

from __future__ import annotations

import functools
import typing
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from runtime import safejson
from runtime.errors import MalformedResponseError

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "ApprovalReply",
    "CallEnvelope",
    "RevokeReply",
    "TokenReply",
    "decode_json_object",
    "structure",
]

_T = TypeVar("_T")

# The reply shapes are read once and dropped: no equality, hashing or repr is generated for
# them (attrs compiles each method at import, ~0.25 ms a class on every process's first price),
# and a TokenReply's repr would have shown the token.


@attrs.frozen(eq=False, repr=False)
class TokenReply:
    """``/oauth2/tokenP`` success (KIS_API.md §2)."""

    access_token: str
    token_type: str
    access_token_token_expired: str | None = None
    expires_in: int | None = None


@attrs.frozen(eq=False, repr=False)
class ApprovalReply:
    """``/oauth2/Approval`` success (KIS_API.md §7): the key alone, no expiry."""

    approval_key: str


@attrs.frozen(eq=False, repr=False)
class CallEnvelope:
    """The common part of every ``/uapi`` answer (§5)."""

    rt_cd: str
    msg_cd: str = ""
    msg1: str = ""


@attrs.frozen(eq=False, repr=False)
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


@functools.cache
def _converter() -> cattrs.Converter:
    import cattrs  # only for an answer the plain path below does not take (see structure)

    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(int | str, _int_or_str)
    return converter


def structure(data: dict[str, Any], cls: type[_T], what: str) -> _T:
    """Structure KIS JSON into ``cls``; MalformedResponseError naming the bad fields otherwise.

    An answer whose every field already has one of its declared types is built directly: that
    is what the strict hooks would return unchanged, and it spares every process importing
    cattrs (~10 ms) and building its converter (~2 ms) before its first price. Anything else
    (a missing field, a digit string for a number, a wrong type) goes to cattrs, which decides
    and names the fields."""
    plain = _structure_plain(data, cls)
    if plain is not None:
        return plain
    converter = _converter()
    try:
        return converter.structure(data, cls)
    except (TypeError, ValueError):
        raise MalformedResponseError(f"{what} does not have the expected shape") from None
    except Exception as exc:
        if not _is_validation_error(exc):
            raise
        fields = sorted({_field_path(note) for note in _notes(exc)})
        raise MalformedResponseError(f"{what} has missing or mistyped fields: {', '.join(fields)}") from None


def _is_validation_error(exc: Exception) -> bool:
    import cattrs

    return isinstance(exc, cattrs.BaseValidationError)


_Field = tuple[str, tuple[type, ...], bool]  # name, the exact types taken as they are, required


@functools.cache
def _plain_fields(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    fields: list[_Field] = []
    for field in attrs.fields(cls):
        hint = hints[field.name]
        fields.append((field.name, typing.get_args(hint) or (hint,), field.default is attrs.NOTHING))
    return tuple(fields)


def _structure_plain(data: dict[str, Any], cls: type[_T]) -> _T | None:
    values: dict[str, Any] = {}
    for name, types, required in _plain_fields(typing.cast(type, cls)):
        if name in data:
            value = data[name]
            if type(value) not in types:  # exact: a bool is not an int here
                return None
            values[name] = value
        elif required:
            return None
    return cls(**values)


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


def _notes(exc: BaseException) -> list[str]:
    notes = [n for n in getattr(exc, "__notes__", []) if isinstance(n, str)]
    for sub in getattr(exc, "exceptions", ()):
        notes.extend(_notes(sub))
    return notes


def _field_path(note: str) -> str:
    # cattrs notes read "Structuring class TokenReply @ attribute access_token"; keep the name.
    return note.rsplit(" ", 1)[-1] if "@ attribute" in note else "body"
