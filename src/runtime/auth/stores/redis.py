"""RedisTokenStore: one token per scope in Redis, shared by every host that uses one app key.

Keys (``prefix`` defaults to ``qts``):

- ``qts:token:<MODE>:<fingerprint>`` -- the same JSON document as the file store, with a TTL
  of the token's remaining life, so Redis drops it when KIS would;
- ``qts:ledger:<MODE>:<fingerprint>`` -- the scope's issuance ledger (one hour TTL: it only
  matters for a minute);
- ``qts:lock:<MODE>:<fingerprint>`` -- redis-py's ``Lock`` (SET NX PX with a token-checked
  release), held for re-read -> re-check -> issue -> write, so one host sends the tokenP.

Needs the optional extra: ``pip install 'qts-runtime[redis]'``. A corrupt or foreign value is
a miss with a warning; only an unreachable server raises TokenStoreError.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from runtime.auth.ports import ClockPort, IssuanceLedger
from runtime.auth.stores.bounds import seconds_left, within
from runtime.auth.stores.document import (
    MAX_DOCUMENT_BYTES,
    UnreadableEntry,
    check_scope,
    empty_document,
    iso_or_none,
    ledger_from_document,
    load_all,
    parse_document,
    token_from_document,
    token_to_json,
)
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.deadline import Deadline
from runtime.errors import TokenStoreError

__all__ = ["RedisTokenStore"]

_log = logging.getLogger(__name__)

_LEDGER_TTL = timedelta(hours=1)
_MIN_TTL = timedelta(seconds=1)
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_SOCKET_TIMEOUT_S = 5.0
_RELEASE_GRACE_S = 0.25  # releasing a lock past the deadline beats leaving it for the whole lease


class RedisTokenStore:
    """Tokens and issuance ledgers in Redis; see the module docstring.

    ``clock`` gives the TTLs (the token's life left); ``lock_lease_s`` is how long a lock
    outlives a holder that died, and must exceed the longest tokenP request.
    Implements TokenStorePort.
    """

    def __init__(
        self,
        client: redis.Redis,
        clock: ClockPort,
        *,
        prefix: str = "qts",
        lock_lease_s: float = 120.0,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError("prefix must be 1-64 letters, digits, '_', '-' or '.'")
        _bound_connections(client)
        self._client = client
        self._clock = clock
        self._prefix = prefix
        self._lease_s = lock_lease_s

    @classmethod
    def from_url(cls, url: str, clock: ClockPort, **options: Any) -> RedisTokenStore:
        """A store on the server ``url`` names (``redis://``, ``rediss://``, ``unix://``).
        Connects lazily; raises ValueError for a URL redis-py cannot read."""
        # No retries inside redis-py: one attempt per operation, within the call's time left.
        client = redis.Redis.from_url(
            url,
            socket_timeout=_SOCKET_TIMEOUT_S,
            socket_connect_timeout=_SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, clock, **options)

    def _key(self, kind: str, scope: BrokerScope) -> str:
        return f"{self._prefix}:{kind}:{scope.mode.value}:{scope.key_fingerprint}"

    # --- TokenStorePort ------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Always: every host on the Redis server sees the same entries."""
        return True

    def load(self, scope: BrokerScope) -> AccessToken | None:
        data = self._get_document(self._key("token", scope), scope)
        return token_from_document(data, scope) if data is not None else None

    def save(self, scope: BrokerScope, token: AccessToken) -> None:
        check_scope(scope, token)
        document = empty_document(scope)
        document["token"] = token_to_json(token)
        ttl = max(token.expires_at - self._clock.now(), _MIN_TTL)
        with self._errors("save a token to"):
            self._client.set(self._key("token", scope), _dump(document), px=_ms(ttl))

    def delete(self, scope: BrokerScope) -> None:
        with self._errors("delete a token from"):
            self._client.delete(self._key("token", scope))

    # --- ledger --------------------------------------------------------------------

    def load_ledger(self, scope: BrokerScope) -> IssuanceLedger:
        data = self._get_document(self._key("ledger", scope), scope)
        return ledger_from_document(data) if data is not None else IssuanceLedger()

    def save_ledger(self, scope: BrokerScope, ledger: IssuanceLedger) -> None:
        document = empty_document(scope)
        document["last_issued_at"] = iso_or_none(ledger.last_issued_at)
        document["blocked_until"] = iso_or_none(ledger.blocked_until)
        with self._errors("save the issuance ledger to"):
            self._client.set(self._key("ledger", scope), _dump(document), px=_ms(_LEDGER_TTL))

    # --- lock ----------------------------------------------------------------------

    @contextlib.contextmanager
    def issuance_lock(self, scope: BrokerScope, timeout_s: float) -> Iterator[None]:
        """The scope's lock across hosts; not reentrant (the cache takes it once per get).

        Waits at most ``timeout_s``, and never past the current call's deadline."""
        timeout_s = seconds_left(max(timeout_s, 0.0), "token lock")
        lock = self._client.lock(
            self._key("lock", scope),
            timeout=self._lease_s,
            blocking_timeout=timeout_s,
            thread_local=True,
        )
        with self._errors("lock"):
            acquired = lock.acquire()
        if not acquired:
            raise TokenStoreError(
                f"another host or process has held the token lock for {scope} for more than {timeout_s:g} s"
            )
        try:
            yield
        finally:
            try:
                with within(Deadline.after(self._clock, _RELEASE_GRACE_S)):
                    lock.release()
            except redis.exceptions.LockError:
                _log.warning(
                    "the token lock for %s expired before release (lease %g s); another holder may "
                    "have issued meanwhile",
                    scope,
                    self._lease_s,
                )
            except (redis.exceptions.RedisError, TokenStoreError) as exc:
                _log.warning("could not release the token lock for %s: %s", scope, exc)

    # --- listing ----------------------------------------------------------------------

    def tokens(self) -> list[AccessToken]:
        """Every readable token under the prefix, ordered by scope."""
        pattern = re.compile(rf"{re.escape(self._prefix)}:token:(VTS|REAL):([0-9a-f]{{12}})")
        with self._errors("list tokens in"):
            keys = list(self._client.scan_iter(match=f"{self._prefix}:token:*", count=100))
        names = (key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key) for key in keys)
        matches = (pattern.fullmatch(name) for name in names)
        return load_all(self, (BrokerScope(Mode(m.group(1)), m.group(2)) for m in matches if m is not None))

    # --- helpers -------------------------------------------------------------------------------

    def _get_document(self, key: str, scope: BrokerScope) -> dict[str, Any] | None:
        # GETRANGE, never GET: a 128 MiB value planted at the key costs one bounded read.
        try:
            with self._errors("read from"):
                raw = self._client.getrange(key, 0, MAX_DOCUMENT_BYTES)
        except TokenStoreError as exc:
            if isinstance(exc.__cause__, redis.exceptions.ResponseError):  # WRONGTYPE: not ours
                _log.warning("ignoring Redis key %s: it is not a string value", key)
                return None
            raise
        if not raw:  # a missing key reads as empty; a document is never empty
            return None
        if not isinstance(raw, bytes):
            raw = str(raw).encode("utf-8")
        if len(raw) > MAX_DOCUMENT_BYTES:
            _log.warning(
                "ignoring Redis key %s: more than %d bytes is not a token document", key, MAX_DOCUMENT_BYTES
            )
            return None
        try:
            return parse_document(raw, scope)
        except UnreadableEntry as why:
            _log.warning("ignoring Redis key %s: %s", key, why)
            return None

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise TokenStoreError(f"could not {action} the Redis token store: {exc}") from exc


def _dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True).encode("utf-8")


