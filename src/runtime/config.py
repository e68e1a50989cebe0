"""The only place that reads the environment and ``.env``: ``load_settings`` -> frozen Settings.

All problems are collected and reported together in one :class:`ConfigError`, before any
network call, each naming its variable and what is allowed.
"""

from __future__ import annotations

import codecs
import contextlib
import ipaddress
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
import dotenv

from runtime.broker.base import AppCredentials, Mode
from runtime.errors import ConfigError
from runtime.settings import (
    DEFAULT_CALL_DEADLINE_S,
    DEFAULT_REFRESH_MARGIN,
    Settings,
    StoreKind,
    TokenStoreSpec,
)

_compile = re.compile


class _PatternOnFirstUse:
    """A regular expression compiled the first time it is used, then that pattern's attributes."""

    __slots__ = ("_args", "_pattern")

    def __init__(self, pattern: str, flags: int) -> None:
        self._args = (pattern, flags)
        self._pattern: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:
        # Only names the instance lacks land here (match, pattern, ...); two threads may both
        # compile on first use, and the re module hands both the same result. Dunder probes
        # (ABCMeta asks every class attribute for __isabstractmethod__) do not compile it.
        if name.startswith("__"):
            raise AttributeError(name)
        if self._pattern is None:
            self._pattern = _compile(*self._args)
        return getattr(self._pattern, name)


@contextlib.contextmanager
def _marshmallow_regexes_on_first_use() -> Iterator[None]:
    """While marshmallow is first imported, its ``validate`` module's class-level patterns are
    compiled on first use instead of at import.

    Why: ``marshmallow.validate.Email.DOMAIN_REGEX`` spans U+00A1-U+FFFF case-insensitively, and
    compiling it walks 65,000 characters five times: ~27 ms of every process that reads its
    settings (environs imports marshmallow), for an e-mail validator load_settings never uses.
    Only calls made from that module's own code are deferred, and only during this import."""
    if "marshmallow.validate" in sys.modules or not hasattr(sys, "_getframe"):
        yield
        return

    def compile_later(pattern: Any, flags: int = 0) -> Any:
        if isinstance(pattern, str) and sys._getframe(1).f_globals.get("__name__") == "marshmallow.validate":
            return _PatternOnFirstUse(pattern, flags)
        return _compile(pattern, flags)

    re.compile = compile_later
    try:
        yield
    finally:
        re.compile = _compile


with _marshmallow_regexes_on_first_use():
    import environs


__all__ = [
    "ENV_VARIABLES",
    "ROUTING_VARIABLES",
    "FoundEnvFile",
    "announced_mode",
    "default_token_folder",
    "find_env_file",
    "found_env_problems",
    "is_loopback_url",
    "load_base_urls",
    "load_mode",
    "load_settings",
    "load_store_spec",
    "parse_base_url",
    "parse_store_spec",
    "parse_ws_url",
    "validate_env_file",
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
    "KIS_VTS_WS_URL",
    "KIS_REAL_WS_URL",
    "KIS_CA_BUNDLE",
    "QTS_TOKEN_STORE",
    "QTS_REFRESH_MARGIN_S",
    "QTS_CALL_DEADLINE_S",
    "QTS_WAIT_ON_RATE_LIMIT",
    "QTS_MAX_RPS",
    "QTS_STREAM_SILENCE_S",
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
# Compiled by re's own cache on first use: only a found .env needs it, not every process.
_FOUND_ALLOWED = r"KIS_MODE|KIS_(VTS|REAL)_APP_(KEY|SECRET)|QTS_[A-Z0-9_]+"
_DEFAULT_STORES = ("", "memory", "file")

_MAX_MARGIN_S = 12 * 3600  # a margin near the 24 h lifetime would reissue on every call
_MAX_DEADLINE_S = 600.0
_MAX_SILENCE_S = 3600.0
#: The only non-loopback host a WebSocket override may name: KIS's own (KIS_API.md §1).
_OFFICIAL_WS_HOST = "ops.koreainvestment.com"
_MAX_RPS = 20.0  # KIS_API.md §11: REAL allows 20 calls per second per key
_DEFAULT_MODE = Mode.VTS.value
_DEFAULT_STORE = "file"  # built by hand, Settings keep tokens in memory; `qts` keeps them in files
_T = TypeVar("_T")


class FoundEnvFile(type(Path())):  # type: ignore[misc]
    """A ``.env`` path that was only found in the working folder, not named by the user.

    Every reader below treats it as untrusted (see :data:`ROUTING_VARIABLES`), whichever
    function it is handed to."""


def find_env_file() -> FoundEnvFile | None:
    """``./.env`` when the working folder has one (what ``qts`` reads without ``--env-file``)."""
    path = FoundEnvFile(".env")
    return path if path.is_file() else None


def _is_found(env_file: str | os.PathLike[str] | None, found: bool = False) -> bool:
    return found or isinstance(env_file, FoundEnvFile)


def load_settings(
    env_file: str | os.PathLike[str] | None = None, *, mode: str | None = None, found: bool = False
) -> Settings:
    """Read settings from the environment and, if given, ``env_file`` (the environment wins).

    ``mode`` overrides ``KIS_MODE`` (the CLI's ``--mode``). Raises ConfigError listing every
    problem found. No ``.env`` is searched for implicitly: pass the file you mean.
    """
    env = _environment(env_file, found=found)
    problems: dict[str, str] = {}
    raw = _Raw.read(env, mode)
    _seal(env, problems)
    try:
        active = Mode.parse(raw.mode)
    except ValueError as exc:
        problems["KIS_MODE"] = str(exc)
        raise _config_error(problems) from None
    app_key, app_secret = raw.keys[active]
    for suffix, value in (("APP_KEY", app_key), ("APP_SECRET", app_secret)):
        problem = _credential_problem(value)
        if problem:
            problems[f"KIS_{active.value}_{suffix}"] = problem
    base_url = _checked(problems, f"KIS_{active.value}_BASE_URL", parse_base_url, raw.urls[active])
    ws_url = _checked(problems, f"KIS_{active.value}_WS_URL", parse_ws_url, raw.ws_urls[active])
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
        ws_url=ws_url,
        stream_silence_s=raw.silence_s,
    )


