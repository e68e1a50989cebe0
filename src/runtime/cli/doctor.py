"""``qts doctor``: what KIS users get wrong, checked one line each (ok / warn / fail + the fix).

Each check is a small function returning :class:`Check` values; they run in order and a check
that needs what an earlier one failed to produce is skipped (the earlier line names the fix).
It never issues a token: the clock is compared with the ``Date`` header of one cheap GET.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from runtime.cli.commands import _env_file, announce_mode
from runtime.cli.output import Output, format_kst
from runtime.errors import ConfigError, QTSError

if TYPE_CHECKING:
    from runtime.auth.ports import TokenStorePort
    from runtime.settings import Settings

__all__ = ["CLOCK_SKEW_WARN_S", "Check", "clock_verdict", "doctor"]

#: Expiry is judged on this host's clock: more skew than this against KIS's is worth a warning.
CLOCK_SKEW_WARN_S = 3.0
_TOKENP_INTERVAL = timedelta(seconds=60)


@attrs.frozen
class Check:
    """One line of the report."""

    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""
    exit_code: int = 2

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}

    def line(self) -> str:
        fix = f" — fix: {self.fix}" if self.fix else ""
        return f"{self.status:<4} {self.name:<10} {self.detail}{fix}"


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, "warn", detail, fix)


def fail(name: str, detail: str, fix: str, exit_code: int = 2) -> Check:
    return Check(name, "fail", detail, fix, exit_code)


def doctor(args: argparse.Namespace, out: Output) -> int:
    """``qts doctor [--json]``: exit 0 when no check fails, else the first failure's exit code."""
    with contextlib.suppress(ConfigError):  # an unreadable .env is the first check's to report
        announce_mode(args, out)
    checks: list[Check] = []
    try:
        for check in _run(args):
            checks.append(check)
            out.line(check.line())
    except QTSError as exc:  # a check that could not finish is a failed check, not a crash
        checks.append(fail("doctor", f"{type(exc).__name__}: {exc.message}", exc.hint, exc.exit_code))
        out.line(checks[-1].line())
    failed = [c for c in checks if c.status == "fail"]
    out.data({"ok": not failed, "checks": [c.as_dict() for c in checks]})
    return failed[0].exit_code if failed else 0


def _run(args: argparse.Namespace) -> Iterator[Check]:
    env_check = _check_env_file(args)
    yield env_check
    if env_check.status == "fail":
        return
    settings, checks = _check_settings(args)
    yield from checks
    if settings is None:
        return
    yield _check_base_url(args, settings)
    yield _check_ca_bundle(settings)
    store, store_checks = _check_store(settings)
    yield from store_checks
    if store is not None:
        yield from _check_token(settings, store)
    yield _check_clock(settings)


def _check_env_file(args: argparse.Namespace) -> Check:
    from runtime.config import validate_env_file

    path = _env_file(args)
    if path is None:
        # Not a fault: the environment may carry every setting (the next check says if it does not).
        return ok(".env", "no ./.env here: settings come from the environment only (`qts init` writes one)")
    try:
        validate_env_file(path)
    except ConfigError as exc:
        return fail(".env", exc.message, exc.hint)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return warn(".env", f"{path} is readable by others (mode {mode:04o})", f"chmod 600 {path}")
    return ok(".env", f"{path} found and readable (mode {mode:04o})")


def _check_settings(args: argparse.Namespace) -> tuple[Settings | None, list[Check]]:
    from runtime.broker.base import Mode
    from runtime.config import load_settings

    try:
        settings = load_settings(_env_file(args), mode=getattr(args, "mode", None))
    except ConfigError as exc:
        problems = exc.problems or {"settings": exc.message}
        grouped: dict[str, list[str]] = {}
        for name in problems:
            grouped.setdefault(_settings_check(name), []).append(name)
        return None, [
            fail(
                check,
                "; ".join(f"{name}: {problems[name]}" for name in names),
                "; ".join(_settings_fix(name) for name in names),
            )
            for check, names in grouped.items()
        ]
    mode = settings.mode
    other = Mode.VTS if mode is Mode.REAL else Mode.REAL
    kind = "live trading 실전투자" if mode is Mode.REAL else "paper trading 모의투자"
    checks = [
        ok(
            "mode",
            f"KIS_MODE={mode.value} ({kind}); KIS_{mode.value}_APP_KEY/SECRET set "
            f"(key {settings.credentials.fingerprint})",
        ),
        _check_other_mode(args, settings, other),
    ]
    return settings, checks


