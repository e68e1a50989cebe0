"""Shared fixtures: a clean environment for every test and a fake clock."""

from __future__ import annotations

import pytest

from runtime.clock import FakeClock
from runtime.config import ENV_VARIABLES


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own KIS_* / QTS_* variables."""
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
