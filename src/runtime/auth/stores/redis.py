"""RedisTokenStore: one token per scope in Redis, shared by every host that uses one app key.

Keys (``prefix`` defaults to ``qts``):

- ``qts:token:<MODE>:<fingerprint>`` -- the same JSON document as the file store, with a TTL
  of the token's remaining life, so Redis drops it when KIS would;
- ``qts:ledger:<MODE>:<fingerprint>`` -- the scope's issuance ledger (one hour TTL: it only
  matters for a minute);
- ``qts:lock:<MODE>:<fingerprint>`` -- redis-py's ``Lock`` (SET NX PX with a token-checked
  release), held for re-read -> re-check -> issue -> write, so one host sends the tokenP. Its
  lease is short (:data:`LOCK_LEASE_S`) and renewed by a background thread while held, so a
  host killed while holding it blocks the others for one short lease, not for a long one;
- ``qts:approval:<MODE>:<fingerprint>`` -- the WebSocket approval key, its own document, with a
  TTL of 24 h from its issue (KIS's documented life);
- ``qts:stream:<MODE>:<fingerprint>`` -- the one-WebSocket-session lease: SET NX PX with a short
  TTL, renewed by a thread while the session is open, so it dies within the TTL with its holder.

Needs the optional extra: ``pip install 'qts-runtime[redis]'``. A corrupt or foreign value is
a miss with a warning; only an unreachable server raises TokenStoreError.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import redis
import redis.exceptions
import redis.lock
from redis.backoff import NoBackoff
from redis.retry import Retry

from runtime.auth.ports import ClockPort, IssuanceLedger, LeaseHolder
from runtime.auth.stores.bounds import seconds_left, within
from runtime.auth.stores.document import (
    MAX_DOCUMENT_BYTES,
    UnreadableEntry,
    approval_document,
    check_approval_scope,
    check_scope,
    empty_document,
    holder_document,
    holder_from_raw,
    iso_or_none,
    ledger_from_document,
    parse_approval_document,
    parse_document,
    read_token,
    session_held_error,
    token_to_json,
)
from runtime.broker.base import AccessToken, ApprovalKey, BrokerScope, Mode
from runtime.deadline import Deadline
from runtime.errors import TokenStoreError

__all__ = ["LOCK_LEASE_S", "RedisTokenStore"]

_log = logging.getLogger(__name__)

#: How long the issuance lock outlives a holder that died; renewed every third of it while held.
LOCK_LEASE_S = 10.0
_LEDGER_TTL = timedelta(hours=1)
_APPROVAL_TTL = timedelta(hours=24)  # KIS_API.md §7: "접속키의 유효기간은 24시간"
# Compare-and-act on the lease: only the nonce that set it may renew or delete it.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_MIN_TTL = timedelta(seconds=1)
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_SOCKET_TIMEOUT_S = 5.0
_RELEASE_GRACE_S = 0.25  # releasing a lock past the deadline beats leaving it for the whole lease
_SCAN_COUNT = 1000  # keys asked per SCAN step: 1,000 scopes in a few round trips
_READ_BATCH = 256  # GETRANGEs per pipeline: bounded memory (256 x 64 KiB at worst) per round trip


class RedisTokenStore:
    """Tokens and issuance ledgers in Redis; see the module docstring.

    ``clock`` gives the TTLs (the token's life left); ``lock_lease_s`` is how long a lock
    outlives a holder that died (a live holder renews it, however long tokenP takes).
    Implements TokenStorePort.
    """

    def __init__(
        self,
        client: redis.Redis,
        clock: ClockPort,
        *,
        prefix: str = "qts",
        lock_lease_s: float = LOCK_LEASE_S,
        stream_lease_s: float = 15.0,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError("prefix must be 1-64 letters, digits, '_', '-' or '.'")
        _bound_connections(client)
        self._client = client
        self._clock = clock
        self._prefix = prefix
        self._lease_s = lock_lease_s
        self._stream_lease_s = stream_lease_s

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
        key = self._key("token", scope)
        return self._token_in(key, scope, self._get_bounded(key))

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
            thread_local=False,  # the renewing thread must see the lock's token
        )
        with self._errors("lock"):
            acquired = lock.acquire()
        if not acquired:
            raise TokenStoreError(
                f"another host or process has held the token lock for {scope} for more than {timeout_s:g} s"
            )
        held = threading.Event()
        renewer = threading.Thread(
            target=_renew_while_held, args=(lock, self._lease_s / 3, held, scope), daemon=True
        )
        renewer.start()
        try:
            yield
        finally:
            held.set()
            renewer.join(timeout=self._lease_s)
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

    # --- approval key -------------------------------------------------------------------

    def load_approval(self, scope: BrokerScope) -> ApprovalKey | None:
        key = self._key("approval", scope)
        raw = self._get_bounded(key)
        if raw is None:
            return None
        try:
            return parse_approval_document(raw, scope)
        except UnreadableEntry as why:
            _log.warning("ignoring Redis key %s: %s", key, why)
            return None

    def save_approval(self, scope: BrokerScope, key: ApprovalKey) -> None:
        check_approval_scope(scope, key)
        ttl = max(key.issued_at + _APPROVAL_TTL - self._clock.now(), _MIN_TTL)
        with self._errors("save an approval key to"):
            self._client.set(self._key("approval", scope), _dump(approval_document(scope, key)), px=_ms(ttl))

    def delete_approval(self, scope: BrokerScope) -> None:
        with self._errors("delete an approval key from"):
            self._client.delete(self._key("approval", scope))

    # --- stream lease ----------------------------------------------------------------------

    def acquire_stream_lease(self, scope: BrokerScope, holder: LeaseHolder) -> _RedisLease:
        """SET NX PX; a renewal thread keeps it while the session is open."""
        key = self._key("stream", scope)
        nonce = secrets.token_hex(16)
        value = json.dumps({**holder_document(holder), "nonce": nonce}, sort_keys=True).encode()
        ttl_ms = _ms(timedelta(seconds=self._stream_lease_s))
        with self._errors("take the stream lease in"):
            taken = self._client.set(key, value, nx=True, px=ttl_ms)
        if not taken:
            raise session_held_error(scope, holder_from_raw(self._get_bounded(key) or b""))
        lease = _RedisLease(self._client, key, value, holder, ttl_ms)
        lease.start()
        return lease

    # --- listing ----------------------------------------------------------------------

    def tokens(self) -> list[AccessToken]:
        """Every readable token under the prefix, ordered by scope.

        One SCAN walk and one pipelined GETRANGE per :data:`_READ_BATCH` keys: a few round trips
        for 1,000 scopes, not 1,000."""
        pattern = re.compile(rf"{re.escape(self._prefix)}:token:(VTS|REAL):([0-9a-f]{{12}})")
        with self._errors("list tokens in"):
            keys = list(self._client.scan_iter(match=f"{self._prefix}:token:*", count=_SCAN_COUNT))
        names = (key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key) for key in keys)
        matches = [m for m in map(pattern.fullmatch, names) if m is not None]
        found: list[AccessToken] = []
        for start in range(0, len(matches), _READ_BATCH):
            batch = matches[start : start + _READ_BATCH]
            replies = self._getrange_all([m.group(0) for m in batch])
            for m, reply in zip(batch, replies, strict=True):
                token = self._token_in(m.group(0), BrokerScope(Mode(m.group(1)), m.group(2)), reply)
                if token is not None:
                    found.append(token)
        return sorted(found, key=lambda token: (token.scope.mode.value, token.scope.key_fingerprint))

    def _getrange_all(self, keys: list[str]) -> list[Any]:
        """GETRANGE of every key in one round trip; a key's own error (WRONGTYPE) comes back as its reply."""
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.getrange(key, 0, MAX_DOCUMENT_BYTES)
        with self._errors("read from"):
            return list(pipe.execute(raise_on_error=False))

    def _token_in(self, key: str, scope: BrokerScope, reply: Any) -> AccessToken | None:
        raw = self._bounded(key, reply)
        if raw is None:
            return None
        try:
            return read_token(raw, scope)
        except UnreadableEntry as why:
            _log.warning("ignoring Redis key %s: %s", key, why)
            return None

    # --- helpers -------------------------------------------------------------------------------

    def _get_document(self, key: str, scope: BrokerScope) -> dict[str, Any] | None:
        raw = self._get_bounded(key)
        if raw is None:
            return None
        try:
            return parse_document(raw, scope)
        except UnreadableEntry as why:
            _log.warning("ignoring Redis key %s: %s", key, why)
            return None

    def _get_bounded(self, key: str) -> bytes | None:
        """The value at ``key``, or None when missing, not a string, or too large to be ours.

        GETRANGE, never GET: a 128 MiB value planted at the key costs one bounded read."""
        try:
            with self._errors("read from"):
                reply = self._client.getrange(key, 0, MAX_DOCUMENT_BYTES)
        except TokenStoreError as exc:
            if isinstance(exc.__cause__, redis.exceptions.ResponseError):  # WRONGTYPE: not ours
                return self._bounded(key, exc.__cause__)
            raise
        return self._bounded(key, reply)

    def _bounded(self, key: str, reply: Any) -> bytes | None:
        """The bytes of a GETRANGE ``reply`` for ``key``, or None (with a warning) when it cannot be ours."""
        if isinstance(reply, redis.exceptions.ResponseError):  # WRONGTYPE: not ours
            _log.warning("ignoring Redis key %s: it is not a string value", key)
            return None
        if isinstance(reply, Exception):  # the connection failed mid-pipeline
            raise TokenStoreError(f"could not read from the Redis token store: {reply}") from reply
        if not reply:  # a missing key reads as empty; a document is never empty
            return None
        raw = reply if isinstance(reply, bytes) else str(reply).encode("utf-8")
        if len(raw) > MAX_DOCUMENT_BYTES:
            _log.warning("ignoring Redis key %s: more than %d bytes is not ours", key, MAX_DOCUMENT_BYTES)
            return None
        return raw

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise TokenStoreError(f"could not {action} the Redis token store: {exc}") from exc


def _renew_while_held(
    lock: redis.lock.Lock, every_s: float, released: threading.Event, scope: BrokerScope
) -> None:
    """Reset the lock's lease every ``every_s`` until ``released``; a lost lock is logged, once."""
    while not released.wait(every_s):
        try:
            lock.reacquire()
        except redis.exceptions.LockError:
            _log.warning("the token lock for %s was lost while held (its lease ran out)", scope)
            return
        except redis.exceptions.RedisError as exc:
            _log.warning("could not renew the token lock for %s: %s", scope, exc)


class _RedisLease:
    """A Redis stream lease and the daemon thread renewing it every third of its TTL."""

    def __init__(self, client: redis.Redis, key: str, value: bytes, holder: LeaseHolder, ttl_ms: int) -> None:
        self._client, self._key, self._value, self._holder, self._ttl_ms = client, key, value, holder, ttl_ms
        self._stop = threading.Event()
        self._released = False
        self._lost = False
        self._thread = threading.Thread(target=self._renew, name="qts-stream-lease", daemon=True)

    @property
    def holder(self) -> LeaseHolder:
        return self._holder

    @property
    def lost(self) -> bool:
        return self._lost

    def start(self) -> None:
        self._thread.start()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._client.eval(_RELEASE, 1, self._key, self._value)
        except redis.exceptions.RedisError as exc:
            _log.warning("could not release the stream lease %s (it expires by itself): %s", self._key, exc)

    def _renew(self) -> None:
        misses = 0
        while not self._stop.wait(self._ttl_ms / 3000):
            try:
                renewed = self._client.eval(_RENEW, 1, self._key, self._value, self._ttl_ms)
            except redis.exceptions.RedisError as exc:
                misses += 1
                _log.warning("could not renew the stream lease %s: %s", self._key, exc)
                if misses >= 3:  # a whole TTL without renewal: another host may hold it now
                    self._lost = True
                    return
                continue
            misses = 0
            if not renewed:
                _log.warning(
                    "the stream lease %s was lost (expired or taken); the session must close", self._key
                )
                self._lost = True
                return


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