def _settings_check(name: str) -> str:
    """The doctor line a settings problem belongs to."""
    if name == "KIS_MODE":
        return "mode"
    if name.endswith(("_APP_KEY", "_APP_SECRET")):
        return "keys"
    return {"KIS_CA_BUNDLE": "CA bundle", "QTS_TOKEN_STORE": "store"}.get(
        name, "base URL" if name.endswith("_BASE_URL") else name
    )


def _settings_fix(name: str) -> str:
    if name == "KIS_MODE":
        return "set KIS_MODE=VTS (paper) or KIS_MODE=REAL (live) in .env"
    if name == "KIS_CA_BUNDLE":
        return "point KIS_CA_BUNDLE at your proxy's CA certificate file (PEM), or leave it empty"
    if name.endswith("_BASE_URL"):
        return f"leave {name} empty for the official host, or use https:// (http:// only for 127.0.0.1)"
    if name == "QTS_TOKEN_STORE":
        return "use QTS_TOKEN_STORE=file (the default), file:PATH, memory or redis://HOST:PORT/DB"
    if name.endswith(("_APP_KEY", "_APP_SECRET")):
        return f"set {name} in .env (`qts init` writes one) to the value from the KIS portal, no spaces"
    return f"fix {name} in .env (see the comments in .env.example / `qts init`)"


def _check_other_mode(args: argparse.Namespace, settings: Settings, other: Any) -> Check:
    from runtime.config import load_settings

    try:
        theirs = load_settings(_env_file(args), mode=other.value)
    except ConfigError:
        return ok("other", f"{other.value} keys not set (only needed with KIS_MODE={other.value})")
    if theirs.credentials.app_key == settings.credentials.app_key:
        return fail(
            "other",
            f"KIS_{other.value}_APP_KEY is the same key as KIS_{settings.mode.value}_APP_KEY",
            "each mode has its own key pair in the KIS portal: VTS (모의투자) and REAL (실전투자) differ",
            exit_code=3,
        )
    return ok("other", f"{other.value} keys also set (key {theirs.credentials.fingerprint})")


def _check_base_url(args: argparse.Namespace, settings: Settings) -> Check:
    """Both modes' hosts: the official one or loopback (an emulator); anything else warns."""
    from runtime.config import is_loopback_url, load_base_urls

    try:
        urls = load_base_urls(_env_file(args))
    except ConfigError as exc:  # the other mode's URL (this mode's passed load_settings)
        wrong = sorted(exc.problems) or ["base URL"]
        return fail("base URL", exc.message, "; ".join(_settings_fix(name) for name in wrong))
    urls[settings.mode] = settings.base_url  # what this run really uses
    odd = [m for m, url in urls.items() if url != m.official_base_url and not is_loopback_url(url)]
    if odd:
        names = " and ".join(f"KIS_{m.value}_BASE_URL={urls[m]}" for m in odd)
        unset = " and ".join(f"KIS_{m.value}_BASE_URL" for m in odd)
        return warn(
            "base URL",
            f"{names}: neither the official KIS host nor loopback",
            f"unset {unset} to use the official host",
        )
    url = settings.base_url
    official = url == settings.mode.official_base_url
    where = f"official {settings.mode.value} host" if official else "loopback: an emulator or a local proxy"
    return ok("base URL", f"{url} ({where})")


def _check_ca_bundle(settings: Settings) -> Check:
    from runtime.bootstrap import build_http

    if settings.ca_bundle is None:
        return ok("CA bundle", "system certificate store (KIS_CA_BUNDLE not set)")
    try:
        build_http(settings.ca_bundle).clear()
    except ConfigError as exc:
        return fail("CA bundle", exc.message, "point KIS_CA_BUNDLE at a PEM file with your proxy's CA")
    return ok("CA bundle", f"{settings.ca_bundle} loads as PEM certificates")


def _check_store(settings: Settings) -> tuple[TokenStorePort | None, list[Check]]:
    from runtime.bootstrap import build_store
    from runtime.config import default_token_folder
    from runtime.settings import StoreKind

    spec = settings.token_store
    try:
        store = build_store(spec)
    except QTSError as exc:
        return None, [fail("store", exc.message, exc.hint)]
    if spec.kind is StoreKind.MEMORY:
        return store, [
            warn(
                "store",
                "memory: tokens live inside one process, so every run asks KIS for a new one",
                "set QTS_TOKEN_STORE=file (the default) to share one token per key per day",
            )
        ]
    if spec.kind is StoreKind.REDIS:
        try:
            store.load_ledger(settings.scope)
        except QTSError as exc:
            return None, [fail("redis", f"{spec}: {exc.message}", "start Redis or fix QTS_TOKEN_STORE", 4)]
        return store, [ok("redis", f"{spec} reachable")]
    folder = Path(spec.location) if spec.location else default_token_folder()
    return store, [_check_folder(folder), ok("redis", "not configured (QTS_TOKEN_STORE is not redis://)")]


