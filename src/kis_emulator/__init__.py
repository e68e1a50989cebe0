"""An offline emulator of the KIS (Korea Investment & Securities) Open API: the REST host on the
standard library alone, the real-time WebSocket host on ``websockets``.

One ``KISEmulator`` is one KIS host in one mode (VTS or REAL). It reproduces the token rules
(24 h lifetime, 6 h reuse, one tokenP per minute), the gateway error codes and shapes, the
per-second call limit, two read-only endpoints, refuses every order, serves the WebSocket quote
protocol (approval keys, acks, frames, PINGPONG, one session per app key), and offers an admin API
(Python and ``/__emulator__/`` over HTTP) to move time, inject faults and read counters.
Importing this package starts nothing and reads neither the clock nor the environment.

Quick reference::

    with KISEmulator("VTS") as emu:          # demo accounts: DEMO_VTS_ACCOUNT, DEMO_REAL_ACCOUNT
        emu.base_url                          # http://127.0.0.1:PORT
        emu.advance(61)                       # POST /__emulator__/advance {"seconds": 61}
        emu.now()                             # GET  /__emulator__/now
        emu.counters()                        # GET  /__emulator__/counters
        emu.orders()                          # GET  /__emulator__/orders
        emu.inject_fault("html_502", count=2, path="/uapi/")   # POST /__emulator__/faults
        emu.void_tokens()                     # POST /__emulator__/void-tokens
        emu.reset()                           # POST /__emulator__/reset
        emu.set_config(token_error_status=200, max_rps=None)   # POST /__emulator__/config
        emu.ws_url                            # ws://127.0.0.1:PORT (the real-time quote server)
        emu.stream_counters()                 # GET  /__emulator__/stream
        emu.void_approval_keys()              # POST /__emulator__/void-approval-keys
        emu.drop_streams()                    # POST /__emulator__/stream/drop
        emu.inject_stream_fault("bad_frame", after_frames=3)  # POST /__emulator__/stream/faults

Fault kinds: html_502, malformed_json, missing_fields, slow (``seconds``), reset,
error_code (``msg_cd``, optional ``msg1`` and ``status``), empty_body, non_utf8, huge_body.
Stream fault kinds: drop, bad_frame, silence (``seconds``). The WebSocket server needs the
``websockets`` package, imported only when the emulator starts.
"""

from __future__ import annotations

from .accounts import (
    DEMO_ACNT_PRDT_CD,
    DEMO_CANO,
    DEMO_REAL_ACCOUNT,
    DEMO_REAL_APP_KEY,
    DEMO_REAL_APP_SECRET,
    DEMO_VTS_ACCOUNT,
    DEMO_VTS_APP_KEY,
    DEMO_VTS_APP_SECRET,
    EmulatorAccount,
    Mode,
    default_accounts,
    demo_account,
)
from .admin import handle_admin
from .app import ADMIN_PREFIX, EmulatorApp
from .clock import AdvanceableClock, ClockNotAdvanceableError, EmulatorClock, ShiftableClock
from .config import MODE_DEFAULT, EmulatorConfig, Holding, default_holdings, synthetic_holdings
from .emulator import EmulatorNotRunningError, KISEmulator, run_forever
from .faults import FAULT_KINDS, FaultKind
from .realtime import WS_FAULT_KINDS, RealtimeHub
from .wire import Reply, Request

__all__ = [
    "ADMIN_PREFIX",
    "DEMO_ACNT_PRDT_CD",
    "DEMO_CANO",
    "DEMO_REAL_ACCOUNT",
    "DEMO_REAL_APP_KEY",
    "DEMO_REAL_APP_SECRET",
    "DEMO_VTS_ACCOUNT",
    "DEMO_VTS_APP_KEY",
    "DEMO_VTS_APP_SECRET",
    "FAULT_KINDS",
    "MODE_DEFAULT",
    "WS_FAULT_KINDS",
    "AdvanceableClock",
    "ClockNotAdvanceableError",
    "EmulatorAccount",
    "EmulatorApp",
    "EmulatorClock",
    "EmulatorConfig",
    "EmulatorNotRunningError",
    "FaultKind",
    "Holding",
    "KISEmulator",
    "Mode",
    "RealtimeHub",
    "Reply",
    "Request",
    "ShiftableClock",
    "default_accounts",
    "default_holdings",
    "demo_account",
    "handle_admin",
    "run_forever",
    "synthetic_holdings",
]
