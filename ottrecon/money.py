"""Money for people: integer cents shown with their currency, by integer arithmetic only (console, CLI, alerts)."""

from __future__ import annotations

# OTT Pay's merchants are Canadian; OTTRECON_CURRENCY says otherwise (the api and the worker read it).
DEFAULT_CURRENCY = "CAD"


def format_money(cents: int | None, currency: str) -> str:
    """1234550 -> '12,345.50 CAD', -1250 -> '-12.50 CAD', None -> '—'. Never goes through a float."""
    if cents is None:
        return "—"
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{rest:02d} {currency}"