def _check_folder(folder: Path) -> Check:
    if not folder.exists():
        return ok("store", f"file:{folder} (created 0700 on first use)")
    info = folder.stat()
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.geteuid():
        return fail(
            "store",
            f"file:{folder} is owned by uid {info.st_uid}, not by this user ({os.geteuid()})",
            f"use a folder of your own: QTS_TOKEN_STORE=file:PATH, or chown -R $USER {folder}",
        )
    loose = [p for p in [folder, *folder.iterdir()] if stat.S_IMODE(p.stat().st_mode) & 0o077]
    if loose:
        return fail(
            "store",
            f"file:{folder}: {loose[0]} is open to other users "
            f"(mode {stat.S_IMODE(loose[0].stat().st_mode):04o})",
            f"chmod 700 {folder} && chmod 600 {folder}/*",
        )
    return ok("store", f"file:{folder} (owner uid {info.st_uid}, mode {mode:04o})")


def _check_token(settings: Settings, store: TokenStorePort) -> Iterator[Check]:
    from runtime.broker.kis.auth import jwt_claim
    from runtime.clock import SystemClock

    now = SystemClock().now()
    try:
        token = store.load(settings.scope)
        ledger = store.load_ledger(settings.scope)
    except QTSError as exc:
        yield fail("token", exc.message, exc.hint, exc.exit_code)
        return
    if token is None:
        yield ok("token", "none cached for this key (the next call issues one)")
    else:
        age = _span(now - token.issued_at)
        refresh = token.expires_at - settings.refresh_margin
        detail = (
            f"{token.masked}, issued {age} ago, expires {format_kst(token.expires_at)}, "
            f"refreshed from {format_kst(refresh)}"
        )
        jti = jwt_claim(token.value, "jti")
        if jti is not None and jti != settings.credentials.app_key:
            yield fail("token", f"{detail}; its jti names another app key", "run `qts forget`", 3)
        elif token.expires_at <= now:
            yield warn("token", f"{detail}; expired", "nothing to do: the next call issues a new one")
        else:
            yield ok("token", f"{detail}; jti matches the key" if jti else detail)
    yield _budget_check(ledger.last_issued_at, ledger.blocked_until, now)


def _budget_check(last: datetime | None, blocked: datetime | None, now: datetime) -> Check:
    candidates = [t for t in (last + _TOKENP_INTERVAL if last else None, blocked) if t is not None]
    allowed = max(candidates) if candidates else None
    if allowed is None or allowed <= now:
        return ok("budget", "next tokenP allowed now (KIS: one per minute per app key)")
    wait = int((allowed - now).total_seconds()) + 1
    return ok("budget", f"next tokenP allowed at {format_kst(allowed)} (in {wait} s; one per minute)")


def clock_verdict(skew_s: float) -> str:
    """``ok`` or ``warn`` for this host's clock minus KIS's, in seconds."""
    return "warn" if abs(skew_s) > CLOCK_SKEW_WARN_S else "ok"


def _check_clock(settings: Settings) -> Check:
    from runtime.bootstrap import build_http
    from runtime.broker.kis.transport import exchange
    from runtime.clock import SystemClock
    from runtime.deadline import Deadline

    clock = SystemClock()
    try:
        http = build_http(settings.ca_bundle)
    except ConfigError as exc:
        return fail("clock", f"not checked: {exc.message}", exc.hint)
    before = clock.now()
    try:
        reply = exchange(
            http, "GET", settings.base_url + "/", headers={}, deadline=Deadline.after(clock, 5.0)
        )
    except QTSError as exc:
        return fail("reach", f"{settings.base_url}: {exc.message}", exc.hint, exc.exit_code)
    finally:
        http.clear()
    after = clock.now()
    theirs = _parse_date(reply.headers.get("date"))
    if theirs is None:
        return warn("clock", f"{settings.base_url} sent no usable Date header", "compare the clock by hand")
    skew = ((before + (after - before) / 2) - theirs).total_seconds()
    text = f"this host is {abs(skew):.1f} s {'ahead of' if skew >= 0 else 'behind'} KIS ({settings.base_url})"
    if clock_verdict(skew) == "warn":
        return warn(
            "clock", text, "sync this host's clock (NTP: timedatectl set-ntp true); expiry is judged on it"
        )
    return ok("clock", text)


def _parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _span(left: timedelta) -> str:
    seconds = max(int(left.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"
