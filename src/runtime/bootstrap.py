"""The composition root: the one place that wires adapters into the runtime.

Production defaults are built inside ``build_runtime``, never at import. Tests call the same
function with fakes. Credentials go to the broker adapter only; the runtime gets the token
machinery, the clock and the time limits.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.auth.budget import ISSUE_INTERVAL, ISSUE_MARGIN, IssuanceBudget, WaitHook
from runtime.auth.call_budget.memory import InProcessCallBudget
from runtime.auth.ports import CallBudgetPort, TokenStorePort
from runtime.auth.stores.memory import InMemoryTokenStore
from runtime.broker.base import BrokerAuthPort
from runtime.clock import ClockPort, SystemClock
from runtime.config import default_token_folder
from runtime.errors import ConfigError, ScopeMismatchError
from runtime.settings import Settings, StoreKind, TokenStoreSpec

# The HTTP library and the runtime are imported where a runtime is built, so that `qts status`
# (build_store and build_call_budget only) never loads urllib3.
if TYPE_CHECKING:
    import urllib3

    from runtime.auth.approval_cache import ApprovalKeyCache
    from runtime.auth.session import KISRuntime
    from runtime.auth.stream import RealtimeSession
    from runtime.auth.token_cache import TokenCache
    from runtime.broker.realtime import RealtimeConnectorPort

__all__ = [
    "build_approvals",
    "build_call_budget",
    "build_http",
    "build_runtime",
    "build_store",
    "build_stream",
]

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
    call_budget: CallBudgetPort | None = None,
) -> KISRuntime:
    """Wire a KISRuntime for ``settings``; any part may be replaced (tests pass fakes).

    ``on_wait`` is told the seconds left while the issuance budget waits (``qts`` shows a
    countdown). With a store shared between processes (one with an issuance lock: file,
    redis) the budget also spaces tokenP a minute apart per scope; a process-local store keeps
    only the memory of EGW00133, as one process never asks twice while it holds a usable token.

    Raises ConfigError when the settings ask for something that cannot be built, and
    ScopeMismatchError when an injected broker serves another (mode, key) than the settings.
    """
    from runtime.auth.session import KISRuntime

    clock = clock or SystemClock()
    owned_http = http is None and broker is None
    if broker is None:
        from runtime.broker.kis.adapter import KISBrokerAdapter

        http = http or build_http(settings.ca_bundle)
        broker = KISBrokerAdapter(
            settings.mode, settings.credentials, http, base_url=settings.base_url, clock=clock
        )
    if broker.scope != settings.scope:
        raise ScopeMismatchError(
            f"the broker serves {broker.scope} but the settings are for {settings.scope}"
        )
    store = store if store is not None else build_store(settings.token_store, clock=clock)
    cache = _build_cache(settings, broker, store, clock, on_wait)
    on_close = http.clear if owned_http and http is not None else None
    # The call budget is shared as widely as the tokens: the same store choice.
    call_budget = call_budget or build_call_budget(
        settings.token_store, settings.calls_per_second, clock=clock
    )
    return KISRuntime(
        broker,
        cache,
        clock,
        call_deadline_s=settings.call_deadline_s,
        call_budget=call_budget,
        on_close=on_close,
    )


def _build_cache(
    settings: Settings,
    broker: BrokerAuthPort,
    store: TokenStorePort,
    clock: ClockPort,
    on_wait: WaitHook | None,
) -> TokenCache:
    from runtime.auth.token_cache import TokenCache

    budget = IssuanceBudget(
        clock,
        wait=settings.wait_on_rate_limit,
        # A tokenP killed in flight may be counted by KIS from its answer, not from our send.
        min_interval=ISSUE_INTERVAL + ISSUE_MARGIN if store.shared else timedelta(0),
        on_wait=on_wait,
    )
    return TokenCache(broker, store, clock, margin=settings.refresh_margin, budget=budget)


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
    from runtime.auth.approval_cache import ApprovalKeyCache

    clock = clock or SystemClock()
    if broker is None:
        from runtime.broker.kis.adapter import KISBrokerAdapter

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
    from runtime.auth.stream import RealtimeSession
    from runtime.broker.kis.stream import KISRealtimeConnector

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

    The TLS context is the process's one for ``ca_bundle``, made on the first HTTPS pool
    (runtime.broker.kis.tls): a plain-http PoolManager, or the second runtime, pays nothing for
    it. A bundle is loaded here (once per process and path) so that a bad one is a ConfigError
    now, not at the first call. No pool-wide retries or timeouts: every request sets its own,
    from the call's deadline (runtime.broker.kis.transport)."""
    from runtime.broker.kis.tls import VerifyingPoolManager, tls_context

    if ca_bundle is not None:
        tls_context(ca_bundle)
    return VerifyingPoolManager(ca_bundle, num_pools=4, maxsize=_POOL_SIZE)


def build_store(spec: TokenStoreSpec, *, clock: ClockPort | None = None) -> TokenStorePort:
    """The token store ``QTS_TOKEN_STORE`` names; ``clock`` sets Redis TTLs. Connects lazily.

    Raises ConfigError when the store cannot be built (redis without its extra, a bad URL)."""
    if spec.kind is StoreKind.MEMORY:
        return InMemoryTokenStore()
    if spec.kind is StoreKind.FILE:
        from runtime.auth.stores.file import FileTokenStore  # only when the file store is used

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


def build_call_budget(
    spec: TokenStoreSpec, limit_per_s: float, *, clock: ClockPort | None = None
) -> CallBudgetPort:
    """The key's call budget, shared as widely as the token store ``spec`` names: in-process for
    memory, every process of the host for file (beside the token files), every host for Redis.

    ``limit_per_s`` is the key's whole limit (``QTS_MAX_RPS``); a shared budget degrades to a
    local quarter of it while its state cannot be reached. Raises ConfigError like build_store."""
    clock = clock or SystemClock()
    if spec.kind is StoreKind.MEMORY:
        return InProcessCallBudget(clock, limit_per_s)
    from runtime.auth.call_budget.fallback import FallbackCallBudget

    shared: CallBudgetPort
    if spec.kind is StoreKind.FILE:
        from runtime.auth.call_budget.file import FileCallBudget

        shared = FileCallBudget(spec.location or default_token_folder(), clock, limit_per_s)
    else:
        try:
            from runtime.auth.call_budget.redis import RedisCallBudget
        except ImportError as exc:
            raise ConfigError(
                "QTS_TOKEN_STORE: the redis store needs redis-py; install it with "
                "pip install 'qts-runtime[redis]'"
            ) from exc
        try:
            shared = RedisCallBudget.from_url(spec.location or "", clock, limit_per_s)
        except ValueError as exc:
            raise ConfigError(f"QTS_TOKEN_STORE: not a Redis URL redis-py can use ({exc})") from exc
    return FallbackCallBudget(shared, clock, limit_per_s)
