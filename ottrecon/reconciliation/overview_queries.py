"""Ledger figures at a glance: the console's overview and statement pages, and the on-call gauges (worker/metrics.py).

Each query reads one screen's or one scrape's worth, from an index; the CSV reports live in reports.py.
"""

from __future__ import annotations

from ottrecon.reconciliation.reports import DAILY_SUMMARY, NEEDS_A_PERSON

# The statement's differences: rows of its merchants and period whose statement status is not matched
# (ledger_statement_status_idx), in report order by keyset.
STATEMENT_DIFFERENCES = """
SELECT merchant_id, order_id, business_date, channel, recon_status, statement_status, received_amount,
       received_tip, statement_amount, statement_refund, refunded_amount, statement_amount_at_risk
FROM ledger
WHERE merchant_id = ANY ($1) AND business_date BETWEEN $2 AND $3
  AND statement_status IN ('not_in_statement', 'not_in_ledger', 'amount_differs', 'duplicate_settlement',
                           'refund_differs')
  AND (business_date, merchant_id, order_id) > ($4, $5, $6)
ORDER BY business_date, merchant_id, order_id
LIMIT $7
"""
# How the statement's period compares, by statement status (NULL: not reconciled yet).
STATEMENT_STATUS_COUNTS = """
SELECT statement_status, count(*) AS n FROM ledger
WHERE merchant_id = ANY ($1) AND business_date BETWEEN $2 AND $3
GROUP BY statement_status ORDER BY statement_status NULLS LAST
"""
# Keys still waiting for the reconciler (bounded: the page only says whether any are left).
DIRTY_LEFT = "SELECT count(*) FROM (SELECT 1 FROM recon_dirty LIMIT 10000) d"
# The console's totals per merchant and channel over a date range ($1..$2, $3 merchant or NULL): the daily
# summary's own rows added up, so the overview and `ottrecon export summary` share one formula for payments,
# gross, tips, refunds, fees, net (= gross + tips - refunds - fees, decision 0022) and the ledger's amount at risk.
TOTALS = f"""
SELECT merchant_id, channel, sum(payments)::int8 AS payments, sum(gross)::int8 AS gross, sum(tips)::int8 AS tips,
       sum(refunds)::int8 AS refunds, sum(fees)::int8 AS fees, sum(net)::int8 AS net,
       sum(amount_at_risk)::int8 AS amount_at_risk
FROM ({DAILY_SUMMARY}) days
GROUP BY merchant_id, channel
ORDER BY merchant_id, channel NULLS LAST
"""
# Rows and money at risk per reconciliation status.
BY_STATUS = """
SELECT recon_status, count(*) AS n, coalesce(sum(amount_at_risk), 0)::int8 AS at_risk
FROM ledger WHERE business_date BETWEEN $1 AND $2
GROUP BY recon_status ORDER BY n DESC, recon_status
"""
# Rows per statement status (NULL: no imported statement covers them yet), with the money at stake.
BY_STATEMENT = """
SELECT statement_status, count(*) AS n, coalesce(sum(statement_amount_at_risk), 0)::int8 AS at_risk
FROM ledger WHERE business_date BETWEEN $1 AND $2
GROUP BY statement_status ORDER BY n DESC, statement_status NULLS LAST
"""
# Per business date: money received (amount + tip) and rows needing a person, for the chart.
DAILY = f"""
SELECT l.business_date,
       coalesce(sum(l.received_amount + coalesce(l.received_tip, 0)), 0)::int8 AS volume,
       count(*) FILTER (WHERE {NEEDS_A_PERSON}) AS mismatches
FROM ledger l WHERE l.business_date BETWEEN $1 AND $2
GROUP BY l.business_date
"""
OPEN_ALERTS = "SELECT count(*) FROM alerts WHERE status = 'open'"
# Adjustments booked on the range's dates ($1..$2), added up as the summary shows them (decision 0031).
ADJUSTMENTS_BOOKED = """
SELECT booked_on, merchant_id, channel, corrects_date, reason, count(DISTINCT order_id) AS orders,
       sum(gross + tips - refunds - fees)::int8 AS net, sum(amount_at_risk)::int8 AS amount_at_risk
FROM book_entries
WHERE kind = 'adjustment' AND folded_by IS NULL AND booked_on BETWEEN $1 AND $2
GROUP BY booked_on, merchant_id, channel, corrects_date, reason
ORDER BY booked_on, merchant_id, channel NULLS LAST, corrects_date, reason
"""
# Closes in force on the range's dates.
CLOSED_DAYS = """
SELECT business_date, merchant_id FROM book_closes
WHERE reopened_at IS NULL AND business_date BETWEEN $1 AND $2
ORDER BY business_date, merchant_id NULLS FIRST
"""
# Each query is answered from a partial or leading-column index (alerts_open_idx,
# alerts_undelivered_idx, orders_status_idx), so a refresh stays cheap as the tables grow.
# Alerts not resolved, by kind, with the cents they put at risk.
OPEN_ALERTS_BY_KIND = """
SELECT kind, count(*) AS open, coalesce(sum(amount_at_risk), 0) AS at_risk
FROM alerts WHERE status <> 'resolved' GROUP BY kind
"""
# Orders flagged unpaid, orders the worker gave up on that are still unsettled (decision 0030), and alerts
# of any status not yet delivered.
BACKLOGS = """
SELECT (SELECT count(*) FROM orders WHERE status = 'unpaid') AS unpaid,
       (SELECT count(*) FROM orders WHERE status IN ('unpaid', 'review') AND given_up_at IS NOT NULL) AS given_up,
       (SELECT count(*) FROM alerts WHERE notified_at IS NULL) AS undelivered
"""
