"""Targets for the verified-fake suite: the KIS emulator (always) and the real KIS VTS host (opt-in).

The same scenarios run against both, so whatever the emulator is trusted with elsewhere has
been checked against KIS itself. The live target is used only when the user asks for it
three times over: ``pytest -m live``, ``KIS_LIVE=1`` and both ``KIS_VTS_APP_KEY`` and
``KIS_VTS_APP_SECRET`` in the environment. Anywhere else it is reported as SKIPPED, with the
reason, before anything is built, so a default run never opens a socket to KIS.

Real KIS rules the live target respects: one tokenP per minute per key (it sleeps 61 s before
each issuance), the same token handed back within 6 h (so "invalidated on the server" means
revoked at KIS through a second adapter), and no orders, ever.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import pytest

from kis_emulator import DEMO_VTS_ACCOUNT, KISEmulator
from runtime.auth.session import KISRuntime
from runtime.bootstrap import build_http, build_runtime
from runtime.broker.base import AccessToken, AppCredentials, Mode
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.clock import ClockPort, OffsetClock, SystemClock
from runtime.config import parse_base_url
from runtime.deadline import Deadline
from runtime.settings import Settings, StoreKind, TokenStoreSpec
from tests.support.emulator import running_emulator

LIVE_VARIABLES = ("KIS_LIVE", "KIS_VTS_APP_KEY", "KIS_VTS_APP_SECRET", "KIS_VTS_BASE_URL")
ISSUANCE_WINDOW_S = 61  # KIS: one tokenP per minute per app key, plus a second of slack


class Target(Protocol):
    """A KIS VTS host the scenarios run against."""

    name: str
    settings: Settings
    clock: ClockPort

    def runtime(self) -> KISRuntime:
        """A fresh runtime (memory store, so its first token comes from tokenP)."""
        ...

    def wait_for_issuance_window(self) -> None:
        """Let the one-tokenP-per-minute window pass on both sides."""
        ...

    def invalidate_on_server(self, token: AccessToken) -> None:
        """Make KIS reject ``token`` from now on, behind the runtime's back."""
        ...

    def adapter(self) -> KISBrokerAdapter:
        """A second adapter with the same credentials, independent of any runtime."""
        ...

    def deadline(self) -> Deadline:
        """One call's deadline for a call made through ``adapter``."""
        ...

    def counters(self) -> Mapping[str, Any] | None:
        """What the host saw since the scenario began, when the host can tell (the emulator)."""
        ...

    def begin(self) -> None:
        """Start a scenario from a clean host, where that is possible."""
        ...


def vts_settings(app_key: str, app_secret: str, base_url: str) -> Settings:
    return Settings(
        mode=Mode.VTS,
        credentials=AppCredentials(app_key, app_secret),
        base_url=base_url,
        token_store=TokenStoreSpec(StoreKind.MEMORY),
    )


class _AdapterTarget:
    """What both targets share: runtimes and a second adapter built from one Settings."""

    name: str
    settings: Settings
    clock: ClockPort

    def __init__(self) -> None:
        self._http = build_http(self.settings.ca_bundle)

    def runtime(self) -> KISRuntime:
        return build_runtime(self.settings, clock=self.clock)

    def adapter(self) -> KISBrokerAdapter:
        return KISBrokerAdapter(
            self.settings.mode,
            self.settings.credentials,
            self._http,
            base_url=self.settings.base_url,
            clock=self.clock,
        )

    def deadline(self) -> Deadline:
        """One call's deadline, as the runtime would make it for these settings."""
        return Deadline.after(self.clock, self.settings.call_deadline_s)

    def invalidate_on_server(self, token: AccessToken) -> None:
        # The same way on both targets: KIS hands back the same token for 6 h, so revoking it
        # is the one way to make the live host reject a token the runtime still holds.
        self.adapter().revoke_token(token, deadline=self.deadline())

    def close(self) -> None:
        self._http.clear()


