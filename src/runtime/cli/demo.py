"""``qts demo``: the whole Phase 2 flow, narrated, against the embedded KIS emulator.

It runs through the real composition root, adapter, cache and sockets on 127.0.0.1; only
the peer is the emulator. The emulator and the runtime keep separate clocks, moved together,
as KIS's clock and ours would be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from runtime.cli.output import Output, format_kst

if TYPE_CHECKING:  # imported lazily at run time: `qts demo` alone needs the emulator
    from kis_emulator import KISEmulator
    from runtime.auth.session import KISRuntime
    from runtime.broker.base import AccessToken, Mode

__all__ = ["run_demo"]

_T = TypeVar("_T")
_PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
_PARAMS = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
_DAY_AND_A_MINUTE = 24 * 3600 + 60


def run_demo(out: Output, *, mode: str = "VTS") -> int:
    """Walk mode branch → issue → cache hit → quote → expiry → reissue → reject → retry → revoke."""
    from kis_emulator import KISEmulator
    from runtime.broker.base import Mode

    started = time.perf_counter()
    chosen = Mode.parse(mode)
    if chosen is Mode.REAL:
        out.real_marker(machine_stdout=False)
    with KISEmulator(chosen.value) as emulator:
        demo = _Demo(out, chosen, emulator)
        tokens = demo.run()
        counters = emulator.counters()
    return _summary(out, chosen.value, demo.steps, counters, tokens, time.perf_counter() - started)


class _Demo:
    """The narrated steps, each timed and printed, against one emulator on a shifted clock."""

    def __init__(self, out: Output, mode: Mode, emulator: KISEmulator) -> None:
        from runtime.clock import OffsetClock

        self._out = out
        self._mode = mode
        self._emulator = emulator
        self._clock = OffsetClock()
        self.steps: list[dict[str, object]] = []

    def step(self, name: str, action: Callable[[], _T], describe: Callable[[_T], str]) -> _T:
        t0 = time.perf_counter()
        result = action()
        elapsed_ms = (time.perf_counter() - t0) * 1000
        text = describe(result)
        shown = f"{elapsed_ms:.3f}" if elapsed_ms < 1 else f"{elapsed_ms:.1f}"
        self._out.line(f"{name:<8} {text}  [{shown} ms]")
        self.steps.append({"step": name, "text": text, "ms": round(elapsed_ms, 3)})
        return result

    def run(self) -> set[str]:
        """Every step; returns the distinct token values the runtime held along the way."""
        from kis_emulator import demo_account
        from runtime.bootstrap import build_runtime
        from runtime.broker.base import AppCredentials
        from runtime.settings import Settings

        account = demo_account(self._mode.value)
        credentials = AppCredentials(account.app_key, account.app_secret)
        settings = Settings(mode=self._mode, credentials=credentials, base_url=self._emulator.base_url)
        self._out.error(
            f"qts: note: the demo talks to the embedded KIS emulator at {settings.base_url}, "
            f"not to KIS's official host {self._mode.official_base_url}"
        )
        with build_runtime(settings, clock=self._clock) as kis:
            first = self._issue_and_reuse(kis)
            self.step(
                "quote",
                lambda: _quote(kis),
                lambda price: f"GET inquire-price 005930 with the token injected → {int(price):,} KRW",
            )
            second = self._expire_and_reissue(kis)
            self._reject_and_retry(kis)
            third = kis.cache.peek()
            self.step(
                "revoke",
                kis.revoke,
                lambda t: f"POST /oauth2/revokeP → {t.masked if t else 'nothing'} voided and dropped",
            )
        return {t.value for t in (first, second, third) if t is not None}

    def _issue_and_reuse(self, kis: KISRuntime) -> AccessToken:
        base_url = self._emulator.base_url
        self.step(
            "mode",
            lambda: kis.scope,
            lambda scope: (
                f"KIS_MODE={scope.mode.value} → {scope.mode.value} host "
                f"(official {self._mode.official_base_url}; here the emulator at {base_url})"
            ),
        )
        first = self.step(
            "issue",
            kis.access_token,
            lambda t: f"POST /oauth2/tokenP → {t.masked}, expires {format_kst(t.expires_at)}",
        )
        same = "same token from memory, no network"
        self.step(
            "cache",
            kis.access_token,
            lambda t: "token asked again → " + (same if t == first else "a different token (unexpected)"),
        )
        return first

    def _advance(self, seconds: int) -> None:
        self._emulator.advance(seconds)
        self._clock.advance(seconds)

    def _expire_and_reissue(self, kis: KISRuntime) -> AccessToken | None:
        self.step(
            "expiry",
            lambda: self._advance(_DAY_AND_A_MINUTE),
            lambda _: "KIS and runtime clocks moved 24 h 1 min ahead: the token has expired",
        )
        return self.step(
            "reissue",
            lambda: (_quote(kis), kis.cache.peek()),
            lambda r: (
                f"quote again → runtime saw the expiry and issued {r[1].masked if r[1] else '?'} first"
                f" → {int(r[0]):,} KRW"
            ),
        )[1]

    def _reject_and_retry(self, kis: KISRuntime) -> None:
        def reject_and_retry() -> str:
            self._advance(61)  # KIS issues one token per minute per key
            self._emulator.void_tokens()
            return _quote(kis)

        self.step(
            "retry",
            reject_and_retry,
            lambda price: (
                "KIS voided tokens server-side → call answered EGW00121 → invalidated, reissued, "
                f"retried once → {int(price):,} KRW"
            ),
        )


def _quote(kis: KISRuntime) -> str:
    answer = kis.call("GET", _PRICE, tr_id="FHKST01010100", params=_PARAMS)
    return str(answer.body["output"]["stck_prpr"])


def _summary(
    out: Output,
    mode: str,
    steps: list[dict[str, object]],
    counters: dict[str, Any],
    tokens: set[str],
    seconds: float,
) -> int:
    errors = counters.get("errors_by_code", {})
    ok = (
        counters.get("orders_attempted") == 0
        and errors.get("EGW00121") == 1
        and not errors.get("EGW00133")
        and len(tokens) == 3
    )
    out.line(
        f"summary  tokenP requests {counters.get('token_requests')}, tokens issued {len(tokens)}, "
        f"EGW00121 {errors.get('EGW00121', 0)}, orders sent {counters.get('orders_attempted')}, "
        f"all on 127.0.0.1 — {'OK' if ok else 'UNEXPECTED'} in {seconds:.2f} s"
    )
    out.data({"ok": ok, "mode": mode, "steps": steps, "emulator": counters, "seconds": round(seconds, 3)})
    return 0 if ok else 1