@attrs.frozen(eq=False, repr=False)  # read once, never compared; the repr would show the keys
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
    ws_urls: dict[Mode, str]
    silence_s: float
    keys: dict[Mode, tuple[str, str]]

    @classmethod
    def read(cls, env: environs.Env, mode: str | None) -> _Raw:
        return cls(
            mode=mode if mode is not None else env.str("KIS_MODE", _DEFAULT_MODE),
            margin_s=env.float("QTS_REFRESH_MARGIN_S", DEFAULT_REFRESH_MARGIN.total_seconds()),
            deadline_s=env.float("QTS_CALL_DEADLINE_S", DEFAULT_CALL_DEADLINE_S),
            store=env.str("QTS_TOKEN_STORE", _DEFAULT_STORE),
            wait_on_rate_limit=bool(env.bool("QTS_WAIT_ON_RATE_LIMIT", True)),
            max_rps=env.str("QTS_MAX_RPS", ""),  # empty: the key's documented limit (VTS 2/s, REAL 20/s)
            ca=env.str("KIS_CA_BUNDLE", ""),
            urls={m: env.str(f"KIS_{m.value}_BASE_URL", "") for m in Mode},
            ws_urls={m: env.str(f"KIS_{m.value}_WS_URL", "") for m in Mode},
            silence_s=env.float("QTS_STREAM_SILENCE_S", 120.0),
            keys={
                m: (env.str(f"KIS_{m.value}_APP_KEY", ""), env.str(f"KIS_{m.value}_APP_SECRET", ""))
                for m in Mode
            },
        )


def _environment(env_file: str | os.PathLike[str] | None, *, found: bool = False) -> environs.Env:
    env = environs.Env(eager=False)
    if env_file is not None:
        _read_env_file(env, Path(env_file), found=_is_found(env_file, found))
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
    if "QTS_STREAM_SILENCE_S" not in problems and not 1 <= raw.silence_s <= _MAX_SILENCE_S:
        problems["QTS_STREAM_SILENCE_S"] = (
            f"must be between 1 and {_MAX_SILENCE_S:g} seconds, got {raw.silence_s:g}"
        )
    max_rps = _optional_rate(raw.max_rps)
    if max_rps is not None and not 0 < max_rps <= _MAX_RPS:
        problems["QTS_MAX_RPS"] = f"must be a number above 0 and at most {_MAX_RPS:g} (KIS's REAL limit)"
    return max_rps


def load_mode(env_file: str | os.PathLike[str] | None = None, *, mode: str | None = None) -> Mode:
    """Only the mode: ``mode`` (``--mode``) if given, else ``KIS_MODE``, else VTS; for commands that
    need no keys (``qts emulator``). Raises ConfigError naming KIS_MODE."""
    text = mode if mode is not None else _environment(env_file).str("KIS_MODE", _DEFAULT_MODE)
    try:
        return Mode.parse(text)
    except ValueError as exc:
        raise _config_error({"KIS_MODE": str(exc)}) from None


def load_store_spec(env_file: str | os.PathLike[str] | None = None, *, found: bool = False) -> TokenStoreSpec:
    """Only ``QTS_TOKEN_STORE`` (for ``qts status``, which needs no keys). Raises ConfigError.

    ``found`` as for :func:`load_settings`."""
    raw = _environment(env_file, found=found).str("QTS_TOKEN_STORE", _DEFAULT_STORE)
    try:
        return parse_store_spec(raw)
    except ValueError as exc:
        raise _config_error({"QTS_TOKEN_STORE": str(exc)}) from None


