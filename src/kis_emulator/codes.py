"""KIS message codes and texts the emulator answers with.

Provenance matters here because clients key off these codes: each entry says whether the text is
observed from KIS (KIS_API.md) or chosen by the emulator where KIS documents nothing.
"""

from __future__ import annotations

from typing import Final

# --- token endpoints (error_code / error_description shape, KIS_API.md §4) -------------------
# Codes are official (KAE table). Texts: EGW00103 and EGW00133 are observed; the rest are
# emulator wording of the KAE meaning.
TOKEN_ERROR_TEXT: Final[dict[str, str]] = {
    "EGW00101": "유효하지 않은 요청입니다.",
    "EGW00102": "AppKey가 누락되었습니다.",
    "EGW00103": "유효하지 않은 AppKey입니다.",
    "EGW00104": "AppSecret이 누락되었습니다.",
    "EGW00105": "유효하지 않은 AppSecret입니다.",
    "EGW00112": "유효하지 않은 grant_type 입니다.",
    "EGW00115": "grant_type이 누락되었습니다.",
    "EGW00121": "유효하지 않은 token 입니다.",
    "EGW00132": "Content-Type이 올바르지 않습니다.",
    "EGW00133": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
}

# --- ordinary calls (rt_cd / msg1 / msg_cd shape, KIS_API.md §5) ------------------------------
EXPIRED_TOKEN: Final = ("EGW00123", "기간이 만료된 token 입니다.")  # official code, observed text
INVALID_TOKEN: Final = ("EGW00121", "유효하지 않은 token 입니다.")  # observed
RATE_LIMITED: Final = ("EGW00201", "초당 거래건수를 초과하였습니다.")  # official code and text
REAL_HOST_VTS_KEY: Final = ("EGW02004", "실전투자 도메인은 모의투자 앱키로 호출하실 수 없습니다.")  # observed
# Mirror image of the observed REAL-host message; KIS has not been seen answering it.
VTS_HOST_REAL_KEY: Final = ("EGW02004", "모의투자 도메인은 실전투자 앱키로 호출하실 수 없습니다.")
NOT_VTS_TR: Final = ("EGW00213", "모의투자 TR 이 아닙니다.")  # observed on VTS with TTTC8434R
NOT_REAL_TR: Final = ("EGW00213", "실전투자 TR 이 아닙니다.")  # emulator mirror of the VTS text
# Emulator-chosen: a tr_id that belongs to no API at this path.
UNKNOWN_TR: Final = ("EGW00213", "유효하지 않은 TR ID 입니다.")
# Emulator-chosen: path or method the emulator does not serve.
UNKNOWN_PATH: Final = ("EGW00101", "유효하지 않은 요청입니다. (지원하지 않는 API 경로)")
BAD_METHOD: Final = ("EGW00101", "유효하지 않은 요청입니다. (지원하지 않는 메소드)")

# Success codes and texts (SPEC examples, KIS_API.md §10).
QUOTE_OK: Final = ("MCA00000", "정상처리 되었습니다!")
BALANCE_OK: Final = ("KIOK0510", "조회가 완료되었습니다")

# Emulator-chosen, not from KIS docs: KIS's real texts for these business errors are unknown.
NO_SUCH_STOCK: Final = ("OPSQ0002", "없는 종목코드입니다.")
BAD_MARKET_CODE: Final = ("OPSQ2001", "ERROR : INPUT_FIELD_NAME FID_COND_MRKT_DIV_CODE")


def missing_input(field_name: str) -> tuple[str, str]:
    """Emulator-chosen error for a missing or malformed query field, e.g. ``CANO``."""
    return ("OPSQ2001", f"ERROR : INPUT_FIELD_NAME {field_name}")


# Emulator-only: every order is refused (Phase 2 must never place one).
ORDER_REFUSED: Final = ("EMU00001", "emulator refuses all orders (Phase 2 sends none)")

REVOKE_OK_MESSAGE: Final = "접근토큰 폐기에 성공하였습니다"  # official (SPEC)
