"""load_settings: the environment and an explicit .env file to frozen Settings, or one ConfigError
that names every offending variable and what is allowed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from runtime.broker.base import Mode
from runtime.config import load_settings, load_store_spec, parse_base_url, parse_store_spec, parse_ws_url
from runtime.errors import ConfigError, QTSError
from runtime.settings import StoreKind, TokenStoreSpec

VTS_KEY = "PSvtsConfigKey000000000000000000001"
VTS_SECRET = "vtsSecret" + "s" * 171
REAL_KEY = "PSrealConfigKey00000000000000000001"
REAL_SECRET = "realSecret" + "r" * 170


@pytest.fixture
def vts_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIS_VTS_APP_KEY", VTS_KEY)
    monkeypatch.setenv("KIS_VTS_APP_SECRET", VTS_SECRET)


@pytest.fixture
def real_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIS_REAL_APP_KEY", REAL_KEY)
    monkeypatch.setenv("KIS_REAL_APP_SECRET", REAL_SECRET)


def config_error(**kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        load_settings(**kwargs)
    return raised.value


# --- mode ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("vts_keys")
def test_mode_defaults_to_vts() -> None:
    settings = load_settings()

    assert settings.mode is Mode.VTS
    assert settings.credentials.app_key == VTS_KEY
    assert settings.credentials.app_secret == VTS_SECRET


@pytest.mark.usefixtures("vts_keys", "real_keys")
@pytest.mark.parametrize(
    ("raw", "mode"), [("vts", Mode.VTS), ("VTS", Mode.VTS), ("Real", Mode.REAL), (" REAL ", Mode.REAL)]
)
def test_mode_is_case_and_space_insensitive(monkeypatch: pytest.MonkeyPatch, raw: str, mode: Mode) -> None:
    monkeypatch.setenv("KIS_MODE", raw)

    assert load_settings().mode is mode


@pytest.mark.usefixtures("vts_keys")
@pytest.mark.parametrize("raw", ["PAPER", "live", "", "V TS"])
def test_an_unknown_mode_is_refused_naming_kis_mode_and_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("KIS_MODE", raw)

    error = config_error()

    assert "KIS_MODE" in error.problems
    assert "KIS_MODE" in str(error)
    assert "VTS or REAL" in str(error)


@pytest.mark.usefixtures("vts_keys", "real_keys")
def test_the_mode_argument_overrides_kis_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIS_MODE", "VTS")

    settings = load_settings(mode="real")

    assert settings.mode is Mode.REAL
    assert settings.credentials.app_key == REAL_KEY


@pytest.mark.usefixtures("vts_keys")
def test_the_mode_argument_is_validated_too() -> None:
    error = config_error(mode="PAPER")

    assert "KIS_MODE" in error.problems


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("vts_keys")
def test_only_the_active_modes_keys_are_required() -> None:
    settings = load_settings()  # no KIS_REAL_* at all

    assert settings.mode is Mode.VTS
    assert settings.scope.mode is Mode.VTS


@pytest.mark.usefixtures("vts_keys")
def test_real_mode_without_real_keys_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIS_MODE", "REAL")

    error = config_error()

    assert set(error.problems) == {"KIS_REAL_APP_KEY", "KIS_REAL_APP_SECRET"}


@pytest.mark.parametrize("name", ["KIS_VTS_APP_KEY", "KIS_VTS_APP_SECRET"])
@pytest.mark.parametrize("value", [None, ""], ids=["missing", "empty"])
@pytest.mark.usefixtures("vts_keys")
def test_a_missing_or_empty_key_or_secret_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(name)
    else:
        monkeypatch.setenv(name, value)

    error = config_error()

    assert set(error.problems) == {name}
    assert name in str(error)


@pytest.mark.parametrize("name", ["KIS_VTS_APP_KEY", "KIS_VTS_APP_SECRET"])
@pytest.mark.parametrize("pad", [" {}", "{} ", "{}\t", "\n{}"])
@pytest.mark.usefixtures("vts_keys")
def test_whitespace_around_a_key_or_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, pad: str
) -> None:
    value = VTS_KEY if name.endswith("KEY") else VTS_SECRET
    monkeypatch.setenv(name, pad.format(value))

    error = config_error()

    assert set(error.problems) == {name}
    assert "whitespace" in error.problems[name]


def test_several_problems_are_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIS_VTS_APP_SECRET", f" {VTS_SECRET}")
    monkeypatch.setenv("KIS_VTS_BASE_URL", "http://example.com")
    monkeypatch.setenv("QTS_TOKEN_STORE", "postgres://db")
    monkeypatch.setenv("QTS_REFRESH_MARGIN_S", "ten minutes")
    monkeypatch.setenv("QTS_CALL_DEADLINE_S", "0")
    monkeypatch.setenv("KIS_CA_BUNDLE", "/nonexistent/ca.pem")

    error = config_error()

    assert set(error.problems) == {
        "KIS_VTS_APP_KEY",
        "KIS_VTS_APP_SECRET",
        "KIS_VTS_BASE_URL",
        "QTS_TOKEN_STORE",
        "QTS_REFRESH_MARGIN_S",
        "QTS_CALL_DEADLINE_S",
        "KIS_CA_BUNDLE",
    }
    for name in error.problems:
        assert name in str(error)
    assert isinstance(error, QTSError)
    assert error.exit_code == 2


# --- base URLs -------------------------------------------------------------------------------


@pytest.mark.usefixtures("vts_keys", "real_keys")
@pytest.mark.parametrize(
    ("mode", "url"),
    [
        (Mode.VTS, "https://openapivts.koreainvestment.com:29443"),
        (Mode.REAL, "https://openapi.koreainvestment.com:9443"),
    ],
)
def test_default_base_urls_are_the_official_kis_hosts(mode: Mode, url: str) -> None:
    assert load_settings(mode=mode.value).base_url == url
    assert mode.official_base_url == url


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("https://kis-proxy.example.com:8443", "https://kis-proxy.example.com:8443"),
        ("https://kis-proxy.example.com:8443/", "https://kis-proxy.example.com:8443"),
        ("https://kis-proxy.example.com/base//", "https://kis-proxy.example.com/base"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://localhost", "http://localhost"),
        ("http://[::1]:9", "http://[::1]:9"),
        ("  https://openapivts.koreainvestment.com:29443  ", "https://openapivts.koreainvestment.com:29443"),
    ],
)
def test_a_valid_base_url_override_is_accepted_and_normalised(raw: str, parsed: str) -> None:
    assert parse_base_url(raw) == parsed


@pytest.mark.parametrize(
    "raw",
    [
        "http://example.com",
        "http://10.0.0.1:8080",
        "http://localhost.example.com",
        "ftp://openapivts.koreainvestment.com",
        "openapivts.koreainvestment.com:29443",
        "https://",
        "https://example.com/?debug=1",
        "https://example.com/#frag",
        "https://user:pass@example.com",
        "https://example.com:99999",
    ],
)
def test_an_unsafe_or_malformed_base_url_is_refused(raw: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        parse_base_url(raw)


@pytest.mark.usefixtures("vts_keys")
def test_a_base_url_override_is_read_for_the_active_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIS_VTS_BASE_URL", "http://127.0.0.1:8080/")
    monkeypatch.setenv("KIS_REAL_BASE_URL", "http://example.com")  # inactive mode: not checked

    assert load_settings().base_url == "http://127.0.0.1:8080"


@pytest.mark.usefixtures("vts_keys")
def test_a_refused_base_url_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIS_VTS_BASE_URL", "http://example.com")

    error = config_error()

    assert set(error.problems) == {"KIS_VTS_BASE_URL"}
    assert "loopback" in error.problems["KIS_VTS_BASE_URL"]


# --- token store -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "spec"),
    [
        ("memory", TokenStoreSpec(StoreKind.MEMORY)),
        (" MEMORY ", TokenStoreSpec(StoreKind.MEMORY)),
        ("file", TokenStoreSpec(StoreKind.FILE)),
        ("file:/var/lib/qts/tokens.json", TokenStoreSpec(StoreKind.FILE, "/var/lib/qts/tokens.json")),
        ("redis://127.0.0.1:6379/0", TokenStoreSpec(StoreKind.REDIS, "redis://127.0.0.1:6379/0")),
        ("rediss://cache.example:6380/1", TokenStoreSpec(StoreKind.REDIS, "rediss://cache.example:6380/1")),
    ],
)
def test_token_store_specs_parse(raw: str, spec: TokenStoreSpec) -> None:
    assert parse_store_spec(raw) == spec


@pytest.mark.parametrize("raw", ["", "file:", "memcached://x", "disk", "s3://bucket/key", "mem"])
def test_junk_token_store_specs_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="memory, file, file:PATH or redis"):
        parse_store_spec(raw)


@pytest.mark.usefixtures("vts_keys")
def test_token_store_defaults_to_the_file_store_and_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().token_store == TokenStoreSpec(StoreKind.FILE)
    monkeypatch.setenv("QTS_TOKEN_STORE", "file:/tmp/t.json")

    assert load_settings().token_store == TokenStoreSpec(StoreKind.FILE, "/tmp/t.json")  # noqa: S108


@pytest.mark.usefixtures("vts_keys")
def test_junk_token_store_names_qts_token_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QTS_TOKEN_STORE", "junk")

    assert set(config_error().problems) == {"QTS_TOKEN_STORE"}
    with pytest.raises(ConfigError) as raised:
        load_store_spec()
    assert set(raised.value.problems) == {"QTS_TOKEN_STORE"}


def test_load_store_spec_needs_no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QTS_TOKEN_STORE", "file")

    assert load_store_spec() == TokenStoreSpec(StoreKind.FILE)


# --- numbers and files -----------------------------------------------------------------------


@pytest.mark.usefixtures("vts_keys")
def test_refresh_margin_and_call_deadline_have_defaults() -> None:
    settings = load_settings()

    assert settings.refresh_margin == timedelta(seconds=600)
    assert settings.call_deadline_s == 20.0


@pytest.mark.usefixtures("vts_keys")
def test_refresh_margin_and_call_deadline_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QTS_REFRESH_MARGIN_S", "0")
    monkeypatch.setenv("QTS_CALL_DEADLINE_S", "2.5")

    settings = load_settings()

    assert settings.refresh_margin == timedelta(0)
    assert settings.call_deadline_s == 2.5


@pytest.mark.usefixtures("vts_keys")
@pytest.mark.parametrize("raw", ["ten", "", "600s", "-1", "-0.5", "nan", "inf", "43201"])
def test_a_bad_refresh_margin_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("QTS_REFRESH_MARGIN_S", raw)

    assert set(config_error().problems) == {"QTS_REFRESH_MARGIN_S"}


@pytest.mark.usefixtures("vts_keys")
@pytest.mark.parametrize("raw", ["0", "-5", "soon", "nan", "601"])
def test_a_bad_call_deadline_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("QTS_CALL_DEADLINE_S", raw)

    assert set(config_error().problems) == {"QTS_CALL_DEADLINE_S"}


@pytest.mark.usefixtures("vts_keys")
def test_a_missing_ca_bundle_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KIS_CA_BUNDLE", str(tmp_path / "missing.pem"))

    assert set(config_error().problems) == {"KIS_CA_BUNDLE"}


@pytest.mark.usefixtures("vts_keys")
def test_an_existing_ca_bundle_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n", encoding="ascii")
    monkeypatch.setenv("KIS_CA_BUNDLE", str(bundle))

    assert load_settings().ca_bundle == bundle


# --- .env files ------------------------------------------------------------------------------


def test_a_named_env_file_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.env")


def test_a_directory_as_env_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(tmp_path)


def test_an_env_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"KIS_MODE=REAL\nKIS_REAL_APP_KEY={REAL_KEY}\nKIS_REAL_APP_SECRET={REAL_SECRET}\n"
        "QTS_REFRESH_MARGIN_S=900\n",
        encoding="utf-8",
    )

    settings = load_settings(env_file)

    assert settings.mode is Mode.REAL
    assert settings.credentials.app_key == REAL_KEY
    assert settings.credentials.app_secret == REAL_SECRET
    assert settings.refresh_margin == timedelta(seconds=900)


def test_the_process_environment_wins_over_the_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"KIS_VTS_APP_KEY=PSfromTheFile000000000000000000001\nKIS_VTS_APP_SECRET={VTS_SECRET}\n"
        "QTS_CALL_DEADLINE_S=5\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("KIS_VTS_APP_KEY", VTS_KEY)
    monkeypatch.setenv("QTS_CALL_DEADLINE_S", "7")

    settings = load_settings(str(env_file))

    assert settings.credentials.app_key == VTS_KEY
    assert settings.credentials.app_secret == VTS_SECRET
    assert settings.call_deadline_s == 7.0


def test_no_env_file_is_read_unless_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"KIS_VTS_APP_KEY={VTS_KEY}\nKIS_VTS_APP_SECRET={VTS_SECRET}\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)

    assert set(config_error().problems) == {"KIS_VTS_APP_KEY", "KIS_VTS_APP_SECRET"}


# --- secrets stay out of text ----------------------------------------------------------------


@pytest.mark.usefixtures("vts_keys")
def test_settings_repr_shows_neither_the_secret_nor_the_app_key() -> None:
    settings = load_settings()

    for text in (repr(settings), str(settings), repr(settings.credentials), str(settings.credentials)):
        assert VTS_SECRET not in text
        assert VTS_KEY not in text
    assert settings.credentials.fingerprint in repr(settings)


@pytest.mark.parametrize(
    "broken",
    [
        {"KIS_VTS_APP_SECRET": f" {VTS_SECRET}"},
        {"KIS_VTS_APP_SECRET": f"{VTS_SECRET}\u00e9"},
        {"KIS_VTS_APP_KEY": f"{VTS_KEY} "},
        {"KIS_VTS_APP_KEY": f"{VTS_KEY}\u00e9"},
        {"QTS_CALL_DEADLINE_S": "0"},
        {"KIS_MODE": "PAPER"},
    ],
)
def test_a_config_error_never_shows_the_secret_or_the_app_key(
    monkeypatch: pytest.MonkeyPatch, broken: dict[str, str]
) -> None:
    monkeypatch.setenv("KIS_VTS_APP_KEY", VTS_KEY)
    monkeypatch.setenv("KIS_VTS_APP_SECRET", VTS_SECRET)
    for name, value in broken.items():
        monkeypatch.setenv(name, value)

    error = config_error()

    for text in (str(error), repr(error), *error.problems.values()):
        assert VTS_SECRET not in text
        assert VTS_KEY not in text


@pytest.mark.usefixtures("vts_keys")
@pytest.mark.parametrize(("raw", "expected"), [("", None), ("5", 5.0), ("0.5", 0.5), ("20", 20.0)])
def test_qts_max_rps_is_optional_and_read_as_a_rate(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: float
) -> None:
    monkeypatch.setenv("QTS_MAX_RPS", raw)
    assert load_settings().max_rps == expected


@pytest.mark.usefixtures("vts_keys")
@pytest.mark.parametrize("raw", ["0", "-1", "25", "fast", "nan", "inf"])
def test_qts_max_rps_out_of_range_or_not_a_number_is_named(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("QTS_MAX_RPS", raw)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert set(info.value.problems) == {"QTS_MAX_RPS"}


def test_the_committed_env_example_loads_once_keys_are_filled_in(tmp_path: Path) -> None:
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text(encoding="utf-8")
    filled = example.replace("KIS_VTS_APP_KEY=\n", f"KIS_VTS_APP_KEY={'k' * 36}\n").replace(
        "KIS_VTS_APP_SECRET=\n", f"KIS_VTS_APP_SECRET={'s' * 180}\n"
    )
    env_file = tmp_path / ".env"
    env_file.write_text(filled, encoding="utf-8")
    settings = load_settings(env_file)
    assert settings.mode.value == "VTS"
    assert settings.max_rps is None


# --- the WebSocket host and the stream's silence limit ---------------------------------------


@pytest.mark.usefixtures("vts_keys", "real_keys")
@pytest.mark.parametrize(
    ("mode", "url"),
    [(Mode.VTS, "ws://ops.koreainvestment.com:31000"), (Mode.REAL, "ws://ops.koreainvestment.com:21000")],
)
def test_the_mode_picks_the_official_websocket_host(mode: Mode, url: str) -> None:
    settings = load_settings(mode=mode.value)
    assert settings.ws_url is None
    assert settings.stream_url == url == mode.official_ws_url
    assert settings.stream_silence_s == 120.0


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("ws://127.0.0.1:41821", "ws://127.0.0.1:41821"),
        ("ws://localhost:9/", "ws://localhost:9"),
        ("ws://[::1]:9", "ws://[::1]:9"),
        ("ws://OPS.koreainvestment.com:31000", "ws://ops.koreainvestment.com:31000"),
        ("wss://ops.koreainvestment.com:21000/tryitout", "wss://ops.koreainvestment.com:21000/tryitout"),
    ],
)
def test_a_websocket_override_may_name_kis_or_loopback(raw: str, parsed: str) -> None:
    assert parse_ws_url(raw) == parsed


@pytest.mark.parametrize(
    "raw",
    [
        "ws://example.com:31000",
        "ws://ops.koreainvestment.com.evil.example:31000",
        "http://127.0.0.1:8080",
        "ws://user:pw@127.0.0.1:9",
        "ws://127.0.0.1:9?key=1",
        "ws://127.0.0.1:99999",
        "127.0.0.1:9",
    ],
)
def test_any_other_websocket_override_is_refused(raw: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked through load_settings below
        parse_ws_url(raw)


@pytest.mark.usefixtures("vts_keys")
def test_websocket_and_silence_problems_are_named_and_only_the_active_modes_url_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KIS_VTS_WS_URL", "ws://example.com:31000")
    monkeypatch.setenv("KIS_REAL_WS_URL", "not a url")  # REAL is not active: not read
    monkeypatch.setenv("QTS_STREAM_SILENCE_S", "0.5")
    problems = config_error().problems
    assert set(problems) == {"KIS_VTS_WS_URL", "QTS_STREAM_SILENCE_S"}
    assert "loopback" in problems["KIS_VTS_WS_URL"]
    monkeypatch.setenv("KIS_VTS_WS_URL", "ws://127.0.0.1:41821")
    monkeypatch.setenv("QTS_STREAM_SILENCE_S", "30")
    settings = load_settings()
    assert settings.stream_url == "ws://127.0.0.1:41821"
    assert settings.stream_silence_s == 30.0
