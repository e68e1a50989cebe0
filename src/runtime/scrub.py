"""The one secret scrubber: no run of a secret's characters leaves the process in any text.

Whole-value replacement is not enough: a gateway may echo a *part* of the app secret (KIS's
``msg1`` holds 80 characters, the secret has 180), URL-encode it, or put it inside a broken
status, header or chunk-size line that then travels in urllib3's exception text and WARNING log.
So every secret registered here (app keys, app secrets, tokens, approval keys) is cut into all
its ``WINDOW``-character runs (k-grams); any text is scanned once, k-gram by k-gram, and every
stretch covered by a secret's k-grams is replaced by ``[redacted]``. Any fragment of
``WINDOW`` characters or more is therefore gone, whatever surrounds it. Percent-encoded and
``+``-for-space forms are decoded and scanned too.

Three places use it, so that no byte that could carry a secret gets out unseen:

- :func:`scrub` for any text (exception messages, KIS's ``msg1``, ``qts`` output);
- :func:`scrub_exception` for an exception leaving the broker adapter: its message and every
  link of its ``__cause__``/``__context__`` chain; links that are not ours are cut off;
- :func:`install_log_scrubber`: every log record of the ``runtime`` and ``urllib3`` loggers
  (children included) is scrubbed when it is created, exception text included.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, unquote_plus

__all__ = [
    "REDACTED",
    "WINDOW",
    "contains_secret",
    "forget_all",
    "install_log_scrubber",
    "register",
    "scrub",
    "scrub_exception",
]

#: Runs of this many characters of a secret are redacted (the promise is 16; 8 leaves margin).
WINDOW = 8
REDACTED = "[redacted]"
#: Loggers whose records are scrubbed (with all their children).
SCRUBBED_LOGGERS = ("runtime", "urllib3")

# Credentials stay for the process; tokens and approval keys rotate, so only the newest are kept.
_EPHEMERAL_KEPT = 64
_DECODE_ROUNDS = 3

_lock = threading.Lock()
# Each secret with its k-grams, made the first time text is scrubbed (None until then):
# registering is paid by every tokenP and every new runtime, scrubbing only when there is text
# to clean (errors, logging, `qts` output). Ephemeral entries keep their order: oldest first.
_permanent: dict[str, frozenset[str] | None] = {}
_ephemeral: dict[str, frozenset[str] | None] = {}
# The union, read lock-free; None after a register until the next reader rebuilds it (loading
# 1,000 stored tokens, as `qts status` does, registered each and rebuilt the union 1,000 times).
_grams: frozenset[str] | None = frozenset()


def _kgrams(secret: str) -> frozenset[str]:
    return frozenset([secret[i : i + WINDOW] for i in range(len(secret) - WINDOW + 1)])


_HALF = WINDOW // 2
_halves_cache: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


def _halves_of(grams: frozenset[str]) -> frozenset[str]:
    """Every ``_HALF``-character run of the fragments in ``grams`` (kept for the last ``grams``)."""
    global _halves_cache
    known, halves = _halves_cache
    if known is not grams:
        halves = frozenset(g[j : j + _HALF] for g in grams for j in range(len(g) - _HALF + 1))
        _halves_cache = (grams, halves)
    return halves


def _has_run(text: str, grams: frozenset[str]) -> bool:
    """True when some ``WINDOW``-character run of ``text`` is in ``grams``.

    A run of ``WINDOW`` characters starting at p holds the ``_HALF``-run at the multiple of
    ``_HALF`` in [p, p + _HALF], so only every ``_HALF``-th position is looked up (in C), and the
    few that hit are checked in full: a quarter of the lookups of a plain scan, for the same answer."""
    halves = _halves_of(grams)
    n = len(text)
    starts = range(0, n - _HALF + 1, _HALF)
    cuts = map(text.__getitem__, map(slice, starts, range(_HALF, n + 1, _HALF)))
    for i in itertools.compress(starts, map(halves.__contains__, cuts)):
        if any(text[p : p + WINDOW] in grams for p in range(max(i - _HALF, 0), i + 1)):
            return True
    return False


def register(secret: str, *, permanent: bool = False) -> None:
    """Make ``secret`` (and every fragment of it) unprintable from now on.

    ``permanent`` for credentials; tokens and approval keys are kept among the newest 64."""
    global _grams
    if len(secret) < WINDOW or secret in _permanent or secret in _ephemeral:
        return  # lock-free: every call registers its token, and it is almost always known
    with _lock:
        if secret in _permanent or secret in _ephemeral:
            return
        if permanent:
            _permanent[secret] = None
        else:
            _ephemeral[secret] = None
            if len(_ephemeral) > _EPHEMERAL_KEPT:
                del _ephemeral[next(iter(_ephemeral))]
        _grams = None
    if not _installed:
        install_log_scrubber()


def _current() -> frozenset[str]:
    """Every registered fragment (the union is rebuilt here, once after any registrations)."""
    global _grams
    grams = _grams
    if grams is None:
        with _lock:
            if _grams is None:
                _grams = frozenset().union(
                    *(_grams_of(table, secret) for table in (_permanent, _ephemeral) for secret in table)
                )
            grams = _grams
    return grams


def _grams_of(table: dict[str, frozenset[str] | None], secret: str) -> frozenset[str]:
    """``secret``'s k-grams, made once and kept beside it (the caller holds the lock)."""
    grams = table[secret]
    if grams is None:
        grams = table[secret] = _kgrams(secret)
    return grams


