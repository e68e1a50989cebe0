"""One "restarted process" of the soak (benchmarks/soak.py): a real child on the shared token store.

    python benchmarks/_soak_child.py MODE BASE_URL STORE_FOLDER VIRTUAL_NOW_ISO

The app key and secret come in ``SOAK_APP_KEY`` / ``SOAK_APP_SECRET`` (never on the command line).
The child cannot share the parent's virtual clock, so it runs on a ``FakeClock`` set to the
virtual time it is given (the host's drifted clock). It builds the runtime with
``build_runtime`` over the file store, asks for the token, makes one ``inquire-price`` call and
prints one JSON line: where the token came from, how many tokenP it sent, whether the token
belongs to its own mode. Then it waits on stdin: the parent kills it with SIGKILL (a crash,
no clean shutdown). It exits by itself when stdin closes or after 60 s.
"""

from __future__ import annotations

import json
import os
import select
import sys
from datetime import datetime
from typing import Any

from runtime.bootstrap import build_runtime
from runtime.broker.base import AppCredentials, Mode
from runtime.broker.kis.auth import jwt_claim
from runtime.clock import FakeClock
from runtime.errors import QTSError
from runtime.settings import Settings, StoreKind, TokenStoreSpec

_MAX_LIFE_S = 60.0


def jwt_app_key(value: str) -> str | None:
    """The ``jti`` claim (KIS puts the app key there) of a JWT-shaped token, or None."""
    return jwt_claim(value, "jti")


def main(argv: list[str]) -> int:
    mode, base_url, folder, now_iso = argv
    app_key = os.environ["SOAK_APP_KEY"]
    settings = Settings(
        mode=Mode(mode),
        credentials=AppCredentials(app_key, os.environ["SOAK_APP_SECRET"]),
        base_url=base_url,
        token_store=TokenStoreSpec(StoreKind.FILE, folder),
    )
    clock = FakeClock(datetime.fromisoformat(now_iso))
    runtime = build_runtime(settings, clock=clock)
    report: dict[str, Any] = {}
    try:
        token = runtime.access_token()
        report["source"] = runtime.cache.last_source
        report["own_mode_token"] = jwt_app_key(token.value) == app_key
        runtime.call(
            "GET",
            "/uapi/domestic-stock/v1/quotations/inquire-price",
            tr_id="FHKST01010100",
            params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
        )
        report["call_ok"] = True
    except QTSError as exc:
        report["error"] = type(exc).__name__
        report["call_ok"] = False
    report["issued"] = runtime.cache.issued_count
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    # Deliberately no runtime.close(): the parent kills this process (SIGKILL) from here on.
    select.select([sys.stdin], [], [], _MAX_LIFE_S)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
