"""Fixtures: an emulator on a free loopback port per test, and urllib3 clients that talk to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import urllib3

from kis_emulator import (
    DEMO_REAL_ACCOUNT,
    DEMO_VTS_ACCOUNT,
    KISEmulator,
)
from tests.support.emulator import Client, ManualClock, running_emulator


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    """A pool with retries off, so every fault surfaces as-is."""
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=5.0))
    yield pool
    pool.clear()


@pytest.fixture
def emulator() -> Iterator[KISEmulator]:
    """A VTS host without the per-second limit (tests that need it turn it back on)."""
    with running_emulator("VTS", max_rps=None) as emu:
        yield emu


@pytest.fixture
def real_emulator() -> Iterator[KISEmulator]:
    """A REAL host with default settings."""
    with running_emulator("REAL") as emu:
        yield emu


@pytest.fixture
def manual_vts(http: urllib3.PoolManager) -> Iterator[tuple[KISEmulator, Client]]:
    """A default VTS host on a hand-driven clock, for rules where real time must not leak in."""
    with running_emulator("VTS", clock=ManualClock()) as emu:
        yield emu, Client(http, emu.base_url, DEMO_VTS_ACCOUNT)


@pytest.fixture
def manual_real(http: urllib3.PoolManager) -> Iterator[tuple[KISEmulator, Client]]:
    """A default REAL host on a hand-driven clock."""
    with running_emulator("REAL", clock=ManualClock()) as emu:
        yield emu, Client(http, emu.base_url, DEMO_REAL_ACCOUNT)


@pytest.fixture
def vts(emulator: KISEmulator, http: urllib3.PoolManager) -> Client:
    """The VTS demo account talking to the VTS host."""
    return Client(http, emulator.base_url, DEMO_VTS_ACCOUNT)


@pytest.fixture
def real(real_emulator: KISEmulator, http: urllib3.PoolManager) -> Client:
    """The REAL demo account talking to the REAL host."""
    return Client(http, real_emulator.base_url, DEMO_REAL_ACCOUNT)
