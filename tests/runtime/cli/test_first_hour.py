"""A stranger's first hour (issue 15): errors a script can read, ``qts doctor``, ``call``,
``forget``, ``init``, and one rule for the REAL marker. Every test runs ``qts`` as a child
process against a KIS emulator on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kis_emulator import DEMO_VTS_APP_KEY, DEMO_VTS_APP_SECRET, EmulatorAccount, KISEmulator
from runtime.auth.stores.file import FileTokenStore
from runtime.broker.base import AccessToken, BrokerScope, Mode
from runtime.config import found_env_problems
from runtime.masking import fingerprint
from tests.support.cli import QTS, REAL_MARKER, Result
from tests.support.emulator import Emulators
from tests.support.kis import TOKEN_PATH
from tests.support.redis import redis_server

ERROR_KEYS = {"type", "code", "message", "hint", "retryable", "exit_code"}
PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
BALANCE = "/uapi/domestic-stock/v1/trading/inquire-balance"
REPO = Path(__file__).resolve().parents[3]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert isinstance(port, int)
        return port


def error_object(result: Result) -> dict[str, object]:
    """The one ``{"error": {...}}`` object a failed ``--json`` run prints on stdout."""
    assert len(result.stdout_lines) == 1, result
    document = json.loads(result.stdout)
    assert set(document) == {"error"}, result
    error = document["error"]
    assert isinstance(error, dict)
    assert set(error) == ERROR_KEYS, result
    assert error["exit_code"] == result.returncode, result
    assert isinstance(error["hint"], str), result
    assert error["hint"], result
    assert isinstance(error["retryable"], bool), result
    return error


def write_env(path: Path, lines: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()), encoding="utf-8")
    path.chmod(0o600)
    return path


def jwt(claims: dict[str, str]) -> str:
    def part(data: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{'s' * 43}"


# --------------------------------------------------------------------------- errors a script can read


def _config(qts: QTS, emulators: Emulators, vts: EmulatorAccount) -> tuple[list[str], dict[str, str]]:
    return ["token"], qts.env(emulators.start("VTS"), vts, mode="PAPER")


def _secret(qts: QTS, emulators: Emulators, vts: EmulatorAccount) -> tuple[list[str], dict[str, str]]:
    env = qts.env(emulators.start("VTS"), vts)
    env["KIS_VTS_APP_SECRET"] = "x" * 180
    return ["token"], env


def _refused(qts: QTS, emulators: Emulators, vts: EmulatorAccount) -> tuple[list[str], dict[str, str]]:
    return ["quote", "005930"], qts.env(
        None, vts, mode="VTS", KIS_VTS_BASE_URL=f"http://127.0.0.1:{closed_port()}"
    )


def _limited(qts: QTS, emulators: Emulators, vts: EmulatorAccount) -> tuple[list[str], dict[str, str]]:
    emulator = emulators.start("VTS")
    emulator.inject_fault("error_code", count=5, path=TOKEN_PATH, msg_cd="EGW00133", status=403)
    return ["token"], qts.env(emulator, vts, QTS_WAIT_ON_RATE_LIMIT="false")


def _refusal(qts: QTS, emulators: Emulators, vts: EmulatorAccount) -> tuple[list[str], dict[str, str]]:
    return ["quote", "ABCDEF"], qts.env(emulators.start("VTS"), vts)


def _usage(qts: QTS, emulators: Emulators, vts: EmulatorAccount) -> tuple[list[str], dict[str, str]]:
    return ["quote", "--no-such-option", "005930"], qts.env()


JSON_CASES: dict[str, tuple[Callable[..., tuple[list[str], dict[str, str]]], int, str]] = {
    "configuration": (_config, 2, "ConfigError"),
    "rejected secret": (_secret, 3, "CredentialsRejectedError"),
    "connection refused": (_refused, 4, "BrokerUnavailableError"),
    "EGW00133": (_limited, 5, "IssuanceRateLimitedError"),
    "OPSQ0002": (_refusal, 6, "BrokerCallError"),
    "usage": (_usage, 2, "UsageError"),
}


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_a_failure_with_json_prints_one_error_object_with_the_same_exit_code(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, case: str
) -> None:
    setup, exit_code, kind = JSON_CASES[case]
    args, env = setup(qts, emulators, vts_account)

    result = qts.run(*args, "--json", env=env)

    assert result.returncode == exit_code, result
    error = error_object(result)
    assert error["type"] == kind
    assert result.stderr.startswith("qts: "), result  # the human lines stay on stderr
    assert "Traceback" not in result.stderr


def test_a_kis_business_refusal_has_its_own_exit_code_and_a_hint(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    result = qts.run("quote", "ABCDEF", env=qts.env(emulators.start("VTS"), vts_account))

    assert result.returncode == 6, result
    assert "OPSQ0002" in result.stderr_lines[0]
    assert "없는 종목코드" in result.stderr_lines[0]
    assert len(result.stderr_lines) == 2, result
    assert "stock code" in result.stderr_lines[1], result
    assert "internal error" not in result.stderr
    assert "report it" not in result.stderr


def test_connection_refused_names_the_url_tried(qts: QTS, vts_account: EmulatorAccount) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = qts.run("token", env=qts.env(None, vts_account, mode="VTS", KIS_VTS_BASE_URL=url))

    assert result.returncode == 4, result
    assert url in result.stderr_lines[0], result


def test_a_cp949_env_file_is_a_configuration_error_that_says_what_to_do(qts: QTS) -> None:
    (qts.tmp_path / ".env").write_bytes("KIS_MODE=VTS\n# 모의투자 키\nKIS_VTS_APP_KEY=abc\n".encode("cp949"))

    result = qts.run("token", "--json", env=qts.env())

    assert result.returncode == 2, result
    error = error_object(result)
    assert error["type"] == "ConfigError"
    assert "UTF-8" in str(error["message"]), result
    assert "iconv" in str(error["hint"]), result
    assert "internal error" not in result.stderr
    assert "UnicodeDecodeError" not in result.stderr


def test_an_unreadable_env_file_is_a_configuration_error_that_says_what_to_do(qts: QTS) -> None:
    env_file = write_env(qts.tmp_path / ".env", {"KIS_MODE": "VTS"})
    env_file.chmod(0o000)
    argv = [sys.executable, "-m", "runtime.cli", "token"]
    if os.geteuid() == 0:  # root reads any file: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        assert setpriv, "root without setpriv cannot make a file unreadable to itself"
        argv = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *argv]
    done = subprocess.run(  # noqa: S603 - this interpreter and fixed arguments
        argv, env=qts.env(), cwd=qts.tmp_path, capture_output=True, text=True, timeout=30, check=False
    )

    assert done.returncode == 2, done
    assert "permission denied" in done.stderr, done
    assert "chmod 600" in done.stderr, done
    assert "internal error" not in done.stderr
    assert "PermissionError" not in done.stderr


def test_an_env_file_its_owner_may_not_read_is_refused_even_to_root(qts: QTS) -> None:
    write_env(qts.tmp_path / ".env", {"KIS_MODE": "VTS"}).chmod(0o000)

    result = qts.run("token", "--json", env=qts.env())

    assert result.returncode == 2, result
    assert "permission denied" in str(error_object(result)["message"])


def test_an_env_file_with_a_byte_order_mark_is_a_configuration_error(qts: QTS) -> None:
    (qts.tmp_path / ".env").write_bytes(b"\xef\xbb\xbfKIS_MODE=REAL\n")

    result = qts.run("status", env=qts.env())

    assert result.returncode == 2, result
    assert "byte-order mark" in result.stderr_lines[0], result
    assert "without BOM" in result.stderr_lines[1], result


def test_a_corrupt_cache_warning_prints_once_per_command(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    folder = qts.tmp_path / "cache" / "qts"
    folder.mkdir(parents=True, mode=0o700)
    token_file = folder / f"VTS-{fingerprint(vts_account.app_key)}.json"
    token_file.write_text("{ not json", encoding="utf-8")
    token_file.chmod(0o600)

    result = qts.run("quote", "005930", env=qts.env(emulators.start("VTS"), vts_account))

    assert result.returncode == 0, result
    warnings = [line for line in result.stderr_lines if "ignoring token file" in line]
    assert len(warnings) == 1, result


@pytest.mark.parametrize(
    ("args", "target"),
    [
        (["token", "--no-such-option"], "qts token --help"),
        (["--mode", "PAPER", "quote", "005930"], "qts quote --help"),
        (["quote"], "qts quote --help"),
        (["call", "FHKST01010100"], "qts call --help"),
        (["bogus"], "qts --help"),
    ],
)
def test_a_usage_error_points_at_the_subcommands_own_help(qts: QTS, args: list[str], target: str) -> None:
    result = qts.run(*args, env=qts.env())

    assert result.returncode == 2, result
    assert len(result.stderr_lines) == 2, result
    assert f"`{target}`" in result.stderr_lines[1], result


def test_after_a_rejected_secret_a_blocked_tokenp_does_not_claim_a_token_was_issued(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = qts.env(emulator, vts_account, QTS_WAIT_ON_RATE_LIMIT="false")
    rejected = qts.run("token", env={**env, "KIS_VTS_APP_SECRET": "y" * 180})
    assert rejected.returncode == 3, rejected
    emulator.inject_fault("error_code", count=5, path=TOKEN_PATH, msg_cd="EGW00133", status=403)

    blocked = qts.run("token", env=env)

    assert blocked.returncode == 5, blocked
    assert "issued" not in blocked.stderr.lower(), blocked
    assert "rejected" in blocked.stderr, blocked  # says that a refused request counts too


# --------------------------------------------------------------------------- doctor


def emulator_env(qts: QTS, emulator: KISEmulator, account: EmulatorAccount, **extra: str) -> dict[str, str]:
    """A .env (0600) in the working directory with the mode and keys; the emulator's URL in the
    environment (a .env only found in the working folder may not say where credentials go)."""
    lines = {
        "KIS_MODE": emulator.mode,
        f"KIS_{account.mode}_APP_KEY": account.app_key,
        f"KIS_{account.mode}_APP_SECRET": account.app_secret,
        **extra,
    }
    routing = {k: lines[k] for k in found_env_problems(dict(lines))}
    write_env(qts.tmp_path / ".env", {k: v for k, v in lines.items() if k not in routing})
    return {**qts.env(), f"KIS_{emulator.mode}_BASE_URL": emulator.base_url, **routing}


def doctor_checks(result: Result) -> dict[str, dict[str, str]]:
    document = json.loads(result.stdout)
    assert document["ok"] is (result.returncode == 0), result
    return {check["name"]: check for check in document["checks"]}


def test_doctor_against_the_emulator_is_all_ok(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    env = emulator_env(qts, emulators.start("VTS"), vts_account)
    assert qts.run("token", env=env).returncode == 0  # a cached token to inspect too

    text = qts.run("doctor", env=env)
    as_json = qts.run("doctor", "--json", env=env)

    assert text.returncode == 0, text
    assert len(text.stdout_lines) == 10, text
    assert all(line.startswith("ok ") for line in text.stdout_lines), text
    checks = doctor_checks(as_json)
    assert as_json.returncode == 0, as_json
    assert {
        ".env",
        "mode",
        "other",
        "base URL",
        "CA bundle",
        "store",
        "redis",
        "token",
        "budget",
        "clock",
    } <= set(checks)
    assert all(check["status"] == "ok" for check in checks.values()), as_json
    assert "jti matches" in checks["token"]["detail"]
    assert "KST" in checks["token"]["detail"]
    assert "next tokenP allowed" in checks["budget"]["detail"]


def _cp949(s: DoctorSetup) -> dict[str, str]:
    env = emulator_env(s.qts, s.emulator, s.account)
    (s.qts.tmp_path / ".env").write_bytes("KIS_MODE=VTS\n# 모의투자\n".encode("cp949"))
    return env


def _cp949_mode_in_env(s: DoctorSetup) -> dict[str, str]:
    return {**_cp949(s), "KIS_MODE": "VTS"}


def _locked(s: DoctorSetup) -> dict[str, str]:
    env = emulator_env(s.qts, s.emulator, s.account)
    (s.qts.tmp_path / ".env").chmod(0o000)
    return env


def _loose_env(s: DoctorSetup) -> dict[str, str]:
    env = emulator_env(s.qts, s.emulator, s.account)
    (s.qts.tmp_path / ".env").chmod(0o644)
    return env


def _paper(s: DoctorSetup) -> dict[str, str]:
    return emulator_env(s.qts, s.emulator, s.account, KIS_MODE="PAPER")


def _no_keys(s: DoctorSetup) -> dict[str, str]:
    write_env(s.qts.tmp_path / ".env", {"KIS_MODE": "VTS"})
    return {**s.qts.env(), "KIS_VTS_BASE_URL": s.emulator.base_url}  # never from a found .env


def _same_key_both_modes(s: DoctorSetup) -> dict[str, str]:
    return emulator_env(
        s.qts,
        s.emulator,
        s.account,
        KIS_REAL_APP_KEY=s.account.app_key,
        KIS_REAL_APP_SECRET=s.account.app_secret,
    )


def _foreign_host(s: DoctorSetup) -> dict[str, str]:
    env = emulator_env(s.qts, s.emulator, s.account)
    return {**env, "KIS_VTS_BASE_URL": "https://kis.example.invalid:29443"}


def _foreign_other_host(s: DoctorSetup) -> dict[str, str]:
    return emulator_env(s.qts, s.emulator, s.account, KIS_REAL_BASE_URL="https://kis.example.invalid:9443")


def _missing_ca(s: DoctorSetup) -> dict[str, str]:
    return emulator_env(s.qts, s.emulator, s.account, KIS_CA_BUNDLE=str(s.qts.tmp_path / "no-such-ca.pem"))


def _plain_http_host(s: DoctorSetup) -> dict[str, str]:
    return emulator_env(s.qts, s.emulator, s.account, KIS_REAL_BASE_URL="http://kis.example.invalid")


def _bad_store(s: DoctorSetup) -> dict[str, str]:
    return emulator_env(s.qts, s.emulator, s.account, QTS_TOKEN_STORE="sqlite:tokens.db")


def _foreign_owner(s: DoctorSetup) -> dict[str, str]:
    if os.geteuid() == 0:  # root can hand a folder to another user
        folder = s.qts.tmp_path / "theirs"
        folder.mkdir(mode=0o700)
        os.chown(folder, 65534, 65534)
    else:  # anyone else meets a folder they do not own in /
        folder = Path("/usr")
    return emulator_env(s.qts, s.emulator, s.account, QTS_TOKEN_STORE=f"file:{folder}")


def _expired_token(s: DoctorSetup) -> dict[str, str]:
    scope = BrokerScope(Mode.VTS, fingerprint(s.account.app_key))
    now = datetime.now(UTC)
    value = jwt({"jti": s.account.app_key})
    token = AccessToken(value, "Bearer", now - timedelta(hours=1), now - timedelta(hours=25), scope)
    FileTokenStore(s.qts.tmp_path / "cache" / "qts").save(scope, token)
    return emulator_env(s.qts, s.emulator, s.account)


def _bad_ca(s: DoctorSetup) -> dict[str, str]:
    bundle = s.qts.tmp_path / "proxy-ca.pem"
    bundle.write_text("not a certificate\n", encoding="utf-8")
    return emulator_env(s.qts, s.emulator, s.account, KIS_CA_BUNDLE=str(bundle))


def _open_store(s: DoctorSetup) -> dict[str, str]:
    folder = s.qts.tmp_path / "cache" / "qts"
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    return emulator_env(s.qts, s.emulator, s.account)


def _foreign_token(s: DoctorSetup) -> dict[str, str]:
    scope = BrokerScope(Mode.VTS, fingerprint(s.account.app_key))
    now = datetime.now(UTC)
    token = AccessToken(jwt({"jti": "PS" + "0" * 34}), "Bearer", now + timedelta(hours=20), now, scope)
    FileTokenStore(s.qts.tmp_path / "cache" / "qts").save(scope, token)
    return emulator_env(s.qts, s.emulator, s.account)


def _skewed_clock(s: DoctorSetup) -> dict[str, str]:
    s.emulator.advance(30)
    return emulator_env(s.qts, s.emulator, s.account)


def _redis_down(s: DoctorSetup) -> dict[str, str]:
    return emulator_env(s.qts, s.emulator, s.account, QTS_TOKEN_STORE=f"redis://127.0.0.1:{closed_port()}/0")


def _memory(s: DoctorSetup) -> dict[str, str]:
    return emulator_env(s.qts, s.emulator, s.account, QTS_TOKEN_STORE="memory")


def _unreachable(s: DoctorSetup) -> dict[str, str]:
    env = emulator_env(s.qts, s.emulator, s.account)
    return {**env, "KIS_VTS_BASE_URL": f"http://127.0.0.1:{closed_port()}"}


class DoctorSetup:
    def __init__(self, qts: QTS, emulator: KISEmulator, account: EmulatorAccount) -> None:
        self.qts, self.emulator, self.account = qts, emulator, account


# name -> (set-up, the check that names it, its status, words of the fix)
BROKEN: dict[str, tuple[Callable[[DoctorSetup], dict[str, str]], str, str, str]] = {
    "CP949 .env": (_cp949, ".env", "fail", "UTF-8"),
    "CP949 .env, KIS_MODE in the environment": (_cp949_mode_in_env, ".env", "fail", "UTF-8"),
    ".env locked": (_locked, ".env", "fail", "chmod 600"),
    ".env readable by others": (_loose_env, ".env", "warn", "chmod 600"),
    "KIS_MODE=PAPER": (_paper, "mode", "fail", "KIS_MODE=VTS"),
    "no key pair": (_no_keys, "keys", "fail", "KIS_VTS_APP_KEY"),
    "one key for both modes": (_same_key_both_modes, "other", "fail", "own key pair"),
    "unofficial host": (_foreign_host, "base URL", "warn", "unset KIS_VTS_BASE_URL"),
    "unofficial host of the other mode": (_foreign_other_host, "base URL", "warn", "unset KIS_REAL_BASE_URL"),
    "CA bundle not PEM": (_bad_ca, "CA bundle", "fail", "KIS_CA_BUNDLE"),
    "CA bundle missing": (_missing_ca, "CA bundle", "fail", "KIS_CA_BUNDLE"),
    "plain http to a remote host": (_plain_http_host, "base URL", "fail", "https://"),
    "unknown store": (_bad_store, "store", "fail", "QTS_TOKEN_STORE=file"),
    "store folder of another user": (_foreign_owner, "store", "fail", "folder of your own"),
    "expired token": (_expired_token, "token", "warn", "next call issues"),
    "store open to others": (_open_store, "store", "fail", "chmod 700"),
    # The store itself refuses a token whose jti names another key (docs/security.md G10): it is
    # never loaded, so the next call issues one of this key.
    "token of another key": (_foreign_token, "token", "ok", ""),
    "clock 30 s behind KIS": (_skewed_clock, "clock", "warn", "NTP"),
    "Redis down": (_redis_down, "redis", "fail", "start Redis"),
    "memory store": (_memory, "store", "warn", "QTS_TOKEN_STORE=file"),
    "KIS unreachable": (_unreachable, "reach", "fail", "base URL"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_doctor_names_the_fix_for_each_broken_set_up(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, case: str
) -> None:
    setup, name, status, fix = BROKEN[case]
    env = setup(DoctorSetup(qts, emulators.start("VTS"), vts_account))

    text = qts.run("doctor", env=env)
    result = qts.run("doctor", "--json", env=env)

    checks = doctor_checks(result)
    assert checks[name]["status"] == status, result
    assert fix in checks[name]["fix"], result
    assert (result.returncode != 0) is any(c["status"] == "fail" for c in checks.values()), result
    if status == "fail":
        assert result.returncode != 0, result
    assert text.returncode == result.returncode, text
    line = next(line for line in text.stdout_lines if line.startswith(f"{status:<4} {name} "))
    assert fix in line, text


def test_doctor_finds_a_running_redis_reachable_and_all_ok(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, tmp_path: Path
) -> None:
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as url:
        env = emulator_env(qts, emulators.start("VTS"), vts_account, QTS_TOKEN_STORE=url)
        assert qts.run("token", env=env).returncode == 0

        result = qts.run("doctor", "--json", env=env)

    checks = doctor_checks(result)
    assert result.returncode == 0, result
    assert checks["redis"]["status"] == "ok", result
    assert "reachable" in checks["redis"]["detail"]
    assert "jti matches" in checks["token"]["detail"], result


def test_doctor_in_real_mode_starts_with_the_marker(
    qts: QTS, emulators: Emulators, real_account: EmulatorAccount
) -> None:
    env = emulator_env(qts, emulators.start("REAL"), real_account)

    result = qts.run("doctor", env=env)

    assert result.returncode == 0, result
    assert result.stdout_lines[0].startswith(REAL_MARKER), result
    assert "live trading" in result.stdout_lines[2], result


def test_the_real_marker_shows_with_mode_real_even_when_the_env_file_cannot_be_read(qts: QTS) -> None:
    (qts.tmp_path / ".env").write_bytes("KIS_MODE=VTS\n# 실전\n".encode("cp949"))

    result = qts.run("--mode", "REAL", "token", env=qts.env())

    assert result.returncode == 2, result
    assert result.stdout_lines[0].startswith(REAL_MARKER), result


# --------------------------------------------------------------------------- call, forget, init


def test_call_sends_any_read_only_get_and_prints_json(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    env = qts.env(emulators.start("VTS"), vts_account)

    result = qts.run(
        "call", "FHKST01010100", PRICE, "FID_COND_MRKT_DIV_CODE=J", "FID_INPUT_ISCD=005930", env=env
    )

    assert result.returncode == 0, result
    document = json.loads(result.stdout)
    assert len(document["pages"]) == 1
    assert document["has_next_page"] is False
    assert document["pages"][0]["body"]["output"]["stck_prpr"].isdigit()


@pytest.mark.parametrize(
    ("option", "pages", "more"), [([], 1, True), (["--pages", "2"], 2, True), (["--all"], 3, False)]
)
def test_call_follows_tr_cont_on_request(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, option: list[str], pages: int, more: bool
) -> None:
    emulator = emulators.start("VTS", page_size=1)
    emulator.set_config(holdings=emulator.config.holdings[:3])
    env = qts.env(emulator, vts_account)

    result = qts.run(
        "call", "TTTC8434R", BALANCE, "CANO=12345678", "ACNT_PRDT_CD=01", *option, "--json", env=env
    )

    assert result.returncode == 0, result
    document = json.loads(result.stdout)
    assert len(document["pages"]) == pages, result
    assert document["has_next_page"] is more
    rows = [row["pdno"] for page in document["pages"] for row in page["body"]["output1"]]
    assert len(rows) == len(set(rows)) == pages  # each page continues where the last one ended


def test_call_refuses_orders_before_the_network(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = qts.env(emulator, vts_account)

    result = qts.run(
        "call", "TTTC0802U", "/uapi/domestic-stock/v1/trading/order-cash", "PDNO=005930", env=env
    )

    assert result.returncode == 2, result
    assert "order" in result.stderr_lines[0]
    assert emulator.orders() == []


def test_forget_drops_the_local_token_without_asking_kis(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    emulator = emulators.start("VTS")
    env = qts.env(emulator, vts_account)
    assert qts.run("token", env=env).returncode == 0
    emulator.stop()  # KIS unreachable: revoke cannot help
    assert qts.run("revoke", env=env).returncode == 4

    forgot = qts.run("forget", env=env)
    again = qts.run("forget", "--json", env=env)
    status = qts.run("status", env=env)

    assert forgot.returncode == 0, forgot
    assert forgot.stdout_lines[0].startswith("forgot "), forgot
    assert json.loads(again.stdout) == {"forgotten": [], "approval_keys_forgotten": []}
    assert "no cached tokens" in status.stdout, status


def test_init_writes_a_private_commented_env_and_never_overwrites_without_force(qts: QTS) -> None:
    target = qts.tmp_path / ".env"

    first = qts.run("init", env=qts.env())
    second = qts.run("init", env=qts.env())

    assert first.returncode == 0, first
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    template = target.read_text(encoding="utf-8")
    assert template == (REPO / ".env.example").read_text(encoding="utf-8")
    assert "KIS_VTS_APP_KEY=" in template
    assert template.count("\n#") > 10
    assert second.returncode == 2, second
    assert "--force" in second.stderr
    target.write_text("KIS_MODE=REAL\n", encoding="utf-8")
    assert qts.run("init", env=qts.env()).returncode == 2
    assert target.read_text(encoding="utf-8") == "KIS_MODE=REAL\n"
    forced = qts.run("init", "--force", env=qts.env())
    assert forced.returncode == 0, forced
    assert target.read_text(encoding="utf-8") == template
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_init_writes_where_env_file_says_and_the_result_passes_config_once_filled(qts: QTS) -> None:
    result = qts.run("init", "--env-file", "mine.env", env=qts.env())
    assert result.returncode == 0, result
    mine = qts.tmp_path / "mine.env"
    text = mine.read_text(encoding="utf-8")
    mine.write_text(
        text.replace("KIS_VTS_APP_KEY=\n", f"KIS_VTS_APP_KEY={DEMO_VTS_APP_KEY}\n").replace(
            "KIS_VTS_APP_SECRET=\n", f"KIS_VTS_APP_SECRET={DEMO_VTS_APP_SECRET}\n"
        ),
        encoding="utf-8",
    )
    doctor = qts.run("--env-file", "mine.env", "doctor", "--json", env=qts.env())
    checks = doctor_checks(doctor)
    assert checks["mode"]["status"] == "ok", doctor


# --------------------------------------------------------------------------- the REAL marker, one rule


@pytest.mark.parametrize(
    "args",
    [["token"], ["quote", "005930"], ["revoke"], ["forget"], ["doctor"], ["call", "FHKST01010100", PRICE]],
)
def test_the_real_marker_shows_whenever_real_is_in_use_even_without_keys(qts: QTS, args: list[str]) -> None:
    result = qts.run(*args, env=qts.env(mode="REAL"))

    assert result.returncode == 2, result
    # `call` prints JSON even without --json, so its marker always goes to stderr.
    first = result.stderr_lines[0] if args[0] == "call" else result.stdout_lines[0]
    assert first.startswith(REAL_MARKER), result
    as_json = qts.run(*args, "--json", env=qts.env(mode="REAL"))
    assert as_json.stderr_lines[0].startswith(REAL_MARKER), as_json  # stdout stays one JSON object
    json.loads(as_json.stdout)


def test_the_real_marker_is_not_shown_in_vts(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount
) -> None:
    result = qts.run("token", env=qts.env(emulators.start("VTS"), vts_account))

    assert REAL_MARKER not in result.stdout + result.stderr


def test_status_marks_the_real_rows_not_the_whole_output(
    qts: QTS, emulators: Emulators, vts_account: EmulatorAccount, real_account: EmulatorAccount
) -> None:
    vts_env = qts.env(emulators.start("VTS"), vts_account)
    real_env = qts.env(emulators.start("REAL"), real_account)
    assert qts.run("token", env=vts_env).returncode == 0
    assert qts.run("token", env=real_env).returncode == 0

    result = qts.run("status", env=qts.env())

    rows = {line.split()[0]: line for line in result.stdout_lines if line.startswith(("VTS ", "REAL "))}
    assert REAL_MARKER in rows["REAL"], result
    assert REAL_MARKER not in rows["VTS"], result
    assert not result.stdout_lines[0].startswith(REAL_MARKER), result
    assert REAL_MARKER not in result.stderr


def test_emulator_json_carries_the_demo_credentials_its_text_prints(qts: QTS) -> None:
    process = qts.start(["emulator", "--json"], qts.env())
    try:
        assert process.stdout is not None
        document = json.loads(process.stdout.readline())
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)

    assert document["app_key"] == DEMO_VTS_APP_KEY
    assert document["app_secret"] == DEMO_VTS_APP_SECRET
    assert document["env"] == {
        "KIS_MODE": "VTS",
        "KIS_VTS_BASE_URL": document["base_url"],
        "KIS_VTS_WS_URL": document["ws_url"],
        "KIS_VTS_APP_KEY": DEMO_VTS_APP_KEY,
        "KIS_VTS_APP_SECRET": DEMO_VTS_APP_SECRET,
    }
    assert process.returncode == 0
