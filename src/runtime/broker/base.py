"""The broker port: what the runtime needs from any broker, and the values that cross it.

The split is fixed by the Phase 2 seed (§5): a broker adapter holds credentials and no token;
the runtime holds tokens and no credentials. Everything here is plain values and a Protocol,
so nothing in this module knows about HTTP, JSON or environment variables.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol

import attrs

from runtime.deadline import Deadline
from runtime.masking import fingerprint, mask

__all__ = [
    "AccessToken",
    "AppCredentials",
    "ApprovalKey",
    "BrokerAuthPort",
    "BrokerRequest",
    "BrokerResponse",
    "BrokerScope",
    "Mode",
]


class Mode(enum.StrEnum):
    """KIS environment: VTS is paper trading (모의투자), REAL is live trading (실전투자).

    A string enum so scopes of both modes sort (``qts status`` lists them together).
    """

    VTS = "VTS"
    REAL = "REAL"

    @property
    def official_base_url(self) -> str:
        """The KIS REST host for this mode (KIS_API.md §1)."""
        return _OFFICIAL_BASE_URLS[self]

    @property
    def official_ws_url(self) -> str:
        """The KIS WebSocket host for this mode (KIS_API.md §1): plain ``ws://``, as KIS serves it."""
        return _OFFICIAL_WS_URLS[self]

    @classmethod
    def parse(cls, text: str) -> Mode:
        """``"vts"``/``"REAL"``/... to a Mode; raises ValueError naming the allowed values.

        The one reading of a mode's name: ``KIS_MODE`` and ``--mode`` go through it
        (``runtime.config.load_settings`` / ``load_mode``)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"{text!r} is not allowed; use VTS or REAL") from None


_OFFICIAL_BASE_URLS = {
    Mode.REAL: "https://openapi.koreainvestment.com:9443",
    Mode.VTS: "https://openapivts.koreainvestment.com:29443",
}

_OFFICIAL_WS_URLS = {
    Mode.REAL: "ws://ops.koreainvestment.com:21000",
    Mode.VTS: "ws://ops.koreainvestment.com:31000",
}

_FINGERPRINT = re.compile(r"[0-9a-f]{12}")


def _check_aware(_instance: object, attribute: attrs.Attribute[datetime], value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must be timezone-aware, got {value!r}")


@attrs.frozen(order=True)
class BrokerScope:
    """Whose token this is: one mode and one app key, named by its fingerprint only.

    A token belongs to exactly one scope; stores and caches are keyed by it, so a VTS token
    can never be handed out for REAL or for another key.
    """

    mode: Mode
    key_fingerprint: str = attrs.field()

    @key_fingerprint.validator
    def _check_fingerprint(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not _FINGERPRINT.fullmatch(value):
            raise ValueError("key_fingerprint must be 12 lowercase hex digits")

    def __str__(self) -> str:
        return f"{self.mode.value}:{self.key_fingerprint}"


@attrs.frozen
class AccessToken:
    """A KIS access token and what we know about its life. The value never shows in repr."""

    value: str = attrs.field(repr=False)
    token_type: str
    expires_at: datetime = attrs.field(validator=_check_aware)
    issued_at: datetime = attrs.field(validator=_check_aware)
    scope: BrokerScope

    @value.validator
    def _check_value(self, _attribute: attrs.Attribute[str], value: str) -> None:
        # The value goes into an HTTP header: printable ASCII without spaces only.
        if not value or not value.isascii() or not value.isprintable() or " " in value:
            raise ValueError("token value must be non-empty printable ASCII without spaces")

    @property
    def masked(self) -> str:
        """The value in a form safe to print."""
        return mask(self.value)

    @property
    def authorization(self) -> str:
        """The ``authorization`` header value KIS expects (KIS_API.md §9)."""
        return f"Bearer {self.value}"

    def time_left(self, now: datetime) -> timedelta:
        """How long the token lives after ``now`` (negative once expired)."""
        return self.expires_at - now

    def __str__(self) -> str:
        return f"AccessToken({self.scope}, {self.masked}, expires {self.expires_at.isoformat()})"


@attrs.frozen
class ApprovalKey:
    """A KIS WebSocket approval key (KIS_API.md §7). The value never shows in repr.

    KIS's answer carries no expiry: ``issued_at`` is when we received it, and the runtime
    decides its renewal from that (see docs/realtime.md).
    """

    value: str = attrs.field(repr=False)
    scope: BrokerScope
    issued_at: datetime = attrs.field(validator=_check_aware)

    @value.validator
    def _check_value(self, _attribute: attrs.Attribute[str], value: str) -> None:
        # The value goes into a JSON header of every subscribe message: printable ASCII only.
        if not value or len(value) > 512 or not value.isascii() or not value.isprintable() or " " in value:
            raise ValueError("approval key must be 1-512 printable ASCII characters without spaces")

    @property
    def masked(self) -> str:
        """The value in a form safe to print."""
        return mask(self.value)

    def age(self, now: datetime) -> timedelta:
        """How long ago the key was issued."""
        return now - self.issued_at

    def __str__(self) -> str:
        return f"ApprovalKey({self.scope}, {self.masked}, issued {self.issued_at.isoformat()})"


_HTTP_METHODS = frozenset({"GET", "POST"})
_TR_ID = re.compile(r"[A-Z0-9]{4,20}")
_PATH = re.compile(r"/[A-Za-z0-9_\-./]*")


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _answer_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # A read-only view is kept as it is: the adapter hands over a view of the dict it has just
    # parsed and holds nowhere else, and copying a whole KIS answer on every call is measurable.
    # Any other mapping is copied, as for a request.
    if type(value) is MappingProxyType:
        return value
    return MappingProxyType(dict(value or {}))


@functools.lru_cache(maxsize=256)
def _is_api_path(value: str) -> bool:
    # A path, never a URL: the adapter alone decides which host a request goes to.
    # Dot segments would be folded away by the HTTP client and could hide an order path.
    # Cached: a trading system calls the same few paths thousands of times.
    dotted = any(segment in ("", ".", "..") for segment in value.split("/")[1:-1]) or value.endswith("/.")
    return bool(_PATH.fullmatch(value)) and not dotted


@functools.lru_cache(maxsize=256)
def _is_order_path(path: str) -> bool:
    # Cached like _is_api_path: the runtime and the adapter both ask, on every call.
    segments = path.lower().split("/")
    if "trading" not in segments:
        return False
    after = segments[segments.index("trading") + 1 :]
    return not (after and after[0].startswith("inquire"))


def _upper(value: str) -> str:
    return value.upper()


@attrs.frozen
class BrokerRequest:
    """One REST call as the runtime describes it: no token, no credentials.

    ``tr_id`` is the REAL-environment TR id; the adapter maps it for VTS (KIS_API.md §9).
    """

    method: str = attrs.field(converter=_upper)
    path: str = attrs.field()
    tr_id: str = attrs.field()
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, eq=False)
    body: Mapping[str, Any] | None = attrs.field(default=None, eq=False)
    tr_cont: str = attrs.field(default="")

    @method.validator
    def _check_method(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if value not in _HTTP_METHODS:
            raise ValueError(f"method must be GET or POST, got {value!r}")

    @path.validator
    def _check_path(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not _is_api_path(value):
            raise ValueError(f"path must be an absolute API path like /uapi/..., got {value!r}")

    @tr_id.validator
    def _check_tr_id(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not _TR_ID.fullmatch(value):
            raise ValueError(f"tr_id must be 4-20 uppercase letters or digits, got {value!r}")

    @tr_cont.validator
    def _check_tr_cont(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if value not in ("", "N"):
            raise ValueError("tr_cont must be '' (first page) or 'N' (next page)")

    @property
    def is_order(self) -> bool:
        """True for anything that may place, change or cancel an order, which Phase 2 never sends.

        Conservative on purpose: under a ``trading`` segment only ``inquire-*`` endpoints are
        read-only (inquire-balance, inquire-psbl-order, ...); order-cash, daytime-order, the
        bond buy/sell endpoints and anything unknown there count as orders.
        """
        return _is_order_path(self.path)


@attrs.frozen
class BrokerResponse:
    """A successful KIS answer (``rt_cd`` == "0"), with the paging headers KIS returns."""

    status: int
    body: Mapping[str, Any] = attrs.field(converter=_answer_mapping, eq=False)
    tr_id: str | None = None
    tr_cont: str | None = None
    gt_uid: str | None = None
    msg_cd: str | None = None
    msg1: str | None = None

    @property
    def has_next_page(self) -> bool:
        """KIS marks more pages with ``tr_cont`` F or M, the last page with D or E (§9)."""
        return self.tr_cont in ("F", "M")


@attrs.frozen(repr=False)
class AppCredentials:
    """An app key and its secret. Only the broker adapter ever receives this object (it is
    built by ``runtime.config`` and handed to the adapter by the composition root)."""

    app_key: str
    app_secret: str

    @property
    def fingerprint(self) -> str:
        """The key's public name; see :func:`runtime.masking.fingerprint`."""
        return fingerprint(self.app_key)

    def __repr__(self) -> str:
        return f"AppCredentials(key_fingerprint={self.fingerprint!r})"


