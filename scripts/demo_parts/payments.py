"""Taking payments through the API as tills would: a seeded mix, posted concurrently, then replayed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .environment import DECLINE_SUFFIX, MERCHANT
from .processes import Stack

REPLAYS = 3


@dataclass(frozen=True)
class Planned:
    """One payment request the demo will POST, under its own idempotency key."""

    key: str
    body: dict[str, Any]


@dataclass
class Created:
    """What POST /api/payments answered for each planned payment and for the replays."""

    ids: dict[str, str] = field(default_factory=dict)  # idempotency key -> payment id
    errors: list[str] = field(default_factory=list)
    replays_same: int = 0
    replays_wrong: list[str] = field(default_factory=list)
    conflict_refused: bool = False


def plan_payments(count: int, rng: random.Random, run_id: str) -> list[Planned]:
    """A realistic till: QR and scanned payments, both wallets, odd amounts, some tips, ~10 % declined."""
    declined = set(rng.sample(range(count), max(1, round(count * 0.1))))
    plans = []
    for index in range(count):
        kind = "PASSIVEPAY" if index in declined or rng.random() < 0.5 else "ACTIVEPAY"
        body: dict[str, Any] = {
            "merchant_id": MERCHANT,
            "kind": kind,
            "biz_type": rng.choice(("ALIPAY", "WECHATPAY")),
            "amount": rng.randint(150, 25_000),
        }
        if rng.random() < 0.3:
            body["tip"] = rng.choice((100, 150, 200, 275, 500))
        if kind == "PASSIVEPAY":
            body["auth_code"] = auth_code(index, index in declined, rng)
        plans.append(Planned(f"demo-{run_id}-{index:04d}", body))
    return plans


def auth_code(index: int, decline: bool, rng: random.Random) -> str:
    """An 18-digit wallet code, unique per payment (a shared code would look like a double charge)."""
    suffix = DECLINE_SUFFIX if decline else f"{rng.randint(1, 9998):04d}"  # never 0000 nor 9999 (wrong PIN)
    return f"28{index:06d}{rng.randrange(10**6):06d}{suffix}"


async def post_payment(
    session: aiohttp.ClientSession, stack: Stack, key: str, body: Mapping[str, Any]
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {stack.token}", "Idempotency-Key": key}
    async with session.post(f"{stack.api_url}/api/payments", json=body, headers=headers) as response:
        answer: dict[str, Any] = await response.json(content_type=None)
        return response.status, answer


async def create_payments(session: aiohttp.ClientSession, stack: Stack, plans: Sequence[Planned]) -> Created:
    """POST every planned payment, a few at a time, as several tills would."""
    created = Created()
    limit = asyncio.Semaphore(8)

    async def one(plan: Planned) -> None:
        async with limit:
            try:
                status, answer = await post_payment(session, stack, plan.key, plan.body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                created.errors.append(f"{plan.key}: {exc!r}")
                return
        # 202: stored, its hand-over to a worker or its state read back failed; the scheduled retry sends it.
        if status in (201, 202) and "id" in answer:
            created.ids[plan.key] = answer["id"]
        else:
            created.errors.append(f"{plan.key}: HTTP {status} {answer}")

    await asyncio.gather(*(one(plan) for plan in plans))
    return created


async def replay_payments(
    session: aiohttp.ClientSession, stack: Stack, plans: Sequence[Planned], created: Created
) -> None:
    """Re-POST a few requests under their keys (a till retrying): same payment, HTTP 200, nothing new sent.

    Then reuse one key for a different amount, which must be refused (409).
    """
    for plan in [p for p in plans if p.key in created.ids][:REPLAYS]:
        status, answer = await post_payment(session, stack, plan.key, plan.body)
        if status == 200 and answer.get("id") == created.ids[plan.key]:
            created.replays_same += 1
        else:
            created.replays_wrong.append(f"{plan.key}: HTTP {status} id {answer.get('id')}")
    plan = plans[0]
    status, _answer = await post_payment(session, stack, plan.key, plan.body | {"amount": plan.body["amount"] + 1})
    created.conflict_refused = status == 409
