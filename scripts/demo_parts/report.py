"""The demo's summary table and its verdict: what makes a run PASS or FAIL."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .payments import Created
from .settle import LEDGER_PAID, PENDING


@dataclass(frozen=True)
class Report:
    """Everything the summary shows, and the verdict."""

    payments: list[dict[str, Any]]
    created: Created
    stats: dict[str, Any]
    counts: dict[str, int]
    disagreements: list[str]
    log_errors: list[str]
    elapsed_s: float

    @property
    def charged_twice(self) -> int:
        return len(self.stats["orders_charged_more_than_once"]) + len(self.stats["auth_codes_charged_more_than_once"])

    @property
    def pending(self) -> list[dict[str, Any]]:
        return [p for p in self.payments if p["status"] in PENDING]

    def failures(self, expected: int) -> list[str]:
        """Why the demo failed; empty when it passed."""
        reasons = []
        if self.charged_twice:
            reasons.append(
                f"charged twice: orders {self.stats['orders_charged_more_than_once']}, "
                f"auth codes {self.stats['auth_codes_charged_more_than_once']}"
            )
        if self.pending:
            reasons.append("stuck pending: " + ", ".join(f"{p['id']} ({p['status']})" for p in self.pending))
        if self.created.errors or len(self.payments) != expected:
            reasons.append(f"{expected} payments requested, {len(self.payments)} exist: {self.created.errors}")
        if self.created.replays_wrong or not self.created.conflict_refused:
            reasons.append(f"idempotency broken: {self.created.replays_wrong or 'conflicting reuse accepted'}")
        if self.disagreements:
            reasons.append("gateway and ledger disagree: " + "; ".join(self.disagreements))
        if self.counts["ledger_mismatch"]:
            reasons.append(f"{self.counts['ledger_mismatch']} paid orders whose payments row is missing or differs")
        return reasons

    def render(self) -> str:
        by_status = Counter(p["status"] for p in self.payments)
        sources = Counter(p["paid_source"] for p in self.payments if p["status"] in LEDGER_PAID)
        calls, counts = self.stats["callbacks"], self.counts
        other = {s: n for s, n in sorted(by_status.items()) if s not in {"paid", "declined", "unpaid", *PENDING}}
        rows = [
            ("payments", f"{len(self.payments)}"),
            (
                "  paid",
                f"{sum(by_status[s] for s in LEDGER_PAID)}   (response {sources['response']} · callback "
                f"{sources['callback']} · recovered by query {sources['query']})",
            ),
            ("  declined", f"{by_status['declined']}"),
            ("  flagged unpaid", f"{by_status['unpaid']}"),
            ("  other", ", ".join(f"{s} {n}" for s, n in other.items()) or "0"),
            ("  still pending", f"{len(self.pending)}"),
            (
                "idempotent replays",
                f"{self.created.replays_same} re-POSTs -> same payment, HTTP 200; conflicting reuse "
                f"{'refused (409)' if self.created.conflict_refused else 'ACCEPTED'}; {counts['orders']} orders stored",
            ),
            ("callbacks received", f"{counts['callbacks']} verified · {counts['rejected']} rejected"),
            (
                "ledger",
                f"{counts['ledger_paid']} paid rows · {counts['ledger_mismatch']} not matching their order · "
                f"{len(self.disagreements)} disagreements with the gateway",
            ),
            (
                "gateway requests",
                f"{counts['attempts']} ({counts['queries']} STATUS_QUERY) · answers lost {counts['lost_answers']} · "
                f"HTTP 5xx {counts['http_5xx']} · PROCESSING {counts['processing']}",
            ),
            (
                "simulator",
                f"{self.stats['orders']} orders {self.stats['orders_by_status']} · callbacks scheduled "
                f"{calls['scheduled']}, sent {calls['sent']}, dropped {calls['dropped']}, duplicated "
                f"{calls['duplicated']}, failed attempts {calls['failed']}",
            ),
            ("child log errors", f"{len(self.log_errors)}"),
        ]
        width = max(len(label) for label, _ in rows)
        lines = [f"  {label.ljust(width)}  {value}" for label, value in rows]
        unusual = [p for p in self.payments if p["status"] in other]
        if unusual:
            lines += ["", "  why not paid, declined or unpaid:"]
            lines += [f"    {p['id']} {p['status']}: {p['status_reason']}" for p in unusual[:10]]
        return "\n".join([*lines, "", f"  charged twice = {self.charged_twice}", f"  took {self.elapsed_s:.0f}s"])
