"""Statement layouts and line parsing: default and mapped headers, exact amounts, and line-numbered problems."""

from __future__ import annotations

import io
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from ottrecon.reconciliation.layouts import (
    MAX_PROBLEMS,
    StatementError,
    StatementLayout,
    StatementLine,
    parse_amount,
    parse_statement,
)

TORONTO = ZoneInfo("America/Toronto")
HEADER = "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"
MAPPED = StatementLayout.from_spec(
    "merchant_id=Merchant ID, order_id=Order No, amount=Amount, tip=Tip, txn_time=Paid At", amounts="decimal"
)


Period = tuple[date, date] | None


def parse(text: str, layout: StatementLayout | None = None, period: Period = None) -> list[StatementLine]:
    lines = io.StringIO(text)
    return list(parse_statement(lines, layout or StatementLayout(), business_tz=TORONTO, period=period))


def problems(text: str, layout: StatementLayout | None = None, period: Period = None) -> list[str]:
    with pytest.raises(StatementError) as caught:
        parse(text, layout, period)
    return list(caught.value.problems)


def test_parse_statement_default_layout_reads_every_field() -> None:
    text = HEADER + "QC00005496,A1,AL0001,1250,100,27,300,2024-05-01 23:30:00\n"

    [line] = parse(text)

    assert line == StatementLine(
        line_no=2,
        merchant_id="QC00005496",
        order_id="A1",
        bizpay_order_id="AL0001",
        amount=1250,
        tip=100,
        fee=27,
        refund=300,
        txn_time_raw="2024-05-01 23:30:00",
        txn_time=datetime(2024, 5, 1, 23, 30, tzinfo=TORONTO),
        business_date=date(2024, 5, 1),
    )


def test_parse_statement_columns_in_any_order_and_extra_columns_are_ignored() -> None:
    text = "note,txn_time,refund,fee,tip,amount,bizpay_order_id,order_id,merchant_id\nhi,,0,0,0,500,,B2,QC1\n"

    [line] = parse(text)

    assert (line.merchant_id, line.order_id, line.amount, line.bizpay_order_id) == ("QC1", "B2", 500, None)


def test_parse_statement_bom_and_blank_lines_are_skipped_and_line_numbers_kept() -> None:
    text = "\ufeff" + HEADER + "\nQC1,A1,,100,0,0,0,\n,,,,,,,\nQC1,A2,,200,0,0,0,\n"

    lines = parse(text)

    assert [(line.line_no, line.order_id) for line in lines] == [(3, "A1"), (5, "A2")]


def test_parse_statement_mapped_headers_with_decimal_amounts_default_the_rest() -> None:
    text = "Order No,Amount,Merchant ID,Tip,Paid At\nORD-1,12.50,QC1,0.5,20240501120000\n"

    [line] = parse(text, MAPPED)

    assert (line.order_id, line.amount, line.tip, line.fee, line.refund) == ("ORD-1", 1250, 50, 0, 0)
    assert (line.bizpay_order_id, line.business_date) == (None, date(2024, 5, 1))


def test_parse_statement_same_content_in_two_layouts_has_the_same_hash() -> None:
    [cents] = parse(HEADER + "QC1,ORD-1,,1250,50,0,0,2024-05-01 12:00:00\n")
    [decimal] = parse("Merchant ID,Order No,Amount,Tip,Paid At\nQC1,ORD-1,12.50,0.50,20240501120000\n", MAPPED)
    [other] = parse(HEADER + "QC1,ORD-1,,1251,50,0,0,2024-05-01 12:00:00\n")

    assert cents.sha256 == decimal.sha256 != other.sha256


def test_parse_statement_business_date_is_taken_in_the_business_zone() -> None:
    text = HEADER + (
        "QC1,A1,,1,0,0,0,2024-05-02 02:30:00 +08:00\n"
        "QC1,A2,,1,0,0,0,2024-05-01 23:59:59 CST\n"
        "QC1,A3,,1,0,0,0,2024-05-01 23:59:59\n"
    )

    first, second, third = parse(text)

    # 02:30 in Shanghai is 14:30 the day before in Toronto.
    assert first.business_date == date(2024, 5, 1)
    # CST is US Central (UTC-6, PROTOCOL §4): 23:59:59 there is 01:59:59 EDT the next day in Toronto.
    assert second.txn_time == datetime(2024, 5, 2, 1, 59, 59, tzinfo=TORONTO)
    assert second.business_date == date(2024, 5, 2)
    # A statement's zone-less time is wall time in the business time zone.
    assert (third.txn_time, third.business_date) == (datetime(2024, 5, 1, 23, 59, 59, tzinfo=TORONTO), date(2024, 5, 1))


def test_parse_statement_date_without_time_is_a_business_date() -> None:
    [dated] = parse(HEADER + "QC1,A1,,1,0,0,0,2024-05-03\n")
    [undated] = parse(HEADER + "QC1,A1,,1,0,0,0,\n")

    assert (dated.txn_time, dated.business_date, dated.txn_time_raw) == (None, date(2024, 5, 3), "2024-05-03")
    assert (undated.txn_time, undated.business_date, undated.txn_time_raw) == (None, None, None)