class EmulatorTarget(_AdapterTarget):
    """A VTS ``KISEmulator`` with KIS's default rules; the runtime's clock moves with the emulator's."""

    name = "emulator"

    def __init__(self, emulator: KISEmulator) -> None:
        self.emulator = emulator
        self.clock = self._clock = OffsetClock()
        self.settings = vts_settings(DEMO_VTS_ACCOUNT.app_key, DEMO_VTS_ACCOUNT.app_secret, emulator.base_url)
        super().__init__()

    def begin(self) -> None:
        self.emulator.reset()

    def wait_for_issuance_window(self) -> None:
        self.emulator.advance(ISSUANCE_WINDOW_S)
        self._clock.advance(ISSUANCE_WINDOW_S)

    def counters(self) -> Mapping[str, Any] | None:
        return self.emulator.counters()


class LiveVTSTarget(_AdapterTarget):
    """The real KIS VTS host (or ``KIS_VTS_BASE_URL``), with the user's own VTS key pair."""

    name = "live"

    def __init__(self, environment: Mapping[str, str]) -> None:
        raw_url = environment.get("KIS_VTS_BASE_URL") or Mode.VTS.official_base_url
        self.clock = SystemClock()
        self.settings = vts_settings(
            environment["KIS_VTS_APP_KEY"], environment["KIS_VTS_APP_SECRET"], parse_base_url(raw_url)
        )
        super().__init__()

    def begin(self) -> None:
        pass  # KIS keeps its state; the scenarios are written so they do not depend on it

    def wait_for_issuance_window(self) -> None:
        time.sleep(ISSUANCE_WINDOW_S)

    def counters(self) -> Mapping[str, Any] | None:
        return None


def live_skip_reason(markexpr: str, environment: Mapping[str, str]) -> str | None:
    """Why the live target must not run, or None when the user opted in all three ways."""
    if not re.search(r"\blive\b", markexpr):
        return "live KIS VTS target: opt in with `pytest -m live`, KIS_LIVE=1 and KIS_VTS_APP_KEY/SECRET"
    if environment.get("KIS_LIVE") != "1":
        return "live KIS VTS target: set KIS_LIVE=1 (and KIS_VTS_APP_KEY/KIS_VTS_APP_SECRET) to run it"
    missing = [name for name in ("KIS_VTS_APP_KEY", "KIS_VTS_APP_SECRET") if not environment.get(name)]
    if missing:
        return f"live KIS VTS target: {' and '.join(missing)} not set"
    return None


@pytest.fixture(scope="session")
def live_environment() -> dict[str, str]:
    """The live variables as the user set them.

    Session scope, so it is read before the root conftest's per-test ``clean_environment``
    hides every KIS_* variable.
    """
    return {name: os.environ[name] for name in LIVE_VARIABLES if name in os.environ}


@pytest.fixture(
    scope="module",
    params=["emulator", pytest.param("live", marks=pytest.mark.live)],
)
def target(request: pytest.FixtureRequest, live_environment: dict[str, str]) -> Iterator[Target]:
    """Each scenario once per target; the live one only on explicit opt-in."""
    if request.param == "emulator":
        with running_emulator("VTS") as emulator:
            emulated = EmulatorTarget(emulator)
            yield emulated
            emulated.close()
        return
    reason = live_skip_reason(str(request.config.getoption("markexpr") or ""), live_environment)
    if reason is not None:
        pytest.skip(reason)
    live = LiveVTSTarget(live_environment)
    yield live
    live.close()


@pytest.fixture
def kis(target: Target) -> Iterator[KISRuntime]:
    """A fresh runtime on a clean host, built after the issuance window has passed."""
    target.begin()
    target.wait_for_issuance_window()
    with target.runtime() as runtime:
        yield runtime
    counters = target.counters()
    if counters is not None:
        assert counters["orders_attempted"] == 0, "an order reached the host"
