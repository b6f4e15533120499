"""QR codes for ACTIVEPAY: the customer scans the gateway's code_url with their wallet app."""

from __future__ import annotations

import io

import segno


def qr_svg(code_url: str) -> bytes:
    """An SVG QR code of code_url (error correction M, scales cleanly on any till screen)."""
    buffer = io.BytesIO()
    segno.make(code_url, error="m", micro=False).save(buffer, kind="svg", scale=8, border=2)
    return buffer.getvalue()
