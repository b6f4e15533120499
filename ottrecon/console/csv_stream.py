"""CSV downloads streamed to the browser, byte for byte as `ottrecon export` writes them.

The reports module writes to a blocking text file. To stream that without holding the api's pool
or its event loop (point-of-sale payments share them), the export runs on its own event loop in a
thread with a one-connection pool; its writes cross to the response through a small bounded
queue, so a slow browser slows the export down instead of filling memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TextIO, cast

import asyncpg
from aiohttp import web

from ottrecon.console.offload import OFFLOAD_SLOTS, run_with_private_pool
from ottrecon.console.web import STREAMING
from ottrecon.reconciliation.csv_writer import write_csv
from ottrecon.reconciliation.reports import LEDGER_EXPORT_COLUMNS

logger = logging.getLogger("ottrecon.console")

CHUNK_CHARS = 64 * 1024
MAX_PENDING_CHUNKS = 8
Export = Callable[[asyncpg.Pool, TextIO], Awaitable[int]]


class _Pipe:
    """What csv.writer writes to on the export's thread; the text goes, in chunks, to a queue on the server's loop.

    Deliberately not an io object: those flush when garbage-collected, which here could block the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
        self._loop, self._queue, self._parts, self._size = loop, queue, list[str](), 0
        self.abandoned = False

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= CHUNK_CHARS:
            self.send_buffered()
        return len(text)

    def send_buffered(self) -> None:
        if self._parts:
            data, self._parts, self._size = "".join(self._parts).encode("utf-8"), [], 0
            # At most CHUNK_CHARS bytes a queue item, however much one write brought (COPY hands over what
            # arrived, often far more): MAX_PENDING_CHUNKS then bounds the memory a stalled download holds.
            for start in range(0, len(data), CHUNK_CHARS):
                self.send(data[start : start + CHUNK_CHARS])

    def send(self, item: bytes | None) -> None:
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        # Blocks while the queue is full (backpressure); gives up once the browser has gone.
        while True:
            try:
                future.result(timeout=1.0)
                return
            except TimeoutError:
                if self.abandoned:
                    future.cancel()
                    raise BrokenPipeError("the download was abandoned") from None


async def stream_csv(request: web.Request, filename: str, database_url: str, export: Export) -> web.StreamResponse:
    """Run export(pool, out) on a private connection and stream what it writes as a CSV attachment.

    If the database fails before the first bytes, the caller's error page is shown; after that, the
    connection is cut so the browser reports an incomplete download rather than a short file.
    At most max_offloaded run at once (console.offload.OffloadSlots); past that, a 503 page.
    """
    with request.config_dict[OFFLOAD_SLOTS].claim():
        return await _stream(request, filename, database_url, export)


async def _stream(request: web.Request, filename: str, database_url: str, export: Export) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_PENDING_CHUNKS)
    pipe = _Pipe(loop, queue)

    async def job(pool: asyncpg.Pool) -> int:
        count = await export(pool, cast(TextIO, pipe))
        pipe.send_buffered()
        return count

    producer = asyncio.ensure_future(run_with_private_pool(database_url, job, done=lambda: pipe.send(None)))
    try:
        first = await queue.get()
        if first is None:
            await producer  # raises what stopped the export before it wrote anything: the caller's error page
            raise RuntimeError("the export ended without writing its header")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{filename}"',
            }
        )
        request[STREAMING] = True
        await response.prepare(request)
        chunk: bytes | None = first
        while chunk is not None:
            await response.write(chunk)
            chunk = await queue.get()
        rows = await producer
    except BaseException:
        pipe.abandoned = True
        await _drain(queue, producer)
        raise
    await response.write_eof()
    logger.info("console csv downloaded", extra={"file": filename, "rows": rows})
    return response


async def _drain(queue: asyncio.Queue[bytes | None], producer: asyncio.Future[int]) -> None:
    """Keep the queue moving until the export thread has noticed the abandonment and stopped."""
    while not producer.done():
        try:
            await asyncio.wait_for(queue.get(), 0.1)
        except TimeoutError:
            pass
    if not producer.cancelled():
        producer.exception()  # retrieved and dropped: the browser's disconnection is the error that matters


async def write_rows(pool: asyncpg.Pool, out: TextIO, query: str, args: list[Any], fetch_size: int = 5000) -> int:
    """A query of our own over the ledger report's columns, written exactly as `ottrecon export ledger` writes."""
    return await write_csv(pool, out, LEDGER_EXPORT_COLUMNS, query, args, fetch_size)
