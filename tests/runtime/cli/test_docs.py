"""Docs that cannot drift: every ``$ qts …`` example in docs/cli.md runs against the emulator.

Each example gets a fresh sandbox: a working directory whose ``.env`` holds the public demo
credentials and the URL of an emulator on 127.0.0.1 (so key fingerprints match the page). What an
example needs first (a cached token, a fault, a broken ``.env``) is arranged from its
``# comment``. The output — stdout lines, then stderr lines — must equal the example line by line
once what differs between runs (dates, ports, timings, tokens, the cache path) is normalised;
JSON lines are compared as JSON (the page may shorten nested objects and lists).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kis_emulator import DEMO_VTS_APP_KEY, DEMO_VTS_APP_SECRET, KISEmulator, default_accounts
from tests.support.cli import QTS
from tests.support.emulator import Emulators
from tests.support.kis import TOKEN_PATH

DOC = Path(__file__).resolve().parents[3] / "docs" / "cli.md"
DOC_CACHE = "/home/me/.cache/qts"  # the cache folder the page shows
DOC_UID = "uid 1000"

_BLOCK = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)
_VARIABLE = [
    (re.compile(r"\S{4}…\S{4}\(\d+ chars\)"), "<token>"),
    (re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} KST"), "<kst>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?\+00:00"), "<utc>"),
    (re.compile(r"http://127\.0\.0\.1:\d+"), "<url>"),
    (re.compile(r"ws://127\.0\.0\.1:\d+"), "<ws-url>"),
    (re.compile(r"\[\d+(\.\d+)? ms\]"), "[<ms>]"),
    (re.compile(r"\b\d+h \d{2}m\b|\b\d+m \d{2}s\b"), "<span>"),
    (re.compile(r"\b\d+\.\d+ s (ahead of|behind)"), "<skew>"),
    (re.compile(r"\bin \d+(\.\d+)? s\b"), "in <n> s"),
]


@dataclass(frozen=True)
class Example:
    """One ``$ command`` of the page with the lines it shows."""

    line: str  # as written, comment included
    expected: tuple[str, ...]

    @property
    def words(self) -> list[str]:
        return shlex.split(self.line.split("#", 1)[0])

    @property
    def comment(self) -> str:
        return self.line.split("#", 1)[1].strip() if "#" in self.line else ""

    @property
    def assignments(self) -> dict[str, str]:
        """``VAR=value`` words before ``qts``."""
        words = self.words
        return dict(w.split("=", 1) for w in words[: words.index("qts")])

    @property
    def args(self) -> list[str]:
        words = self.words
        return words[words.index("qts") + 1 :]

    @property
    def exit_code(self) -> int:
        found = re.search(r"exit (\d+)", self.comment)
        return int(found.group(1)) if found else 0


def examples() -> list[Example]:
    found = []
    for block in _BLOCK.findall(DOC.read_text(encoding="utf-8")):
        current: list[str] | None = None
        for raw in block.splitlines():
            if raw.startswith("$ "):
                current = []
                found.append((raw[2:], current))
            elif raw.strip() and current is not None:
                current.append(raw)
    return [Example(line, tuple(lines)) for line, lines in found]


def normalise(text: str) -> str:
    for pattern, replacement in _VARIABLE:
        text = pattern.sub(replacement, text)
    return text


def same_json(expected: Any, actual: Any, where: str = "") -> None:
    """``actual`` has what ``expected`` shows: equal leaves (normalised), dict keys a subset below the top."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        missing = set(expected) - set(actual)
        assert not missing, f"{where}: the page shows {missing} the command no longer prints"
        if not where:
            assert set(actual) == set(expected), (
                f"top-level keys differ: page {set(expected)}, qts {set(actual)}"
            )
        for key, value in expected.items():
            same_json(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), where
        assert len(actual) >= len(expected), where
        for index, value in enumerate(expected):
            same_json(value, actual[index], f"{where}[{index}]")
    elif isinstance(expected, str):
        assert isinstance(actual, str), where
        assert normalise(actual) == normalise(expected), where
    elif isinstance(expected, bool) or expected is None:
        assert actual is expected, where
    else:  # numbers: runs differ in value, never in kind
        assert type(actual) is type(expected), f"{where}: {actual!r} is not like {expected!r}"


def compare(example: Example, lines: list[str]) -> None:
    expected = list(example.expected)
    assert len(lines) == len(expected), f"{example.line}: page shows {expected}, qts printed {lines}"
    for shown, printed in zip(expected, lines, strict=True):
        if shown.startswith("{"):
            same_json(json.loads(shown), json.loads(printed))
        else:
            assert normalise(printed) == normalise(shown), f"{example.line}"


# --------------------------------------------------------------------------- sandboxes


@dataclass
class Sandbox:
    qts: QTS
    emulators: Emulators
    emulator: KISEmulator
    env_lines: dict[str, str]
    extra_env: dict[str, str]

    def write_env(self) -> None:
        # Where credentials go (URLs, CA bundle) travels in the environment: a .env only found in
        # the working folder may not set it (docs/security.md G12).
        path = self.qts.tmp_path / ".env"
        lines = {k: v for k, v in self.env_lines.items() if not _routing(k)}
        path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()), encoding="utf-8")
        path.chmod(0o600)

    def env(self) -> dict[str, str]:
        routing = {k: v for k, v in self.env_lines.items() if _routing(k)}
        return {**self.qts.env(), **routing, **self.extra_env}

    def run_first(self, *args: str) -> None:
        result = self.qts.run(*args, env=self.env())
        assert result.returncode == 0, result


