"""KISBrokerAdapter: MODE -> environment, issue/revoke tokens, send one call with a given token.

Stateless by rule (seed §5.1): it holds the credentials and the connection pool, and never a
token. Which attempts may be repeated is decided here, within the caller's time budget:
a request that never left this host may always be sent again; a GET may also be repeated
after a broken or 5xx answer; tokenP and other POSTs are not (tokenP is rate limited).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from types import MappingProxyType, TracebackType
from typing import Any

import urllib3

from runtime import scrub
from runtime.broker.base import (
    AccessToken,
    AppCredentials,
    ApprovalKey,
    BrokerRequest,
    BrokerResponse,
    BrokerScope,
    Mode,
)
from runtime.broker.kis import auth
from runtime.broker.kis.transport import HttpReply, exchange, fork_safe
from runtime.clock import ClockPort, SystemClock
from runtime.deadline import Deadline
from runtime.errors import (
    BrokerUnavailableError,
    CredentialsRejectedError,
    OrderRefusedError,
    QTSError,
    ScopeMismatchError,
)

__all__ = ["KISBrokerAdapter", "tr_id_for_mode"]

_log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 3
_BACKOFF_S = (0.2, 0.5)
_JSON = "application/json; charset=utf-8"


def tr_id_for_mode(tr_id: str, mode: Mode) -> str:
    """The TR id to send in ``mode``: VTS trading TRs swap T/J/C for V (KIS_API.md §9)."""
    if mode is Mode.VTS and tr_id[:1] in ("T", "J", "C"):
        return "V" + tr_id[1:]
    return tr_id


class KISBrokerAdapter:
    """The KIS side of the hexagon. Implements ``BrokerAuthPort``."""

    def __init__(
        self,
        mode: Mode,
        credentials: AppCredentials,
        http: urllib3.PoolManager,
        *,
        base_url: str | None = None,
        clock: ClockPort | None = None,
    ) -> None:
        self._mode = mode
        self._credentials = credentials
        self._http = fork_safe(http)
        self._base_url = (base_url or mode.official_base_url).rstrip("/")
        self._clock: ClockPort = clock or SystemClock()
        self._scope = BrokerScope(mode, credentials.fingerprint)
        # KIS's rejection of these credentials (EGW00102/103/104/105/112/115, EGW02004), kept for
        # the adapter's life: asking again cannot succeed, and a loop of calls must not send a
        # tokenP each. Corrected credentials mean a new adapter (a new runtime), tried afresh.
        self._rejected: CredentialsRejectedError | None = None
        # From here on no fragment of either credential can reach a log record or an error.
        scrub.register(credentials.app_key, permanent=True)
        scrub.register(credentials.app_secret, permanent=True)
        # Built once: the per-call work is adding three headers, not re-encoding these.
        self._call_headers = {
            "content-type": _JSON,
            "accept": "application/json",
            "appkey": credentials.app_key,
            "appsecret": credentials.app_secret,
            "custtype": "P",
            "user-agent": "qts-runtime",
        }
        self._auth_headers = {
            "content-type": _JSON,
            "accept": "application/json",
            "user-agent": "qts-runtime",
        }

    @property
    def scope(self) -> BrokerScope:
        return self._scope

    @property
    def mode(self) -> Mode:
        """The environment this adapter talks to."""
        return self._mode

    @property
    def base_url(self) -> str:
        """The REST host chosen for the mode (or its override)."""
        return self._base_url

    def __repr__(self) -> str:
        return f"KISBrokerAdapter(scope={self._scope}, base_url={self._base_url!r})"

    def issue_token(self, *, deadline: Deadline) -> AccessToken:
        with _scrubbed_errors, self._remembering_rejection():
            return self._issue_token(deadline)

    def _issue_token(self, deadline: Deadline) -> AccessToken:
        body = auth.token_body(self._credentials.app_key, self._credentials.app_secret)
        reply = self._exchange(
            "POST", auth.TOKEN_PATH, self._auth_headers, deadline, body=body, idempotent=False
        )
        token = auth.parse_token_reply(
            reply,
            scope=self._scope,
            app_key=self._credentials.app_key,
            now=self._clock.now(),
            scrub=self._scrub,
        )
        scrub.register(token.value)
        _log.debug("tokenP answered for %s: %s", self._scope, token.masked)
        return token

    def issue_approval_key(self, *, deadline: Deadline) -> ApprovalKey:
        with _scrubbed_errors:
            return self._issue_approval_key(deadline)

    def _issue_approval_key(self, deadline: Deadline) -> ApprovalKey:
        body = auth.approval_body(self._credentials.app_key, self._credentials.app_secret)
        reply = self._exchange(
            "POST", auth.APPROVAL_PATH, self._auth_headers, deadline, body=body, idempotent=False
        )
        key = auth.parse_approval_reply(reply, scope=self._scope, now=self._clock.now(), scrub=self._scrub)
        scrub.register(key.value)  # an approval key is a secret like a token
        _log.debug("Approval answered for %s: %s", self._scope, key.masked)
        return key

    def revoke_token(self, token: AccessToken, *, deadline: Deadline) -> None:
        with _scrubbed_errors:
            self._revoke_token(token, deadline)

    def _revoke_token(self, token: AccessToken, deadline: Deadline) -> None:
        scrub.register(token.value)
        self._check_scope(token)
        body = auth.revoke_body(self._credentials.app_key, self._credentials.app_secret, token.value)
        reply = self._exchange(
            "POST", auth.REVOKE_PATH, self._auth_headers, deadline, body=body, idempotent=False
        )
        auth.parse_revoke_reply(reply, lambda text: self._scrub(text, token.value))
        _log.debug("revokeP accepted %s", token.masked)

    def send(self, request: BrokerRequest, token: AccessToken, *, deadline: Deadline) -> BrokerResponse:
        with _scrubbed_errors:
            return self._send(request, token, deadline)

    def _send(self, request: BrokerRequest, token: AccessToken, deadline: Deadline) -> BrokerResponse:
        scrub.register(token.value)
        if token.scope is not self._scope:  # tokens this adapter issued share its scope object
            self._check_scope(token)
        if request.is_order:
            raise OrderRefusedError(f"{request.path} is an order endpoint; Phase 2 sends no orders")
        headers = {
            **self._call_headers,
            "authorization": token.authorization,
            "tr_id": tr_id_for_mode(request.tr_id, self._mode),
            "tr_cont": request.tr_cont,
        }
        body = json.dumps(dict(request.body)).encode() if request.body is not None else None
        reply = self._exchange(
            request.method,
            request.path,
            headers,
            deadline,
            body=body,
            query=request.params if request.method == "GET" else None,
            idempotent=request.method == "GET",
        )
        data, envelope = auth.classify_call(reply, lambda text: self._scrub(text, token.value))
        return BrokerResponse(
            status=reply.status,
            body=MappingProxyType(data),  # data is ours alone: the response keeps this view
            tr_id=reply.headers.get("tr_id"),
            tr_cont=reply.headers.get("tr_cont"),
            gt_uid=reply.headers.get("gt_uid"),
            msg_cd=envelope.msg_cd or None,
            msg1=envelope.msg1 or None,
        )

    def _exchange(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        deadline: Deadline,
        *,
        body: bytes | None = None,
        query: Mapping[str, Any] | None = None,
        idempotent: bool,
    ) -> HttpReply:
        url = self._base_url + path
        for attempt in range(_MAX_ATTEMPTS):
            if attempt and deadline.expired:  # the first attempt: exchange checks it itself
                raise BrokerUnavailableError(f"no answer from KIS within the {deadline.total_s:g} s deadline")
            try:
                reply = exchange(
                    self._http, method, url, headers=headers, deadline=deadline, body=body, query=query
                )
            except BrokerUnavailableError as exc:
                if attempt + 1 == _MAX_ATTEMPTS or not (idempotent or not exc.request_sent):
                    raise
                _log.debug("%s %s failed (%s); trying again", method, path, exc)
            else:
                if not (idempotent and reply.status in (502, 503, 504)) or attempt + 1 == _MAX_ATTEMPTS:
                    return reply
                _log.debug("%s %s answered HTTP %d; trying again", method, path, reply.status)
            pause = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
            if deadline.remaining() <= pause:
                break
            self._clock.sleep(pause)
        raise BrokerUnavailableError(f"KIS stayed unavailable for {deadline.total_s:g} s")

    @contextlib.contextmanager
    def _remembering_rejection(self) -> Iterator[None]:
        """tokenP: raise KIS's earlier rejection of these credentials at once; remember a new one."""
        known = self._rejected
        if known is not None:
            raise type(known)(
                f"{known.message} (KIS rejected these credentials earlier in this process; "
                "nothing was sent: fix them and start again)",
                code=known.code,
            )
        try:
            yield
        except CredentialsRejectedError as exc:
            self._rejected = exc
            raise

    def _check_scope(self, token: AccessToken) -> None:
        if token.scope != self._scope:
            raise ScopeMismatchError(f"a token of {token.scope} cannot be used for {self._scope}")

    def _scrub(self, text: str, *also: str) -> str:
        """Server text may echo what we sent, whole or in part: no fragment of a secret rides out."""
        for secret in also:
            scrub.register(secret)
        return scrub.scrub(text)


class _ScrubbedErrors:
    """Every exception leaving the adapter: text and chain scrubbed, foreign links cut off.

    A class, not ``contextlib.contextmanager``: it wraps every call, and a generator-based
    manager costs three times as much to enter and leave."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, Exception):  # QTSError, or a bug: either way no secret in its text or chain
            scrub.scrub_exception(exc, ours=QTSError)
        # None: the exception (if any) goes on, now scrubbed


_scrubbed_errors = _ScrubbedErrors()
