"""Fixtures shared by the hostile suites."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from runtime.bootstrap import build_http
from runtime.broker.base import AppCredentials, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from tests.support.scripted_kis import APP_KEY, APP_SECRET


@pytest.fixture
def adapter_for() -> Iterator[Callable[[str], KISBrokerAdapter]]:
    """A VTS adapter on a given (hostile) base URL; its pools are cleared after the test."""
    pools = []

    def make(url: str) -> KISBrokerAdapter:
        http = build_http()
        pools.append(http)
        return KISBrokerAdapter(Mode.VTS, AppCredentials(APP_KEY, APP_SECRET), http, base_url=url)

    yield make
    for pool in pools:
        pool.clear()
