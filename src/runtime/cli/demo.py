"""``qts demo``: the whole Phase 2 flow, narrated, against the embedded KIS emulator.

It runs through the real composition root, adapter, cache and sockets on 127.0.0.1; only
the peer is the emulator. The emulator and the runtime keep separate clocks, moved together,
as KIS's clock and ours would be.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from runtime.cli.output import Output, format_kst

if TYPE_CHECKING:  # imported lazily at run time: `qts demo` alone needs the emulator
    from kis_emulator import KISEmulator
    from runtime.auth.session import KISRuntime
    from runtime.auth.stream import Subscription
    from runtime.broker.base import AccessToken, Mode
    from runtime.broker.realtime import StreamEvent
    from runtime.settings import Settings

__all__ = ["run_demo"]

_T = TypeVar("_T")
_PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
_PARAMS = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
_DAY_AND_A_MINUTE = 24 * 3600 + 60


def run_demo(out: Output, *, mode: str = "VTS") -> int:
    """Walk mode branch → issue → cache hit → quote → expiry → reissue → reject → retry → revoke
    → a real-time stream through a dropped socket and a voided approval key."""
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
    seconds = time.perf_counter() - started
    return _summary(out, chosen.value, demo.steps, counters, tokens, demo.streamed_ok, seconds)


class _Demo:
    """The narrated steps, each timed and printed, against one emulator on a shifted clock."""

    def __init__(self, out: Output, mode: Mode, emulator: KISEmulator) -> None:
        from runtime.clock import OffsetClock

        self._out = out
        self._mode = mode
        self._emulator = emulator
        self._clock = OffsetClock()
        self.steps: list[dict[str, object]] = []
        self.streamed_ok = False

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
        self._stream(settings)
        return {t.value for t in (first, second, third) if t is not None}

    def _stream(self, settings: Settings) -> None:
        import attrs

        from runtime.bootstrap import build_stream
        from runtime.broker.realtime import registrations_for

        emulator = self._emulator

        def stream() -> tuple[int, str, int]:
            emulator.set_config(ws_tick_interval=0.01)
            live = attrs.evolve(settings, ws_url=emulator.ws_url)
            with _quiet("runtime.auth.stream"), build_stream(live, clock=self._clock) as session:
                subscription = session.subscribe(registrations_for(["005930"]))
                events = [_next_event(subscription) for _ in range(5)]
                key = session.approvals.peek()
                emulator.void_approval_keys()
                emulator.drop_streams()
                events += [_next_event(subscription) for _ in range(5)]
                return len(events), key.masked if key else "?", session.stats.approval_reissues

        count, _key, reissues = self.step(
            "stream",
            stream,
            lambda r: (
                f"WebSocket: Approval {r[1]}, 005930 trades → socket dropped, key voided → OPSP0011, "
                f"reissued {r[2]}×, resubscribed → {r[0]} events"
            ),
        )
        self.streamed_ok = count == 10 and reissues == 1

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
    streamed: bool,
    seconds: float,
) -> int:
    errors = counters.get("errors_by_code", {})
    ok = (
        counters.get("orders_attempted") == 0
        and errors.get("EGW00121") == 1
        and not errors.get("EGW00133")
        and len(tokens) == 3
        and streamed
    )
    out.line(
        f"summary  tokenP requests {counters.get('token_requests')}, tokens issued {len(tokens)}, "
        f"EGW00121 {errors.get('EGW00121', 0)}, orders sent {counters.get('orders_attempted')}, "
        f"all on 127.0.0.1 — {'OK' if ok else 'UNEXPECTED'} in {seconds:.2f} s"
    )
    out.data({"ok": ok, "mode": mode, "steps": steps, "emulator": counters, "seconds": round(seconds, 3)})
    return 0 if ok else 1


def _next_event(subscription: Subscription) -> StreamEvent:
    """The next stream event, within 10 s (the demo must never hang)."""
    from runtime.errors import BrokerUnavailableError

    event = subscription.get(timeout_s=10.0)
    if event is None:
        raise BrokerUnavailableError("the emulator's stream sent nothing for 10 s")
    return event


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The drop and the rejected key are staged: their warnings would only clutter the narration."""
    logger = logging.getLogger(name)
    handler = logging.NullHandler()
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.propagate = propagate
        logger.removeHandler(handler)
