"""ClockPort contract: every clock the runtime can be given behaves the same way."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, timedelta

import pytest

from runtime.clock import ClockPort, FakeClock, OffsetClock, SystemClock

CLOCKS: dict[str, Callable[[], ClockPort]] = {
    "system": SystemClock,
    "offset": OffsetClock,
    "fake": FakeClock,
}


@pytest.fixture(params=sorted(CLOCKS))
def any_clock(request: pytest.FixtureRequest) -> ClockPort:
    return CLOCKS[request.param]()


def test_now_is_timezone_aware_utc(any_clock: ClockPort) -> None:
    now = any_clock.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert now.tzinfo == UTC


def test_monotonic_never_goes_backwards(any_clock: ClockPort) -> None:
    readings = [any_clock.monotonic() for _ in range(1000)]
    assert readings == sorted(readings)


def test_sleep_lets_at_least_that_much_time_pass(any_clock: ClockPort) -> None:
    before_wall, before_mono = any_clock.now(), any_clock.monotonic()
    any_clock.sleep(0.02)
    assert any_clock.monotonic() - before_mono >= 0.02 - 1e-9  # float rounding
    assert any_clock.now() - before_wall >= timedelta(seconds=0.019)


def test_sleep_of_zero_or_less_returns_at_once(any_clock: ClockPort) -> None:
    before = any_clock.monotonic()
    any_clock.sleep(0)
    any_clock.sleep(-5)
    assert any_clock.monotonic() - before < 0.05


@pytest.mark.parametrize("make", [FakeClock, OffsetClock], ids=["fake", "offset"])
def test_advancing_clocks_move_wall_and_monotonic_time_and_refuse_to_go_back(
    make: Callable[[], FakeClock | OffsetClock],
) -> None:
    clock = make()
    wall, mono = clock.now(), clock.monotonic()
    clock.advance(3600)
    assert clock.now() - wall >= timedelta(hours=1)
    assert clock.monotonic() - mono >= 3600
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
