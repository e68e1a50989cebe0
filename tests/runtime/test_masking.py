"""Masking (runtime.masking): mask never leaks a value; fingerprints are short, stable and distinct."""

from __future__ import annotations

import string

from hypothesis import assume, given
from hypothesis import strategies as st

from runtime.broker.base import BrokerScope, Mode
from runtime.masking import fingerprint, mask

KEY = "PSvaluesKey0000000000000000000000001"

# Token values and app keys are printable ASCII without spaces (AccessToken enforces it).
TOKEN_TEXT = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation, min_size=1)


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