def _routing(name: str) -> bool:
    return name.endswith("_URL") or name in ("KIS_CA_BUNDLE", "QTS_TOKEN_STORE")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert isinstance(port, int)
        return port


def _token_first(s: Sandbox) -> None:
    s.run_first("token")


def _no_env(s: Sandbox) -> None:
    (s.qts.tmp_path / ".env").unlink()


def _open_store(s: Sandbox) -> None:
    folder = s.qts.tmp_path / "cache" / "qts"
    folder.mkdir(parents=True)
    folder.chmod(0o755)


def _no_key(s: Sandbox) -> None:
    del s.env_lines["KIS_VTS_APP_KEY"]
    s.write_env()


def _cp949(s: Sandbox) -> None:
    (s.qts.tmp_path / ".env").write_bytes("KIS_MODE=VTS\n# 모의투자 앱키\n".encode("cp949"))


def _wrong_secret(s: Sandbox) -> None:
    s.env_lines["KIS_VTS_APP_SECRET"] = "0" * 180
    s.write_env()


def _vts_key_on_real(s: Sandbox) -> None:
    real = s.emulators.start("REAL", accounts=default_accounts())
    s.env_lines = {
        "KIS_MODE": "REAL",
        "KIS_REAL_BASE_URL": real.base_url,
        "KIS_REAL_APP_KEY": DEMO_VTS_APP_KEY,
        "KIS_REAL_APP_SECRET": DEMO_VTS_APP_SECRET,
    }
    s.write_env()


def _refused(s: Sandbox) -> None:
    s.env_lines["KIS_VTS_BASE_URL"] = f"http://127.0.0.1:{closed_port()}"
    s.write_env()


def _fault(kind: str, **params: str | int) -> Callable[[Sandbox], None]:
    def arrange(s: Sandbox) -> None:
        s.emulator.inject_fault(kind, count=10, path=TOKEN_PATH, **params)

    return arrange


#: What an example needs before it runs, by its ``# comment`` (or its command when it has none).
ARRANGE: dict[str, Callable[[Sandbox], None]] = {
    "qts init": _no_env,
    "qts doctor": _token_first,
    "store folder open to others  exit 2": _open_store,
    "qts token --json": _token_first,
    "qts status": _token_first,
    "qts status --json": _token_first,
    "qts revoke": _token_first,
    "qts forget": _token_first,
    "KIS_VTS_APP_KEY unset        exit 2": _no_key,
    ".env saved in CP949          exit 2": _cp949,
    "wrong app secret             exit 3": _wrong_secret,
    "KIS_MODE=REAL with a VTS key exit 3": _vts_key_on_real,
    "nothing listens at the URL   exit 4": _refused,
    "gateway answers HTML 502     exit 4": _fault("html_502"),
    "invalid JSON                 exit 4": _fault("malformed_json"),
    "EGW00133        exit 5": _fault("error_code", msg_cd="EGW00133", status=403),
}

EXAMPLES = examples()


def test_the_page_has_examples_of_every_subcommand() -> None:
    shown = {example.args[0] for example in EXAMPLES if example.args and not example.args[0].startswith("-")}
    from runtime.cli import COMMANDS

    assert {name for name, _, _ in COMMANDS} <= shown | {"bogus"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.line.split("#")[0].strip() for e in EXAMPLES])
def test_every_example_in_docs_cli_md_is_what_qts_prints(
    qts: QTS, emulators: Emulators, example: Example
) -> None:
    emulator = emulators.start("VTS", accounts=default_accounts())
    sandbox = Sandbox(
        qts,
        emulators,
        emulator,
        {
            "KIS_MODE": "VTS",
            "KIS_VTS_BASE_URL": emulator.base_url,
            "KIS_VTS_APP_KEY": DEMO_VTS_APP_KEY,
            "KIS_VTS_APP_SECRET": DEMO_VTS_APP_SECRET,
        },
        example.assignments,
    )
    sandbox.write_env()
    arrange = ARRANGE.get(example.comment) or ARRANGE.get(" ".join(["qts", *example.args]))
    if arrange is not None:
        arrange(sandbox)

    if example.args[:1] == ["emulator"]:
        lines, code = _run_until_ctrl_c(qts, example, sandbox.env())
    else:
        result = qts.run(*example.args, env=sandbox.env())
        lines, code = result.stdout_lines + result.stderr_lines, result.returncode

    assert code == example.exit_code, f"{example.line}: exit {code}\n{lines}"
    cache = str(qts.tmp_path / "cache" / "qts")
    compare(
        example, [line.replace(cache, DOC_CACHE).replace(f"uid {os.geteuid()}", DOC_UID) for line in lines]
    )


def _run_until_ctrl_c(qts: QTS, example: Example, env: dict[str, str]) -> tuple[list[str], int]:
    """``qts emulator`` serves until Ctrl-C: read the lines the page shows, then stop it."""
    process = qts.start(example.args, env)
    with process:  # the child is always reaped and its pipes closed, even when the test fails
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline().rstrip("\n") for _ in example.expected]
        finally:
            process.send_signal(signal.SIGINT)
        try:
            # Room for a busy 2-core machine running three suites: stopping joins the HTTP and
            # WebSocket server threads.
            rest, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("qts emulator did not stop within 30 s of Ctrl-C")
    assert rest.strip() == "stopping", rest
    return lines, process.returncode
