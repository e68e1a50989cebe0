"""Cold start: a whole fresh process to the first price, and the CLI's start-up, against their floors.

Each figure is the wall time of a fresh child process (interleaved, so drift hits every side
alike), from ``python`` starting to the process exiting:

- ``raw_first_price``: ``import json, urllib3``, a PoolManager, tokenP, one inquire-price GET,
  ``json.loads`` of each answer: the floor.
- ``qts_first_price_memory`` / ``_file``: ``import runtime``, ``load_settings()``,
  ``build_runtime()``, one ``inquire-price`` call (its tokenP included) with the memory store,
  and with the file store in a fresh folder (so tokenP is paid there too).
- ``dependencies_floor``: ``import json, urllib3, attrs, runtime.config`` and nothing
  else: the design card's libraries on this path (cattrs is imported only for an answer that
  is not already well typed, so it is not on it) (environs, marshmallow and python-dotenv come
  with ``runtime.config``, which reads the settings with them) without a tokenP, a GET or any
  other runtime module. Not a target: it shows how much of the 1.5x budget they take alone.
- ``import_urllib3``: ``python -c "import urllib3"``, the floor of ``qts --help`` and
  ``qts status`` (the file store with one saved token; it needs no HTTP library).

The emulator runs in another process with tokenP unlimited (every fresh process pays one).
A second child lists the modules the first-price path imports that it does not use.

The package's bytecode is compiled first (``compileall``), as ``pip install`` does for the
dependencies the raw side imports: with ``PYTHONDONTWRITEBYTECODE=1`` in the environment and
an editable install, every child would otherwise compile ~35 of the package's modules from
source (~40 ms), a cost no installed copy pays.

Targets (issue #16): memory <= 1.5x raw, file <= 1.7x raw; ``qts --help`` and ``qts status``
<= 2x ``import urllib3``; none of the unused modules imported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    Measured,
    compile_package,
    distribution,
    emulator_process,
    ns_to_ms,
    run_script,
    target,
    time_child_ns,
)
from kis_emulator import demo_account

MEMORY_TARGET = 1.5
FILE_TARGET = 1.7
CLI_TARGET = 2.0
PATH = "/uapi/domestic-stock/v1/quotations/inquire-price"

_RAW = (
    f"PATH = {PATH!r}\n"
    """
import json, sys, urllib3
base, key, secret = sys.argv[1:4]
http = urllib3.PoolManager()
r = http.request("POST", base + "/oauth2/tokenP", headers={"content-type": "application/json"},
                 body=json.dumps({"grant_type": "client_credentials", "appkey": key, "appsecret": secret}))