def announced_mode(env_file: str | os.PathLike[str] | None = None, *, mode: str | None = None) -> Mode | None:
    """Only the mode in use (``mode``, else ``KIS_MODE``, else VTS), or None when it is invalid.

    For announcing REAL before anything else can fail (missing keys included). Raises
    ConfigError only when ``env_file`` cannot be read.
    """
    env = environs.Env(eager=False)
    # What is known without the file comes first: an unreadable file must not hide REAL.
    if env_file is not None and mode is None and "KIS_MODE" not in os.environ:
        _read_env_file(env, Path(env_file), found=_is_found(env_file))
    raw = mode if mode is not None else env.str("KIS_MODE", _DEFAULT_MODE)
    try:
        return Mode.parse(raw)
    except ValueError:
        return None


def validate_env_file(env_file: str | os.PathLike[str]) -> None:
    """Raise the ConfigError reading ``env_file`` would raise (unreadable, CP949, BOM), if any."""
    _read_env_file(environs.Env(eager=False), Path(env_file), found=_is_found(env_file))


def load_base_urls(env_file: str | os.PathLike[str] | None = None) -> dict[Mode, str]:
    """The REST base URL of each mode (the official one when ``KIS_<MODE>_BASE_URL`` is unset).

    For ``qts doctor``. Raises ConfigError naming any URL that is not allowed.
    """
    env = environs.Env(eager=False)
    if env_file is not None:
        _read_env_file(env, Path(env_file), found=_is_found(env_file))
    urls: dict[Mode, str] = {}
    problems: dict[str, str] = {}
    for mode in Mode:
        raw = env.str(f"KIS_{mode.value}_BASE_URL", "")
        try:
            urls[mode] = parse_base_url(raw) if raw else mode.official_base_url
        except ValueError as exc:
            problems[f"KIS_{mode.value}_BASE_URL"] = str(exc)
    if problems:
        raise _config_error(problems)
    return urls


def is_loopback_url(url: str) -> bool:
    """True when ``url``'s host is 127.0.0.0/8, ::1 or localhost."""
    host = urlsplit(url).hostname
    return host is not None and _is_loopback(host)


def _read_env_file(env: environs.Env, path: Path, *, found: bool = False) -> None:
    """Load ``path`` into ``env``; an unreadable or undecodable file is a ConfigError saying what to do."""
    if not path.is_file():
        raise ConfigError(f"env file {str(path)!r} does not exist or is not a file")
    try:
        _check_env_file(path)
        if found:
            _load_found_env_file(path)
        else:
            env.read_env(path, recurse=False)  # named by the user: trusted like the environment
    except PermissionError:
        raise _file_error(
            f"env file {str(path)!r} cannot be read (permission denied)",
            f"Make it readable by the user running qts: chown $USER {str(path)!r} && "
            f"chmod 600 {str(path)!r}.",
        ) from None
    except UnicodeDecodeError:
        raise _file_error(
            f"env file {str(path)!r} is not UTF-8 (saved as CP949/EUC-KR, the Windows default in Korea?)",
            f"Save it again as UTF-8: iconv -f cp949 -t utf-8 {str(path)!r} > {str(path)!r}.utf8, "
            "check it, then rename it back (or choose UTF-8 in your editor's Save As).",
        ) from None
    except OSError as exc:
        raise _file_error(
            f"env file {str(path)!r} cannot be read: {exc.strerror or type(exc).__name__}",
            "Check that the path names a readable file, or run `qts init` to write a new one.",
        ) from None


def _load_found_env_file(path: Path) -> None:
    """A ``.env`` only found in the working folder: refused when it says where credentials go;
    otherwise only the names it may set reach the environment (never overriding it)."""
    values = dotenv.dotenv_values(path)
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
        if value is not None and re.fullmatch(_FOUND_ALLOWED, name) and name not in os.environ:
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


def _check_env_file(path: Path) -> None:
    """What the dotenv reader would get wrong silently: a file its owner may not read (root reads it
    anyway) and a UTF-8 byte-order mark (it would hide the first variable)."""
    if not stat.S_IMODE(path.stat().st_mode) & stat.S_IRUSR:
        raise PermissionError(path)
    with path.open("rb") as handle:
        head = handle.read(len(codecs.BOM_UTF8))
    if head == codecs.BOM_UTF8:
        raise _file_error(
            f"env file {str(path)!r} starts with a byte-order mark (saved as 'UTF-8 with BOM')",
            "Save it again as plain UTF-8 without BOM (Notepad: Save As, Encoding UTF-8).",
        )


def _file_error(message: str, hint: str) -> ConfigError:
    error = ConfigError(message)
    error.hint = hint
    return error


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


def parse_ws_url(text: str) -> str:
    """Validate a WebSocket URL override: KIS's own host (ws:// or wss://) or a loopback host only.

    The approval key travels in every subscribe message, so a stream may only go to KIS or to a
    test server on this machine."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("must be an absolute ws:// URL such as ws://ops.koreainvestment.com:31000")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, fragment or user info")
    if parts.hostname.lower() != _OFFICIAL_WS_HOST and not _is_loopback(parts.hostname):
        raise ValueError(
            f"only KIS's WebSocket host ({_OFFICIAL_WS_HOST}) or a loopback host (127.0.0.1, ::1, "
            "localhost) is allowed"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname.lower()
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
