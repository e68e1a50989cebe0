"""The ``qts`` subcommands. Each builds what it needs through the composition root."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.cli.output import REAL_MARKER, Output, format_kst, format_left

if TYPE_CHECKING:
    from kis_emulator import EmulatorAccount
    from runtime.auth.ports import BudgetUsage, CallBudgetPort
    from runtime.auth.session import KISRuntime
    from runtime.broker.base import BrokerScope
    from runtime.settings import Settings

__all__ = ["demo", "emulator", "quote", "revoke", "status", "token"]

PRICE_PATH = "/uapi/domestic-stock/v1/quotations/inquire-price"
PRICE_TR_ID = "FHKST01010100"


def _env_file(args: argparse.Namespace) -> Path | None:
    """The settings file: named with ``--env-file``, else ``./.env`` if present -- a
    :class:`~runtime.config.FoundEnvFile`, which every reader treats as untrusted."""
    if getattr(args, "env_file", None):
        return Path(args.env_file)
    from runtime.config import find_env_file

    return find_env_file()


def announce_mode(args: argparse.Namespace, out: Output, *, machine_stdout: bool = False) -> None:
    """The one rule for the REAL marker: shown first whenever REAL is the mode in use, before
    anything else can fail (missing keys included). Idempotent within a run."""
    from runtime.broker.base import Mode
    from runtime.config import announced_mode

    if announced_mode(_env_file(args), mode=getattr(args, "mode", None)) is Mode.REAL:
        out.real_marker(machine_stdout=machine_stdout)


def _settings(
    args: argparse.Namespace, out: Output | None = None, *, machine_stdout: bool = False
) -> Settings:
    from runtime.config import load_settings

    if out is not None:
        announce_mode(args, out, machine_stdout=machine_stdout)
    settings = load_settings(_env_file(args), mode=getattr(args, "mode", None))
    if out is not None:
        out.target = settings.base_url
    return settings


def _runtime(
    args: argparse.Namespace, out: Output, *, machine_stdout: bool = False, settings: Settings | None = None
) -> KISRuntime:
    from runtime.bootstrap import build_runtime

    settings = settings or _settings(args, out, machine_stdout=machine_stdout)
    if settings.base_url != settings.mode.official_base_url:
        # Whoever set the URL, the person running qts sees where the keys are about to go.
        out.error(
            f"qts: note: {settings.mode.value} requests go to {settings.base_url}, "
            f"not to KIS's official host {settings.mode.official_base_url}"
        )
    return build_runtime(settings, on_wait=_countdown(out))


def _countdown(out: Output) -> Callable[[int], None]:
    """The issuance budget's wait, shown on stderr: one updating line on a terminal, else one line."""
    tty = out.stderr.isatty()
    shown = False

    def show(seconds_left: int) -> None:
        nonlocal shown
        if seconds_left <= 0:
            if shown and tty:
                print(file=out.stderr, flush=True)
            shown = False
            return
        text = f"qts: KIS answers one tokenP request per minute per app key; waiting {seconds_left:2d} s"
        if tty:
            print(f"\r{text}", end="", file=out.stderr, flush=True)
        elif not shown:
            print(text, file=out.stderr, flush=True)
        shown = True

    return show


def token(args: argparse.Namespace, out: Output) -> int:
    """``qts token [--reveal]``: may wait out KIS's one-token-a-minute rule (QTS_WAIT_ON_RATE_LIMIT)."""
    from runtime.auth.budget import MAX_WAIT

    reveal = bool(getattr(args, "reveal", False))
    settings = _settings(args, out, machine_stdout=reveal)
    with _runtime(args, out, machine_stdout=reveal, settings=settings) as kis:
        # The budget's wait (at most MAX_WAIT) comes on top of the call deadline here; a quote
        # keeps its deadline and gets exit 5 at once instead.
        access = kis.access_token(budget_wait_s=MAX_WAIT.total_seconds())
        if reveal:
            out.raw(access.value)
            return 0
        from runtime.clock import SystemClock

        left = access.time_left(SystemClock().now())
        source = "issued" if kis.cache.last_source == "issued" else "cache"
        out.line(f"mode     {kis.scope.mode.value} (key {kis.scope.key_fingerprint})")
        out.line(f"source   {source}")
        out.line(f"expires  {format_kst(access.expires_at)} ({format_left(left)} left)")
        out.line(f"token    {access.masked}")
        out.data(
            {
                "mode": kis.scope.mode.value,
                "key_fingerprint": kis.scope.key_fingerprint,
                "source": source,
                "expires_at": access.expires_at.isoformat(),
                "seconds_left": int(left.total_seconds()),
                "token": access.masked,
            }
        )
    return 0


