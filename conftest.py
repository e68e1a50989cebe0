"""Fixtures shared by tests/ and contracts/: a clean environment for every test and a fake clock."""

from __future__ import annotations

import pytest

from runtime.clock import FakeClock
from runtime.config import ENV_VARIABLES


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test sees the developer's own KIS_* / QTS_* variables or writes into their ~/.cache."""
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
