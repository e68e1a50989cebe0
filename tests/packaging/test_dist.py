"""Packaging like a library people install: the built wheel and sdist, the metadata, README, the
API reference and the Python versions claimed.

The sdist and wheel are built once per session with ``python -m build`` (isolated, from the
local package index) into a temporary folder; that takes a few seconds, hence ``slow``.
"""

from __future__ import annotations

import email
import email.message
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
_PYTHON = "Programming Language :: Python :: "

# What the sdist may hold at its top level, and what it must hold.
SDIST_TOP = {
    ".env.example",
    "CHANGELOG.md",
    "LICENSE",
    "MANIFEST.in",
    "PKG-INFO",
    "README.md",
    "benchmarks",
    "conftest.py",
    "contracts",
    "docs",
    "pyproject.toml",
    "setup.cfg",
    "src",
    "tests",
    "tox.ini",
}
SDIST_REQUIRED = [
    ".env.example",
    "tox.ini",
    "LICENSE",
    "CHANGELOG.md",
    "README.md",
    "conftest.py",
    "docs/cli.md",
    "docs/architecture.md",
    "docs/build_api.py",
    "tests/runtime/cli/conftest.py",
    "tests/runtime/cli/test_docs.py",
    "contracts/interface_snapshot.json",
    "src/runtime/cli/env.template",
    "src/runtime/py.typed",
]
STRAY = re.compile(
    r"(^|/)(__pycache__|\.git|\.venv|\.ci|\.ci-venv[^/]*|\.tox|\.mypy_cache|\.hypothesis|docs/api)(/|$)|\.pyc$|(^|/)\.env$"
)


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def sdist_names(dist: Path) -> list[str]:
    (archive,) = dist.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        return [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]


def wheel_names(dist: Path) -> list[str]:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def wheel_metadata(dist: Path) -> email.message.Message:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


@pytest.mark.slow
def test_the_sdist_carries_docs_tests_env_example_and_tox_ini_and_nothing_stray(dist: Path) -> None:
    names = sdist_names(dist)

    for required in SDIST_REQUIRED:
        assert required in names, f"{required} is missing from the sdist"
    assert {name.split("/", 1)[0] for name in names} <= SDIST_TOP
    assert [name for name in names if STRAY.search(name)] == []
    tracked_tests = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("*.py")}
    tracked_tests = {n for n in tracked_tests if "__pycache__" not in n}
    assert tracked_tests <= set(names), "some tests are not shipped"


@pytest.mark.slow
def test_the_wheel_carries_the_env_template_license_and_typing_marker(dist: Path) -> None:
    names = wheel_names(dist)

    assert "runtime/cli/env.template" in names
    assert "runtime/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {n.split("/", 1)[0] for n in names} <= {
        "runtime",
        "kis_emulator",
        *(n.split("/", 1)[0] for n in names if ".dist-info" in n),
    }
    assert not [n for n in names if STRAY.search(n)]


@pytest.mark.slow
def test_the_wheel_metadata_has_license_urls_classifiers_and_requires_python(dist: Path) -> None:
    meta = wheel_metadata(dist)

    assert meta["License-Expression"] == "MIT"
    assert meta["License-File"] == "LICENSE"
    assert meta["Requires-Python"] == ">=3.11"
    urls = dict(value.split(", ", 1) for value in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Repository", "Documentation", "Issues", "Changelog"} <= set(urls)
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Typing :: Typed" in classifiers
    assert meta["Version"] == PROJECT["version"]


def test_the_license_file_matches_the_metadata() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")

    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text


def test_the_env_template_in_the_package_is_the_env_example() -> None:
    shipped = (ROOT / "src" / "runtime" / "cli" / "env.template").read_text(encoding="utf-8")

    assert shipped == (ROOT / ".env.example").read_text(encoding="utf-8")


def test_the_changelog_covers_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")

    assert f"## [{PROJECT['version']}]" in text
    assert "## [Unreleased]" in text


def test_readme_says_the_python_and_the_virtual_environment() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")

    assert "Python ≥ 3.11, in a virtual environment" in text
    assert "python -m pip install . && qts demo" in text
    assert "python -m pip install -e '.[test]' && python -m pytest" in text


def test_readme_links_work_on_a_package_index_page() -> None:
    """No relative link (a package index shows README without the repository's files); links
    into the repository use the project URL of pyproject.toml and name a file that exists."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"\]\(\s*<?([^)\s>]+)", text)
    repository = PROJECT["urls"]["Repository"]

    assert targets
    for target in targets:
        assert re.match(r"https?://", target), f"README link {target!r} is relative"
        if target.startswith(repository):
            path = target.removeprefix(f"{repository}/blob/main/").split("#", 1)[0]
            assert (ROOT / path).exists(), f"README links to {path}, which does not exist"
    assert PROJECT["urls"]["Homepage"] == repository
    assert PROJECT["urls"]["Changelog"].startswith(repository)


def claimed_pythons() -> list[str]:
    return [
        c.removeprefix(_PYTHON)
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"3\.\d+", c.removeprefix(_PYTHON))
    ]


def test_every_claimed_python_is_run_by_ci_and_tox() -> None:
    """The metadata claims only what CI tests: .ci/run reads the classifiers, tox lists each."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    tox = (ROOT / "tox.ini").read_text(encoding="utf-8")
    env_list = re.search(r"^env_list\s*=\s*(.*)$", tox, re.MULTILINE)

    assert "Programming Language :: Python :: " in ci, ".ci/run must take the versions from the classifiers"
    assert env_list
    for version in claimed_pythons():
        assert f"py{version.replace('.', '')}" in env_list.group(1)
    minimum = PROJECT["requires-python"].removeprefix(">=")
    assert min(claimed_pythons(), key=lambda v: tuple(map(int, v.split(".")))) == minimum


def test_every_claimed_python_can_be_found_here() -> None:
    """A claimed version CI cannot find would fail CI: it must be installed on this machine."""
    finder = re.search(
        r"^find_python\(\) \{.*?^\}", (ROOT / ".ci" / "run").read_text(encoding="utf-8"), re.M | re.S
    )
    assert finder
    for version in claimed_pythons():
        done = subprocess.run(  # noqa: S603 - bash with the function from .ci/run
            ["bash", "-c", f"{finder.group(0)}\nfind_python {version}"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"Python {version} is claimed but not installed here"