def status(args: argparse.Namespace, out: Output) -> int:
    """``qts status``: what the store holds and each key's call budget; never touches the network."""
    from runtime.bootstrap import build_call_budget, build_store
    from runtime.clock import SystemClock
    from runtime.config import default_token_folder, load_store_spec
    from runtime.settings import StoreKind, TokenStoreSpec

    spec = load_store_spec(_env_file(args))
    if spec.kind is StoreKind.FILE and spec.location is None:
        spec = TokenStoreSpec(StoreKind.FILE, str(default_token_folder()))  # show where it is
    clock = SystemClock()
    store = build_store(spec, clock=clock)
    now = clock.now()
    tokens = store.tokens()
    # Only read here: the limit shown is the one the key's last booking was made under.
    budget = build_call_budget(spec, 1.0, clock=clock)
    usages = _budget_usages(budget, [t.scope for t in tokens])
    rows = [
        {
            "mode": t.scope.mode.value,
            "key_fingerprint": t.scope.key_fingerprint,
            "expires_at": t.expires_at.isoformat(),
            "seconds_left": max(int(t.time_left(now).total_seconds()), 0),
            "token": t.masked,
            "budget": usage,
        }
        for t, usage in zip(tokens, usages, strict=True)
    ]
    out.data({"store": str(spec), "tokens": rows})
    lines = [f"store    {spec}"]
    if not rows:
        hint = " (memory: tokens live only inside a running process)" if spec.kind.value == "memory" else ""
        lines.append(f"no cached tokens{hint}")
    for t, usage in zip(tokens, usages, strict=True):
        # REAL rows carry the marker themselves: the store may hold both modes at once.
        marker = f"  {REAL_MARKER}" if t.scope.mode.value == "REAL" else ""
        lines.append(
            f"{t.scope.mode.value:<4} key {t.scope.key_fingerprint}  expires {format_kst(t.expires_at)}"
            f"  ({format_left(t.time_left(now))} left)  {t.masked}{marker}"
        )
        lines.append(_budget_line(usage))
    out.line("\n".join(lines))  # one write (and one scrub) for 1,000 keys, not 2,000
    return 0


def _budget_usages(budget: CallBudgetPort, scopes: list[BrokerScope]) -> list[dict[str, object] | None]:
    """Each key's budget as JSON fields, read in one batch where the store allows (Redis: one
    round trip); None where nothing was booked or it cannot be read."""
    from runtime.auth.call_budget._common import usages_of
    from runtime.errors import QTSError

    try:
        usages = usages_of(budget, scopes)
    except QTSError:  # the batch failed as a whole: ask key by key, as before
        usages = [_one_usage(budget, scope) for scope in scopes]
    return [None if usage is None else _usage_fields(usage) for usage in usages]


def _one_usage(budget: CallBudgetPort, scope: BrokerScope) -> BudgetUsage | None:
    from runtime.errors import QTSError

    try:
        return budget.usage(scope)
    except QTSError:
        return None


def _usage_fields(usage: BudgetUsage) -> dict[str, object]:
    return {
        "limit_per_s": usage.limit_per_s,
        "used_last_s": usage.used_last_s,
        "queue": usage.queue,
        "queue_s": usage.queue_s,
        "slowed": usage.slowed,
    }


def _budget_line(usage: dict[str, object] | None) -> str:
    if usage is None:
        return "     budget  no calls booked yet"
    slowed = "; slowed after EGW00201" if usage["slowed"] else ""
    return (
        f"     budget  {usage['used_last_s']} calls in the last second of {usage['limit_per_s']:g}/s; "
        f"{usage['queue']} queued ({usage['queue_s']:.2f} s){slowed}"
    )


