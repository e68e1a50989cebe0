"""The real-time port: what the runtime needs from a broker's quote stream, and the values on it.

A connector opens one WebSocket connection; the connection sends registrations and hands back
parsed messages. Reconnecting, the approval key's life and the one-session lease are the
runtime's business (``runtime.auth.stream``), never the adapter's. Plain values and Protocols
only: nothing here knows about WebSockets or JSON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from runtime.broker.base import ApprovalKey, BrokerScope
from runtime.errors import SubscriptionLimitError

if TYPE_CHECKING:
    from runtime.deadline import Deadline

__all__ = [
    "DEPTH_TR",
    "ENCRYPTED_TRS",
    "MAX_REGISTRATIONS",
    "STREAMABLE_TRS",
    "TRADE_TR",
    "Ack",
    "AckKind",
    "BadFrame",
    "Heartbeat",
    "OrderBook",
    "RealtimeConnectionPort",
    "RealtimeConnectorPort",
    "Registration",
    "StreamEvent",
    "StreamMessage",
    "Trade",
    "registrations_for",
]

TRADE_TR = "H0STCNT0"  # 국내주식 실시간체결가 (KIS_API.md §7.1)
DEPTH_TR = "H0STASP0"  # 국내주식 실시간호가
STREAMABLE_TRS = frozenset({TRADE_TR, DEPTH_TR})
#: Order notices arrive AES-encrypted and belong to orders (Phase 3): never registered here.
ENCRYPTED_TRS = frozenset({"H0STCNI0", "H0STCNI9"})
#: "1개 appkey당 최대 41건 등록" (KIS_API.md §7.1): one (tr_id, code) is one registration.
MAX_REGISTRATIONS = 41

_CODE = re.compile(r"[0-9A-Z]{6}")


def _frozen(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen(order=True)
class Registration:
    """One (tr_id, code) the session is registered for; only the two quote TRs are allowed.

    Raises SubscriptionLimitError for an encrypted order-notice TR, ValueError for anything else
    that is not a quote TR or a 6-character code."""

    tr_id: str = attrs.field()
    code: str = attrs.field()

    @tr_id.validator
    def _check_tr_id(self, _attribute: attrs.Attribute[str], given: str) -> None:
        if given in ENCRYPTED_TRS:
            raise SubscriptionLimitError(f"{given} is an encrypted order notice (Phase 3); never streamed")
        if given not in STREAMABLE_TRS:
            raise ValueError(f"tr_id must be one of {sorted(STREAMABLE_TRS)}, got {given[:16]!r}")

    @code.validator
    def _check_code(self, _attribute: attrs.Attribute[str], given: str) -> None:
        if not _CODE.fullmatch(given):
            raise ValueError(f"code must be 6 digits or capital letters like 005930, got {given[:16]!r}")

    def __str__(self) -> str:
        return f"{self.tr_id}:{self.code}"


@attrs.frozen
class Trade:
    """One H0STCNT0 record: a trade. Prices in KRW, ``volume`` this trade's quantity (CNTG_VOL)."""

    code: str
    time: str  # HHMMSS, KST
    price: int
    volume: int
    change: int
    accumulated_volume: int
    fields: Mapping[str, str] = attrs.field(converter=_frozen, eq=False, repr=False)
    tr_id: str = TRADE_TR

    def to_json(self) -> dict[str, Any]:
        """The ``qts stream --json`` line of this event."""
        return {
            "tr_id": self.tr_id,
            "code": self.code,
            "time": self.time,
            "price": self.price,
            "volume": self.volume,
            "change": self.change,
            "accumulated_volume": self.accumulated_volume,
        }


