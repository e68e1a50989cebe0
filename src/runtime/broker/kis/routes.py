"""The connection pool for a URL, found by a remembered pool key instead of by parsing per call.

``PoolManager.request`` parses the URL, builds and normalises a pool key and looks the pool up,
then ``PoolManager.urlopen`` does part of it again: about a tenth of a kept-alive GET to KIS
(measured on the emulator: a GET straight to the pool took 70-86 us less than the same GET
through the manager, on a ~600 us call). The runtime talks to one or two origins, so the split
of each URL and the pool key of each origin are remembered, and the request goes straight to
the pool, as ``PoolManager.urlopen`` sends it once it has the pool (``assert_same_host`` and
``redirect`` off, the path and query as the request target).

Nothing else is cached: the pool itself is looked up in the manager's container on every call
(one dict lookup), so a pool the manager has dropped (``clear()``, eviction, a forked child's
fresh container) is never used again, and urllib3 closes it when it is collected, as usual.
Managers that are not a plain ``PoolManager`` (a ``ProxyManager`` sends absolute URLs to the
proxy) keep the manager's own path.
"""

from __future__ import annotations

import weakref
from typing import Any

import urllib3
from urllib3.util import parse_url

__all__ = ["pool_and_target"]

# A few origins and a few dozen endpoint paths in a process: bounded all the same.
_SPLITS_KEPT = 512


class _Keys:
    """One manager's pool key per origin."""

    __slots__ = ("by_origin", "manager")

    def __init__(self, http: urllib3.PoolManager) -> None:
        key = id(http)
        # Forgotten with the manager, so the entry neither outlives it nor serves a new object
        # that is given the same id later.
        self.manager = weakref.ref(http, lambda _ref: _KEYS.pop(key, None))
        self.by_origin: dict[str, Any] = {}  # urllib3's PoolKey


_KEYS: dict[int, _Keys] = {}
_SPLITS: dict[str, tuple[str, str]] = {}


def pool_and_target(http: urllib3.PoolManager, url: str) -> tuple[Any, str] | None:
    """The pool ``url`` goes to and its request target (path and any query); None when the
    request must go through the manager itself."""
    if not _direct(http):
        return None
    origin, target = _SPLITS.get(url) or _split(url)
    keys = _KEYS.get(id(http))
    if keys is None or keys.manager() is not http:
        keys = _KEYS[id(http)] = _Keys(http)
    key = keys.by_origin.get(origin)
    pool = http.pools.get(key) if key is not None else None
    if pool is None:  # first call to this origin, or the manager dropped the pool
        pool = http.connection_from_url(origin)
        keys.by_origin[origin] = _key_of(http, pool)
    return pool, target


def _direct(http: urllib3.PoolManager) -> bool:
    kind = type(http)
    return kind is urllib3.PoolManager or (
        issubclass(kind, urllib3.PoolManager) and not issubclass(kind, urllib3.ProxyManager)
    )


def _split(url: str) -> tuple[str, str]:
    parsed = parse_url(url)
    split = (f"{parsed.scheme or 'http'}://{parsed.netloc}", parsed.request_uri)
    if len(_SPLITS) >= _SPLITS_KEPT:
        _SPLITS.clear()
    _SPLITS[url] = split
    return split


def _key_of(http: urllib3.PoolManager, pool: object) -> Any:
    # The key urllib3 filed the pool under, found through the container's public mapping
    # interface (once per origin) rather than by rebuilding it with urllib3's private helpers.
    # keys(), not iteration: the container refuses to be iterated (not thread-safe, it says).
    for key in http.pools.keys():  # noqa: SIM118
        if http.pools.get(key) is pool:
            return key
    return None
