"""Frozen configuration values and the one default of each setting.

Reading them from the environment is ``runtime.config``'s job; every other module that needs a
default (the composition root, the runtime's constructors) takes it from here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import attrs

from runtime.broker.base import AppCredentials, BrokerScope, Mode

__all__ = [
    "DEFAULT_CALL_DEADLINE_S",
    "DEFAULT_MAX_RPS",
    "DEFAULT_REFRESH_MARGIN",
    "Settings",
    "StoreKind",
    "TokenStoreSpec",
]

#: QTS_CALL_DEADLINE_S: the total wall time of one call (token, pacing, retries included).
DEFAULT_CALL_DEADLINE_S: Final = 20.0
#: QTS_REFRESH_MARGIN_S: a token is reissued when less than this is left of its life.
DEFAULT_REFRESH_MARGIN: Final = timedelta(seconds=600)
#: QTS_MAX_RPS unset: the key's documented limit, VTS 2/s, REAL 20/s (KIS_API.md §11). The call
#: budget spaces calls itself (runtime.auth.call_budget.gcra), so no headroom is taken here.
DEFAULT_MAX_RPS: Final[Mapping[Mode, float]] = MappingProxyType({Mode.VTS: 2.0, Mode.REAL: 20.0})


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
    refresh_margin: timedelta = DEFAULT_REFRESH_MARGIN
    call_deadline_s: float = DEFAULT_CALL_DEADLINE_S
    ca_bundle: Path | None = None
    #: After EGW00133 (or inside the one-tokenP-a-minute budget): wait it out (True) or raise.
    wait_on_rate_limit: bool = True
    #: Calls per second for the whole key, shared by every runtime on it through the token store
    #: (the call budget); None: the documented limit, VTS 2/s, REAL 20/s.
    max_rps: float | None = None
    #: The WebSocket host (``KIS_<MODE>_WS_URL``); None: the mode's official one.
    ws_url: str | None = None
    #: A stream with no frame at all (data, ack or PINGPONG) for this long is treated as dropped.
    stream_silence_s: float = 120.0

    @property
    def stream_url(self) -> str:
        """The WebSocket URL for the mode: the override if set, else KIS's official one (§1)."""
        return self.ws_url or self.mode.official_ws_url

    @property
    def scope(self) -> BrokerScope:
        """The (mode, key fingerprint) this configuration's tokens belong to."""
        return BrokerScope(self.mode, self.credentials.fingerprint)

    @property
    def calls_per_second(self) -> float:
        """The key's call budget: ``max_rps``, else the mode's documented limit."""
        return self.max_rps or DEFAULT_MAX_RPS[self.mode]