token = json.loads(r.data)["access_token"]
r = http.request("GET", base + PATH, fields={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
                 headers={"authorization": "Bearer " + token, "appkey": key, "appsecret": secret,
                          "tr_id": "FHKST01010100", "custtype": "P"})
assert json.loads(r.data)["rt_cd"] == "0"
"""
)

_QTS = (
    f"PATH = {PATH!r}\n"
    """
import runtime
with runtime.build_runtime(runtime.load_settings()) as kis:
    kis.call("GET", PATH, tr_id="FHKST01010100",
             params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"})
"""
)

# The libraries the first price cannot do without, imported as the package imports them.
_DEPENDENCIES = "import json, urllib3, attrs, runtime.config"

_LIST_IMPORTS = """
import sys
before = set(sys.modules)
exec(sys.argv[1])
import json
sys.stdout.write(json.dumps(sorted(set(sys.modules) - before)))
"""

# Modules the first-price path never uses: their presence means an eager import crept in.
# (environs, marshmallow and python-dotenv are used: load_settings reads the environment with them.)
UNUSED_BY_FIRST_PRICE = (
    "filelock",
    "asyncio",
    "redis",
    "websockets",
    "runtime.auth.stores.file",
    "runtime.auth.stores.redis",
    "runtime.auth.stream",
    "runtime.broker.kis.stream",
    "runtime.cli",
)


def _qts() -> str:
    script = Path(sys.executable).parent / "qts"
    return str(script) if script.is_file() else ""


def _time_ns(cmd: list[str], env: dict[str, str]) -> int:
    return time_child_ns(cmd, env, kill_after_s=60)


def _settings_env(base_url: str, store: str) -> dict[str, str]:
    account = demo_account("VTS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "QTS_"))}
    env.update(
        KIS_MODE="VTS",
        KIS_VTS_APP_KEY=account.app_key,
        KIS_VTS_APP_SECRET=account.app_secret,
        KIS_VTS_BASE_URL=base_url,
        QTS_TOKEN_STORE=store,
    )
    return env


def _unused_imports(env: dict[str, str]) -> list[str]:
    out = subprocess.run(  # noqa: S603 - our interpreter, our snippet
        [sys.executable, "-c", _LIST_IMPORTS, _QTS],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    modules: list[str] = json.loads(out.stdout)
    return [m for m in modules if any(m == u or m.startswith(u + ".") for u in UNUSED_BY_FIRST_PRICE)]


def run(quick: bool) -> Measured:
    runs = 3 if quick else 9
    compile_package()
    account = demo_account("VTS")
    py = sys.executable
    qts = _qts()
    samples: dict[str, list[int]] = {}
    with emulator_process("VTS", keys=1) as base_url, tempfile.TemporaryDirectory() as tmp:
        memory_env = _settings_env(base_url, "memory")
        status_env = _settings_env(base_url, f"file:{tmp}/status")
        # One token saved for `qts status` to list (a real first price through the file store).
        _time_ns([py, "-c", _QTS], status_env)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "raw_first_price": ([py, "-c", _RAW, base_url, account.app_key, account.app_secret], memory_env),
            "qts_first_price_memory": ([py, "-c", _QTS], memory_env),
            "qts_first_price_file": ([py, "-c", _QTS], memory_env),  # folder set per run below
            "dependencies_floor": ([py, "-c", _DEPENDENCIES], memory_env),
            "import_urllib3": ([py, "-c", "import urllib3"], memory_env),
        }
        if qts:
            commands["qts_help"] = ([qts, "--help"], memory_env)
            commands["qts_status"] = ([qts, "status"], status_env)
        for cmd, env in commands.values():
            _time_ns(cmd, env)  # warm the OS file cache
        for i in range(runs):
            for name, (cmd, env) in commands.items():
                if name == "qts_first_price_file":
                    env = _settings_env(base_url, f"file:{tmp}/run{i}")  # fresh folder: tokenP paid
                samples.setdefault(name, []).append(_time_ns(cmd, env))
        unused = _unused_imports(memory_env)
    med = {name: statistics.median(s) for name, s in samples.items()}
    figures: dict[str, object] = {f"{name}_ms": distribution(ns_to_ms(s)) for name, s in samples.items()}
    ratios = {
        "first_price_memory_vs_raw": med["qts_first_price_memory"] / med["raw_first_price"],
        "first_price_file_vs_raw": med["qts_first_price_file"] / med["raw_first_price"],
    }
    dependencies = med["dependencies_floor"] / med["raw_first_price"]
    if qts:
        ratios["qts_help_vs_import_urllib3"] = med["qts_help"] / med["import_urllib3"]
        ratios["qts_status_vs_import_urllib3"] = med["qts_status"] / med["import_urllib3"]
    figures.update({k: round(v, 3) for k, v in ratios.items()})
    figures["dependencies_floor_vs_raw"] = round(dependencies, 3)
    figures["unused_modules_on_first_price"] = unused
    goals = {
        "first_price_memory_vs_raw": MEMORY_TARGET,
        "first_price_file_vs_raw": FILE_TARGET,
        "qts_help_vs_import_urllib3": CLI_TARGET,
        "qts_status_vs_import_urllib3": CLI_TARGET,
    }
    targets = {
        name: target(f"median ratio <= {goal}", ratios[name], ratios[name] <= goal)
        for name, goal in goals.items()
        if name in ratios
    }
    targets["first_price_imports"] = target(
        "0 modules imported that the first-price path does not use", len(unused), not unused
    )
    return Measured(
        figures,
        targets,
        notes=[
            "Wall time of fresh child processes, interleaved; ratios of medians from the same run.",
            "The file-store run uses a fresh folder each time, so it pays tokenP and creates the folder.",
            "The package's bytecode is compiled first, as pip install does for the raw side's urllib3.",
            "dependencies_floor_vs_raw: attrs, environs (marshmallow, python-dotenv) and "
            "runtime.config alone, no call: what the dependencies cost before any runtime code runs.",
        ],
    )


def main(argv: list[str] | None = None) -> int:
    return run_script(__file__, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
