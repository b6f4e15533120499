"""The demo's one exception: it could not run at all, as opposed to running and finding a problem."""

from __future__ import annotations


class DemoError(Exception):
    """The demo could not run (a process did not start, a server did not answer)."""
