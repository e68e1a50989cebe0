"""The API reference (docs/build_api.py, pdoc) covers every public name and the error tree."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import runtime.errors as errors

ROOT = Path(__file__).resolve().parents[2]


def public_modules() -> list[str]:
    """docs/build_api.py's list of the modules it documents (that script is not a package)."""
    spec = importlib.util.spec_from_file_location("build_api", ROOT / "docs" / "build_api.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = module.public_modules()
    assert isinstance(names, list)
    return [str(name) for name in names]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api") / "api"
    done = subprocess.run(  # noqa: S603 - this interpreter and the repository's script
        [sys.executable, str(ROOT / "docs" / "build_api.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def page(api: Path, module: str) -> str:
    return (api / (module.replace(".", "/") + ".html")).read_text(encoding="utf-8")


@pytest.mark.slow
def test_every_public_name_of_every_module_has_its_entry(api: Path) -> None:
    missing = []
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        html = page(api, module_name)
        for name in getattr(module, "__all__", []):
            if getattr(module, name, None) is None or isinstance(getattr(module, name), type(errors)):
                continue  # a submodule re-exported by name has its own page
            if f'id="{name}"' not in html:
                missing.append(f"{module_name}.{name}")
    assert missing == []


@pytest.mark.slow
def test_the_error_tree_shows_each_errors_exit_code_and_retryable(api: Path) -> None:
    html = page(api, "runtime.errors")
    text = re.sub(r"<[^>]+>", "", html)

    for name in errors.__all__:
        cls = getattr(errors, name)
        row = re.search(rf"\b{name}\s+{cls.__mro__[1].__name__}\s+(\d+)\s+(yes|no)", text)
        assert row, f"{name} has no row in the error table"
        assert int(row.group(1)) == cls.exit_code
        assert (row.group(2) == "yes") is cls.retryable
    assert "Exit code" in text
