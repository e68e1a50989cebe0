"""The PoolManager every KIS adapter uses: verification always on, one TLS context per process.

``ssl.create_default_context()`` costs ~20 ms and ~840 KiB (the system CA store is parsed
into it). Built per runtime, that was most of a second runtime's start and of its memory, and it
was paid even for plain-http loopback. Here it is made once per process and CA bundle path,
on the first HTTPS connection pool, and shared by every PoolManager after that: an SSLContext is
safe to share between threads and connections once configured, and nothing configures it later.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Any

import urllib3

from runtime.errors import ConfigError

__all__ = ["VerifyingPoolManager", "tls_context"]

_contexts: dict[str | None, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def tls_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """The process's verifying context for ``ca_bundle`` (the system CAs plus that file's).

    Raises ConfigError when ``ca_bundle`` does not load as PEM certificates."""
    key = str(ca_bundle) if ca_bundle is not None else None
    context = _contexts.get(key)
    if context is not None:
        return context
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = ssl.create_default_context()  # CERT_REQUIRED and check_hostname on
            if key is not None:
                try:
                    context.load_verify_locations(cafile=key)
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError(f"KIS_CA_BUNDLE: cannot load {key!r} as PEM certificates") from exc
            _contexts[key] = context
    return context


class VerifyingPoolManager(urllib3.PoolManager):
    """A PoolManager whose HTTPS pools get :func:`tls_context` when they are created, not before."""

    def __init__(self, ca_bundle: Path | None = None, **kw: Any) -> None:
        kw.pop("ssl_context", None)  # the context is always ours: verification cannot be swapped out
        super().__init__(**kw)
        self._ca_bundle = ca_bundle

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> urllib3.HTTPConnectionPool:
        if scheme == "https":
            base = request_context if request_context is not None else self.connection_pool_kw
            request_context = dict(base)
            request_context["ssl_context"] = tls_context(self._ca_bundle)
        return super()._new_pool(scheme, host, port, request_context)
