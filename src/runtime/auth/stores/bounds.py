"""The call's remaining time, as every store and lock operation sees it.

A store operation may sit on a paused Redis or a lock held elsewhere; it must never outlast
the call it serves. The runtime states the call's :class:`~runtime.deadline.Deadline` once with
:func:`within` (around the whole call); each store operation then asks :func:`seconds_left`
for its own timeout, capped by its usual one. Outside any call (``qts status``) the usual
timeouts apply.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from runtime.deadline import Deadline
from runtime.errors import TokenStoreError

__all__ = ["seconds_left", "within"]

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("qts_store_deadline", default=None)


@contextlib.contextmanager
def within(deadline: Deadline | None) -> Iterator[None]:
    """Bound every store operation in this block (this thread) by ``deadline``.

    None leaves the bound as it is (an outer call's deadline still holds)."""
    if deadline is None:
        yield
        return
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)


def seconds_left(usual_s: float, what: str = "token store operation") -> float:
    """``usual_s`` capped by the current call's time left; TokenStoreError when none is left."""
    deadline = _current.get()
    if deadline is None:
        return usual_s
    left = deadline.remaining()
    if left <= 0:
        raise TokenStoreError(f"no time left in the call's {deadline.total_s:g} s deadline for the {what}")
    return min(usual_s, left)
