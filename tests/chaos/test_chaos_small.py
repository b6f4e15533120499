"""The chaos suite in small (`make chaos` runs it in full): every fault heals without a human."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.run import run
from tests.chaos.scenarios import table

# Everysec and a volatile Redis behave like `always` on a process kill, or only measure a loss:
# they run in `make chaos`.
SMALL_SCENARIOS = ["worker-kill", "postgres-restart", "redis-kill-always", "receiver-kill", "malformed-storm"]


@pytest.mark.timeout(180)
def test_every_fault_heals_by_itself_with_nothing_lost_doubled_or_dead_lettered() -> None:
    results = asyncio.run(run(SMALL_SCENARIOS, small=True))
    print(table(results))
    assert [r.scenario for r in results if r.failures] == [], table(results)
