"""The only place that reads the environment and ``.env``: ``load_settings`` -> frozen Settings.

All problems are collected and reported together in one :class:`ConfigError`, before any
network call, each naming its variable and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import attrs
import dotenv
import environs

from runtime.broker.base import Mode
from runtime.errors import ConfigError
from runtime.settings import AppCredentials, Settings, StoreKind, TokenStoreSpec

__all__ = [
    "ENV_VARIABLES",
    "ROUTING_VARIABLES",
    "default_token_folder",
    "find_env_file",
    "found_env_problems",
    "load_settings",
    "load_store_spec",
    "parse_base_url",
    "parse_store_spec",
]

#: Every variable the package reads, for docs and for tests that clear the environment.
ENV_VARIABLES = (
    "KIS_MODE",
    "KIS_VTS_APP_KEY",
    "KIS_VTS_APP_SECRET",
    "KIS_REAL_APP_KEY",
    "KIS_REAL_APP_SECRET",
    "KIS_VTS_BASE_URL",
    "KIS_REAL_BASE_URL",
    "KIS_CA_BUNDLE",
    "QTS_TOKEN_STORE",
    "QTS_REFRESH_MARGIN_S",
    "QTS_CALL_DEADLINE_S",
    "QTS_WAIT_ON_RATE_LIMIT",
    "QTS_MAX_RPS",
)

#: Variables that decide where credentials (and tokens) go. They come only from the process
#: environment or a file named explicitly, never from a ``.env`` merely found in the working
#: folder: a cloned repository can carry one (KIS_MODE=REAL plus a base URL of its choosing).
ROUTING_VARIABLES = (
    "KIS_VTS_BASE_URL",
    "KIS_REAL_BASE_URL",
    "KIS_VTS_WS_URL",
    "KIS_REAL_WS_URL",
    "KIS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "QTS_TOKEN_STORE",
)
#: What a found ``.env`` may set: the mode, the keys and the runtime's tuning knobs.
_FOUND_ALLOWED = re.compile(r"KIS_MODE|KIS_(VTS|REAL)_APP_(KEY|SECRET)|QTS_[A-Z0-9_]+")
_DEFAULT_STORES = ("", "memory", "file")

_MAX_MARGIN_S = 12 * 3600  # a margin near the 24 h lifetime would reissue on every call
_MAX_DEADLINE_S = 600.0
_MAX_RPS = 20.0  # KIS_API.md §11: REAL allows 20 calls per second per key
_T = TypeVar("_T")


def find_env_file() -> Path | None:
    """``./.env`` when the working folder has one (what ``qts`` reads without ``--env-file``)."""
    path = Path(".env")
    return path if path.is_file() else None


def load_settings(
    env_file: str | os.PathLike[str] | None = None, *, mode: str | None = None, found: bool = False
) -> Settings:
    """Read settings from the environment and, if given, ``env_file`` (the environment wins).

    ``mode`` overrides ``KIS_MODE`` (the CLI's ``--mode``). Raises ConfigError listing every
    problem found. No ``.env`` is searched for implicitly: pass the file you mean.

    ``found`` says the file was only found in the working folder, not named by the user: it may
    then set the mode, the keys and QTS_* knobs, but never where credentials go (see
    :data:`ROUTING_VARIABLES`); a found file that tries is refused with ConfigError.
    """
    env = _environment(env_file, found=found)
    problems: dict[str, str] = {}
    raw = _Raw.read(env, mode)
    _seal(env, problems)
    try:
        active = Mode.parse(raw.mode)
    except ValueError:
        problems["KIS_MODE"] = f"{raw.mode!r} is not allowed; use VTS or REAL"
        raise _config_error(problems) from None
    app_key, app_secret = raw.keys[active]
    for suffix, value in (("APP_KEY", app_key), ("APP_SECRET", app_secret)):
        problem = _credential_problem(value)
        if problem:
            problems[f"KIS_{active.value}_{suffix}"] = problem
    base_url = _checked(problems, f"KIS_{active.value}_BASE_URL", parse_base_url, raw.urls[active])
    store = _checked(problems, "QTS_TOKEN_STORE", parse_store_spec, raw.store, empty_is_default=False)
    max_rps = _check_numbers(raw, problems)
    ca_bundle = Path(raw.ca).expanduser() if raw.ca else None
    if ca_bundle is not None and not ca_bundle.is_file():
        problems["KIS_CA_BUNDLE"] = f"{raw.ca!r} is not a readable file"
    if problems:
        raise _config_error(problems)
    return Settings(
        mode=active,
        credentials=AppCredentials(app_key, app_secret),
        base_url=base_url or active.official_base_url,
        token_store=store or TokenStoreSpec(StoreKind.FILE),
        refresh_margin=timedelta(seconds=raw.margin_s),
        call_deadline_s=raw.deadline_s,
        ca_bundle=ca_bundle,
        wait_on_rate_limit=raw.wait_on_rate_limit,
        max_rps=max_rps,
    )


@attrs.frozen
class _Raw:
    """The variables as read, before any check (environs reports its own parse errors on seal)."""

    mode: str
    margin_s: float
    deadline_s: float
    store: str
    wait_on_rate_limit: bool
    max_rps: str
    ca: str
    urls: dict[Mode, str]
    keys: dict[Mode, tuple[str, str]]

    @classmethod
    def read(cls, env: environs.Env, mode: str | None) -> _Raw:
        return cls(
            mode=mode if mode is not None else env.str("KIS_MODE", "VTS"),
            margin_s=env.float("QTS_REFRESH_MARGIN_S", 600.0),
            deadline_s=env.float("QTS_CALL_DEADLINE_S", 20.0),
            store=env.str("QTS_TOKEN_STORE", "file"),
            wait_on_rate_limit=bool(env.bool("QTS_WAIT_ON_RATE_LIMIT", True)),
            max_rps=env.str("QTS_MAX_RPS", ""),  # empty: the mode's default (VTS 2/s, REAL 15/s)
            ca=env.str("KIS_CA_BUNDLE", ""),
            urls={m: env.str(f"KIS_{m.value}_BASE_URL", "") for m in Mode},
            keys={
                m: (env.str(f"KIS_{m.value}_APP_KEY", ""), env.str(f"KIS_{m.value}_APP_SECRET", ""))
                for m in Mode
            },
        )


def _environment(env_file: str | os.PathLike[str] | None, *, found: bool = False) -> environs.Env:
    env = environs.Env(eager=False)
    if env_file is not None:
        _read_env_file(env, Path(env_file), found=found)
    return env


def _seal(env: environs.Env, problems: dict[str, str]) -> None:
    try:
        env.seal()
    except environs.EnvValidationError as exc:
        messages = exc.error_messages
        if isinstance(messages, dict):
            problems.update({name: "; ".join(map(str, msgs)) for name, msgs in messages.items()})
        else:
            problems["environment"] = "; ".join(map(str, messages))


def _checked(
    problems: dict[str, str],
    name: str,
    parse: Callable[[str], _T],
    text: str,
    *,
    empty_is_default: bool = True,
) -> _T | None:
    """``parse(text)``, or None for an empty ``text`` (the default) or a problem filed under ``name``."""
    if not text and empty_is_default:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        problems[name] = str(exc)
        return None


def _check_numbers(raw: _Raw, problems: dict[str, str]) -> float | None:
    """Range checks for the numeric settings; returns QTS_MAX_RPS (None: the mode's default)."""
    if "QTS_REFRESH_MARGIN_S" not in problems and not 0 <= raw.margin_s <= _MAX_MARGIN_S:
        problems["QTS_REFRESH_MARGIN_S"] = (
            f"must be between 0 and {_MAX_MARGIN_S} seconds, got {raw.margin_s:g}"
        )
    if "QTS_CALL_DEADLINE_S" not in problems and not 0 < raw.deadline_s <= _MAX_DEADLINE_S:
        problems["QTS_CALL_DEADLINE_S"] = (
            f"must be above 0 and at most {_MAX_DEADLINE_S:g} seconds, got {raw.deadline_s:g}"
        )
    max_rps = _optional_rate(raw.max_rps)
    if max_rps is not None and not 0 < max_rps <= _MAX_RPS:
        problems["QTS_MAX_RPS"] = f"must be a number above 0 and at most {_MAX_RPS:g} (KIS's REAL limit)"
    return max_rps


def load_store_spec(env_file: str | os.PathLike[str] | None = None, *, found: bool = False) -> TokenStoreSpec:
    """Only ``QTS_TOKEN_STORE`` (for ``qts status``, which needs no keys). Raises ConfigError.

    ``found`` as for :func:`load_settings`."""
    env = _environment(env_file, found=found)
    raw = env.str("QTS_TOKEN_STORE", "file")
    try:
        return parse_store_spec(raw)
    except ValueError as exc:
        raise _config_error({"QTS_TOKEN_STORE": str(exc)}) from None


def _read_env_file(env: environs.Env, path: Path, *, found: bool) -> None:
    if not path.is_file():
        raise ConfigError(f"env file {str(path)!r} does not exist or is not a file")
    if not found:
        env.read_env(path, recurse=False)  # named by the user: trusted like the environment
        return
    try:
        values = dotenv.dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {type(exc).__name__}") from None
    refused = found_env_problems(values)
    if refused:
        names = ", ".join(refused)
        raise ConfigError(
            f"{str(path)!r} was found in the working folder (not named with --env-file) and sets "
            f"{names}. A .env that is only found may set KIS_MODE, the app keys and QTS_* options, "
            f"never where credentials go. Set {names} in the process environment "
            f"(export {refused[0]}=...), or name the file explicitly: qts --env-file {path} ...",
            problems=dict.fromkeys(refused, "not accepted from a .env that was only found"),
        )
    for name, value in values.items():
        # Like load_dotenv(override=False), but only the names a found file may set.
        if value is not None and _FOUND_ALLOWED.fullmatch(name) and name not in os.environ:
            os.environ[name] = value


def found_env_problems(values: dict[str, str | None]) -> list[str]:
    """The variables of a found ``.env`` that decide where credentials go, sorted (pure)."""
    refused = []
    for name, value in values.items():
        text = (value or "").strip()
        if not text:
            continue  # an empty line (as in .env.example) sends nothing anywhere
        if name == "QTS_TOKEN_STORE":
            if text.lower() not in _DEFAULT_STORES:
                refused.append(name)
        elif name in ROUTING_VARIABLES or (name.startswith("KIS_") and name.endswith("_URL")):
            refused.append(name)
    return sorted(refused)


def default_token_folder() -> Path:
    """Where the file store lives unless ``file:PATH`` says otherwise: ``$XDG_CACHE_HOME/qts``,
    else ``~/.cache/qts`` (a relative XDG_CACHE_HOME is ignored, as the XDG spec asks)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "qts"


def parse_base_url(text: str) -> str:
    """Validate a REST base URL: https anywhere, plain http only to a loopback host."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(
            "must be an absolute https:// URL such as https://openapivts.koreainvestment.com:29443"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, fragment or user info")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("plain http:// is allowed only for a loopback host (127.0.0.1, ::1, localhost)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def parse_store_spec(text: str) -> TokenStoreSpec:
    """``memory`` | ``file`` | ``file:PATH`` | ``redis://...`` to a TokenStoreSpec."""
    value = text.strip()
    if value.lower() == "memory":
        return TokenStoreSpec(StoreKind.MEMORY)
    if value.lower() == "file":
        return TokenStoreSpec(StoreKind.FILE)
    if value.lower().startswith("file:") and len(value) > len("file:"):
        return TokenStoreSpec(StoreKind.FILE, value[len("file:") :])
    if value.lower().startswith(("redis://", "rediss://", "unix://")):
        return TokenStoreSpec(StoreKind.REDIS, value)
    raise ValueError(f"{text!r} is not allowed; use memory, file, file:PATH or redis://HOST:PORT/DB")


def _optional_rate(text: str) -> float | None:
    """Empty means "the default"; anything unparsable becomes NaN so the range check names it."""
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _credential_problem(value: str) -> str | None:
    if not value:
        return "is required for this mode and is missing or empty"
    if value != value.strip():
        return "has leading or trailing whitespace (KIS then answers EGW00103/EGW00105)"
    if not value.isascii() or not value.isprintable() or " " in value:
        return "must be printable ASCII without spaces"
    return None


def _config_error(problems: dict[str, str]) -> ConfigError:
    lines = "; ".join(f"{name}: {problem}" for name, problem in sorted(problems.items()))
    return ConfigError(f"invalid configuration: {lines}", problems=problems)