def quote(args: argparse.Namespace, out: Output) -> int:
    """``qts quote CODE``: read-only current price."""
    code = str(args.code).strip().upper()
    if not (len(code) == 6 and code.isalnum()) and not (len(code) == 7 and code.startswith("Q")):
        from runtime.errors import InvalidRequestError

        raise InvalidRequestError(f"{args.code!r} is not a stock code; use 6 characters like 005930")
    with _runtime(args, out) as kis:
        answer = kis.call(
            "GET",
            PRICE_PATH,
            tr_id=PRICE_TR_ID,
            params={"FID_COND_MRKT_DIV_CODE": args.market, "FID_INPUT_ISCD": code},
        )
    output = answer.body.get("output")
    fields = output if isinstance(output, dict) else {}
    price, change, rate = (
        fields.get("stck_prpr", "?"),
        fields.get("prdy_vrss", "?"),
        fields.get("prdy_ctrt", "?"),
    )
    out.line(
        f"{code}  {_won(price)} KRW  {_signed(change)} ({rate}%)  volume {_won(fields.get('acml_vol', '?'))}"
    )
    out.data({"code": code, "output": fields, "msg_cd": answer.msg_cd, "tr_id": answer.tr_id})
    return 0


def revoke(args: argparse.Namespace, out: Output) -> int:
    """``qts revoke``."""
    with _runtime(args, out) as kis:
        revoked = kis.revoke()
    if revoked is None:
        out.line("no cached token to revoke")
    else:
        out.line(f"revoked  {revoked.masked} ({kis.scope.mode.value}, key {kis.scope.key_fingerprint})")
    out.data({"revoked": revoked.masked if revoked else None})
    return 0


def emulator(args: argparse.Namespace, out: Output) -> int:
    """``qts emulator``: serve the offline KIS emulator until Ctrl-C."""
    import threading

    from kis_emulator import KISEmulator, demo_account
    from runtime.config import load_mode
    from runtime.errors import ConfigError

    mode = load_mode(_env_file(args), mode=getattr(args, "mode", None)).value
    # A service manager stops us with SIGTERM: treat it like Ctrl-C so the server shuts down cleanly.
    signal.signal(signal.SIGTERM, _interrupt)
    server = KISEmulator(mode)
    try:
        try:
            base_url = server.start(args.host, args.port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
        if mode == "REAL":
            out.real_marker(machine_stdout=False)
        _print_emulator_env(out, mode, base_url, server.ws_url, demo_account(mode))
        threading.Event().wait()
    except KeyboardInterrupt:
        # Ctrl-C at any moment after start, even while the lines above print, is a clean stop.
        out.line("stopping")
    finally:
        server.stop()
    return 0


def _print_emulator_env(out: Output, mode: str, base_url: str, ws_url: str, account: EmulatorAccount) -> None:
    """The .env lines (text) or object (--json) that point QTS Runtime at the emulator."""
    env = {
        "KIS_MODE": mode,
        f"KIS_{mode}_BASE_URL": base_url,
        f"KIS_{mode}_WS_URL": ws_url,
        f"KIS_{mode}_APP_KEY": account.app_key,
        f"KIS_{mode}_APP_SECRET": account.app_secret,
    }
    out.line(f"KIS emulator ({mode}) listening on {base_url} and {ws_url} — Ctrl-C to stop")
    out.line(
        "Save these lines as emulator.env and run qts with --env-file emulator.env "
        "(demo credentials, not real ones):"
    )
    for name, value in env.items():
        out.line(f"{name}={value}")
    out.data(
        {
            "mode": mode,
            "base_url": base_url,
            "ws_url": ws_url,
            "app_key": account.app_key,
            "app_secret": account.app_secret,
            "env": env,
        }
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def demo(args: argparse.Namespace, out: Output) -> int:
    """``qts demo``: the narrated Phase 2 flow on the embedded emulator."""
    from runtime.cli.demo import run_demo

    return run_demo(out, mode=getattr(args, "mode", None) or "VTS")


def _won(text: object) -> str:
    return f"{int(text):,}" if isinstance(text, str) and text.isdigit() else str(text)


def _signed(text: object) -> str:
    if isinstance(text, str) and text.lstrip("-").isdigit():
        return f"{int(text):+,}"
    return str(text)
