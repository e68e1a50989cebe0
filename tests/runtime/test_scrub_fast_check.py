"""The scrubber's fast check: looking up every WINDOW/2-th position gives exactly the answer of a
full scan of every WINDOW-character run."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import scrub


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
