"""FileCallBudget: the key's budget shared by every process of the user on one host, no server.

``<folder>/<MODE>-<key fingerprint>.budget.json`` holds the GCRA state (see :mod:`.gcra`),
and is its own lock (``flock`` on the open file: no lock file beside it). A booking is lock ->
read -> decide -> write -> unlock, a fraction of a millisecond, so the lock is taken in about
the order callers arrive.
Times are the host's monotonic clock (CLOCK_MONOTONIC on Linux and macOS, the same for every
process of the host); a state from before a reboot lies implausibly far ahead and is reset.

A corrupt or implausible state is reset with a warning; a folder that cannot be written raises
BudgetStateUnavailable, upon which :class:`~.fallback.FallbackCallBudget` goes local.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from runtime.auth.call_budget._common import (
    BudgetStateUnavailable,
    go_when_clear,
    max_wait,
    refused,
    usage_of,
)
from runtime.auth.call_budget.gcra import (
    BudgetPolicy,
    BudgetState,
    Refusal,
    penalize,
    plausible,
    reserve,
    start,
)
from runtime.auth.call_budget.gcra import release as released
from runtime.auth.ports import Booking, BudgetUsage, ClockPort
from runtime.broker.base import BrokerScope
from runtime.deadline import Deadline
from runtime.forksafe import renew_in_child

__all__ = ["FileCallBudget"]

_log = logging.getLogger(__name__)

_MAX_BYTES = 64 * 1024
_POLL_S = 0.002  # the lock is held for well under a millisecond
# Non-blocking open (a FIFO planted at the path cannot hang it), never through a symlink.
_OPEN_FLAGS = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_PEEK_LOCK_S = 2.0


class _Box:
    """The state read under the lock; what the block leaves in it is written back if changed."""

    def __init__(self, state: BudgetState | None, now: float) -> None:
        self.state = self.read = state
        self.now = now


class FileCallBudget:
    """GCRA state per scope in a lock-protected file in ``folder``. Implements CallBudgetPort."""

    def __init__(self, folder: str | os.PathLike[str], clock: ClockPort, limit_per_s: float) -> None:
        self._folder = Path(folder).expanduser()
        self._clock = clock
        self._policy = BudgetPolicy(limit_per_s)
        self._renew()
        renew_in_child(self, FileCallBudget._renew)

    @property
    def shared(self) -> bool:
        return True

    @property
    def policy(self) -> BudgetPolicy:
        return self._policy

    def path_for(self, scope: BrokerScope) -> Path:
        """The state file of ``scope``."""
        return self._folder / f"{scope.mode.value}-{scope.key_fingerprint}.budget.json"

    def acquire(self, scope: BrokerScope, deadline: Deadline) -> Booking:
        with self._locked(scope, deadline.remaining()) as box:
            outcome = reserve(box.state, box.now, self._policy, max_wait(deadline))
            if isinstance(outcome, Refusal):
                raise refused(outcome, self._policy, deadline)
            box.state = outcome.state
            # A slot free now starts at once: one lock, one read and one write for the acquire.
            started = outcome.wait == 0.0 and self._started(box, outcome.slot)
        if started:
            return Booking(0.0, outcome.slot)
        self._clock.sleep(outcome.wait)
        booking = Booking(outcome.wait, outcome.slot)
        extra = go_when_clear(
            lambda: self._start(scope, booking.slot, deadline),
            self._clock,
            deadline,
            self._policy,
            lambda: self.release(scope, booking),
        )
        return Booking(outcome.wait + extra, outcome.slot)

    def _started(self, box: _Box, slot: float) -> bool:
        box.state, wait = start(box.state, box.now, slot, self._policy)
        return wait == 0.0

    def _start(self, scope: BrokerScope, slot: float, deadline: Deadline) -> float:
        with self._locked(scope, deadline.remaining()) as box:
            state, wait = start(box.state, box.now, slot, self._policy)
            box.state = state
            return wait

    def release(self, scope: BrokerScope, booking: Booking) -> None:
        try:
            with self._locked(scope, _PEEK_LOCK_S) as box:
                box.state = released(box.state, box.now, booking.slot)
        except BudgetStateUnavailable as exc:
            _log.debug("could not report a call's answer to the budget of %s: %s", scope, exc)

    def rate_limited(self, scope: BrokerScope, retry_after_s: float) -> None:
        try:
            with self._locked(scope, _PEEK_LOCK_S) as box:
                box.state = penalize(box.state, box.now, retry_after_s)
        except BudgetStateUnavailable as exc:
            _log.warning("could not slow the shared call budget for %s: %s", scope, exc)

    def usage(self, scope: BrokerScope) -> BudgetUsage | None:
        return self._usage_at(self.path_for(scope))

    def _usage_at(self, path: Path) -> BudgetUsage | None:
        # Read only, without the lock: `qts status` over 1,000 keys neither waits for 1,000 locks
        # nor leaves 1,000 lock files behind. A read racing a write sees the state before or
        # after it, an empty file (shown as no usage) or, rarely, a torn one (warned about).
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BudgetStateUnavailable(f"cannot open {path}: {exc.strerror or exc}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device planted at the path
                raise BudgetStateUnavailable(f"{path} is not a regular file")
            raw = os.pread(fd, _MAX_BYTES, 0)
        except OSError as exc:
            raise BudgetStateUnavailable(f"cannot read {path}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        now = self._clock.monotonic()
        return usage_of(_decode(raw, path, now), now)

    def usages(self, scopes: Sequence[BrokerScope]) -> list[BudgetUsage | None]:
        """:meth:`usage` of every scope after one listing of the folder (most keys of a long
        ``qts status`` list have no state file); an unreadable state reads as None."""
        try:
            present = set(os.listdir(self._folder))
        except FileNotFoundError:
            return [None] * len(scopes)
        except OSError as exc:
            raise BudgetStateUnavailable(f"cannot list {self._folder}: {exc.strerror or exc}") from exc
        names = (f"{scope.mode.value}-{scope.key_fingerprint}.budget.json" for scope in scopes)  # as path_for
        return [self._usage_or_none(name) if name in present else None for name in names]

    def _usage_or_none(self, name: str) -> BudgetUsage | None:
        try:
            return self._usage_at(self._folder / name)
        except BudgetStateUnavailable:
            return None

    # --- the file --------------------------------------------------------------------------------

    def _renew(self) -> None:
        # Fresh in a forked child too: another parent thread may have held the thread lock.
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def _locked(self, scope: BrokerScope, timeout_s: float) -> Iterator[_Box]:
        path = self.path_for(scope)
        # Threads of this process queue on a thread lock; processes on flock of the state file.
        if not self._guard.acquire(timeout=max(timeout_s, 0.0)):
            raise BudgetStateUnavailable(f"the call budget of {scope} stayed busy for {timeout_s:g} s")
        try:
            fd = self._open_locked(path, timeout_s)
            try:
                yield from self._box(fd, path)
            finally:
                # Unlocked explicitly: a child forked meanwhile shares the open file and its lock.
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            self._guard.release()

    def _open_locked(self, path: Path, timeout_s: float) -> int:
        """The state file, created if missing, held under ``flock``; BudgetStateUnavailable at the timeout.

        The state file is its own lock: no lock file beside it to leave behind, and no import of
        a locking library on the first call (it was a tenth of the file store's first price)."""
        ends = time.monotonic() + max(timeout_s, 0.0)  # real time: the lock is held in real time
        fd = self._open_state(path)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    left = ends - time.monotonic()
                    if left <= 0:
                        raise BudgetStateUnavailable(f"{path} stayed locked for {timeout_s:g} s") from None
                    time.sleep(min(_POLL_S, left))
        except BaseException:
            os.close(fd)
            raise

    def _open_state(self, path: Path) -> int:
        for attempt in range(2):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
            except FileNotFoundError:
                if attempt:
                    raise BudgetStateUnavailable(f"cannot create {path}") from None
                self._make_folder()
                continue
            except OSError as exc:
                raise BudgetStateUnavailable(f"cannot open {path}: {exc.strerror or exc}") from exc
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)  # a FIFO or a device planted at the path: never read, never locked
            raise BudgetStateUnavailable(f"{path} is not a regular file")
        raise AssertionError("unreachable")  # pragma: no cover

    def _make_folder(self) -> None:
        try:
            self._folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise BudgetStateUnavailable(f"cannot create {self._folder}: {exc.strerror or exc}") from exc

    def _box(self, fd: int, path: Path) -> Iterator[_Box]:
        try:
            now = self._clock.monotonic()
            box = _Box(_decode(os.pread(fd, _MAX_BYTES, 0), path, now), now)
            yield box
            if box.state is not None and box.state != box.read:
                payload = _encode(box.state)
                os.ftruncate(fd, 0)  # killed between these two: an empty file, a fresh budget
                os.pwrite(fd, payload, 0)
        except OSError as exc:
            raise BudgetStateUnavailable(f"cannot read or write {path}: {exc.strerror or exc}") from exc


