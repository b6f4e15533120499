"""The receiver's own error; the rest of the tree (ConfigError…) is ottrecon.errors."""

from __future__ import annotations

from ottrecon.errors import OttreconError


class QueueUnavailable(OttreconError):
    """Redis did not confirm the enqueue; the callback was not kept."""
