"""No function in src/runtime is longer than about 40 lines (STYLE.md), counted with ast.

A function's length is the lines from its ``def`` to its last line, without its docstring
(documentation is not logic). Run this file as a script to see the longest ones:
``python tests/runtime/test_function_length.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "src" / "runtime"
MAX_LINES = 45


def function_lengths(root: Path = RUNTIME) -> list[tuple[int, str]]:
    """(length, "path:line name") for every function and method under ``root``, longest first."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.end_lineno is None:
                continue
            length = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if _is_docstring(first) and first.end_lineno is not None:
                length -= first.end_lineno - first.lineno + 1
            found.append((length, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def test_the_measure_counts_a_function_without_its_docstring(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text('def f():\n    """Doc\n    string."""\n    a = 1\n    return a\n')
    assert function_lengths(tmp_path) == [(3, f"{tmp_path.name}/m.py:1 f")]


def test_no_runtime_function_is_longer_than_the_limit() -> None:
    too_long = [entry for entry in function_lengths() if entry[0] > MAX_LINES]
    assert too_long == [], f"functions over {MAX_LINES} lines: {too_long}"


if __name__ == "__main__":
    for length, where in function_lengths()[:10]:
        print(f"{length:4d}  {where}")
