"""KIS's real-time WebSocket protocol, socket-free: approval keys, sessions, acks and frames.

``RealtimeHub`` is the state a KIS quote server keeps (KIS_API.md §7, §7.1): the approval keys
``/oauth2/Approval`` issued, one session per app key (a second one gets OPSP8996 and is
dropped), registrations per session (at most 41; the 42nd gets OPSP0008), and the faults the
admin API queues. ``ws_server.py`` is the thin socket shell around it. The field lists are
KIS's, copied here on purpose: the emulator shares nothing with the runtime but the protocol.
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from .market import is_valid_code, quote_for, tick_size
from .wire import KST

TRADE_TR: Final = "H0STCNT0"
DEPTH_TR: Final = "H0STASP0"
#: Order notices are AES-encrypted; the emulator knows them but streams nothing for them.
ENCRYPTED_TRS: Final = frozenset({"H0STCNI0", "H0STCNI9"})
MAX_REGISTRATIONS: Final = 41
WS_FAULT_KINDS: Final = frozenset({"drop", "bad_frame", "silence"})

TRADE_FIELD_COUNT: Final = 46
DEPTH_FIELD_COUNT: Final = 59

# Ack texts as clients captured them (KIS_API.md §7.1 table).
_ACKS: Final[dict[str, tuple[str, str]]] = {
    "OPSP0000": ("0", "SUBSCRIBE SUCCESS"),
    "OPSP0001": ("0", "UNSUBSCRIBE SUCCESS"),
    "OPSP0002": ("1", "ALREADY IN SUBSCRIBE"),
    "OPSP0003": ("1", "UNSUBSCRIBE ERROR(not found!)"),
    "OPSP0008": ("1", "MAX SUBSCRIBE OVER"),
    "OPSP0011": ("1", "invalid approval : NOT FOUND"),
    "OPSP8991": ("1", "SUBSCRIBE ERROR : invalid tr_id"),
    "OPSP8996": ("9", "ALREADY IN USE appkey"),
    "OPSP9999": ("1", "JSON PARSING ERROR : invalid json format"),
}


@dataclass
class WsFault:
    """A queued stream fault: after ``after_frames`` more data frames, ``kind`` happens once."""

    kind: str
    after_frames: int = 0
    seconds: float = 0.0


@dataclass
class Session:
    """One WebSocket connection's state; the socket shell owns the socket itself."""

    conn_id: int
    drop: Callable[[], None]
    alive: Callable[[], bool] = lambda: True
    app_key: str | None = None
    registrations: dict[tuple[str, str], None] = field(default_factory=dict)
    frames: int = 0
    rotation: int = 0
    prices: dict[str, int] = field(default_factory=dict)
    unanswered_pings: int = 0
    silent_until: float = 0.0


@dataclass
class Reaction:
    """What the socket shell does with one client message: send these texts, then maybe close."""

    replies: list[str]
    close: bool = False


