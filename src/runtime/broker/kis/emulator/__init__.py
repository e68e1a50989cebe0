"""An offline, standard-library-only emulator of the KIS (Korea Investment & Securities) Open API.

One ``KISEmulator`` is one KIS host in one mode (VTS or REAL). It reproduces the token rules
(24 h lifetime, 6 h reuse, one tokenP per minute), the gateway error codes and shapes, the
per-second call limit, two read-only endpoints, refuses every order, and offers an admin API
(Python and ``/__emulator__/`` over HTTP) to move time, inject faults and read counters.
Importing this package starts nothing and reads neither the clock nor the environment.
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
