"""Objects built before ``fork()`` renew their process-local parts in the child.

multiprocessing's default start method on Linux and ``gunicorn --preload`` fork a process that
already holds a runtime. The child then shares the parent's pooled keep-alive sockets (two
processes reading answers from one socket get each other's answers), and copies of locks that
another parent thread may have held at the fork (never released in the child). Each such object
registers a renewal here; ``os.register_at_fork(after_in_child=...)`` runs them all in the child.

Registration is weak: a registered object that is garbage collected is simply forgotten.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["renew_in_child"]

_log = logging.getLogger(__name__)

T = TypeVar("T")

_renewals: weakref.WeakKeyDictionary[Any, list[Callable[[Any], None]]] = weakref.WeakKeyDictionary()
_guard = threading.Lock()
_hooked = False


def renew_in_child(obj: T, renew: Callable[[T], None]) -> None:
    """Call ``renew(obj)`` in every child forked while ``obj`` lives.

    ``renew`` receives the object (it must not hold a reference to it itself, or the object
    never dies) and must not raise; what it raises is logged and ignored.
    """
    global _hooked
    with _guard:
        if not _hooked:
            # Registered on first use, not at import: importing the package changes nothing.
            os.register_at_fork(after_in_child=_renew_all)
            _hooked = True
        _renewals.setdefault(obj, []).append(renew)


def _renew_all() -> None:
    global _guard
    # The guard itself may have been held by another parent thread at the fork.
    _guard = threading.Lock()
    for obj, renewals in list(_renewals.items()):
        for renew in renewals:
            try:
                renew(obj)
            except Exception:  # a renewal must never break the child's start
                _log.exception("renewing %s after fork failed", type(obj).__name__)
