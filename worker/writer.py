"""Group commit: callbacks from concurrently running jobs share one Postgres statement."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from ottrecon.callbacks.verdicts import RejectedCallback, Verdict, VerifiedCallback
from ottrecon.errors import DatabaseUnavailable

RecordBatch = Callable[[Sequence[VerifiedCallback], Sequence[RejectedCallback]], Awaitable[set[tuple[str, str]]]]


@dataclass(frozen=True)
class WriteOutcome:
    """What became of one job's verdicts: the (merchant_id, md5) pairs newly recorded, and the
    verdicts (by position) that could not be written, with the error each met."""

    new: set[tuple[str, str]] = field(default_factory=set)
    failures: dict[int, Exception] = field(default_factory=dict)


@dataclass
class _Waiting:
    verdicts: Sequence[Verdict]
    done: asyncio.Future[WriteOutcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class BatchWriter:
    """Collects the verdicts of concurrently running jobs and writes them together.

    While one batch is being written, newly arriving jobs queue up and form the next
    batch, so the batch size grows with load and costs no added latency when idle
    (see docs/decisions/0003-group-commit.md). Every caller gets the outcome of the
    statement that carried its verdicts, only after the commit. Postgres being unavailable
    fails every caller of the batch (DatabaseUnavailable: retry later); any other error
    splits the batch and writes verdict by verdict, so each caller learns exactly which of
    its verdicts failed and its neighbours are still recorded. Up to max_in_flight batches are
    written at once, each by its own flusher (on its own pool connection): the next batch goes
    out while Postgres works on the last (decision 0041).
    """

    def __init__(self, record_batch: RecordBatch, max_batch: int, max_in_flight: int = 1) -> None:
        self._record_batch = record_batch
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: deque[_Waiting] = deque()
        # Flushers running: each leaves in the same step as it finds nothing waiting. A task's done-callback runs a
        # step later, so counting tasks instead would let a write arrive between and find no flusher at all.
        self._flushing = 0
        self._flushers: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak refs)

    async def write(self, verdicts: Sequence[Verdict]) -> WriteOutcome:
        """Record verdicts. Raises DatabaseUnavailable when Postgres is away (nothing to blame on the input)."""
        waiting = _Waiting(verdicts)
        self._waiting.append(waiting)
        if self._flushing < self._max_in_flight:
            self._flushing += 1
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        # shield: a job cancelled mid-write must not cancel the shared statement for the others.
        return await asyncio.shield(waiting.done)

    async def _flush(self) -> None:
        try:
            await self._flush_waiting()
        finally:
            self._flushing -= 1

    async def _flush_waiting(self) -> None:
        while self._waiting:
            batch = self._take_batch()
            verified = [v for w in batch for v in w.verdicts if isinstance(v, VerifiedCallback)]
            rejected = [v for w in batch for v in w.verdicts if isinstance(v, RejectedCallback)]
            try:
                new = await self._record_batch(verified, rejected)
            except DatabaseUnavailable as exc:
                # Postgres is away: every job in the batch retries later; splitting would not help.
                for waiting in batch:
                    _settle(waiting, exc=exc)
            except Exception:
                # One bad entry must not fail its neighbours: write them one by one.
                await self._write_each(batch)
            else:
                for waiting in batch:
                    _settle(waiting, result=WriteOutcome(new=new))

    async def _write_each(self, batch: list[_Waiting]) -> None:
        # Verdict by verdict, so every good neighbour of a bad entry is still recorded and each
        # job learns which of its entries failed. Should Postgres go away meanwhile, the jobs
        # not yet settled retry as a whole (re-recording nothing twice: every write is idempotent).
        for index, waiting in enumerate(batch):
            new: set[tuple[str, str]] = set()
            failures: dict[int, Exception] = {}
            for position, verdict in enumerate(waiting.verdicts):
                verified = [verdict] if isinstance(verdict, VerifiedCallback) else []
                rejected = [verdict] if isinstance(verdict, RejectedCallback) else []
                try:
                    new |= await self._record_batch(verified, rejected)
                except DatabaseUnavailable as exc:
                    for rest in batch[index:]:
                        _settle(rest, exc=exc)
                    return
                except Exception as exc:
                    failures[position] = exc
            _settle(waiting, result=WriteOutcome(new=new, failures=failures))

    def _take_batch(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        size = 0
        while self._waiting and (not batch or size + len(self._waiting[0].verdicts) <= self._max_batch):
            waiting = self._waiting.popleft()
            batch.append(waiting)
            size += len(waiting.verdicts)
        return batch


def _settle(waiting: _Waiting, *, result: WriteOutcome | None = None, exc: BaseException | None = None) -> None:
    if waiting.done.done():
        return
    if exc is not None:
        waiting.done.set_exception(exc)
    else:
        waiting.done.set_result(result or WriteOutcome())
