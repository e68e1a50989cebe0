"""Start-up: wall time of ``python -c "import runtime"`` and ``qts --help``, and what they import.

Each command runs as a fresh child process, interleaved with ``python -c pass`` (the bare
interpreter, including whatever this machine's site-packages ``.pth`` files import) so the
figure the package is responsible for can be read off in the same run. ``qts`` is the console
script next to the interpreter (not a pyenv/shell shim); without one, ``python -m runtime.cli``.

A second child lists the modules each command imports beyond the bare interpreter; none of
the heavy or unrelated ones (urllib3, attrs, cattrs, environs, json, logging, datetime, ...)
may appear.

Targets: median <= 60 ms for ``import runtime``, <= 150 ms for ``qts --help``; 0 unneeded
modules imported by either.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from _common import REPO, Measured, compile_package, distribution, ns_to_ms, perf_ns, run_script, target

IMPORT_TARGET_MS = 60.0
HELP_TARGET_MS = 150.0

# Modules neither command needs; their presence means an eager import crept in.
UNNEEDED = (
    "attrs",
    "cattrs",
    "environs",
    "urllib3",
    "ssl",
    "http",
    "email",
    "json",
    "logging",
    "datetime",
    "zoneinfo",
    "traceback",
    "runtime.auth",
    "runtime.broker",
    "runtime.bootstrap",
    "runtime.config",
    "runtime.settings",
    "runtime.cli.commands",
    "runtime.cli.output",
)

_LIST_IMPORTS = """
import contextlib, io, json, sys
before = set(sys.modules)
if sys.argv[1] == "import":
    import runtime
else:
    from runtime.cli import main
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(["--help"])
        except SystemExit:
            pass
new = sorted(set(sys.modules) - before)
sys.__stdout__.write(json.dumps(new))
"""


def _qts_command() -> list[str]:
    script = Path(sys.executable).parent / "qts"
    if script.is_file():
        return [str(script), "--help"]
    return [sys.executable, "-m", "runtime.cli", "--help"]


def _time_ns(cmd: list[str]) -> int:
    # wait() without a timeout blocks in waitpid; with one, CPython polls with sleeps of up to
    # 50 ms, which would quantise the figure. A timer kills a child that hangs instead.
    t0 = perf_ns()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    watchdog = threading.Timer(60, child.kill)
    watchdog.start()
    try:
        code = child.wait()
    finally:
        watchdog.cancel()
    elapsed = perf_ns() - t0
    if code != 0:
        raise RuntimeError(f"{cmd!r} exited {code}")
    return elapsed


def _unneeded_imports(kind: str) -> list[str]:
    out = subprocess.run(  # noqa: S603 - our interpreter, our snippet
        [sys.executable, "-c", _LIST_IMPORTS, kind], check=True, capture_output=True, text=True, timeout=60
    )
    modules: list[str] = json.loads(out.stdout)
    return [m for m in modules if any(m == u or m.startswith(u + ".") for u in UNNEEDED)]


def run(quick: bool) -> Measured:
    compile_package()  # timed children start as an installed copy would
    runs = 5 if quick else 30
    src = str(REPO / "src")
    commands = {
        "bare_python": [sys.executable, "-c", "pass"],
        "import_runtime": [sys.executable, "-c", "import runtime"],
        "qts_help": _qts_command(),
        # Without site (-S): no site-packages .pth files, whatever this machine installed there.
        "bare_python_no_site": [sys.executable, "-S", "-c", "pass"],
        "import_runtime_no_site": [
            sys.executable,
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {src!r}); import runtime",
        ],
    }
    samples: dict[str, list[int]] = {name: [] for name in commands}
    for cmd in commands.values():
        _time_ns(cmd)  # warm the OS file cache
    for _ in range(runs):
        for name, cmd in commands.items():
            samples[name].append(_time_ns(cmd))
    figures: dict[str, object] = {f"{name}_ms": distribution(ns_to_ms(s)) for name, s in samples.items()}
    bare = distribution(ns_to_ms(samples["bare_python"]))["median"]
    imp = distribution(ns_to_ms(samples["import_runtime"]))["median"]
    hlp = distribution(ns_to_ms(samples["qts_help"]))["median"]
    figures["import_runtime_over_bare_ms"] = round(imp - bare, 3)
    figures["qts_help_over_bare_ms"] = round(hlp - bare, 3)
    figures["qts_command"] = " ".join(
        Path(c).name if i == 0 else c for i, c in enumerate(commands["qts_help"])
    )
    unneeded_import = _unneeded_imports("import")
    unneeded_help = _unneeded_imports("help")
    figures["unneeded_modules"] = {"import_runtime": unneeded_import, "qts_help": unneeded_help}
    targets = {
        "import_runtime_median": target(f"median <= {IMPORT_TARGET_MS} ms", imp, imp <= IMPORT_TARGET_MS),
        "qts_help_median": target(f"median <= {HELP_TARGET_MS} ms", hlp, hlp <= HELP_TARGET_MS),
        "lazy_imports": target(
            "0 unneeded modules imported by `import runtime` and `qts --help`",
            len(unneeded_import) + len(unneeded_help),
            not unneeded_import and not unneeded_help,
        ),
    }
    return Measured(
        figures,
        targets,
        notes=[
            "Wall time of a fresh child process each; bare_python is the interpreter alone in the same "
            "run, so *_over_bare_ms is the package's own share.",
            "*_no_site: the same with python -S (no site-packages .pth files), to separate the interpreter's "
            "and this machine's site start-up from the package's.",
        ],
    )


if __name__ == "__main__":
    sys.exit(run_script(__file__, __doc__, run))
