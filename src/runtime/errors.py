"""The package's one error root and its leaves.

Every error a caller can see derives from :class:`QTSError`. Leaves are split by what the
caller does differently (fix config, fix keys, wait, retry, report a bug), not by where the
error was raised. No urllib3, cattrs or environs exception crosses a port: adapters wrap them
with ``raise ... from``. Messages never carry an app secret or a full token.

Each class says what the ``qts`` command does with it: ``exit_code`` (0 ok; 1 a bug; 2
configuration or usage; 3 credentials or token rejected; 4 broker unavailable, malformed
answer, failed TLS or token store; 5 rate limited; 6 KIS refused the request itself; 7 the app
key's one WebSocket session is held by another process or host),
``retryable`` (the same call may succeed later as it is) and ``hint`` (one line of advice).
:meth:`QTSError.as_dict` is the JSON shape ``qts --json`` prints on failure. The two tables
below are generated from the classes at import, so they cannot drift from the code.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

__all__ = [
    "ApprovalKeyRejectedError",
    "BrokerCallError",
    "BrokerUnavailableError",
    "CallBudgetExhaustedError",
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
    "UsageError",
    "WrongModeError",
]

# What each exit code of ``qts`` means; the table at the end of this docstring is built from it.
_EXIT_CODES: dict[int, str] = {
    0: "ok",
    1: "internal error (a bug: run again with -v and report it)",
    2: "configuration or usage error; nothing was sent to KIS",
    3: "KIS rejected the credentials or the token (a key of the other mode included)",
    4: "KIS unavailable, a malformed answer, failed TLS verification or an unusable token store",
    5: "rate limited (EGW00133 tokenP once a minute, EGW00201 calls per second)",
    6: "KIS refused the request itself (a business error such as OPSQ0002 unknown stock code)",
    7: "the app key's one WebSocket session is held by another process or host (qts stream)",
    130: "interrupted (Ctrl-C)",
}


class QTSError(Exception):
    """Root of every error QTS Runtime raises.

    ``retryable`` says whether the same call may succeed if simply tried again later;
    ``exit_code`` is what the ``qts`` command exits with; ``code`` is the KIS code when
    the broker sent one (``EGW00123``, ...); ``hint`` is one line saying what to do (a class
    default that an instance may replace with something more precise).
    """

    retryable: bool = False
    exit_code: int = 1
    hint: str = "Run again with -v for details; if it persists, report it."

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]" if self.code else self.message

    def as_dict(self) -> dict[str, Any]:
        """``{"type", "code", "message", "hint", "retryable", "exit_code"}``: the error for a script."""
        return {
            "type": type(self).__name__,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "retryable": self.retryable,
            "exit_code": self.exit_code,
        }


class ConfigError(QTSError):
    """Configuration is missing or invalid; nothing was sent to the broker."""

    hint = (
        "Fix the setting named above in .env or the environment (see .env.example, or run `qts "
        "init`), then `qts doctor`."
    )

    exit_code = 2

    def __init__(self, message: str, *, problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems: dict[str, str] = dict(problems or {})


class CredentialsRejectedError(QTSError):
    """KIS refused the app key / app secret (EGW00102/103/104/105/112/115)."""

    hint = (
        "Check the app key/secret for this mode in .env (no stray spaces); `qts doctor` shows which"
        " pair is used."
    )

    exit_code = 3


class WrongModeError(CredentialsRejectedError):
    """A key of one mode was sent to the other mode's host (EGW02004)."""

    hint = "KIS_MODE and the key pair disagree: use the VTS pair for VTS, the REAL pair for REAL."


