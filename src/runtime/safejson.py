"""One bounded JSON reader for everything that comes from outside: KIS answers and stored tokens.

``json.loads`` accepts what no KIS answer or token document ever holds, and fails on some of
it with exceptions nobody expects: deep nesting ends in ``RecursionError``, a 5000-digit number
in ``ValueError`` (Python's int digit limit), ``1e999`` silently becomes ``inf`` and ``NaN`` a
float. :func:`loads` refuses all of these with :class:`JSONRefused` (a ``ValueError``), before
or while parsing, so every caller turns them into its own typed error.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_NUMBER_CHARS", "JSONRefused", "loads"]

#: KIS answers nest 3-4 levels, a token document 2: anything deeper is not for us.
MAX_DEPTH = 32
#: A KIS amount or a timestamp fits in 30 characters.
MAX_NUMBER_CHARS = 40

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


class JSONRefused(ValueError):
    """The text is not JSON we accept; the message says why and never quotes the text."""


def _depth_exceeds(text: str, limit: int) -> bool:
    # Fast path: a text with few brackets cannot nest deeply.
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub('""', text))
    depth = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise JSONRefused(f"a number of {len(text)} digits")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise JSONRefused(f"a number of {len(text)} characters")
    value = float(text)
    if not math.isfinite(value):  # 1e999 overflows to inf: refused like Infinity itself
        raise JSONRefused("a number out of range")
    return value


def _constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not JSON")


@functools.cache
def _decoder() -> json.JSONDecoder:
    # One decoder for every text: json.loads with options would build a new one per call.
    return json.JSONDecoder(parse_int=_int, parse_float=_float, parse_constant=_constant)


def loads(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text``; JSONRefused for invalid JSON, deep nesting, huge or non-finite numbers."""
    if _depth_exceeds(text, max_depth):
        raise JSONRefused(f"nested more than {max_depth} levels deep")
    try:
        return _decoder().decode(text)
    except JSONRefused:
        raise
    except (ValueError, RecursionError, OverflowError):
        raise JSONRefused("not valid JSON") from None
