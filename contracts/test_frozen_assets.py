"""Gate C item 5: the assets later phases must not change are unchanged.

``contracts/frozen_assets.json`` holds the SHA-256 of ``.env.example``, of every recorded KIS
payload under ``tests/fixtures/kis/`` (each with its source in KIS_API.md) and of the interface
snapshot. A changed or missing asset fails; a new recorded payload is an addition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contracts import freeze


@pytest.fixture(scope="module")
def frozen() -> dict[str, Any]:
    if not freeze.ASSETS_PATH.exists():
        pytest.fail(f"{freeze.ASSETS_PATH.name} is missing: run `python contracts/freeze.py` to create it")
    return freeze.load(freeze.ASSETS_PATH)


def test_every_frozen_asset_is_unchanged(frozen: dict[str, Any]) -> None:
    """Byte for byte: .env.example, the recorded KIS payloads and the interface snapshot."""
    problems = []
    for name, entry in sorted(frozen["assets"].items()):
        path = freeze.ROOT / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        digest = freeze.sha256(path)
        if digest != entry["sha256"]:
            problems.append(
                f"{name}: content changed (sha256 {entry['sha256'][:12]}… recorded, {digest[:12]}… now)"
            )
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        pytest.fail(
            f"frozen Phase 2 assets changed:\n{lines}\n"
            "Restore them from git (`git diff -- <file>` shows what changed). " + freeze.ACCEPT_HINT,
            pytrace=False,
        )


def test_the_gate_c_assets_are_all_frozen(frozen: dict[str, Any]) -> None:
    """.env.example, the interface snapshot and every recorded KIS payload have a digest."""
    names = set(frozen["assets"])
    assert freeze.ENV_EXAMPLE in names
    assert "contracts/interface_snapshot.json" in names
    fixtures = [p.relative_to(freeze.ROOT).as_posix() for p in freeze.fixture_files()]
    assert fixtures, "no recorded KIS payloads found"
    unfrozen = [name for name in fixtures if name not in names]
    if unfrozen:
        pytest.skip(
            f"new recorded payloads not yet frozen ({', '.join(unfrozen)}): "
            "run `python contracts/freeze.py --accept-additions` to record them"
        )


def test_each_recorded_payload_names_its_source_in_kis_api_md(frozen: dict[str, Any]) -> None:
    """Each frozen fixture carries a KIS_API.md section, and SOURCES.md still says the same."""
    listed = freeze.fixture_sources()
    for name, entry in frozen["assets"].items():
        if not name.startswith("tests/fixtures/kis/"):
            continue
        source = entry.get("source", "")
        assert source.startswith("KIS_API.md §"), f"{name}: no KIS_API.md section recorded"
        file_name = name.rsplit("/", 1)[-1]
        assert listed.get(file_name) == source, (
            f"tests/fixtures/kis/SOURCES.md no longer gives {file_name}'s source as {source!r}"
        )


def test_the_snapshot_digest_matches_the_snapshot_freeze_would_write(frozen: dict[str, Any]) -> None:
    """The two files were written together: the snapshot on disk is the one whose digest is frozen."""
    snapshot = freeze.load(freeze.SNAPSHOT_PATH)
    assert (
        freeze.build_assets(snapshot)["assets"]["contracts/interface_snapshot.json"]
        == frozen["assets"]["contracts/interface_snapshot.json"]
    )


def test_a_changed_asset_is_a_break_and_a_new_one_an_addition() -> None:
    old = {"assets": {".env.example": {"sha256": "a" * 64}, "x.json": {"sha256": "b" * 64, "source": "§1"}}}
    new = {"assets": {".env.example": {"sha256": "c" * 64}, "y.json": {"sha256": "d" * 64}}}
    diff = freeze.compare_assets(old, new)
    assert [b.split(":")[0] for b in diff.breaks] == [".env.example", "x.json"]
    assert diff.additions == ["y.json: new asset"]


def test_sources_table_is_parsed(tmp_path: Path) -> None:
    table = tmp_path / "SOURCES.md"
    table.write_text(
        "| file | what | source in KIS_API.md |\n|---|---|---|\n"
        '| `token_success.json` | tokenP success | §2 "Success response" |\n',
        encoding="utf-8",
    )
    assert freeze.fixture_sources(table) == {"token_success.json": 'KIS_API.md §2 "Success response"'}