@attrs.frozen
class OrderBook:
    """One H0STASP0 record: ten levels each side, ``[price, quantity]``, best first."""

    code: str
    time: str  # HHMMSS, KST
    asks: tuple[tuple[int, int], ...]
    bids: tuple[tuple[int, int], ...]
    fields: Mapping[str, str] = attrs.field(converter=_frozen, eq=False, repr=False)
    tr_id: str = DEPTH_TR

    def to_json(self) -> dict[str, Any]:
        """The ``qts stream --depth --json`` line of this event."""
        return {
            "tr_id": self.tr_id,
            "code": self.code,
            "time": self.time,
            "asks": [list(level) for level in self.asks],
            "bids": [list(level) for level in self.bids],
        }


StreamEvent = Trade | OrderBook


class AckKind:
    """What an ack means for the session (classified by ``msg_cd``, never by ``rt_cd``)."""

    OK = "ok"  # OPSP0000 subscribed, OPSP0001 unsubscribed, OPSP0002 already subscribed, OPSP0003 not found
    APPROVAL_REJECTED = "approval_rejected"  # OPSP0011
    SESSION_IN_USE = "session_in_use"  # OPSP8996
    LIMIT = "limit"  # OPSP0008
    ERROR = "error"  # anything else


_ACK_KINDS = {
    "OPSP0000": AckKind.OK,
    "OPSP0001": AckKind.OK,
    "OPSP0002": AckKind.OK,
    "OPSP0003": AckKind.OK,
    "OPSP0011": AckKind.APPROVAL_REJECTED,
    "OPSP8996": AckKind.SESSION_IN_USE,
    "OPSP0008": AckKind.LIMIT,
}


@attrs.frozen
class Ack:
    """A JSON control answer to a registration (KIS_API.md §7.1, "Acks")."""

    tr_id: str
    code: str
    msg_cd: str
    msg1: str

    @property
    def kind(self) -> str:
        """One of :class:`AckKind`."""
        return _ACK_KINDS.get(self.msg_cd, AckKind.ERROR)


@attrs.frozen
class Heartbeat:
    """A PINGPONG the connection has already echoed: proof of life, never a market event."""


@attrs.frozen
class BadFrame:
    """A frame that could not be read; ``reason`` names counts and fields, never data."""

    tr_id: str
    reason: str


StreamMessage = Trade | OrderBook | Ack | Heartbeat | BadFrame


class RealtimeConnectionPort(Protocol):
    """One open WebSocket connection to the broker's quote server."""

    def register(self, registration: Registration, approval: ApprovalKey, *, subscribe: bool) -> None:
        """Send one subscribe (``subscribe=True``) or unsubscribe message carrying ``approval``.

        Raises BrokerUnavailableError when the connection is gone."""
        ...

    def receive(self, timeout_s: float) -> Sequence[StreamMessage]:
        """The messages of the next frame (a data frame may carry several records), or an empty
        sequence after ``timeout_s`` of silence. PINGPONG is answered here and returned as a
        Heartbeat. Never raises for a bad frame (that is a BadFrame); raises
        BrokerUnavailableError when the connection dropped."""
        ...

    def close(self) -> None:
        """Close the connection and wait briefly for the close handshake; safe to call twice."""
        ...


class RealtimeConnectorPort(Protocol):
    """Opens connections to the broker's quote server for one scope (mode and app key)."""

    @property
    def scope(self) -> BrokerScope:
        """The (mode, key fingerprint) whose approval keys this server accepts."""
        ...

    @property
    def url(self) -> str:
        """The WebSocket URL connected to (no secret in it)."""
        ...

    def connect(self, *, deadline: Deadline) -> RealtimeConnectionPort:
        """Open one connection within ``deadline``. Raises BrokerUnavailableError."""
        ...


def registrations_for(
    codes: Sequence[str], *, trades: bool = True, depth: bool = False
) -> list[Registration]:
    """The registrations for ``codes``: trades and/or the order book, in a stable order.

    Raises ValueError for an invalid code."""
    wanted = [tr for tr, on in ((TRADE_TR, trades), (DEPTH_TR, depth)) if on]
    seen: dict[Registration, None] = {}
    for code in codes:
        for tr_id in wanted:
            seen.setdefault(Registration(tr_id, code.strip().upper()))
    return list(seen)
