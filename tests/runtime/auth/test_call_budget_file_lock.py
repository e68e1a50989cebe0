"""The file call budget locks its state file itself (``flock``), with no lock file beside it.

Over real files and a real second process: a booking leaves only the state file, a lock held by
another process is waited for until the caller's time runs out (then a typed error), and what
is planted at the path (a FIFO, a symlink) is refused at once instead of hanging or being
followed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.auth.call_budget._common import BudgetStateUnavailable
from runtime.auth.call_budget.file import FileCallBudget
from runtime.broker.base import BrokerScope, Mode
from runtime.clock import SystemClock
from runtime.deadline import Deadline

CLOCK = SystemClock()
SCOPE = BrokerScope(Mode.VTS, "0123456789ab")

_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _budget(folder: Path) -> FileCallBudget:
    return FileCallBudget(folder, CLOCK, 1000.0)


def test_a_booking_leaves_the_state_file_and_no_lock_file(tmp_path: Path) -> None:
    budget = _budget(tmp_path / "qts")
    for _ in range(3):
        booking = budget.acquire(SCOPE, Deadline.after(CLOCK, 5.0))
        budget.release(SCOPE, booking)
    assert sorted(p.name for p in (tmp_path / "qts").iterdir()) == [budget.path_for(SCOPE).name]


def test_a_lock_held_by_another_process_is_waited_for_until_the_deadline(tmp_path: Path) -> None:
    budget = _budget(tmp_path)
    holder = subprocess.Popen(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", _HOLD, str(budget.path_for(SCOPE)), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(BudgetStateUnavailable, match="stayed locked"):
            budget.acquire(SCOPE, Deadline.after(CLOCK, 0.4))
        assert 0.3 < time.monotonic() - started < 0.4 + 1.0
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # The holder is gone, and its lock with it: the next booking goes through.
    budget.release(SCOPE, budget.acquire(SCOPE, Deadline.after(CLOCK, 5.0)))


def test_a_fifo_planted_at_the_state_path_is_refused_at_once(tmp_path: Path) -> None:
    budget = _budget(tmp_path)
    os.mkfifo(budget.path_for(SCOPE))
    started = time.monotonic()
    with pytest.raises(BudgetStateUnavailable, match="not a regular file"):
        budget.acquire(SCOPE, Deadline.after(CLOCK, 5.0))
    assert time.monotonic() - started < 1.0


def test_a_symlink_planted_at_the_state_path_is_not_followed(tmp_path: Path) -> None:
    budget = _budget(tmp_path)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep me")
    budget.path_for(SCOPE).symlink_to(target)
    with pytest.raises(BudgetStateUnavailable):
        budget.acquire(SCOPE, Deadline.after(CLOCK, 5.0))
    assert target.read_bytes() == b"keep me"