class RealtimeHub:
    """The real-time side of one emulated KIS host; every method is thread-safe."""

    def __init__(self, now: Callable[[], datetime], *, seed: int = 20260101) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._approvals: dict[str, str] = {}  # approval key -> app key
        self._sessions: dict[int, Session] = {}
        self._owners: dict[str, int] = {}  # app key -> conn_id holding its one session
        self._faults: list[WsFault] = []
        self._ids = itertools.count(1)
        self._rng = random.Random(seed)  # noqa: S311 - market noise, not cryptography
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    # --- approval keys -------------------------------------------------------------------
    def issue_approval(self, app_key: str) -> str:
        """A new approval key for ``app_key`` (KIS documents no reuse; older keys stay valid)."""
        key = str(uuid.uuid4())
        with self._lock:
            self._approvals[key] = app_key
            self.counts["approval_keys_issued"] += 1
        return key

    def void_approval_keys(self) -> int:
        """Forget every approval key: subscribe messages carrying one get OPSP0011."""
        with self._lock:
            voided = len(self._approvals)
            self._approvals.clear()
            return voided

    # --- sessions ----------------------------------------------------------------------------
    def open(self, drop: Callable[[], None], alive: Callable[[], bool] = lambda: True) -> Session:
        """A new connection; ``drop`` cuts its socket at once (faults, the second session);
        ``alive`` says whether it is still open (a closing one no longer holds its app key)."""
        with self._lock:
            session = Session(next(self._ids), drop, alive)
            self._sessions[session.conn_id] = session
            self.counts["ws_connections"] += 1
            return session

    def close(self, session: Session) -> None:
        """The connection ended: its app key's one session is free again."""
        with self._lock:
            self._sessions.pop(session.conn_id, None)
            if session.app_key is not None and self._owners.get(session.app_key) == session.conn_id:
                del self._owners[session.app_key]

    def drop_all(self) -> int:
        """Cut every connection without a close frame (clients see 1006); return how many."""
        with self._lock:
            sessions = list(self._sessions.values())
            for session in sessions:
                self._release(session)
        for session in sessions:
            session.drop()
        self.counts["ws_drops"] += len(sessions)
        return len(sessions)

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _release(self, session: Session) -> None:
        self._sessions.pop(session.conn_id, None)
        if session.app_key is not None and self._owners.get(session.app_key) == session.conn_id:
            del self._owners[session.app_key]

    # --- client messages ------------------------------------------------------------------------
    def receive(self, session: Session, text: str) -> Reaction:
        """Answer one text frame from the client: a registration, or a PINGPONG echo."""
        try:
            message = json.loads(text)
            header, body = message["header"], message.get("body")
        except (ValueError, KeyError, TypeError):
            return Reaction([self._ack("OPSP9999", "", "")])
        if not isinstance(header, dict):
            return Reaction([self._ack("OPSP9999", "", "")])
        if header.get("tr_id") == "PINGPONG":
            with self._lock:
                session.unanswered_pings = 0
                self.counts["ws_pingpong_echoed"] += 1
            return Reaction([])
        inputs = body.get("input") if isinstance(body, dict) else None
        if not isinstance(inputs, dict):
            return Reaction([self._ack("OPSP9999", "", "")])
        tr_id, tr_key = str(inputs.get("tr_id", ""))[:16], str(inputs.get("tr_key", ""))[:16]
        with self._lock:
            return self._register(session, header, tr_id, tr_key)

    def _register(self, session: Session, header: dict[str, Any], tr_id: str, tr_key: str) -> Reaction:
        app_key = self._approvals.get(str(header.get("approval_key", "")))
        if app_key is None:
            return Reaction([self._ack("OPSP0011", tr_id, tr_key)])
        owner = self._owners.get(app_key)
        holder = self._sessions.get(owner) if owner is not None else None
        if holder is not None and owner != session.conn_id and holder.alive():
            self.counts["ws_sessions_refused"] += 1
            self._release(session)
            return Reaction([self._ack("OPSP8996", "(null)", "")], close=True)
        self._owners[app_key] = session.conn_id
        session.app_key = app_key
        tr_type = header.get("tr_type")
        if tr_id not in (TRADE_TR, DEPTH_TR) or not is_valid_code(tr_key) or tr_type not in ("1", "2"):
            return Reaction([self._ack("OPSP8991", tr_id, tr_key)])
        registration = (tr_id, tr_key)
        if tr_type == "2":
            if registration not in session.registrations:
                return Reaction([self._ack("OPSP0003", tr_id, tr_key)])
            del session.registrations[registration]
            self.counts["ws_unsubscribes"] += 1
            return Reaction([self._ack("OPSP0001", tr_id, tr_key)])
        if registration in session.registrations:
            return Reaction([self._ack("OPSP0002", tr_id, tr_key)])
        if len(session.registrations) >= MAX_REGISTRATIONS:
            return Reaction([self._ack("OPSP0008", tr_id, tr_key)])
        session.registrations[registration] = None
        self.counts["ws_subscribes"] += 1
        return Reaction([self._ack("OPSP0000", tr_id, tr_key, with_keys=True)])

    def _ack(self, msg_cd: str, tr_id: str, tr_key: str, *, with_keys: bool = False) -> str:
        rt_cd, msg1 = _ACKS[msg_cd]
        if msg_cd not in ("OPSP0000", "OPSP0001"):
            self.errors[msg_cd] += 1
        body: dict[str, Any] = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
        if with_keys:  # every successful subscribe carries the AES iv/key, quote TRs included
            body["output"] = {"iv": secrets.token_hex(8), "key": _lowercase(32)}
        return json.dumps(
            {"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "N"}, "body": body},
            separators=(",", ":"),
        )

    # --- server frames -------------------------------------------------------------------------
    def pingpong(self, session: Session) -> str:
        """The PINGPONG frame; counts it as unanswered until the client echoes it."""
        with self._lock:
            session.unanswered_pings += 1
            self.counts["ws_pingpong_sent"] += 1
        stamp = self._now().astimezone(KST).strftime("%Y%m%d%H%M%S")
        return json.dumps({"header": {"tr_id": "PINGPONG", "datetime": stamp}}, separators=(",", ":"))

    def next_frame(self, session: Session, *, multi_every: int, now_s: float) -> str | None:
        """The next data frame for ``session`` (round-robin over its registrations), or None.

        A queued fault may instead drop the connection (None, after calling ``drop``), send a
        frame with a wrong field count, or hold the session silent for some seconds."""
        with self._lock:
            if not session.registrations or now_s < session.silent_until:
                return None
            fault = self._take_fault()
            if fault is not None and fault.kind == "drop":
                self._release(session)
                self.counts["ws_drops"] += 1
            elif fault is not None and fault.kind == "silence":
                session.silent_until = now_s + fault.seconds
                return None
            else:
                regs = list(session.registrations)
                tr_id, code = regs[session.rotation % len(regs)]
                session.rotation += 1
                session.frames += 1
                self.counts["ws_frames_sent"] += 1
                if fault is not None:  # bad_frame
                    return self._frame(session, tr_id, code, 1, cut=True)
                records = 2 if multi_every and session.frames % multi_every == 0 and tr_id == TRADE_TR else 1
                return self._frame(session, tr_id, code, records)
        session.drop()
        return None

    def _take_fault(self) -> WsFault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        if fault.after_frames > 0:
            fault.after_frames -= 1
            return None
        self._faults.pop(0)
        self.counts["ws_faults_applied"] += 1
        return fault

    def _frame(self, session: Session, tr_id: str, code: str, records: int, *, cut: bool = False) -> str:
        clock = self._now().astimezone(KST)
        make = self._trade if tr_id == TRADE_TR else self._depth
        values = [v for _ in range(records) for v in make(session, code, clock)]
        if cut:
            values = values[:-1]  # one field short: the "KIS changed the field count" fault
        self.counts["ws_records_sent"] += records
        return f"0|{tr_id}|{records:03d}|{'^'.join(values)}"

    def _price(self, session: Session, code: str) -> int:
        quote = quote_for(code)
        price = session.prices.get(code, quote.current)
        step = tick_size(price) * self._rng.choice((-2, -1, 0, 0, 1, 2))
        price = min(quote.upper_limit, max(quote.lower_limit, price + step))
        session.prices[code] = price
        return price

    def _trade(self, session: Session, code: str, clock: datetime) -> list[str]:
        quote = quote_for(code)
        price = self._price(session, code)
        change = price - quote.base
        sign = "2" if change > 0 else "5" if change < 0 else "3"
        tick = tick_size(price)
        volume = self._rng.randint(1, 500)
        hhmmss = clock.strftime("%H%M%S")
        values = [
            code, hhmmss, str(price), sign, str(change), f"{change / quote.base * 100:.2f}",
            f"{price:.2f}", str(quote.open), str(max(quote.high, price)), str(min(quote.low, price)),
            str(price + tick), str(price), str(volume), str(quote.volume + session.frames * 10),
            str(quote.volume * price), "1200", "1300", "100", "108.33", "510000", "552500", "1",
            "52.00", "95.10", "090000", "2", str(price - quote.open), "093000", "5", "0", "091500", "2",
            "0", clock.strftime("%Y%m%d"), "20", "N", "1500", "2300", "250000", "310000", "0.05",
            str(quote.volume), "98.00", "0", "", "0",
        ]  # fmt: skip
        assert len(values) == TRADE_FIELD_COUNT  # noqa: S101 - the emulator's own invariant
        return values

    def _depth(self, session: Session, code: str, clock: datetime) -> list[str]:
        price = self._price(session, code)
        tick = tick_size(price)
        asks = [price + tick * n for n in range(1, 11)]  # best (lowest) ask first
        bids = [price - tick * (n - 1) for n in range(1, 11)]  # best (highest) bid first
        ask_qty = [self._rng.randint(1, 5000) for _ in range(10)]
        bid_qty = [self._rng.randint(1, 5000) for _ in range(10)]
        values = [
            code, clock.strftime("%H%M%S"), "0",
            *map(str, asks), *map(str, bids), *map(str, ask_qty), *map(str, bid_qty),
            str(sum(ask_qty)), str(sum(bid_qty)), "0", "0",
            str(price), "0", "0", "0", "3", "0.00", str(quote_for(code).volume),
            "0", "0", "0", "0", "01",
        ]  # fmt: skip
        assert len(values) == DEPTH_FIELD_COUNT  # noqa: S101 - the emulator's own invariant
        return values

    # --- admin ----------------------------------------------------------------------------------
    def inject(self, kind: str, *, after_frames: int = 0, seconds: float = 0.0) -> None:
        """Queue a stream fault (``drop``, ``bad_frame``, ``silence``) after ``after_frames`` frames.

        Raises:
            ValueError: an unknown kind or a negative count.
        """
        if kind not in WS_FAULT_KINDS:
            raise ValueError(f"unknown stream fault {kind!r}; known: {sorted(WS_FAULT_KINDS)}")
        if after_frames < 0 or seconds < 0:
            raise ValueError("after_frames and seconds must not be negative")
        with self._lock:
            self._faults.append(WsFault(kind, after_frames, seconds))

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {
                **dict(self.counts),
                "ws_open_sessions": len(self._sessions),
                "ws_errors_by_code": dict(self.errors),
                "approval_keys_live": len(self._approvals),
            }

    def reset(self) -> None:
        with self._lock:
            self._approvals.clear()
            self._faults.clear()
            self.counts.clear()
            self.errors.clear()


def _lowercase(length: int) -> str:
    return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length))
