"""Running ``qts`` as a child process (``python -m runtime.cli``) in a bare environment, with a
leak check on every run, and a small HTTP client for the emulator's admin endpoints."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3

from kis_emulator import EmulatorAccount, KISEmulator
from tests.support.kis import PRICE_PARAMS, PRICE_PATH, PRICE_TR_ID, TOKEN_PATH

REAL_MARKER = "[REAL 실전]"

#: A whole KIS access token (three base64url segments); masked tokens contain "…" and never match.
FULL_TOKEN = re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")
TIMEOUT_S = 30.0


def make_account(mode: str) -> EmulatorAccount:
    """A fresh key pair in KIS's shapes (36-char key, 180-char secret), unique to this test run."""
    return EmulatorAccount(mode, "PS" + secrets.token_hex(17), secrets.token_hex(90))


def _is_host_note(line: str) -> bool:
    return line.startswith("qts: note: ") and "official host" in line


@dataclass(frozen=True)
class Result:
    """One finished ``qts`` process."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def stdout_lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def stderr_lines(self) -> list[str]:
        """stderr's lines, without the note every command against a non-official host prints
        (the emulator is one); ``stderr`` itself keeps it. See ``host_notes``."""
        return [line for line in self.stderr.splitlines() if not _is_host_note(line)]

    @property
    def host_notes(self) -> list[str]:
        """The "not KIS's official host" notes on stderr (docs/security.md G12)."""
        return [line for line in self.stderr.splitlines() if _is_host_note(line)]

    def __str__(self) -> str:
        return (
            f"qts {' '.join(self.argv)} -> exit {self.returncode} in {self.seconds:.2f} s\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}---"
        )


@dataclass
class QTS:
    """Runs ``qts`` in child processes inside one test's ``tmp_path``."""

    tmp_path: Path
    known_secrets: tuple[str, ...]
    results: list[Result] = field(default_factory=list)

    def env(
        self,
        emulator: KISEmulator | None = None,
        account: EmulatorAccount | None = None,
        *,
        mode: str | None = None,
        **extra: str,
    ) -> dict[str, str]:
        """A from-scratch environment; with ``emulator`` and ``account`` the KIS_* lines point at it."""
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.tmp_path),
            "XDG_CACHE_HOME": str(self.tmp_path / "cache"),
        }
        kis_mode = mode or (emulator.mode if emulator is not None else None)
        if kis_mode is not None:
            env["KIS_MODE"] = kis_mode
        if emulator is not None:
            env[f"KIS_{emulator.mode}_BASE_URL"] = emulator.base_url
        if account is not None:
            env[f"KIS_{account.mode}_APP_KEY"] = account.app_key
            env[f"KIS_{account.mode}_APP_SECRET"] = account.app_secret
        env.update(extra)
        return env

    def start(self, args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
        """Start ``qts ARGS`` without waiting (see :meth:`finish`)."""
        return subprocess.Popen(  # noqa: S603 - argv is this interpreter and the test's own arguments
            [sys.executable, "-m", "runtime.cli", *args],
            env=dict(env),
            cwd=self.tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def finish(
        self,
        process: subprocess.Popen[str],
        args: Sequence[str],
        env: Mapping[str, str],
        started: float,
        *,
        token_on_stdout: bool = False,
        timeout: float = TIMEOUT_S,
    ) -> Result:
        """Wait for ``process`` (killing it after ``timeout``) and check its output for leaks."""
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail(f"qts {' '.join(args)} did not finish within {timeout} s")
        result = Result(tuple(args), process.returncode, stdout, stderr, time.monotonic() - started)
        self.results.append(result)
        self.assert_no_leak(result, env, token_on_stdout=token_on_stdout)
        return result

    def run(
        self, *args: str, env: Mapping[str, str], token_on_stdout: bool = False, timeout: float = TIMEOUT_S
    ) -> Result:
        """Run ``qts ARGS`` to the end."""
        started = time.monotonic()
        return self.finish(
            self.start(args, env), args, env, started, token_on_stdout=token_on_stdout, timeout=timeout
        )

    def run_all(self, *runs: tuple[Sequence[str], Mapping[str, str]]) -> list[Result]:
        """Run several ``qts`` processes side by side; results in the order given."""
        started = time.monotonic()
        processes = [(self.start(args, env), args, env) for args, env in runs]
        return [self.finish(process, args, env, started) for process, args, env in processes]

    def assert_no_leak(self, result: Result, env: Mapping[str, str], *, token_on_stdout: bool) -> None:
        """No app secret anywhere; a full token only on stdout of ``--reveal``."""
        secrets_sent = {v for k, v in env.items() if k.endswith("_APP_SECRET") and v}
        for secret in secrets_sent | set(self.known_secrets):
            assert secret not in result.stdout, f"an app secret on stdout of {result}"
            assert secret not in result.stderr, f"an app secret on stderr of {result}"
        assert not FULL_TOKEN.search(result.stderr), f"a full token on stderr of {result}"
        if not token_on_stdout:
            assert not FULL_TOKEN.search(result.stdout), f"a full token on stdout of {result}"


@dataclass
class EmulatorClient:
    """Talks KIS to one emulator directly (no QTS code), to check what the command did."""

    http: urllib3.PoolManager
    emulator: KISEmulator
    account: EmulatorAccount

    def token(self) -> str:
        """tokenP as ``account`` (within 6 h of an earlier issuance KIS hands back the same token)."""
        reply = self.http.request(
            "POST",
            self.emulator.base_url + TOKEN_PATH,
            json={
                "grant_type": "client_credentials",
                "appkey": self.account.app_key,
                "appsecret": self.account.app_secret,
            },
        )
        assert reply.status == 200, reply.data
        value = reply.json()["access_token"]
        assert isinstance(value, str)
        return value

    def price(self, token: str) -> tuple[int, dict[str, Any]]:
        """GET inquire-price for 005930 with ``token`` and the usual KIS headers."""
        reply = self.http.request(
            "GET",
            self.emulator.base_url + PRICE_PATH,
            fields=PRICE_PARAMS,
            headers={
                "content-type": "application/json; charset=utf-8",
                "authorization": f"Bearer {token}",
                "appkey": self.account.app_key,
                "appsecret": self.account.app_secret,
                "tr_id": PRICE_TR_ID,
                "custtype": "P",
            },
        )
        body = reply.json()
        assert isinstance(body, dict)
        return reply.status, body
