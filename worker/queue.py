"""The worker's side of the callback queue contract (pinned against webhook/queue.py by a test)."""

from __future__ import annotations

import json
from typing import Any

# These must equal webhook/queue.py's; tests/integration/test_queue_contract.py checks it.
QUEUE_NAME = "ottrecon:jobs"
INGEST_JOB = "ingest_callbacks"
# Set by the receiver per queued body (webhook/queue.py); released here once it is processed.
QUEUED_KEY_PREFIX = "ottrecon:queued:"
# Enqueued by the api process (api/queue.py) right after it stores an order or a refund.
PROCESS_ORDER_JOB = "process_order"
PROCESS_REFUND_JOB = "process_refund"
# Enqueued by the finance console's replay button (the api holds no sign keys; the worker does).
REPLAY_REJECTED_JOB = "replay_rejected_callback"
# Callbacks whose processing could not finish even after every retry, kept for `ottrecon requeue-dead`.
DEAD_LETTER_KEY = "ottrecon:jobs:dead"


def serialize(obj: Any) -> bytes:
    """arq job serializer: JSON, never pickle (a queue entry must not be able to run code)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def deserialize(raw: bytes) -> Any:
    """arq job deserializer, the inverse of serialize."""
    return json.loads(raw)