def _ms(duration: timedelta) -> int:
    return max(int(duration.total_seconds() * 1000), 1)


def _bound_connections(client: redis.Redis) -> None:
    """Make every connection of ``client`` bound each command by the call's time left.

    redis-py's socket timeout is fixed per connection; a paused server would hold a command
    for all of it (5 s) against a 2 s deadline. The subclass sets the socket's timeout to
    :func:`~runtime.auth.stores.bounds.seconds_left` before each send and each read."""
    pool = client.connection_pool
    base = pool.connection_class
    if getattr(base, "_qts_bounded", False):
        return
    pool.connection_class = _bounded_class(base)


_BOUNDED: dict[type[Any], type[Any]] = {}


def _bounded_class(base: type[Any]) -> type[Any]:
    cls = _BOUNDED.get(base)
    if cls is not None:
        return cls

    def _bound(self: Any) -> None:
        usual = getattr(self, "_qts_usual_timeout", None)
        if usual is None:
            usual = self._qts_usual_timeout = self.socket_timeout or _SOCKET_TIMEOUT_S
        left = seconds_left(usual, "Redis command")
        self.socket_timeout = left
        self.socket_connect_timeout = min(left, _SOCKET_TIMEOUT_S)
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.settimeout(left)

    def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        _bound(self)
        return base.send_packed_command(self, *args, **kwargs)

    def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        _bound(self)
        return base.read_response(self, *args, **kwargs)

    cls = type(
        f"Bounded{base.__name__}",
        (base,),
        {"send_packed_command": send_packed_command, "read_response": read_response, "_qts_bounded": True},
    )
    _BOUNDED[base] = cls
    return cls
