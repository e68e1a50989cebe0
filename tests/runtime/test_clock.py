"""Clocks (runtime.clock): the fake never goes backwards, wall and monotonic time, timezone-aware UTC."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runtime.clock import FakeClock, OffsetClock, SystemClock

# --- clocks ----------------------------------------------------------------------------------


def test_fake_clock_refuses_to_go_backwards() -> None:
    clock = FakeClock()
    before, before_mono = clock.now(), clock.monotonic()

    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)

    assert clock.now() == before
    assert clock.monotonic() == before_mono


def test_fake_clock_moves_wall_and_monotonic_time_together() -> None:
    clock = FakeClock()
    start, mono = clock.now(), clock.monotonic()

    clock.advance(90)
    clock.sleep(10)
    clock.sleep(-5)  # sleeping a negative time is a no-op, as time.sleep(0) would be

    assert clock.now() - start == timedelta(seconds=100)
    assert clock.monotonic() - mono == 100


def test_fake_clock_is_timezone_aware_utc() -> None:
    seoul = datetime(2026, 1, 5, 9, 0, tzinfo=ZoneInfo("Asia/Seoul"))
    clock = FakeClock(seoul)

    assert clock.now() == seoul
    assert clock.now().utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="aware"):
        FakeClock(datetime(2026, 1, 5))


def test_fake_clock_set_wall_steps_wall_time_only() -> None:
    clock = FakeClock()
    mono = clock.monotonic()
    earlier = clock.now() - timedelta(minutes=5)

    clock.set_wall(earlier)

    assert clock.now() == earlier
    assert clock.monotonic() == mono
    with pytest.raises(ValueError, match="aware"):
        clock.set_wall(datetime(2026, 1, 5))


def test_offset_clock_refuses_to_go_backwards_and_jumps_ahead() -> None:
    clock = OffsetClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)

    before = clock.now()
    clock.advance(86400)
    assert clock.now() - before >= timedelta(hours=24)


def test_system_clock_is_timezone_aware_utc() -> None:
    now = SystemClock().now()

    assert now.utcoffset() == timedelta(0)
