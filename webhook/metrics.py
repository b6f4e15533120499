"""The receiver's Prometheus metrics, in the process's default registry (one process, one scrape target)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class RequestCount(Collector):
    """A counter for the hot path: a plain int, exported as a Prometheus counter when scraped.

    Bumped once per request on the event loop's thread only, so it needs no lock; prometheus_client's
    Counter.inc takes one each time (about 2 % of the receiver's CPU at full load). The metrics server's
    thread only reads the int, which the interpreter reads whole.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self._name = name
        self._documentation = documentation
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation, value=self.value)


# Every POST to the callback endpoint, before any check: the other counters split it up.
RECEIVED = RequestCount("ottrecon_callbacks_received", "Callback requests received, before any check.")
REGISTRY.register(RECEIVED)
_enqueued = Counter(
    "ottrecon_callbacks_enqueued_total",
    "Callbacks acknowledged with 200; already_queued is an exact redelivery joining its queued job.",
    ["outcome"],
)
_refused = Counter("ottrecon_callbacks_refused_total", "Callback requests answered with an error.", ["reason"])
# Requests aiohttp could not parse (bad request line, header, length), by aiohttp's exception name.
MALFORMED = Counter(
    "ottrecon_malformed_requests_total", "HTTP requests refused with 400 before any handler ran.", ["reason"]
)
# One Redis write carries every callback that arrived while the previous write was in flight
# (webhook/batcher.py); both histograms are observed once per write, never per request.
# A write takes about a millisecond; the buckets run up to the 2 s enqueue timeout and past it.
ENQUEUE_SECONDS = Histogram(
    "ottrecon_enqueue_seconds",
    "Time one Redis write of queued callbacks took to confirm (or fail).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
# Confirmed writes only; the batch limit is 200 (EnqueueBatcher.max_batch).
ENQUEUE_BATCH = Histogram(
    "ottrecon_enqueue_batch_callbacks",
    "Callbacks carried by one confirmed Redis write.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)

# Bound up front: every series is exported from 0 (so rate() sees the first event) and the hot
# path skips the label lookup. Label values are these fixed codes, never request data.
ENQUEUED = {outcome: _enqueued.labels(outcome=outcome) for outcome in ("queued", "already_queued")}
REFUSED = {
    reason: _refused.labels(reason=reason) for reason in ("not_a_callback", "body_too_large", "queue_unavailable")
}
