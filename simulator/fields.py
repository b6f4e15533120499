"""Checks on the fields of a verified request: anything wrong becomes a PARAM_INVALID answer."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ottpay.messages import parse_cents

# PROTOCOL §7: letters and digits; up to 32 accepted on input.
_ORDER_ID = re.compile(r"[A-Za-z0-9]{1,32}")


class ParamInvalid(Exception):
    """A request field is missing or malformed; the message names the field, never its value."""


def required(fields: Mapping[str, str], name: str) -> str:
    """The field's value; ParamInvalid when it is missing or empty."""
    value = fields.get(name, "")
    if not value:
        raise ParamInvalid(f"{name} is required")
    return value


def order_id_field(fields: Mapping[str, str], *, name: str = "order_id", needed: bool) -> str:
    """An order id (PROTOCOL §7), or "" when it is optional and absent; ParamInvalid when malformed."""
    value = required(fields, name) if needed else fields.get(name, "")
    if value and not _ORDER_ID.fullmatch(value):
        raise ParamInvalid(f"{name} must be 1-32 letters or digits")
    return value


def cents(fields: Mapping[str, str], name: str, *, minimum: int, default: int | None = None) -> int:
    """An amount in integer cents, at least minimum; default when absent (if given); else ParamInvalid."""
    if not fields.get(name) and default is not None:
        return default
    try:
        value = parse_cents(required(fields, name))
    except ValueError:
        raise ParamInvalid(f"{name} must be integer cents") from None
    if value < minimum:
        raise ParamInvalid(f"{name} must be at least {minimum}")
    return value
