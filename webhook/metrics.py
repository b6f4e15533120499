"""The receiver's Prometheus metrics, in the process's default registry (one process, one scrape target)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Every POST to the callback endpoint, before any check: the other counters split it up.
RECEIVED = Counter("ottrecon_callbacks_received_total", "Callback requests received, before any check.")
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
# A Redis enqueue takes about a millisecond; the buckets run up to the 2 s enqueue timeout and past it.
ENQUEUE_SECONDS = Histogram(
    "ottrecon_enqueue_seconds",
    "Time Redis took to confirm (or fail) one callback enqueue.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

# Bound up front: every series is exported from 0 (so rate() sees the first event) and the hot
# path skips the label lookup. Label values are these fixed codes, never request data.
ENQUEUED = {outcome: _enqueued.labels(outcome=outcome) for outcome in ("queued", "already_queued")}
REFUSED = {
    reason: _refused.labels(reason=reason) for reason in ("not_a_callback", "body_too_large", "queue_unavailable")
}
