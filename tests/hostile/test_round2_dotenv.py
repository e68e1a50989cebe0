"""Round 2, class 5: a planted ``.env``.

``qts`` reads ``./.env`` from the working folder. One planted in a cloned repository may set
the mode and the keys, but never where credentials go: base URLs (REST and WebSocket), the CA
bundle, the system CA variables and a token store elsewhere come only from the process
environment or a file named explicitly. A found file that tries is refused (exit 2) with a
message saying how to pass the URL, and nothing is sent anywhere. Every command run against a
non-official host says so on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from kis_emulator import EmulatorConfig, KISEmulator, demo_account
from runtime.config import load_settings
from runtime.errors import ConfigError
from tests.support.servers import CaptureServer

ROOT = Path(__file__).resolve().parents[2]
VTS = demo_account("VTS")
REAL = demo_account("REAL")


@pytest.fixture
def trap() -> Iterator[CaptureServer]:
    """Where the planted file wants the credentials to go: it must never hear from us."""
    server = CaptureServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def emulator() -> Iterator[KISEmulator]:
    with KISEmulator("VTS", config=EmulatorConfig(max_rps=None, token_request_interval=0)) as emu:
        yield emu


def qts(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "XDG_CACHE_HOME": str(cwd / "cache"),
        "PYTHONPATH": str(ROOT / "src"),
    }
    return subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "runtime.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
        timeout=60,
        check=False,
    )


def plant(folder: Path, **values: str) -> Path:
    path = folder / ".env"
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()), encoding="utf-8")
    return path


REAL_KEYS = {"KIS_MODE": "REAL", "KIS_REAL_APP_KEY": REAL.app_key, "KIS_REAL_APP_SECRET": REAL.app_secret}
VTS_KEYS = {"KIS_MODE": "VTS", "KIS_VTS_APP_KEY": VTS.app_key, "KIS_VTS_APP_SECRET": VTS.app_secret}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KIS_REAL_BASE_URL", "{trap}"),
        ("KIS_VTS_BASE_URL", "{trap}"),
        ("KIS_REAL_WS_URL", "ws://127.0.0.1:1"),
        ("KIS_CA_BUNDLE", "{ca}"),
        ("SSL_CERT_FILE", "{ca}"),
        ("QTS_TOKEN_STORE", "redis://127.0.0.1:1/0"),
        ("QTS_TOKEN_STORE", "file:./tokens"),
    ],
)
@pytest.mark.parametrize("command", ["token", "quote 005930", "revoke", "status"])
def test_a_found_env_file_may_not_say_where_credentials_go(
    tmp_path: Path, trap: CaptureServer, variable: str, value: str, command: str
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a CA\n")
    plant(tmp_path, **REAL_KEYS, **{variable: value.format(trap=trap.url, ca=ca)})

    done = qts(tmp_path, *command.split())

    assert done.returncode == 2, done
    assert variable in done.stderr
    assert "--env-file" in done.stderr, "the message says how to pass it"
    assert "export" in done.stderr
    assert trap.requests == [], "nothing was sent to the planted host"
    assert REAL.app_secret[:16] not in done.stdout + done.stderr


def test_a_found_env_file_with_the_mode_and_keys_only_is_used(tmp_path: Path, emulator: KISEmulator) -> None:
    plant(tmp_path, **VTS_KEYS, KIS_VTS_BASE_URL="", KIS_CA_BUNDLE="")  # empty lines, as in .env.example
    done = qts(tmp_path, "token", env={"KIS_VTS_BASE_URL": emulator.base_url, "QTS_TOKEN_STORE": "memory"})
    assert done.returncode == 0, done
    assert f"requests go to {emulator.base_url}" in done.stderr, "the non-official host is named on stderr"


def test_a_file_named_with_env_file_may_set_the_url(tmp_path: Path, emulator: KISEmulator) -> None:
    path = plant(tmp_path, **VTS_KEYS, KIS_VTS_BASE_URL=emulator.base_url, QTS_TOKEN_STORE="memory")
    done = qts(tmp_path, "--env-file", str(path), "token")
    assert done.returncode == 0, done
    assert "not to KIS's official host" in done.stderr


@pytest.mark.parametrize("command", ["token", "quote 005930"])
def test_every_command_against_a_non_official_host_says_so(
    tmp_path: Path, emulator: KISEmulator, command: str
) -> None:
    env = {**VTS_KEYS, "KIS_VTS_BASE_URL": emulator.base_url, "QTS_TOKEN_STORE": "memory"}
    done = qts(tmp_path, *command.split(), env=env)
    assert done.returncode == 0, done
    assert emulator.base_url in done.stderr
    assert emulator.base_url not in done.stdout


def test_load_settings_refuses_a_found_file_but_trusts_a_named_one(
    tmp_path: Path, trap: CaptureServer
) -> None:
    path = plant(tmp_path, **REAL_KEYS, KIS_REAL_BASE_URL=trap.url)
    with pytest.raises(ConfigError, match="KIS_REAL_BASE_URL") as caught:
        load_settings(path, found=True)
    assert caught.value.exit_code == 2
    assert load_settings(path).base_url == trap.url
