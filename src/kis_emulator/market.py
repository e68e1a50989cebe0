"""Deterministic market data: quotes for ``inquire-price`` and the ``inquire-balance`` rows.

Everything derives from a SHA-256 of the stock code, so a given code has the same prices on every
run and machine, and the prices obey the KRX rules a client may check: tick sizes, the +/-30 %
daily limits around the previous close, low <= open, current <= high, and a sign code consistent
with the change. All values leave here as strings, as KIS sends them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from .config import Holding

_CODE = re.compile(r"(?:Q\d{6}|\d{6})")
MARKET_CODES: Final = frozenset({"J", "NX", "UN", "W"})

# A few real stocks with plausible price levels, so demo output reads naturally; any other valid
# code gets a generated name and a hash-derived price level.
_KNOWN: Final[dict[str, tuple[str, int]]] = {
    "005930": ("삼성전자", 71_000),
    "000660": ("SK하이닉스", 128_500),
    "035420": ("NAVER", 201_000),
    "005380": ("현대차", 186_500),
    "035720": ("카카오", 47_300),
    "051910": ("LG화학", 370_000),
    "068270": ("셀트리온", 178_000),
    "207940": ("삼성바이오로직스", 780_000),
}


def is_valid_code(code: str) -> bool:
    """Whether ``code`` is a listed code here: 6 digits or Q + 6 digits, and not all zeros."""
    return _CODE.fullmatch(code) is not None and code.lstrip("Q") != "000000"


def stock_name(code: str) -> str:
    """Korean name of ``code`` (generated for codes outside the small table)."""
    known = _KNOWN.get(code)
    return known[0] if known else f"에뮬종목{code}"


def tick_size(price: float) -> int:
    """KRX tick size (호가단위) for a price level, rules in force since 2023."""
    for bound, tick in ((2_000, 1), (5_000, 5), (20_000, 10), (50_000, 50), (200_000, 100), (500_000, 500)):
        if price < bound:
            return tick
    return 1_000


def round_tick(price: float) -> int:
    """Nearest valid price to ``price``."""
    tick = tick_size(price)
    return max(tick, round(price / tick) * tick)


def floor_tick(price: float) -> int:
    """Highest valid price not above ``price``."""
    tick = tick_size(price)
    return int(price // tick) * tick


def ceil_tick(price: float) -> int:
    """Lowest valid price not below ``price``."""
    tick = tick_size(price)
    return -int(-price // tick) * tick


class _Draws:
    """Successive uniform numbers in [0, 1) from a code's SHA-256 stream."""

    def __init__(self, code: str) -> None:
        self._seed = code.encode("utf-8")
        self._counter = 0

    def next(self) -> float:
        digest = hashlib.sha256(self._seed + self._counter.to_bytes(4, "big")).digest()
        self._counter += 1
        return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Quote:
    """One stock's prices for the (frozen) emulated trading day; integers in KRW."""

    code: str
    base: int  # 기준가 / previous close (stck_sdpr)
    current: int
    open: int
    high: int
    low: int
    upper_limit: int
    lower_limit: int
    volume: int
    listed_shares: int
    eps: int
    bps: int
    market_name: str

    @property
    def change(self) -> int:
        """전일 대비 (prdy_vrss)."""
        return self.current - self.base

    @property
    def sign(self) -> str:
        """prdy_vrss_sign: 1 상한, 2 상승, 3 보합, 4 하한, 5 하락."""
        if self.current >= self.upper_limit:
            return "1"
        if self.current <= self.lower_limit:
            return "4"
        if self.change > 0:
            return "2"
        if self.change < 0:
            return "5"
        return "3"

    @property
    def change_rate(self) -> str:
        """전일 대비율 (prdy_ctrt) with two decimals."""
        return f"{self.change / self.base * 100:.2f}"

    def output(self) -> dict[str, str]:
        """The ``output`` object of ``inquire-price``: string values, KIS field names."""
        traded_value = self.volume * (self.high + self.low) // 2
        return {
            "iscd_stat_cls_code": "55",
            "marg_rate": "20.00",
            "rprs_mrkt_kor_name": self.market_name,
            "bstp_kor_isnm": "전기·전자",
            "temp_stop_yn": "N",
            "oprc_rang_cont_yn": "N",
            "clpr_rang_cont_yn": "N",
            "crdt_able_yn": "Y",
            "elw_pblc_yn": "N",
            "stck_prpr": str(self.current),
            "prdy_vrss": str(self.change),
            "prdy_vrss_sign": self.sign,
            "prdy_ctrt": self.change_rate,
            "acml_tr_pbmn": str(traded_value),
            "acml_vol": str(self.volume),
            "prdy_vrss_vol_rate": "100.00",
            "stck_oprc": str(self.open),
            "stck_hgpr": str(self.high),
            "stck_lwpr": str(self.low),
            "stck_mxpr": str(self.upper_limit),
            "stck_llam": str(self.lower_limit),
            "stck_sdpr": str(self.base),
            "wghn_avrg_stck_prc": f"{traded_value / self.volume:.2f}",
            "hts_frgn_ehrt": "31.25",
            "frgn_ntby_qty": "0",
            "pgtr_ntby_qty": "0",
            "aspr_unit": str(tick_size(self.current)),
            "hts_deal_qty_unit_val": "1",
            "lstn_stcn": str(self.listed_shares),
            "hts_avls": str(self.current * self.listed_shares // 100_000_000),  # 시가총액, 억원
            "per": f"{self.current / self.eps:.2f}",
            "pbr": f"{self.current / self.bps:.2f}",
            "eps": f"{self.eps:.2f}",
            "bps": f"{self.bps:.2f}",
            "stac_month": "12",
            "vol_tnrt": f"{self.volume / self.listed_shares * 100:.2f}",
            "w52_hgpr": str(self.upper_limit),
            "w52_lwpr": str(self.lower_limit),
            "stck_shrn_iscd": self.code,
            "stck_fcam": "100",
        }


@lru_cache(maxsize=4096)
def quote_for(code: str) -> Quote:
    """The deterministic quote of a valid ``code`` (see ``is_valid_code``)."""
    draws = _Draws(code)
    level = 1_000 * 900 ** draws.next()  # log-uniform, 1,000 .. 900,000 KRW
    known = _KNOWN.get(code)
    base = round_tick(known[1] if known else level)
    upper = floor_tick(base * 1.3)
    lower = ceil_tick(base * 0.7)

    def clamp(price: int) -> int:
        return min(upper, max(lower, price))

    current = clamp(round_tick(base * (1 + (draws.next() * 2 - 1) * 0.08)))
    opening = clamp(round_tick(base * (1 + (draws.next() * 2 - 1) * 0.03)))
    high = clamp(ceil_tick(max(current, opening) + tick_size(base) * int(draws.next() * 20)))
    low = clamp(floor_tick(min(current, opening) - tick_size(base) * int(draws.next() * 20)))
    eps = max(1, int(base * (0.02 + 0.15 * draws.next())))
    bps = max(1, int(base * (0.4 + 1.2 * draws.next())))
    market = "KOSPI200" if known else ("KOSPI" if draws.next() < 0.5 else "KOSDAQ")
    return Quote(
        code=code,
        base=base,
        current=current,
        open=opening,
        high=high,
        low=low,
        upper_limit=upper,
        lower_limit=lower,
        volume=10_000 + int(draws.next() * 5_000_000),
        listed_shares=10_000_000 + int(draws.next() * 990_000_000),
        eps=eps,
        bps=bps,
        market_name=market,
    )


def holding_row(holding: Holding) -> dict[str, str]:
    """One ``output1`` row of ``inquire-balance``, priced with the quote model."""
    quote = quote_for(holding.pdno) if is_valid_code(holding.pdno) else None
    price = quote.current if quote else round_tick(holding.pchs_avg_pric)
    bought = int(holding.hldg_qty * holding.pchs_avg_pric)
    value = holding.hldg_qty * price
    profit = value - bought
    rate = profit / bought * 100 if bought else 0.0
    return {
        "pdno": holding.pdno,
        "prdt_name": holding.prdt_name,
        "trad_dvsn_name": "현금",
        "bfdy_buy_qty": "0",
        "bfdy_sll_qty": "0",
        "thdt_buyqty": "0",
        "thdt_sll_qty": "0",
        "hldg_qty": str(holding.hldg_qty),
        "ord_psbl_qty": str(holding.hldg_qty),
        "pchs_avg_pric": f"{holding.pchs_avg_pric:.4f}",
        "pchs_amt": str(bought),
        "prpr": str(price),
        "evlu_amt": str(value),
        "evlu_pfls_amt": str(profit),
        "evlu_pfls_rt": f"{rate:.2f}",
        "evlu_erng_rt": f"{rate:.8f}",
        "loan_dt": "",
        "loan_amt": "0",
        "stln_slng_chgs": "0",
        "expd_dt": "",
        "fltt_rt": quote.change_rate if quote else "0.00",
        "bfdy_cprs_icdc": str(quote.change) if quote else "0",
        "item_mgna_rt_name": "",
        "grta_rt_name": "",
        "sbst_pric": "0",
        "stck_loan_unpr": "0.0000",
    }


def balance_summary(rows: Sequence[dict[str, str]], cash: int) -> dict[str, str]:
    """The single ``output2`` summary over all holdings (not just the current page)."""
    bought = sum(int(row["pchs_amt"]) for row in rows)
    value = sum(int(row["evlu_amt"]) for row in rows)
    total = cash + value
    return {
        "dnca_tot_amt": str(cash),
        "nxdy_excc_amt": str(cash),
        "prvs_rcdl_excc_amt": str(cash),
        "cma_evlu_amt": "0",
        "bfdy_buy_amt": "0",
        "thdt_buy_amt": "0",
        "nxdy_auto_rdpt_amt": "0",
        "bfdy_sll_amt": "0",
        "thdt_sll_amt": "0",
        "d2_auto_rdpt_amt": "0",
        "bfdy_tlex_amt": "0",
        "thdt_tlex_amt": "0",
        "tot_loan_amt": "0",
        "scts_evlu_amt": str(value),
        "tot_evlu_amt": str(total),
        "nass_amt": str(total),
        "fncg_gld_auto_rdpt_yn": "",
        "pchs_amt_smtl_amt": str(bought),
        "evlu_amt_smtl_amt": str(value),
        "evlu_pfls_smtl_amt": str(value - bought),
        "tot_stln_slng_chgs": "0",
        "bfdy_tot_asst_evlu_amt": str(total),
        "asst_icdc_amt": "0",
        "asst_icdc_erng_rt": "0.00000000",
    }


def continuation_key(cano: str, prdt: str, offset: int) -> str:
    """Opaque ``ctx_area_nk100`` value that resumes paging at ``offset``."""
    return f"{cano}^{prdt}^{offset}"


def parse_continuation_key(key: str, cano: str, prdt: str) -> int | None:
    """The offset encoded in ``key`` for this account, or None when it is not ours."""
    parts = key.strip().split("^")
    if len(parts) != 3 or parts[0] != cano or parts[1] != prdt or not parts[2].isdigit():
        return None
    return int(parts[2])