def forget_all() -> None:
    """Drop every registered secret (tests only)."""
    global _grams
    with _lock:
        _permanent.clear()
        _ephemeral.clear()
        _grams = frozenset()


def _covered(text: str, grams: frozenset[str]) -> list[tuple[int, int]]:
    """Maximal [start, end) stretches of ``text`` covered by k-grams found in ``grams``."""
    spans: list[tuple[int, int]] = []
    for i in range(len(text) - WINDOW + 1):
        if text[i : i + WINDOW] in grams:
            end = i + WINDOW
            if spans and spans[-1][1] >= i:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((i, end))
    return spans


def _redact(text: str, grams: frozenset[str]) -> str:
    spans = _covered(text, grams)
    if not spans:
        return text
    parts: list[str] = []
    last = 0
    for start, end in spans:
        parts.append(text[last:start])
        parts.append(REDACTED)
        last = end
    parts.append(text[last:])
    return "".join(parts)


def scrub_with(text: str, grams: frozenset[str]) -> str:
    """``text`` with every run of ``WINDOW`` characters found in ``grams`` redacted (pure)."""
    if not grams or len(text) < WINDOW:
        return text
    if _has_run(text, grams):
        text = _redact(text, grams)
    # Percent-encoded (or form-encoded) echoes: scan the decoded text too. Decoding loses the
    # original encoding of the message, which is fine for a message that carried a secret.
    for _ in range(_DECODE_ROUNDS):
        if "%" not in text and "+" not in text:
            break
        changed = False
        for decode in (unquote, unquote_plus):
            decoded = decode(text)
            if decoded != text and _has_run(decoded, grams):
                text = _redact(decoded, grams)
                changed = True
        if not changed:
            break
    return text


def scrub(text: str) -> str:
    """``text`` without any run of ``WINDOW`` characters of a registered secret."""
    return scrub_with(text, _current())


def contains_secret(text: str) -> bool:
    """True when ``text`` still holds a fragment of a registered secret."""
    return scrub(text) != text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, bytes | bytearray):
        return scrub(bytes(value).decode("latin-1"))
    return value


def scrub_exception(exc: BaseException, *, ours: type[BaseException] | None = None) -> BaseException:
    """Scrub ``exc`` in place: its message, its ``args`` and every link of its chain.

    A link that is not an instance of ``ours`` (a dependency's exception, whose text we cannot
    rewrite reliably) is cut off together with everything behind it. Returns ``exc``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        _scrub_one(current)
        following = current.__cause__ or current.__context__
        if following is not None and ours is not None and not isinstance(following, ours):
            current.__cause__ = None
            current.__context__ = None
            current.__suppress_context__ = True
            break
        current = following
    return exc


def _scrub_one(exc: BaseException) -> None:
    with contextlib.suppress(AttributeError, TypeError):  # an exception type with frozen args
        exc.args = tuple(_scrub_value(arg) for arg in exc.args)
    for name in ("message", "code", "msg", "reason", "strerror"):
        value = getattr(exc, name, None)
        if isinstance(value, str):
            with contextlib.suppress(AttributeError, TypeError):  # a read-only attribute
                setattr(exc, name, scrub(value))
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        notes[:] = [scrub(n) if isinstance(n, str) else n for n in notes]


# --- logging ------------------------------------------------------------------------------------

_installed = False
_previous_factory: Callable[..., logging.LogRecord] | None = None


def _is_scrubbed_logger(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in SCRUBBED_LOGGERS)


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """Render ``record``'s message and exception text now, scrubbed, and freeze them."""
    if not _current():
        return record
    try:
        message = record.getMessage()
    except Exception:  # a broken format string must not hide a secret either
        message = f"{record.msg!s} {record.args!r}"
    record.msg = scrub(message)
    record.args = ()
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = scrub(text)
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
    return record


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs every record it sees (for an application's own handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


def install_log_scrubber() -> None:
    """Scrub every record of the ``runtime`` and ``urllib3`` loggers as it is created.

    A filter on a logger does not see its children's records, and urllib3 logs from several
    child loggers (``urllib3.connectionpool`` warns "Failed to parse headers ... unparsed
    data"), so the record factory is wrapped instead; other loggers' records pass untouched.
    Idempotent."""
    global _installed, _previous_factory
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()
        _previous_factory = previous

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _is_scrubbed_logger(record.name):
                scrub_record(record)
            return record

        logging.setLogRecordFactory(factory)
        for name in SCRUBBED_LOGGERS:  # also for records made by another factory set later
            logging.getLogger(name).addFilter(ScrubFilter())
        _installed = True
