"""Where an export's CSV goes: stdout, or a file that only ever appears complete."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from ottrecon.commands.failures import describe
from ottrecon.errors import OttreconError


class IncompleteOutput(OttreconError):
    """The export failed before it was complete."""


@contextlib.contextmanager
def csv_target(path: Path | None) -> Iterator[TextIO]:
    """The stream an export writes to; raises IncompleteOutput, naming the cause, if the export fails.

    A file is written under a temporary name in its own directory (so the rename cannot cross file systems),
    flushed to disk, then renamed over `path`: a reader sees the old file or the whole new one, never a
    header-only or half CSV that looks valid. On failure the temporary file is removed and `path` is left as it
    was. On stdout what was written cannot be taken back, so the error says the output is incomplete.
    """
    if path is None:
        try:
            yield sys.stdout
            sys.stdout.flush()
        except Exception as exc:
            if isinstance(exc, BrokenPipeError):
                # The reader went away (`| head`): stop Python's own flush at exit from failing a second time.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise IncompleteOutput(f"{describe(exc)[1]}; the CSV written to stdout is incomplete") from exc
        return
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise IncompleteOutput(f"{describe(exc)[1]}; nothing written to {path}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except Exception as exc:
        raise IncompleteOutput(f"{describe(exc)[1]}; {path} not written") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):  # gone once renamed
            os.unlink(temporary)
