"""What the reconciliation benchmark measures per size: plain data for the run, the child exports and the tables."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Export:
    """One report exported by a fresh child process to /dev/null."""

    rows: int
    export_s: float  # inside the child: export_report alone
    process_s: float  # the whole child, interpreter start-up included
    peak_rss_mb: float  # the child's high-water resident set, as the child read it (own_peak_rss_kb)


@dataclass
class SizeResult:
    """Everything measured for one N."""

    orders: int
    generate_s: dict[str, float] = field(default_factory=dict)
    keys: int = 0
    reconcile_s: float = 0.0
    tick_rates: list[float] = field(default_factory=list)  # keys/s of each worker tick (MAX_BATCHES_PER_TICK)
    maintenance_s: float = 0.0  # VACUUM/ANALYZE between ticks, excluded from reconcile_s
    concurrency: int = 1  # batches at once, each on its own connection
    ledger_rows: int = 0
    exports: dict[str, Export] = field(default_factory=dict)
    baseline: SizeResult | None = None  # the same evidence drained by the reconciler before issue 13
    runs_s: list[float] = field(default_factory=list)  # every reconcile run of this size (median judged)

    @property
    def generate_total_s(self) -> float:
        """Evidence generation, all steps."""
        return sum(self.generate_s.values())
