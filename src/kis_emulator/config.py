"""Emulator settings: one frozen dataclass, tweaked with ``dataclasses.replace``.

Defaults follow KIS_API.md: 24-hour tokens reused for 6 hours, one tokenP per minute, token
errors with HTTP 500, REAL 20 calls/s and VTS 2 calls/s, 50-row pages on REAL and 20 on VTS.
Tests shrink the times instead of sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final, Literal

from .accounts import Mode

Duration = timedelta | float
"""A length of time: a ``timedelta`` or a number of seconds."""

MODE_DEFAULT: Final = "mode"
"""``max_rps`` / ``page_size`` value meaning "whatever KIS uses for this host's mode"."""

DEFAULT_MAX_RPS: Final[dict[Mode, int]] = {"REAL": 20, "VTS": 2}
DEFAULT_PAGE_SIZE: Final[dict[Mode, int]] = {"REAL": 50, "VTS": 20}


def as_timedelta(value: Duration) -> timedelta:
    """Turn a ``Duration`` into a ``timedelta``."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"a duration must be a timedelta or a number of seconds, not {value!r}")
    return timedelta(seconds=value)


@dataclass(frozen=True)
class Holding:
    """One stock held in the emulated account (``inquire-balance`` ``output1`` row).

    The current price comes from the same deterministic quote model as ``inquire-price``,
    so the two endpoints agree.
    """

    pdno: str
    prdt_name: str
    hldg_qty: int
    pchs_avg_pric: float


def default_holdings() -> tuple[Holding, ...]:
    """A handful of well-known KRX stocks, enough for one page on either host."""
    return (
        Holding("005930", "삼성전자", 120, 71_250.0),
        Holding("000660", "SK하이닉스", 15, 128_400.0),
        Holding("035420", "NAVER", 8, 201_500.0),
        Holding("005380", "현대차", 10, 186_700.0),
        Holding("035720", "카카오", 40, 47_350.0),
    )


def synthetic_holdings(count: int) -> tuple[Holding, ...]:
    """``count`` distinct made-up holdings (codes 900001, 900002, ...) to exercise paging."""
    if count < 0:
        raise ValueError("count must be >= 0")
    return tuple(
        Holding(f"{900000 + i:06d}", f"에뮬종목{i:03d}", 10 + i, 10_000.0 + 100.0 * i)
        for i in range(1, count + 1)
    )


@dataclass(frozen=True)
class EmulatorConfig:
    """Knobs of one emulator instance.

    Attributes:
        token_lifetime: how long an access token is valid (KIS: 24 h).
        token_reuse_window: within this time of issuance tokenP returns the same token (KIS: 6 h).
        token_request_interval: minimum time between successful tokenP requests per app key (KIS: 1 min).
        token_error_status: HTTP status of EGW00121/EGW00123 call errors; KIS is ambiguous (500 or 200).
        max_rps: per-second call limit per app key; ``"mode"`` = REAL 20 / VTS 2, ``None`` = unlimited.
        new_token_revokes_previous: whether minting a new token invalidates the app key's older ones
            (unconfirmed at KIS; off by default, so old tokens live until their own expiry).
        holdings: the account's holdings returned by ``inquire-balance``.
        cash: 예수금 (``dnca_tot_amt``) of the account, in KRW.
        page_size: rows per ``inquire-balance`` page; ``"mode"`` = REAL 50 / VTS 20.
        ws_tick_interval: seconds between data frames on one WebSocket session (0 = as fast as
            the socket takes them).
        ws_ping_interval: seconds between PINGPONG frames (KIS's interval is undocumented).
        ws_unanswered_pings: a session that leaves this many PINGPONGs unanswered is cut.
        ws_multi_record_every: every n-th trade frame carries two records (0 = never).
    """

    token_lifetime: Duration = timedelta(hours=24)
    token_reuse_window: Duration = timedelta(hours=6)
    token_request_interval: Duration = timedelta(seconds=60)
    token_error_status: int = 500
    max_rps: int | Literal["mode"] | None = MODE_DEFAULT
    new_token_revokes_previous: bool = False
    holdings: Sequence[Holding] = field(default_factory=default_holdings)
    cash: int = 10_000_000
    page_size: int | Literal["mode"] = MODE_DEFAULT
    ws_tick_interval: float = 0.05
    ws_ping_interval: float = 10.0
    ws_unanswered_pings: int = 2
    ws_multi_record_every: int = 5

    def __post_init__(self) -> None:
        # Normalise once so readers always see timedeltas and an immutable tuple of holdings.
        for name in ("token_lifetime", "token_reuse_window", "token_request_interval"):
            value = as_timedelta(getattr(self, name))
            if value < timedelta(0):
                raise ValueError(f"{name} must not be negative")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "holdings", tuple(self.holdings))
        if not 100 <= self.token_error_status <= 599:
            raise ValueError(f"token_error_status must be an HTTP status, not {self.token_error_status}")
        if self.max_rps not in (None, MODE_DEFAULT) and (
            not isinstance(self.max_rps, int) or self.max_rps < 1
        ):
            raise ValueError(f"max_rps must be a positive int, 'mode' or None, not {self.max_rps!r}")
        if self.page_size != MODE_DEFAULT and (not isinstance(self.page_size, int) or self.page_size < 1):
            raise ValueError(f"page_size must be a positive int or 'mode', not {self.page_size!r}")
        if self.cash < 0:
            raise ValueError("cash must not be negative")
        for name in ("ws_tick_interval", "ws_ping_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
                raise ValueError(f"{name} must be between 0 and 3600 seconds, not {value!r}")
        if self.ws_ping_interval < 0.01:
            raise ValueError("ws_ping_interval must be at least 0.01 s")
        if self.ws_unanswered_pings < 1 or self.ws_multi_record_every < 0:
            raise ValueError("ws_unanswered_pings must be >= 1 and ws_multi_record_every >= 0")

    def lifetime(self) -> timedelta:
        """``token_lifetime`` as a timedelta."""
        return as_timedelta(self.token_lifetime)

    def reuse_window(self) -> timedelta:
        """``token_reuse_window`` as a timedelta."""
        return as_timedelta(self.token_reuse_window)

    def request_interval(self) -> timedelta:
        """``token_request_interval`` as a timedelta."""
        return as_timedelta(self.token_request_interval)

    def rps_for(self, mode: Mode) -> int | None:
        """The effective per-second limit on a host of ``mode`` (``None`` = unlimited)."""
        if self.max_rps == MODE_DEFAULT:
            return DEFAULT_MAX_RPS[mode]
        return self.max_rps

    def page_size_for(self, mode: Mode) -> int:
        """The effective ``inquire-balance`` page size on a host of ``mode``."""
        if self.page_size == MODE_DEFAULT:
            return DEFAULT_PAGE_SIZE[mode]
        return self.page_size
