"""Phase 2 scope (seed §4.2, §7.2): no strategy, execution, risk or ops automation in the runtime.

Those are Phase 3+ responsibilities. They may live beside the runtime later and depend on it,
but never inside ``src/runtime`` and never imported by it. ``lint-imports`` checks the imports
too; this test also catches a folder or module that nothing imports yet.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import runtime

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "runtime"
FORBIDDEN_FOLDERS = ("strategy", "execution", "risk", "ops/automation")
FORBIDDEN_NAMES = ("strategy", "execution", "risk")


def _is_forbidden(dotted: str) -> bool:
    parts = dotted.split(".")
    return any(part in FORBIDDEN_NAMES for part in parts) or any(
        parts[i : i + 2] == ["ops", "automation"] for i in range(len(parts) - 1)
    )


def test_the_package_under_test_is_this_checkout() -> None:
    assert Path(runtime.__file__).resolve().parent == PACKAGE


@pytest.mark.parametrize("folder", FORBIDDEN_FOLDERS)
def test_phase_3_folders_do_not_exist(folder: str) -> None:
    path = PACKAGE / folder
    assert not path.exists(), f"src/runtime/{folder} exists: that is Phase 3+ work (seed §7.2)"
    assert not path.with_suffix(".py").exists(), f"src/runtime/{folder}.py exists (seed §7.2)"


def test_no_module_under_runtime_is_named_after_them() -> None:
    modules = [info.name for info in pkgutil.walk_packages(runtime.__path__, "runtime.")]
    assert "runtime.broker.kis.adapter" in modules  # the walk really saw the package
    assert [name for name in modules if _is_forbidden(name)] == []


def test_no_file_or_folder_under_src_runtime_is_named_after_them() -> None:
    names = [p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".") for p in PACKAGE.rglob("*")]
    assert [name for name in names if "__pycache__" not in name and _is_forbidden(name)] == []


def test_no_runtime_module_imports_them() -> None:
    """Every import statement in src/runtime, TYPE_CHECKING ones and function-local ones included."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {t}" for t in targets if _is_forbidden(t)]
    assert offenders == []


@pytest.mark.parametrize(
    ("name", "forbidden"),
    [
        ("runtime.strategy", True),
        ("runtime.ops.automation.jobs", True),
        ("execution", True),
        ("runtime.risk", True),
        ("runtime.ops", False),
        ("runtime.auth.freshness", False),
        ("kis_emulator.ratelimit", False),
    ],
)
def test_the_guard_recognises_the_names(name: str, forbidden: bool) -> None:
    assert _is_forbidden(name) is forbidden
