"""``qts status`` shows each key's call budget (use and queue), in text and in ``--json``."""

from __future__ import annotations

import json
import subprocess
import sys

from kis_emulator import EmulatorAccount
from tests.support.cli import QTS
from tests.support.emulator import Emulators


def test_status_shows_the_keys_budget_after_calls(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = qts.env(emulator, vts_account)
    for _ in range(2):
        quoted = qts.run("quote", "005930", env=env)
        assert quoted.returncode == 0, quoted

    as_json = qts.run("--json", "status", env=qts.env(KIS_VTS_BASE_URL=emulator.base_url))
    text = qts.run("status", env=qts.env(KIS_VTS_BASE_URL=emulator.base_url))

    assert as_json.returncode == 0, as_json
    (row,) = json.loads(as_json.stdout)["tokens"]
    assert {"mode", "key_fingerprint", "expires_at", "seconds_left", "token"} <= set(row)  # as before
    budget = row["budget"]
    assert budget["limit_per_s"] == 2.0  # VTS's documented limit, the default of QTS_MAX_RPS
    assert isinstance(budget["used_last_s"], int)
    assert budget["queue"] >= 0
    assert budget["queue_s"] >= 0
    assert budget["slowed"] is False
    assert text.returncode == 0, text
    (line,) = [line for line in text.stdout_lines if line.strip().startswith("budget")]
    assert "of 2/s" in line
    assert "queued" in line


def test_status_never_imports_the_http_library(qts: QTS) -> None:
    probe = (
        "import sys, runtime.cli; code = runtime.cli.main(['status']); print('urllib3' in sys.modules, code)"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter and a fixed script
        [sys.executable, "-c", probe], env=qts.env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False 0"
