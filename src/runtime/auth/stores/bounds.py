"""The call's remaining time, as every store and lock operation sees it.

A store operation may sit on a paused Redis or a lock held elsewhere; it must never outlast
the call it serves. The runtime states the call's :class:`~runtime.deadline.Deadline` once with
:func:`within` (around the whole call); each store operation then asks :func:`seconds_left`
for its own timeout, capped by its usual one. Outside any call (``qts status``) the usual
timeouts apply.
"""

from __future__ import annotations

import contextvars

from runtime.deadline import Deadline
from runtime.errors import TokenStoreError

__all__ = ["seconds_left", "within"]

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("qts_store_deadline", default=None)


class within:  # lower case: used as a function, ``with within(deadline):``
    """Bound every store operation in this block (this thread) by ``deadline``.

    None leaves the bound as it is (an outer call's deadline still holds). A class rather than
    a generator-based context manager: every REST call enters one."""

    __slots__ = ("_deadline", "_token")

    def __init__(self, deadline: Deadline | None) -> None:
        self._deadline = deadline
        self._token: contextvars.Token[Deadline | None] | None = None

    def __enter__(self) -> None:
        if self._deadline is not None:
            self._token = _current.set(self._deadline)

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None


def seconds_left(usual_s: float, what: str = "token store operation") -> float:
    """``usual_s`` capped by the current call's time left; TokenStoreError when none is left."""
    deadline = _current.get()
    if deadline is None:
        return usual_s
    left = deadline.remaining()
    if left <= 0:
        raise TokenStoreError(f"no time left in the call's {deadline.total_s:g} s deadline for the {what}")
    return min(usual_s, left)
