"""The one helper that decides how secrets look when they must be shown at all.

Tokens and keys are shown as their first and last four characters with the length, so a
person can tell two tokens apart without being able to use either. Secrets are never shown.
"""

from __future__ import annotations

import hashlib

__all__ = ["fingerprint", "mask"]

_SHOWN = 4
# Below this length the ends would reveal too large a share of the value.
_MIN_LENGTH_TO_SHOW_ENDS = 24


def mask(value: str) -> str:
    """Return a display form of ``value`` that cannot be used in its place."""
    if len(value) < _MIN_LENGTH_TO_SHOW_ENDS:
        return f"****({len(value)} chars)"
    return f"{value[:_SHOWN]}…{value[-_SHOWN:]}({len(value)} chars)"


def fingerprint(app_key: str) -> str:
    """A stable, non-reversible 12-hex-digit name for an app key (salted so it is ours alone)."""
    return hashlib.sha256(b"qts-runtime/app-key/" + app_key.encode("utf-8")).hexdigest()[:12]
