"""Child ``qts`` processes against an in-process KIS emulator (the store tests and the benchmark).

Each child gets a bare environment: the emulator's URL, its VTS demo pair and XDG_CACHE_HOME in
a folder of the caller's, so children share one FileTokenStore and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from kis_emulator import KISEmulator, demo_account

#: ``python -c AT_ONCE READY GO``: does the heavy imports, touches READY, waits for GO to exist,
#: then runs ``qts token --reveal``; so all children started together ask at the same instant.
AT_ONCE = textwrap.dedent(
    """
    import pathlib, sys, time
    import runtime.bootstrap, runtime.cli
    ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    ready.touch()
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            sys.exit(97)
        time.sleep(0.002)
    sys.exit(runtime.cli.main(["token", "--reveal"]))
    """
)


def child_env(emulator: KISEmulator, cache: Path, **extra: str) -> dict[str, str]:
    """The whole environment of a child: ``emulator`` in VTS mode, its token store under ``cache``."""
    account = demo_account("VTS")
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(cache.parent),
        "XDG_CACHE_HOME": str(cache),
        "KIS_MODE": "VTS",
        "KIS_VTS_BASE_URL": emulator.base_url,
        "KIS_VTS_APP_KEY": account.app_key,
        "KIS_VTS_APP_SECRET": account.app_secret,
    }
    env.update(extra)
    return env


def start_at_once(
    env: dict[str, str], work: Path, n: int, *, tag: str = "", timeout_s: float = 60
) -> list[subprocess.Popen[str]]:
    """Start ``n`` AT_ONCE children with one environment; see :func:`start_together`."""
    return start_together([env] * n, work, tag=tag, timeout_s=timeout_s)


def start_together(
    envs: list[dict[str, str]], work: Path, *, tag: str = "", timeout_s: float = 60
) -> list[subprocess.Popen[str]]:
    """Start one AT_ONCE child per environment in ``work``; once all are ready, release them together.

    Raises RuntimeError (after killing them) when they are not all ready within ``timeout_s``.
    """
    go = work / f"go{tag}"
    ready = [work / f"ready{tag}-{i}" for i in range(len(envs))]
    children = [
        subprocess.Popen(  # noqa: S603 - this interpreter and our own script
            [sys.executable, "-c", AT_ONCE, str(path), str(go)],
            env=env,
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env, path in zip(envs, ready, strict=True)
    ]
    deadline = time.monotonic() + timeout_s
    while not all(path.exists() for path in ready):
        if time.monotonic() >= deadline:
            for child in children:
                child.kill()
            raise RuntimeError(f"the {len(envs)} children did not start within {timeout_s} s")
        time.sleep(0.005)
    go.touch()
    return children