class RateLimitedError(QTSError):
    """KIS asked us to slow down; ``retry_after`` says how long to wait at least."""

    hint = "Wait the time shown and try again."

    retryable = True
    exit_code = 5

    def __init__(self, message: str, *, retry_after: timedelta, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class IssuanceRateLimitedError(RateLimitedError):
    """tokenP was asked more than once a minute for one app key (EGW00133)."""

    hint = (
        "KIS answers one tokenP request per minute per app key, rejected ones included; try again "
        "after the time shown (`qts doctor` shows when)."
    )


class CallRateLimitedError(RateLimitedError):
    """More calls per second than KIS allows (EGW00201)."""

    hint = "Too many calls per second for this key; slow down (QTS_MAX_RPS) and try again."


class CallBudgetExhaustedError(RateLimitedError):
    """The key's shared call budget has no slot before this call's deadline; nothing was sent.

    ``queue_s`` is how far ahead the key's budget is already booked (``retry_after`` too) and
    ``queue`` about how many calls wait ahead of this one, across every process on the key.
    """

    hint = (
        "The key's call budget (QTS_MAX_RPS, shared by every process on the key) is booked past the "
        "call deadline; try again shortly, or give calls more time (QTS_CALL_DEADLINE_S)."
    )

    def __init__(self, message: str, *, retry_after: timedelta, queue: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.queue = queue

    @property
    def queue_s(self) -> float:
        """Seconds until the first free slot of the key's budget."""
        return self.retry_after.total_seconds()


class BrokerUnavailableError(QTSError):
    """The broker could not be reached or answered 5xx without a KIS code; retry later.

    ``request_sent`` is False when the request certainly never reached the broker
    (connection refused, connect timeout), so even a POST may be sent again.
    """

    hint = (
        "KIS could not be reached; check the network and the base URL (`qts doctor`), then try again later."
    )

    retryable = True
    exit_code = 4

    def __init__(self, message: str, *, code: str | None = None, request_sent: bool = True) -> None:
        super().__init__(message, code=code)
        self.request_sent = request_sent


class TLSVerificationError(QTSError):
    """The broker's certificate did not verify; never retried, never bypassed."""

    hint = "Behind a corporate proxy? Set KIS_CA_BUNDLE to its CA certificate file (`qts doctor` checks it)."

    exit_code = 4


class MalformedResponseError(QTSError):
    """The broker answered something we cannot trust or parse."""

    hint = "KIS answered something unexpected; try again, and report it if it persists."

    exit_code = 4


class ForeignTokenError(MalformedResponseError):
    """The issued token names another app key (JWT ``jti``): it must never enter the runtime."""

    hint = "The token named another app key; nothing was cached. Report this if it persists."


class TokenRejectedError(QTSError):
    """KIS rejected the access token on a call (EGW00121 invalid, 122 not found, 123 expired)."""

    hint = "Run `qts forget` (or `qts revoke`) and then `qts token` to start with a new token."

    exit_code = 3

    @property
    def expired(self) -> bool:
        """True when KIS said the token's lifetime ended (EGW00123)."""
        return self.code == "EGW00123"


class StaleTokenError(TokenRejectedError):
    """A reissue handed back the very token KIS had just rejected; retrying would loop."""

    hint = "KIS keeps handing back a rejected token; run `qts forget`, then retry."


class BrokerCallError(QTSError):
    """KIS answered a call with a business error (``rt_cd`` != "0") that has no better leaf.

    Such a refusal is about the request (``OPSQ0002`` 없는 종목코드입니다), not a bug: exit 6.
    """

    exit_code = 6
    hint = (
        "KIS refused this request (see its code and message): check the parameters, e.g. the stock "
        "code, account or tr_id."
    )

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class InvalidRequestError(QTSError):
    """The call itself is malformed (method, path, tr_id); nothing was sent."""

    hint = "Fix the request (method, path, tr_id, parameters); nothing was sent to KIS."

    exit_code = 2


class OrderRefusedError(QTSError):
    """Phase 2 sends no orders: order endpoints are refused before the network."""

    hint = "Phase 2 sends no orders; use a read-only (inquire/quotations) endpoint."

    exit_code = 2


class ScopeMismatchError(QTSError):
    """A token of one (mode, app key) was offered for another: REAL and VTS never mix."""

    hint = "A token of one (mode, app key) met another; run `qts forget` and try again."

    exit_code = 2


class TokenStoreError(QTSError):
    """The token store failed in a way that is not just a cache miss."""

    hint = (
        "Check QTS_TOKEN_STORE (the folder's permissions, or that Redis is running); `qts doctor` checks it."
    )

    exit_code = 4


class UsageError(QTSError):
    """The ``qts`` command line itself is wrong (unknown option, missing argument)."""

    exit_code = 2
    hint = "Run `qts --help` for usage."


class ApprovalKeyRejectedError(QTSError):
    """KIS refused the WebSocket approval key (OPSP0011), even after one fresh reissue."""

    hint = "KIS refused even a new approval key; check that this app key may use real-time quotes."

    exit_code = 3


class SubscriptionLimitError(InvalidRequestError):
    """More real-time registrations than KIS allows per app key (41) or a TR we never stream
    (encrypted order notices); refused before anything is sent."""

    hint = "KIS allows 41 registrations (TR x code) per app key; ask for fewer codes."


class StreamFrameError(MalformedResponseError):
    """One real-time frame could not be read (wrong field count, bad header, bad number).

    Logged and counted; the stream goes on. The message names the TR and the counts, never data.
    """


class StreamBreakerOpenError(BrokerUnavailableError):
    """The WebSocket kept failing to connect or dropping at once: reconnecting stopped so a
    flapping server never sees a reconnect storm (KIS may block a key and IP that loops)."""

    hint = "The WebSocket kept failing; check the network and KIS_<MODE>_WS_URL, then try again later."


class StreamSessionHeldError(QTSError):
    """KIS allows one WebSocket session per app key and another process or host holds it.

    ``holder_host``/``holder_pid`` name the holder when our shared store knows it (None when
    KIS itself answered OPSP8996). Exit code 7: nothing is wrong with the keys or the network;
    wait for the holder to stop, or subscribe through it.
    """

    hint = "KIS allows one WebSocket session per app key: stop the other stream first."

    retryable = True
    exit_code = 7

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


def _tables() -> str:
    """The exit-code and error tables appended to this module's docstring (and so to the API docs)."""
    codes = "\n".join(f"| {code} | {meaning} |" for code, meaning in _EXIT_CODES.items())
    rows = []
    for name in sorted(__all__, key=lambda n: [c.__name__ for c in globals()[n].__mro__[::-1]]):
        cls = globals()[name]
        parent = cls.__mro__[1].__name__
        rows.append(
            f"| `{name}` | `{parent}` | {cls.exit_code} | {'yes' if cls.retryable else 'no'} | {cls.hint} |"
        )
    return (
        "\n\nExit codes of ``qts``:\n\n| Exit code | Meaning |\n|---|---|\n"
        + codes
        + "\n\nThe error tree:\n\n| Error | Parent | Exit code | Retryable | Hint |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


__doc__ = (__doc__ or "") + _tables()
