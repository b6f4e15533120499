"""Receive a statement upload: multipart streamed to a temporary file, size-limited, CSRF checked first.

The CSRF token must be the form's first field (the console's form puts it there), so a forged or
stale upload is refused before a byte of the file is read or written.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ottrecon.console.csrf import FIELD, check
from ottrecon.console.errors import BadFilter, UploadTooLarge

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_FIELD_BYTES = 4096
CHUNK = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")


@dataclass
class Upload:
    """The stored file (None when the form had none), its SHA-256 and the form's other text fields."""

    path: Path | None = None
    sha256: str = ""
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


async def receive(request: web.Request, directory: Path, csrf_token: str) -> Upload:
    """Read the multipart form into directory. 403 page on a bad token, UploadTooLarge over the limit."""
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError) as exc:  # not multipart at all
        raise BadFilter(["the upload must be sent by the console's form (multipart/form-data)"]) from exc
    try:
        return await _read(reader, directory, csrf_token)
    except HttpProcessingError as exc:
        # A part's headers aiohttp cannot parse (control characters in a file name, say).
        raise BadFilter(["the upload is not a well-formed form: send it with the console's form"]) from exc


async def _read(reader: MultipartReader, directory: Path, csrf_token: str) -> Upload:
    first = await reader.next()
    given = await _text(first) if isinstance(first, BodyPartReader) and first.name == FIELD else None
    check(csrf_token, given)
    upload = Upload()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or not part.name:
            raise BadFilter(["the upload form has an unexpected part"])
        if part.filename is None:
            upload.fields.setdefault(part.name, await _text(part))
        elif upload.path is not None:
            raise BadFilter(["send one file at a time"])
        else:
            upload.path = directory / _safe_name(part.filename)
            upload.sha256, upload.size = await _save(part, upload.path)
    return upload


async def _save(part: BodyPartReader, path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as out:
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise UploadTooLarge(
                    f"The console accepts statement files up to {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; "
                    "nothing was imported. Split the file by date range, or import it with `ottrecon import-statement`."
                )
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


async def _text(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(1024):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise BadFilter([f"the form field {part.name!r} is too long"])
    return data.decode("utf-8", errors="replace")


def _safe_name(filename: str) -> str:
    # Only the base name, in plain characters: it is stored as statement_imports.file_name and shown.
    name = _UNSAFE.sub("_", Path(filename.replace("\\", "/")).name)[:100].strip(" .")
    return name or "statement.csv"
