"""Properties of the deterministic quote model behind inquire-price and inquire-balance."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kis_emulator.config import Holding, synthetic_holdings
from kis_emulator.market import (
    balance_summary,
    holding_row,
    is_valid_code,
    quote_for,
    tick_size,
)

codes = st.builds(lambda etn, n: f"{'Q' if etn else ''}{n:06d}", st.booleans(), st.integers(1, 999_999))


@given(codes)
def test_quote_prices_are_consistent(code: str) -> None:
    quote = quote_for.__wrapped__(code)  # bypass the cache: exercise the computation itself
    assert quote.lower_limit <= quote.low <= min(quote.open, quote.current)
    assert max(quote.open, quote.current) <= quote.high <= quote.upper_limit
    assert quote.upper_limit <= quote.base * 1.3
    assert quote.lower_limit >= quote.base * 0.7
    for price in (quote.current, quote.open, quote.high, quote.low, quote.upper_limit, quote.lower_limit):
        assert price % tick_size(price) == 0
    change = quote.current - quote.base
    sign = {True: "2", False: "5"}[change > 0] if change else "3"
    if quote.current >= quote.upper_limit:
        sign = "1"
    elif quote.current <= quote.lower_limit:
        sign = "4"
    output = quote.output()
    assert output["prdy_vrss_sign"] == sign
    assert int(output["prdy_vrss"]) == change
    assert all(isinstance(value, str) for value in output.values())


@given(codes)
def test_quote_is_deterministic(code: str) -> None:
    assert quote_for.__wrapped__(code) == quote_for.__wrapped__(code)


@given(st.text(max_size=8))
def test_only_six_digit_codes_are_valid(text: str) -> None:
    expected = (
        len(text.removeprefix("Q")) == 6
        and text.removeprefix("Q").isascii()
        and text.removeprefix("Q").isdigit()
        and text.removeprefix("Q") != "000000"
        and (len(text) == 6 or text.startswith("Q"))
    )
    assert is_valid_code(text) == expected


def test_holding_rows_and_summary_add_up() -> None:
    rows = [holding_row(h) for h in synthetic_holdings(7)]
    for row in rows:
        assert int(row["evlu_pfls_amt"]) == int(row["evlu_amt"]) - int(row["pchs_amt"])
    summary = balance_summary(rows, cash=1_000)
    assert int(summary["pchs_amt_smtl_amt"]) == sum(int(r["pchs_amt"]) for r in rows)
    assert int(summary["nass_amt"]) == 1_000 + int(summary["evlu_amt_smtl_amt"])


def test_holding_with_unlisted_code_uses_purchase_price() -> None:
    row = holding_row(Holding("000000", "폐지종목", 3, 1_234.0))
    assert row["prpr"] == "1234"
    assert row["evlu_pfls_amt"] == "0"
