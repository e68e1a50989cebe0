"""The scrubber's registry and fast check: fragments cut lazily, the newest 64 ephemeral secrets
kept, and the quarter-position check giving exactly the answer of a full scan."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import scrub


@pytest.fixture
def registry() -> Iterator[None]:
    """A registry of this test's secrets only, put back as it was afterwards."""
    saved = (dict(scrub._permanent), [list(e) for e in scrub._ephemeral], dict(scrub._known))
    scrub.forget_all()
    try:
        yield
    finally:
        with scrub._lock:
            scrub._permanent.clear()
            scrub._permanent.update(saved[0])
            scrub._ephemeral.clear()
            scrub._ephemeral.extend(saved[1])
            scrub._known.clear()
            scrub._known.update(saved[2])
            scrub._grams = None


def _full_scan(text: str, grams: frozenset[str]) -> bool:
    return any(text[i : i + scrub.WINDOW] in grams for i in range(len(text) - scrub.WINDOW + 1))


@settings(max_examples=400, deadline=None)
@given(st.text("abcdef", min_size=8, max_size=60), st.text("abcdefXY-", max_size=120))
def test_the_quarter_check_answers_as_a_full_scan(secret: str, text: str) -> None:
    grams = scrub._kgrams(secret)
    assert scrub._has_run(text, grams) == _full_scan(text, grams)


@settings(max_examples=200, deadline=None)
@given(
    st.text("abcdefghij", min_size=8, max_size=60),
    st.integers(0, 52),
    st.integers(8, 20),
    st.text("XYZ- ", max_size=30),
    st.text("XYZ- ", max_size=30),
)
def test_a_run_anywhere_is_found(secret: str, start: int, length: int, before: str, after: str) -> None:
    start = min(start, len(secret) - 8)
    piece = secret[start : start + length]
    grams = scrub._kgrams(secret)
    assert scrub._has_run(before + piece + after, grams)


@pytest.mark.usefixtures("registry")
def test_only_the_newest_64_tokens_are_kept_and_each_is_scrubbed() -> None:
    tokens = [secrets.token_urlsafe(48) for _ in range(70)]
    for token in tokens:
        scrub.register(token)
        scrub.register(token)  # a second registration changes nothing
    assert len(scrub._ephemeral) == 64
    for token in tokens[6:]:
        assert scrub.scrub(f"echo {token[5:25]} end") == f"echo {scrub.REDACTED} end"
    for token in tokens[:6]:  # fallen off: as before this change, only the newest 64 stay
        assert scrub.scrub(f"echo {token[5:25]} end") == f"echo {token[5:25]} end"
    scrub.register(tokens[0])  # registered again: kept again
    assert scrub.contains_secret(tokens[0][10:30])


@pytest.mark.usefixtures("registry")
def test_credentials_stay_whatever_the_number_of_tokens() -> None:
    secret = secrets.token_hex(90)
    scrub.register(secret, permanent=True)
    for _ in range(200):
        scrub.register(secrets.token_urlsafe(48))
    assert scrub.scrub(secret[40:60]) == scrub.REDACTED
