"""``qts approval`` and ``qts stream``: the WebSocket approval key and read-only real-time quotes."""

from __future__ import annotations

import argparse
import signal
import time
from typing import TYPE_CHECKING

from runtime.cli.commands import _settings, announce_mode
from runtime.cli.output import Output, format_kst

if TYPE_CHECKING:
    from runtime.auth.stream import Subscription
    from runtime.broker.realtime import Registration, StreamEvent

__all__ = ["approval", "stream"]

_POLL_S = 0.5


def approval(args: argparse.Namespace, out: Output) -> int:
    """``qts approval``: the approval key from memory, the store or a new issuance, masked."""
    from runtime.bootstrap import build_approvals

    settings = _settings(args, out)
    cache = build_approvals(settings)
    key = cache.get()
    source = cache.last_source or "issued"
    renew_at = cache.renew_at(key)
    out.line(f"mode          {settings.mode.value} (key {settings.scope.key_fingerprint})")
    out.line(f"source        {source}")
    out.line(f"issued        {format_kst(key.issued_at)}")
    out.line(f"renewed after {format_kst(renew_at)}")
    out.line(f"approval key  {key.masked}")
    out.data(
        {
            "mode": settings.mode.value,
            "key_fingerprint": settings.scope.key_fingerprint,
            "source": source,
            "approval_key": key.masked,
            "issued_at": key.issued_at.isoformat(),
            "renew_at": renew_at.isoformat(),
            "ws_url": settings.stream_url,
        }
    )
    return 0


def stream(args: argparse.Namespace, out: Output) -> int:
    """``qts stream CODE...``: one line per event; exit 0 after --count events or --seconds."""
    from runtime.bootstrap import build_stream

    announce_mode(args, out, machine_stdout=out.as_json)  # first, whatever fails next
    registrations = _registrations(list(args.codes), depth=bool(args.depth))
    settings = _settings(args, out, machine_stdout=out.as_json)
    # SIGTERM ends the stream like Ctrl-C: registrations released, socket closed, lease given up.
    signal.signal(signal.SIGTERM, _interrupt)
    with build_stream(settings) as session:
        subscription = session.subscribe(registrations)
        _show(subscription, out, count=args.count, seconds=args.seconds)
    return 0


def _registrations(codes: list[str], *, depth: bool) -> list[Registration]:
    """The registrations asked for, or the typed refusal before anything is built or sent."""
    from runtime.broker.realtime import MAX_REGISTRATIONS, registrations_for
    from runtime.errors import InvalidRequestError, SubscriptionLimitError

    try:
        registrations = registrations_for(codes, depth=depth)
    except ValueError:
        raise InvalidRequestError("stock codes are 6 digits or capital letters, like 005930") from None
    if len(registrations) > MAX_REGISTRATIONS:
        raise SubscriptionLimitError(
            f"{len(registrations)} registrations asked for; KIS allows {MAX_REGISTRATIONS} per app key "
            "(one per code, two with --depth); nothing was sent"
        )
    return registrations


def _show(subscription: Subscription, out: Output, *, count: int | None, seconds: float | None) -> None:
    """Print events until ``count`` of them or ``seconds`` have passed (neither: until Ctrl-C)."""
    ends = time.monotonic() + seconds if seconds is not None else None
    shown = 0
    while count is None or shown < count:
        left = _POLL_S if ends is None else ends - time.monotonic()
        if left <= 0:
            return
        try:
            event = subscription.get(timeout_s=min(left, _POLL_S))
        except StopIteration:
            return
        if event is not None:
            shown += 1
            out.line(_event_line(event))
            out.data(event.to_json())


def _event_line(event: StreamEvent) -> str:
    from runtime.broker.realtime import Trade

    if isinstance(event, Trade):
        return (
            f"{_hms(event.time)} {event.code} trade {event.price:>10,} KRW x {event.volume:,}"
            f"  (day volume {event.accumulated_volume:,})"
        )
    ask = f"{event.asks[0][0]:,} x {event.asks[0][1]:,}" if event.asks else "-"
    bid = f"{event.bids[0][0]:,} x {event.bids[0][1]:,}" if event.bids else "-"
    return f"{_hms(event.time)} {event.code} book  ask {ask} | bid {bid}"


def _hms(hhmmss: str) -> str:
    return f"{hhmmss[:2]}:{hhmmss[2:4]}:{hhmmss[4:]}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
