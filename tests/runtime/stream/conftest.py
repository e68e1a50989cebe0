"""Fixtures for the real-time session tests: a fast emulator on loopback, never a mocked socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kis_emulator import EmulatorConfig, KISEmulator
from tests.support.streams import StreamRig


@pytest.fixture
def rig() -> Iterator[StreamRig]:
    config = EmulatorConfig(max_rps=None, ws_tick_interval=0.01, ws_ping_interval=5.0)
    with KISEmulator("VTS", config=config) as emulator:
        built = StreamRig(emulator)
        try:
            yield built
        finally:
            built.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.runtime.stores.redis_server import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url
