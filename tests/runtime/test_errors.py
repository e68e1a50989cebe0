"""Errors (runtime.errors): one family under QTSError, KIS codes in the text, leaves that say what to do."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime import errors

# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_derives_from_qts_error(name: str) -> None:
    assert issubclass(getattr(errors, name), errors.QTSError)


def test_error_str_carries_the_kis_code() -> None:
    assert str(errors.TokenRejectedError("expired", code="EGW00123")) == "expired [EGW00123]"
    assert errors.TokenRejectedError("expired", code="EGW00123").expired
    assert not errors.TokenRejectedError("invalid", code="EGW00121").expired
    assert str(errors.QTSError("plain")) == "plain"


def test_error_leaves_say_what_the_caller_does() -> None:
    assert issubclass(errors.StaleTokenError, errors.TokenRejectedError)
    assert issubclass(errors.WrongModeError, errors.CredentialsRejectedError)
    assert issubclass(errors.IssuanceRateLimitedError, errors.RateLimitedError)
    assert errors.BrokerUnavailableError("down").retryable
    assert errors.RateLimitedError("slow", retry_after=timedelta(seconds=1)).retryable
    assert not errors.CredentialsRejectedError("bad key").retryable
    assert errors.ConfigError("bad").exit_code == 2


def test_config_error_keeps_its_own_copy_of_problems() -> None:
    problems = {"KIS_MODE": "bad"}
    error = errors.ConfigError("bad", problems=problems)
    problems["QTS_TOKEN_STORE"] = "bad"

    assert error.problems == {"KIS_MODE": "bad"}
