"""The API's OpenAPI 3.1 description, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from ottrecon.api.views import STATUSES
from ottrecon.payments.statuses import Channel, PaidSource, PaymentKind, RefundStatus

_CENTS = {"type": "integer", "minimum": 0, "description": "integer cents (1250 = 12.50 CAD); never a float"}
_ERROR = {
    "type": "object",
    "required": ["error", "problems"],
    "description": (
        "Every error, whatever its status, has this shape. `error` is a stable code: invalid_request (422), "
        "unauthorized (401), not_found (404), method_not_allowed (405), idempotency_conflict, auth_code_used and "
        "not_refundable (409), body_too_large (413), database_unavailable (503), internal_error (500, a fault: "
        "logged). `problems` says, in words, everything that is wrong."
    ),
    "properties": {
        "error": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "string"}},
        "payment_id": {
            "type": "string",
            "description": "auth_code_used only: the payment this wallet code was already used for",
        },
    },
}
_STATUS = {
    "type": "string",
    "enum": list(STATUSES),
    "description": (
        "pending: stored, not yet answered by the gateway (or outcome unknown, being resolved by STATUS_QUERY); "
        "awaiting_payment: ACTIVEPAY QR code issued; unpaid: still unpaid past the deadline (may still be paid); "
        "review: the gateway reported something unexpected; declined/failed/closed/expired: final, not paid; "
        "paid/partially_refunded/refunded: money moved. A status never moves backwards."
    ),
}
_REFUND = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "the refund's own OTT Pay order id"},
        "payment_id": {"type": "string"},
        "amount": _CENTS,
        "currency": {"type": "string"},
        "status": {"type": "string", "enum": list(RefundStatus)},
        "status_reason": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
_PAYMENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "our OTT Pay order id (20 characters)"},
        "merchant_id": {"type": "string"},
        "kind": {"type": "string", "enum": list(PaymentKind)},
        "biz_type": {"type": "string", "enum": list(Channel)},
        "amount": _CENTS,
        "tip": _CENTS,
        "currency": {"type": "string"},
        "sale_num": {"type": ["string", "null"]},
        "status": _STATUS,
        "status_reason": {"type": ["string", "null"]},
        "code_url": {"type": ["string", "null"], "description": "ACTIVEPAY: what the QR code encodes"},
        "qr_svg": {"type": ["string", "null"], "description": "path of the QR code image"},
        "paid_amount": {"type": ["integer", "null"]},
        "paid_source": {"type": ["string", "null"], "enum": [*PaidSource, None]},
        "paid_at": {"type": ["string", "null"], "format": "date-time"},
        "unpaid_flagged_at": {"type": ["string", "null"], "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "refunds": {"type": "array", "items": {"$ref": "#/components/schemas/Refund"}},
    },
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
    "description": "Same key + same request: the first result, nothing sent twice. Same key, other request: 409.",
}
_PAYMENT_ID = {"name": "payment_id", "in": "path", "required": True, "schema": {"type": "string"}}


# POST /api/payments' conflicts: a wallet code is single use (decision 0027).
_PAYMENT_CONFLICTS = (
    "idempotency_conflict: the Idempotency-Key was used with another request; auth_code_used: this PASSIVEPAY's "
    "wallet code (auth_code) was already used for a payment, whose id is in `payment_id` (one code pays at most "
    "once, whatever the key: look that payment up, or scan a fresh code)"
)


def _responses(ok: dict[str, Any], *, body: bool = False, conflict: str | None = None) -> dict[str, Any]:
    errors = {
        "401": "missing or wrong bearer token",
        "404": "no such payment (an id that cannot be ours, e.g. holding a NUL, is simply not found)",
        "409": conflict or "idempotency key reused with another request, or not refundable",
        "422": "invalid request: every problem named (bad JSON, NaN, deep nesting, unknown query parameters…)",
        "503": "database unavailable; for a POST, `problems` says whether anything may have been stored: "
        "retry with the same Idempotency-Key, never a new one",
    }
    if body:
        errors["413"] = "body larger than 64 KiB"
    return ok | {
        code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
        for code, text in errors.items()
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _stored(ref: str) -> dict[str, Any]:
    """202: stored and on its way, but the answer could not wait for the gateway (finding 03, decision 0028)."""
    notice = {
        "type": "object",
        "required": ["notice"],
        "properties": {"notice": {"type": "string", "description": "why it is not answered yet, and what to do"}},
    }
    return {
        "description": "stored and due, but not answered by the gateway yet: no worker could be asked to send it now, "
        "or its current state could not be read back (`notice` says which). The worker's scheduled retry sends it; "
        "poll GET /api/payments/{payment_id}, or repeat the request with the same Idempotency-Key, never a new one",
        "content": {"application/json": {"schema": {"allOf": [{"$ref": ref}, notice]}}},
    }


def openapi_spec() -> dict[str, Any]:
    """The whole description as a JSON-able dict."""
    payment_ref, refund_ref = "#/components/schemas/Payment", "#/components/schemas/Refund"
    create_payment_body = {
        "type": "object",
        "required": ["merchant_id", "kind", "biz_type", "amount"],
        "properties": {
            "merchant_id": {"type": "string"},
            "kind": {"type": "string", "enum": list(PaymentKind)},
            "biz_type": {"type": "string", "enum": list(Channel)},
            "amount": _CENTS | {"minimum": 1},
            "tip": _CENTS,
            "auth_code": {
                "type": "string",
                "description": "PASSIVEPAY only: the scanned wallet code; single use (a second payment with it: 409)",
            },
            "sale_num": {"type": "string", "description": "invoice number"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ottrecon payments API",
            "version": "1",
            "description": "Internal API for point-of-sale systems. Every path except this one and /healthz "
            "needs `Authorization: Bearer <token>`. Every error is JSON in the Error shape; query parameters "
            "a route does not take are refused (422), never ignored.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Payment": _PAYMENT, "Refund": _REFUND, "Error": _ERROR},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/payments": {
                "post": {
                    "summary": "Take a payment (ACTIVEPAY: QR code; PASSIVEPAY: scanned wallet code)",
                    "description": "The order is stored before anything is sent. The call waits a few seconds "
                    "for the gateway (a cashier is waiting), then answers the current state; poll GET if pending.",
                    "parameters": [_IDEMPOTENCY_KEY],
                    "requestBody": _json_body(create_payment_body),
                    "responses": _responses(
                        {
                            "201": _ok("created", payment_ref),
                            "200": _ok("replayed", payment_ref),
                            "202": _stored(payment_ref),
                        },
                        body=True,
                        conflict=_PAYMENT_CONFLICTS,
                    ),
                },
                "get": {
                    "summary": "List payments, newest first",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": _STATUS},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                            "description": "cursor: the `next` of the previous page (0: from the newest)",
                        },
                    ],
                    "responses": _responses(
                        {
                            "200": {
                                "description": "a page",
                                "content": {
                                    "application/json": {
                                        "schema": {
                                            "type": "object",
                                            "properties": {
                                                "payments": {"type": "array", "items": {"$ref": payment_ref}},
                                                "next": {"type": ["integer", "null"]},
                                            },
                                        }
                                    }
                                },
                            }
                        }
                    ),
                },
            },
            "/api/payments/{payment_id}": {
                "get": {
                    "summary": "One payment with its refunds",
                    "parameters": [_PAYMENT_ID],
                    "responses": _responses({"200": _ok("the payment", payment_ref)}),
                }
            },
            "/api/payments/{payment_id}/qr.svg": {
                "get": {
                    "summary": "ACTIVEPAY QR code as SVG",
                    "parameters": [_PAYMENT_ID],
                    "responses": _responses({"200": {"description": "SVG", "content": {"image/svg+xml": {}}}}),
                }
            },
            "/api/payments/{payment_id}/refunds": {
                "post": {
                    "summary": "Refund part or all of a paid payment",
                    "parameters": [_PAYMENT_ID, _IDEMPOTENCY_KEY],
                    "requestBody": _json_body(
                        {"type": "object", "required": ["amount"], "properties": {"amount": _CENTS | {"minimum": 1}}}
                    ),
                    "responses": _responses(
                        {
                            "201": _ok("created", refund_ref),
                            "200": _ok("replayed", refund_ref),
                            "202": _stored(refund_ref),
                        },
                        body=True,
                    ),
                }
            },
        },
    }
