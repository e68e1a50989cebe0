"""``qts init``: write a commented ``.env`` (mode 0600) from the template shipped in the package."""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

from runtime.cli.output import Output
from runtime.errors import ConfigError

__all__ = ["env_template", "init"]


def env_template() -> str:
    """The commented ``.env`` template (the same text as the repository's ``.env.example``)."""
    return resources.files("runtime.cli").joinpath("env.template").read_text(encoding="utf-8")


def init(args: argparse.Namespace, out: Output) -> int:
    """``qts init [--env-file PATH] [--mode VTS|REAL] [--force]``: refuses to overwrite unless ``--force``."""
    path = Path(getattr(args, "env_file", None) or ".env")
    text = env_template()
    mode = str(getattr(args, "mode", None) or "VTS").upper()
    if mode != "VTS":
        text = text.replace("\nKIS_MODE=VTS\n", f"\nKIS_MODE={mode}\n", 1)
        out.real_marker(machine_stdout=False)
    if path.exists() and not args.force:
        refused = ConfigError(f"{str(path)!r} already exists; nothing was written")
        refused.hint = "Edit that file, or run `qts init --force` to replace it with a fresh template."
        raise refused
    _write_private(path, text)
    out.line(f"wrote    {path} (mode 0600)")
    out.line(f"next     fill in KIS_{mode}_APP_KEY and KIS_{mode}_APP_SECRET, then run `qts doctor`")
    out.data({"path": str(path), "mode": mode, "file_mode": "0600"})
    return 0


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` so that no other user can ever read it, not even for a moment."""
    temporary = path.with_name(f".{path.name}.qts-init-{os.getpid()}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o600)  # the umask may have taken bits away, never added: make it exact
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror or type(exc).__name__}") from None
