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
from typing import TypeVar

import attrs

from runtime.cli.output import Output, format_kst

__all__ = ["run_demo"]

_T = TypeVar("_T")
_PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
_PARAMS = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
_DAY_AND_A_MINUTE = 24 * 3600 + 60


def run_demo(out: Output, *, mode: str = "VTS") -> int:
    """Walk mode branch → issue → cache hit → quote → expiry → reissue → reject → retry → revoke
    → real-time stream through a dropped socket and a voided approval key."""
    from kis_emulator import KISEmulator, demo_account
    from runtime.bootstrap import build_runtime, build_stream
    from runtime.broker.base import Mode
    from runtime.broker.realtime import registrations_for
    from runtime.clock import OffsetClock
    from runtime.settings import AppCredentials, Settings

    started = time.perf_counter()
    chosen = Mode.parse(mode)
    if chosen is Mode.REAL:
        out.real_marker(machine_stdout=False)
    steps: list[dict[str, object]] = []

    def step(name: str, action: Callable[[], _T], describe: Callable[[_T], str]) -> _T:
        t0 = time.perf_counter()
        result = action()
        elapsed_ms = (time.perf_counter() - t0) * 1000
        text = describe(result)
        shown = f"{elapsed_ms:.3f}" if elapsed_ms < 1 else f"{elapsed_ms:.1f}"
        out.line(f"{name:<8} {text}  [{shown} ms]")
        steps.append({"step": name, "text": text, "ms": round(elapsed_ms, 3)})
        return result

    with KISEmulator(chosen.value) as emulator:
        base_url = emulator.base_url
        account = demo_account(chosen.value)
        clock = OffsetClock()
        settings = Settings(
            mode=chosen, credentials=AppCredentials(account.app_key, account.app_secret), base_url=base_url
        )
        with build_runtime(settings, clock=clock) as kis:
            step(
                "mode",
                lambda: kis.scope,
                lambda scope: (
                    f"KIS_MODE={scope.mode.value} → {scope.mode.value} host "
                    f"(official {chosen.official_base_url}; here the emulator at {base_url})"
                ),
            )
            first = step(
                "issue",
                kis.access_token,
                lambda t: f"POST /oauth2/tokenP → {t.masked}, expires {format_kst(t.expires_at)}",
            )
            step(
                "cache",
                kis.access_token,
                lambda t: (
                    "token asked again → "
                    + (
                        "same token from memory, no network"
                        if t == first
                        else "a different token (unexpected)"
                    )
                ),
            )

            def quote() -> str:
                answer = kis.call("GET", _PRICE, tr_id="FHKST01010100", params=_PARAMS)
                return str(answer.body["output"]["stck_prpr"])

            step(
                "quote",
                quote,
                lambda price: f"GET inquire-price 005930 with the token injected → {int(price):,} KRW",
            )

            def expire() -> None:
                emulator.advance(_DAY_AND_A_MINUTE)
                clock.advance(_DAY_AND_A_MINUTE)

            step(
                "expiry",
                expire,
                lambda _: "KIS and runtime clocks moved 24 h 1 min ahead: the token has expired",
            )
            second = step(
                "reissue",
                lambda: (quote(), kis.cache.peek()),
                lambda r: (
                    f"quote again → runtime saw the expiry and issued {r[1].masked if r[1] else '?'} first"
                    f" → {int(r[0]):,} KRW"
                ),
            )[1]

            def reject_and_retry() -> str:
                emulator.advance(61)  # KIS issues one token per minute per key
                clock.advance(61)
                emulator.void_tokens()
                return quote()

            step(
                "retry",
                reject_and_retry,
                lambda price: (
                    "KIS voided tokens server-side → call answered EGW00121 → invalidated, reissued, "
                    f"retried once → {int(price):,} KRW"
                ),
            )
            third = kis.cache.peek()
            step(
                "revoke",
                kis.revoke,
                lambda t: f"POST /oauth2/revokeP → {t.masked if t else 'nothing'} voided and dropped",
            )

        def stream() -> tuple[int, str, int]:
            emulator.set_config(ws_tick_interval=0.01)
            live = attrs.evolve(settings, ws_url=emulator.ws_url)
            with _quiet("runtime.auth.stream"), build_stream(live, clock=clock) as session:
                subscription = session.subscribe(registrations_for(["005930"]))
                events = [_next_event(subscription) for _ in range(5)]
                key = session.approvals.peek()
                emulator.void_approval_keys()
                emulator.drop_streams()
                events += [_next_event(subscription) for _ in range(5)]
                return len(events), key.masked if key else "?", session.stats.approval_reissues

        streamed = step(
            "stream",
            stream,
            lambda r: (
                f"WebSocket {emulator.ws_url}: Approval {r[1]}, 005930 trades → socket dropped, key "
                f"voided → OPSP0011, reissued {r[2]}×, resubscribed → {r[0]} events"
            ),
        )
        counters = emulator.counters()

    errors = counters.get("errors_by_code", {})
    tokens = {t.value for t in (first, second, third) if t is not None}
    ok = (
        counters.get("orders_attempted") == 0
        and errors.get("EGW00121") == 1
        and not errors.get("EGW00133")
        and len(tokens) == 3
        and streamed[0] == 10
        and streamed[2] == 1
    )
    total_ms = (time.perf_counter() - started) * 1000
    out.line(
        f"summary  tokenP requests {counters.get('token_requests')}, tokens issued {len(tokens)}, "
        f"EGW00121 {errors.get('EGW00121', 0)}, orders sent {counters.get('orders_attempted')}, "
        f"all on 127.0.0.1 — {'OK' if ok else 'UNEXPECTED'} in {total_ms / 1000:.2f} s"
    )
    out.data(
        {
            "ok": ok,
            "mode": chosen.value,
            "steps": steps,
            "emulator": counters,
            "seconds": round(total_ms / 1000, 3),
        }
    )
    return 0 if ok else 1


def _next_event(subscription: object) -> object:
    """The next stream event, within 10 s (the demo must never hang)."""
    from runtime.auth.stream import Subscription
    from runtime.errors import BrokerUnavailableError

    assert isinstance(subscription, Subscription)  # noqa: S101 - the demo's own wiring
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
