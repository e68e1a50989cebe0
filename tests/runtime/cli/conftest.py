"""Fixtures for the ``qts`` subprocess tests.

Every test runs the real command as a child process (``python -m runtime.cli``) with an
environment built from nothing but PATH, HOME and XDG_CACHE_HOME (both inside ``tmp_path``) and
the variables the test names, in ``tmp_path`` as its working directory so no stray ``.env`` is
read. The KIS host is a ``KISEmulator`` started in the test process on 127.0.0.1.

Every run is checked for leaks on the way out: no app secret anywhere and no full token
anywhere, except on stdout of ``qts token --reveal``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from kis_emulator import EmulatorAccount
from tests.support.cli import QTS, make_account
from tests.support.emulator import Emulators


@pytest.fixture(scope="session")
def vts_account() -> EmulatorAccount:
    return make_account("VTS")


@pytest.fixture(scope="session")
def real_account() -> EmulatorAccount:
    return make_account("REAL")


@pytest.fixture
def qts(tmp_path: Path, vts_account: EmulatorAccount, real_account: EmulatorAccount) -> QTS:
    return QTS(tmp_path, (vts_account.app_secret, real_account.app_secret))


@pytest.fixture
def emulators(vts_account: EmulatorAccount, real_account: EmulatorAccount) -> Iterator[Emulators]:
    running = Emulators([vts_account, real_account])
    yield running
    running.stop_all()


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=5.0))
    yield pool
    pool.clear()