def _encode(state: BudgetState) -> bytes:
    document = {
        "v": 1,
        "tat": state.tat,
        "starts": list(state.starts),
        "sent": list(state.sent),
        "done": list(state.done),
        "slow_until": state.slow_until,
        "limit_per_s": state.limit_per_s,
    }
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def _decode(raw: bytes, path: Path, now: float) -> BudgetState | None:
    """The state in ``raw``; None (a fresh budget) when empty, and after a warning when corrupt."""
    if not raw:
        return None
    try:
        state = _state_from(json.loads(raw))
    except (ValueError, TypeError, KeyError) as exc:
        _log.warning("call budget %s was unreadable (%s); starting it afresh", path, type(exc).__name__)
        return None
    if not plausible(state, now):
        _log.warning("call budget %s lay implausibly far ahead (another boot?); starting it afresh", path)
        return None
    return state


def _state_from(document: Any) -> BudgetState:
    if not isinstance(document, dict) or document.get("v") != 1:
        raise ValueError("not a version 1 budget")
    starts, sent, done = document["starts"], document["sent"], document["done"]
    if not all(isinstance(x, list) for x in (starts, sent, done)):
        raise TypeError("starts, sent and done must be lists")
    numbers = [document["tat"], document["slow_until"], document["limit_per_s"], *starts, *sent, *done]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
        raise ValueError("not finite numbers")
    return BudgetState(
        tat=float(document["tat"]),
        starts=tuple(float(s) for s in starts),
        sent=tuple(float(x) for x in sent),
        done=tuple(float(d) for d in done),
        slow_until=float(document["slow_until"]),
        limit_per_s=float(document["limit_per_s"]),
    )
