"""The package's one error root and its leaves.

Every error a caller can see derives from :class:`QTSError`. Leaves are split by what the
caller does differently (fix config, fix keys, wait, retry, report a bug), not by where the
error was raised. No urllib3, cattrs or environs exception crosses a port: adapters wrap them
with ``raise ... from``. Messages never carry an app secret or a full token.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "ApprovalKeyRejectedError",
    "BrokerCallError",
    "BrokerUnavailableError",
    "CallRateLimitedError",
    "ConfigError",
    "CredentialsRejectedError",
    "ForeignTokenError",
    "InvalidRequestError",
    "IssuanceRateLimitedError",
    "MalformedResponseError",
    "OrderRefusedError",
    "QTSError",
    "RateLimitedError",
    "ScopeMismatchError",
    "StaleTokenError",
    "StreamBreakerOpenError",
    "StreamFrameError",
    "StreamSessionHeldError",
    "SubscriptionLimitError",
    "TLSVerificationError",
    "TokenRejectedError",
    "TokenStoreError",
    "WrongModeError",
]


class QTSError(Exception):
    """Root of every error QTS Runtime raises.

    ``retryable`` says whether the same call may succeed if simply tried again later;
    ``exit_code`` is what the ``qts`` command exits with; ``code`` is the KIS code when
    the broker sent one (``EGW00123``, ...).
    """

    retryable: bool = False
    exit_code: int = 1

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]" if self.code else self.message


class ConfigError(QTSError):
    """Configuration is missing or invalid; nothing was sent to the broker."""

    exit_code = 2

    def __init__(self, message: str, *, problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems: dict[str, str] = dict(problems or {})


class CredentialsRejectedError(QTSError):
    """KIS refused the app key / app secret (EGW00102/103/104/105/112/115)."""

    exit_code = 3


class WrongModeError(CredentialsRejectedError):
    """A key of one mode was sent to the other mode's host (EGW02004)."""


class RateLimitedError(QTSError):
    """KIS asked us to slow down; ``retry_after`` says how long to wait at least."""

    retryable = True
    exit_code = 5

    def __init__(self, message: str, *, retry_after: timedelta, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class IssuanceRateLimitedError(RateLimitedError):
    """tokenP was asked more than once a minute for one app key (EGW00133)."""


class CallRateLimitedError(RateLimitedError):
    """More calls per second than KIS allows (EGW00201)."""


class BrokerUnavailableError(QTSError):
    """The broker could not be reached or answered 5xx without a KIS code; retry later.

    ``request_sent`` is False when the request certainly never reached the broker
    (connection refused, connect timeout), so even a POST may be sent again.
    """

    retryable = True
    exit_code = 4

    def __init__(self, message: str, *, code: str | None = None, request_sent: bool = True) -> None:
        super().__init__(message, code=code)
        self.request_sent = request_sent


class TLSVerificationError(QTSError):
    """The broker's certificate did not verify; never retried, never bypassed."""

    exit_code = 4


class MalformedResponseError(QTSError):
    """The broker answered something we cannot trust or parse."""

    exit_code = 4


class ForeignTokenError(MalformedResponseError):
    """The issued token names another app key (JWT ``jti``): it must never enter the runtime."""


class TokenRejectedError(QTSError):
    """KIS rejected the access token on a call (EGW00121 invalid, 122 not found, 123 expired)."""

    exit_code = 3

    @property
    def expired(self) -> bool:
        """True when KIS said the token's lifetime ended (EGW00123)."""
        return self.code == "EGW00123"


class StaleTokenError(TokenRejectedError):
    """A reissue handed back the very token KIS had just rejected; retrying would loop."""


class BrokerCallError(QTSError):
    """KIS answered a call with a business error (``rt_cd`` != "0") that has no better leaf."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class InvalidRequestError(QTSError):
    """The call itself is malformed (method, path, tr_id); nothing was sent."""

    exit_code = 2


class OrderRefusedError(QTSError):
    """Phase 2 sends no orders: order endpoints are refused before the network."""

    exit_code = 2


class ScopeMismatchError(QTSError):
    """A token of one (mode, app key) was offered for another: REAL and VTS never mix."""

    exit_code = 2


class TokenStoreError(QTSError):
    """The token store failed in a way that is not just a cache miss."""

    exit_code = 4


class ApprovalKeyRejectedError(QTSError):
    """KIS refused the WebSocket approval key (OPSP0011), even after one fresh reissue."""

    exit_code = 3


class SubscriptionLimitError(InvalidRequestError):
    """More real-time registrations than KIS allows per app key (41) or a TR we never stream
    (encrypted order notices); refused before anything is sent."""


class StreamFrameError(MalformedResponseError):
    """One real-time frame could not be read (wrong field count, bad header, bad number).

    Logged and counted; the stream goes on. The message names the TR and the counts, never data.
    """


class StreamBreakerOpenError(BrokerUnavailableError):
    """The WebSocket kept failing to connect or dropping at once: reconnecting stopped so a
    flapping server never sees a reconnect storm (KIS may block a key and IP that loops)."""


class StreamSessionHeldError(QTSError):
    """KIS allows one WebSocket session per app key and another process or host holds it.

    ``holder_host``/``holder_pid`` name the holder when our shared store knows it (None when
    KIS itself answered OPSP8996). Exit code 6: not a fault of ours or KIS's; wait for the
    holder to stop, or subscribe through it.
    """

    retryable = True
    exit_code = 6

    def __init__(
        self,
        message: str,
        *,
        holder_host: str | None = None,
        holder_pid: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.holder_host = holder_host
        self.holder_pid = holder_pid
