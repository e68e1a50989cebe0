"""The scrubber's registry: registering is O(1), the k-grams are made when text is first scrubbed,
credentials stay for the process and only the newest 64 tokens are kept."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from runtime import scrub

SECRET = "appSecret-" + "s" * 60


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    scrub.forget_all()
    yield
    scrub.forget_all()


def test_registering_defers_the_kgrams_until_text_is_scrubbed() -> None:
    scrub.register(SECRET, permanent=True)
    assert scrub._permanent == {SECRET: None}
    assert scrub.scrub(f"echo: {SECRET[5:25]} end") == f"echo: {scrub.REDACTED} end"
    assert scrub._permanent[SECRET] == scrub._kgrams(SECRET)


def test_a_registration_after_a_scrub_is_seen_by_the_next_scrub() -> None:
    scrub.register(SECRET, permanent=True)
    assert scrub.contains_secret(SECRET)
    token = "tokenValue." + "t" * 40
    assert not scrub.contains_secret(token)
    scrub.register(token)
    assert scrub.scrub(token[3:20]) == scrub.REDACTED


def test_only_the_newest_64_tokens_are_kept_and_credentials_stay() -> None:
    scrub.register(SECRET, permanent=True)
    # Distinct in every 8-character run, so one token's fragments never cover another's.
    tokens = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(65)]
    for token in tokens:
        scrub.register(token)
    assert len(scrub._ephemeral) == 64
    assert not scrub.contains_secret(tokens[0])  # the oldest was let go
    assert all(scrub.contains_secret(t) for t in tokens[1:])
    assert scrub.contains_secret(SECRET)


def test_registering_twice_keeps_one_entry_and_its_age() -> None:
    first, second = "tokenA." + "a" * 30, "tokenB." + "b" * 30
    scrub.register(first)
    scrub.register(second)
    scrub.register(first)
    assert list(scrub._ephemeral) == [first, second]
    scrub.register(SECRET, permanent=True)
    scrub.register(SECRET)  # a credential seen again as a token stays permanent
    assert SECRET not in scrub._ephemeral


def test_short_values_are_not_registered() -> None:
    scrub.register("short")
    assert not scrub._ephemeral
    assert scrub.scrub("short") == "short"
