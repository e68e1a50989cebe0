"""The composition root: the one place that wires adapters into the runtime.

Production defaults are built inside ``build_runtime``, never at import. Tests call the same
function with fakes. Credentials go to the broker adapter only; the runtime gets the token
machinery, the clock and the time limits.
"""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path

import urllib3

from runtime.auth.approval_cache import ApprovalKeyCache
from runtime.auth.budget import ISSUE_INTERVAL, IssuanceBudget, WaitHook
from runtime.auth.pacing import Pacer
from runtime.auth.ports import TokenStorePort
from runtime.auth.session import KISRuntime
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.auth.stream import RealtimeSession
from runtime.auth.token_cache import TokenCache
from runtime.broker.base import BrokerAuthPort
from runtime.broker.kis.adapter import KISBrokerAdapter
from runtime.broker.kis.stream import KISRealtimeConnector
from runtime.broker.realtime import RealtimeConnectorPort
from runtime.clock import ClockPort, SystemClock
from runtime.config import default_token_folder
from runtime.errors import ConfigError, ScopeMismatchError
from runtime.settings import Settings, StoreKind, TokenStoreSpec

__all__ = ["build_approvals", "build_http", "build_runtime", "build_store", "build_stream"]

# One pool per host; enough connections for a few worker threads to share keep-alive.
_POOL_SIZE = 8


def build_runtime(
    settings: Settings,
    *,
    clock: ClockPort | None = None,
    store: TokenStorePort | None = None,
    broker: BrokerAuthPort | None = None,
    http: urllib3.PoolManager | None = None,
    on_wait: WaitHook | None = None,
) -> KISRuntime:
    """Wire a KISRuntime for ``settings``; any part may be replaced (tests pass fakes).

    ``on_wait`` is told the seconds left while the issuance budget waits (``qts`` shows a
    countdown). With a store shared between processes (one with an issuance lock: file,
    redis) the budget also spaces tokenP a minute apart per scope; a process-local store keeps
    only the memory of EGW00133, as one process never asks twice while it holds a usable token.

    Raises ConfigError when the settings ask for something that cannot be built, and
    ScopeMismatchError when an injected broker serves another (mode, key) than the settings.
    """
    clock = clock or SystemClock()
    owned_http = http is None and broker is None
    if broker is None:
        http = http or build_http(settings.ca_bundle)
        broker = KISBrokerAdapter(
            settings.mode, settings.credentials, http, base_url=settings.base_url, clock=clock
        )
    if broker.scope != settings.scope:
        raise ScopeMismatchError(
            f"the broker serves {broker.scope} but the settings are for {settings.scope}"
        )
    store = store if store is not None else build_store(settings.token_store, clock=clock)
    budget = IssuanceBudget(
        clock,
        wait=settings.wait_on_rate_limit,
        min_interval=ISSUE_INTERVAL if store.shared else timedelta(0),
        on_wait=on_wait,
    )
    cache = TokenCache(broker, store, clock, margin=settings.refresh_margin, budget=budget)
    on_close = http.clear if owned_http and http is not None else None
    pacer = Pacer(clock, settings.calls_per_second)
    return KISRuntime(
        broker, cache, clock, call_deadline_s=settings.call_deadline_s, pacer=pacer, on_close=on_close
    )


def build_approvals(
    settings: Settings,
    *,
    clock: ClockPort | None = None,
    store: TokenStorePort | None = None,
    broker: BrokerAuthPort | None = None,
    http: urllib3.PoolManager | None = None,
) -> ApprovalKeyCache:
    """The approval-key cache for ``settings``: memory, then the store, then ``/oauth2/Approval``.

    Raises ConfigError and ScopeMismatchError as :func:`build_runtime` does."""
    clock = clock or SystemClock()
    if broker is None:
        broker = KISBrokerAdapter(
            settings.mode,
            settings.credentials,
            http or build_http(settings.ca_bundle),
            base_url=settings.base_url,
            clock=clock,
        )
    if broker.scope != settings.scope:
        raise ScopeMismatchError(
            f"the broker serves {broker.scope} but the settings are for {settings.scope}"
        )
    store = store if store is not None else build_store(settings.token_store, clock=clock)
    return ApprovalKeyCache(
        broker, store, clock, margin=settings.refresh_margin, deadline_s=settings.call_deadline_s
    )


def build_stream(
    settings: Settings,
    *,
    clock: ClockPort | None = None,
    store: TokenStorePort | None = None,
    broker: BrokerAuthPort | None = None,
    http: urllib3.PoolManager | None = None,
    connector: RealtimeConnectorPort | None = None,
) -> RealtimeSession:
    """The real-time session of ``settings``' app key, on the mode's WebSocket host.

    Nothing connects until the first ``subscribe``. With a shared store (file, Redis) the
    one-session lease and the approval key are shared with every process using that store.
    Raises ConfigError and ScopeMismatchError as :func:`build_runtime` does."""
    clock = clock or SystemClock()
    store = store if store is not None else build_store(settings.token_store, clock=clock)
    approvals = build_approvals(settings, clock=clock, store=store, broker=broker, http=http)
    connector = connector or KISRealtimeConnector(settings.scope, settings.stream_url)
    if connector.scope != settings.scope:
        raise ScopeMismatchError(
            f"the stream connector serves {connector.scope} but the settings are for {settings.scope}"
        )
    return RealtimeSession(
        connector,
        approvals,
        store,
        clock,
        silence_s=settings.stream_silence_s,
        connect_timeout_s=settings.call_deadline_s,
    )


def build_http(ca_bundle: Path | None = None) -> urllib3.PoolManager:
    """A PoolManager with certificate verification always on; ``ca_bundle`` adds a CA.

    No pool-wide retries or timeouts: every request sets its own, from the call's deadline
    (runtime.broker.kis.transport)."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"KIS_CA_BUNDLE: cannot load {str(ca_bundle)!r} as PEM certificates") from exc
    return urllib3.PoolManager(num_pools=4, maxsize=_POOL_SIZE, ssl_context=context)


def build_store(spec: TokenStoreSpec, *, clock: ClockPort | None = None) -> TokenStorePort:
    """The token store ``QTS_TOKEN_STORE`` names; ``clock`` sets Redis TTLs. Connects lazily.

    Raises ConfigError when the store cannot be built (redis without its extra, a bad URL)."""
    if spec.kind is StoreKind.MEMORY:
        return InMemoryTokenStore()
    if spec.kind is StoreKind.FILE:
        from runtime.auth.stores.file import FileTokenStore  # filelock only when the file store is used

        return FileTokenStore(spec.location or default_token_folder())
    if spec.kind is StoreKind.REDIS:
        try:
            from runtime.auth.stores.redis import RedisTokenStore
        except ImportError as exc:
            raise ConfigError(
                "QTS_TOKEN_STORE: the redis store needs redis-py; install it with "
                "pip install 'qts-runtime[redis]'"
            ) from exc
        try:
            return RedisTokenStore.from_url(spec.location or "", clock or SystemClock())
        except ValueError as exc:
            raise ConfigError(f"QTS_TOKEN_STORE: not a Redis URL redis-py can use ({exc})") from exc
    raise ConfigError(f"QTS_TOKEN_STORE: unknown store kind {spec.kind.value}")  # pragma: no cover
