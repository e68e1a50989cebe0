"""Frozen configuration values. Reading them from the environment is ``runtime.config``'s job."""

from __future__ import annotations

import enum
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import attrs

from runtime.broker.base import BrokerScope, Mode
from runtime.masking import fingerprint

__all__ = ["AppCredentials", "Settings", "StoreKind", "TokenStoreSpec"]


@attrs.frozen(repr=False)
class AppCredentials:
    """An app key and its secret. Only the broker adapter ever receives this object."""

    app_key: str
    app_secret: str

    @property
    def fingerprint(self) -> str:
        """The key's public name; see :func:`runtime.masking.fingerprint`."""
        return fingerprint(self.app_key)

    def __repr__(self) -> str:
        return f"AppCredentials(key_fingerprint={self.fingerprint!r})"


class StoreKind(enum.Enum):
    """Where tokens are kept between calls (and, for FILE and REDIS, between processes)."""

    MEMORY = "memory"
    FILE = "file"
    REDIS = "redis"


@attrs.frozen
class TokenStoreSpec:
    """``QTS_TOKEN_STORE`` parsed: a kind and, for file (a folder) and redis (a URL), where.

    A file spec without a location means the default folder, ``$XDG_CACHE_HOME/qts``."""

    kind: StoreKind
    location: str | None = None

    def __str__(self) -> str:
        if self.location is None:
            return self.kind.value
        if self.kind is StoreKind.REDIS:
            return _without_password(self.location)
        return f"{self.kind.value}:{self.location}"


def _without_password(url: str) -> str:
    """A Redis URL safe to print: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@attrs.frozen
class Settings:
    """Everything the composition root needs, validated. Secrets stay out of repr."""

    mode: Mode
    credentials: AppCredentials
    base_url: str
    # Built by hand, Settings keep tokens in memory (tests, the demo on a shifted clock);
    # load_settings, and so ``qts``, defaults to the file store.
    token_store: TokenStoreSpec = TokenStoreSpec(StoreKind.MEMORY)
    refresh_margin: timedelta = timedelta(seconds=600)
    call_deadline_s: float = 20.0
    ca_bundle: Path | None = None
    #: After EGW00133 (or inside the one-tokenP-a-minute budget): wait it out (True) or raise.
    wait_on_rate_limit: bool = True
    #: Calls per second this runtime allows itself per scope; None: VTS 2/s, REAL 15/s.
    max_rps: float | None = None
    #: The WebSocket host (``KIS_<MODE>_WS_URL``); None: the mode's official one.
    ws_url: str | None = None
    #: A stream with no frame at all (data, ack or PINGPONG) for this long is treated as dropped.
    stream_silence_s: float = 60.0

    @property
    def stream_url(self) -> str:
        """The WebSocket URL for the mode: the override if set, else KIS's official one (§1)."""
        return self.ws_url or self.mode.official_ws_url

    @property
    def scope(self) -> BrokerScope:
        """The (mode, key fingerprint) this configuration's tokens belong to."""
        return BrokerScope(self.mode, self.credentials.fingerprint)
