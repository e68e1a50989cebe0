"""Fixtures for the runtime's own tests: a real redis-server for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis import redis_server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url
