"""Every relative link in README.md and docs/*.md resolves to a file in this repository.

External links (http, https, mailto) are not fetched; ``#anchors`` are allowed and not checked.
Links inside fenced or inline code are not links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
REQUIRED = ("README.md", "docs/architecture.md", "docs/gate-c.md")

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def links(text: str) -> list[str]:
    """Link targets in markdown ``text``, code excluded."""
    text = _INLINE_CODE.sub("", _FENCE.sub("", text))
    return _INLINE_LINK.findall(text) + _REFERENCE.findall(text)


def broken_links(document: Path) -> list[str]:
    broken = []
    for target in links(document.read_text(encoding="utf-8")):
        if _EXTERNAL.match(target) or target.startswith("#"):
            continue
        path_part = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (document.parent / path_part).resolve()
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target} (points outside the repository)")
        elif not resolved.exists():
            broken.append(target)
    return broken


@pytest.mark.parametrize("name", REQUIRED)
def test_required_documents_exist(name: str) -> None:
    assert (ROOT / name).is_file(), f"{name} is missing"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(document: Path) -> None:
    broken = broken_links(document)
    assert broken == [], f"{document.relative_to(ROOT)} links to files that do not exist: {', '.join(broken)}"


def test_link_extraction() -> None:
    text = (
        'See [a](docs/a.md#top), ![img](img.png "title"), [web](https://x.org) and `[not](a link)`.\n'
        "```\n[also not](inside/a/fence.md)\n```\n[ref]: ../b.md\n"
    )
    assert links(text) == ["docs/a.md#top", "img.png", "https://x.org", "../b.md"]