class BrokerAuthPort(Protocol):
    """A broker adapter: it owns the credentials and never keeps a token.

    Every method raises only :class:`runtime.errors.QTSError` subclasses, and finishes (or
    raises BrokerUnavailableError) within the ``deadline`` it is handed: the caller's whole
    call, made once per call by the runtime (see :mod:`runtime.deadline`).
    """

    @property
    def scope(self) -> BrokerScope:
        """The (mode, app-key fingerprint) every token from this adapter belongs to."""
        ...

    def issue_token(self, *, deadline: Deadline) -> AccessToken:
        """Ask the broker for an access token and return it without keeping it.

        Raises CredentialsRejectedError (WrongModeError for a key of the other mode),
        IssuanceRateLimitedError, BrokerUnavailableError, TLSVerificationError,
        MalformedResponseError (ForeignTokenError for a token of another key).
        """
        ...

    def issue_approval_key(self, *, deadline: Deadline) -> ApprovalKey:
        """Ask the broker for a WebSocket approval key (``/oauth2/Approval``) without keeping it.

        Raises the same errors as :meth:`issue_token`: CredentialsRejectedError (WrongModeError),
        IssuanceRateLimitedError, BrokerUnavailableError, TLSVerificationError, MalformedResponseError.
        """
        ...

    def revoke_token(self, token: AccessToken, *, deadline: Deadline) -> None:
        """Ask the broker to void ``token``. An already unknown token counts as revoked.

        Raises ScopeMismatchError, CredentialsRejectedError, BrokerUnavailableError,
        TLSVerificationError, MalformedResponseError.
        """
        ...

    def send(self, request: BrokerRequest, token: AccessToken, *, deadline: Deadline) -> BrokerResponse:
        """Send one call with ``token``, adding app key, secret and the mode's tr_id itself.

        Raises ScopeMismatchError, OrderRefusedError, TokenRejectedError,
        CallRateLimitedError, CredentialsRejectedError/WrongModeError, BrokerCallError,
        BrokerUnavailableError, TLSVerificationError, MalformedResponseError.
        """
        ...