@pytest.mark.parametrize(
    ("raw", "cents"),
    [("0.29", 29), ("1.15", 115), ("4.35", 435), ("1.1", 110), ("7", 700), ("1234567890123.99", 123456789012399)],
)
def test_parse_amount_decimal_is_exact_where_float_is_not(raw: str, cents: int) -> None:
    result = parse_amount(raw, "decimal")

    assert result == cents and type(result) is int


@pytest.mark.parametrize(
    ("raw", "amounts", "reason"),
    [
        ("12.50", "cents", "is not integer cents"),
        ("-5", "cents", "is not integer cents"),
        ("1e3", "cents", "is not integer cents"),
        ("1,250", "cents", "thousands separator"),
        ("12.505", "decimal", "more than 2 decimal places"),
        ("1,250.00", "decimal", "thousands separator"),
        ("12.", "decimal", "is not like 12.50"),
        (".5", "decimal", "is not like 12.50"),
        ("-1.00", "decimal", "is not like 12.50"),
        ("NaN", "decimal", "is not like 12.50"),
    ],
)
def test_parse_amount_invalid_raises_with_reason(raw: str, amounts: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_amount(raw, amounts)


def test_parse_statement_reports_every_bad_line_with_its_number() -> None:
    text = HEADER + "\n".join(
        [
            "QC1,A1,,100,0,0,0,2024-05-01 10:00:00",  # line 2: fine
            ",A2,,100,0,0,0,",  # 3: no merchant
            "QC1,,,,0,0,0,",  # 4: no order id, no amount
            "QC1,A4,,12.50,x,0,0,",  # 5: decimal in cents, bad tip
            "QC1,A5,,100,0,0,0,yesterday",  # 6: bad time
            "QC1,A6,,100",  # 7: short row
            '"QC1","A7\nstill A7",,100,0,0,0,2024-05-09',  # 8-9: quoted newline; outside the period
        ]
    )

    found = problems(text, period=(date(2024, 5, 1), date(2024, 5, 2)))

    assert found == [
        "line 3: merchant_id is empty",
        "line 4: order_id is empty",
        "line 4: amount is empty",
        "line 5: amount '12.50' is not integer cents like 1250",
        "line 5: tip 'x' is not integer cents like 1250",
        "line 6: txn_time 'yesterday' is not a date-time like 2024-05-01 13:45:00",
        "line 7: 4 cells, but the header has 8",
        "line 9: business date 2024-05-09 is outside the period 2024-05-01..2024-05-02",
    ]


def test_parse_statement_header_missing_or_repeated_columns_are_line_one() -> None:
    found = problems("Merchant ID,Order No,Amount,Amount,Paid At\nQC1,A1,1,1,\n", MAPPED)

    assert found == [
        "line 1: header column 'Amount' (for amount) is repeated",
        "line 1: header column 'Tip' (for tip) is missing",
    ]


def test_parse_statement_empty_file_needs_a_header() -> None:
    assert problems("")[0] == "line 1: header column 'merchant_id' (for merchant_id) is missing"


def test_parse_statement_oversized_field_is_a_csv_problem() -> None:
    found = problems(HEADER + "QC1,A1,," + "9" * 200_000 + ",0,0,0,\n")

    assert len(found) == 1 and found[0].startswith("line 2: field larger than field limit")


def test_parse_statement_problems_are_capped() -> None:
    text = HEADER + "QC1,A1,,bad,0,0,0,\n" * (MAX_PROBLEMS + 30)

    with pytest.raises(StatementError) as caught:
        parse(text)

    assert len(caught.value.problems) == MAX_PROBLEMS
    assert caught.value.problems[-1].startswith(f"line {MAX_PROBLEMS + 1}: amount")
    assert f"first {MAX_PROBLEMS}" in str(caught.value)


def test_statement_error_message_lists_problems_one_per_line() -> None:
    error = StatementError(["line 2: a", "line 3: b"], "statement rejected:")

    assert str(error) == "statement rejected:\n  line 2: a\n  line 3: b"


def test_layout_from_spec_reports_every_problem() -> None:
    with pytest.raises(StatementError) as caught:
        StatementLayout.from_spec(
            "merchant_id=Shop, nonsense, colour=Red, merchant_id=Other, tip=Shop", amounts="float"
        )

    assert caught.value.problems == (
        "entry 2 is not field=Header Name",
        "entry 3: unknown field 'colour' (fields: merchant_id, order_id, bizpay_order_id, amount, tip, fee, refund, "
        "txn_time)",
        "entry 4: field 'merchant_id' is mapped twice",
        "entry 5: header 'Shop' is already mapped to another field",
        "required field 'order_id' is not mapped",
        "required field 'amount' is not mapped",
        "amounts must be cents or decimal, not 'float'",
    )


def test_layout_from_spec_keeps_only_mapped_fields() -> None:
    layout = StatementLayout.from_spec("merchant_id=M,order_id=O,amount=A")

    assert (layout.columns, layout.amounts) == ((("merchant_id", "M"), ("order_id", "O"), ("amount", "A")), "cents")


def test_layout_unknown_amount_style_is_refused() -> None:
    with pytest.raises(StatementError, match="amounts must be cents or decimal"):
        StatementLayout(amounts="float")
