"""Reconciliation: the ledger recomputed from every source, statements, alerts and the finance reports."""
