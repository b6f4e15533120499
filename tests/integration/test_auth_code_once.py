"""A scanned wallet code pays once (finding 05): a POS retrying with a new Idempotency-Key must not charge the
customer's code a second time."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path

import asyncpg
import pytest

from ottrecon.migrations import SQL_PACKAGE, migrate
from ottrecon.payments import store
from tests.conftest import MERCHANT, OTHER_MERCHANT, with_database
from tests.integration.stack import running_stack

CONCURRENT = 12


async def test_one_auth_code_under_many_keys_at_once_makes_one_payment_and_one_charge(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    code = "283456789012347777"
    async with running_stack(database_url, redis_url) as stack:
        answers = await asyncio.gather(
            *(stack.pay(f"k-code-{n}", kind="PASSIVEPAY", amount=1000 + n, auth_code=code) for n in range(CONCURRENT))
        )
        created = [body for status, body in answers if status == 201]
        assert len(created) == 1, answers
        payment = await stack.wait_status(created[0]["id"], {"paid"})
        # The same key and the same request is still a replay of the first payment, not a conflict.
        winner = next(n for n, (status, _) in enumerate(answers) if status == 201)
        replay_status, replay = await stack.pay(
            f"k-code-{winner}", kind="PASSIVEPAY", amount=1000 + winner, auth_code=code
        )
        # A retry long after (the code already charged) is refused the same way.
        late_status, late = await stack.pay("k-code-late", kind="PASSIVEPAY", amount=1000, auth_code=code)
        stats = await stack.sim_stats()
        sim_orders = (await (await stack.sim.get("/sim/orders")).json())["orders"]

    refused = [body for status, body in answers if status == 409]
    assert Counter(status for status, _ in answers) == {201: 1, 409: CONCURRENT - 1}
    assert {body["error"] for body in refused} == {"auth_code_used"}
    assert {body["payment_id"] for body in refused} == {payment["id"]}
    assert all(payment["id"] in " ".join(body["problems"]) for body in refused)
    assert (replay_status, replay["id"]) == (200, payment["id"])
    assert (late_status, late["error"], late["payment_id"]) == (409, "auth_code_used", payment["id"])
    assert await db.fetchval("SELECT count(*) FROM orders") == 1
    assert await db.fetchval("SELECT count(*) FROM submission_attempts WHERE action = 'PASSIVEPAY'") == 1
    assert [o["order_id"] for o in sim_orders] == [payment["id"]]
    assert stats["auth_codes_charged_more_than_once"] == []


async def test_one_request_repeated_at_once_under_its_key_is_a_replay_not_a_code_conflict(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    # Concurrent copies of one request may lose on the code's index before the key's: still the same payment.
    async with running_stack(database_url, redis_url) as stack:
        answers = await asyncio.gather(
            *(stack.pay("k-same", kind="PASSIVEPAY", auth_code="283456789012348888") for _ in range(CONCURRENT))
        )

    assert Counter(status for status, _ in answers) == {201: 1, 200: CONCURRENT - 1}
    assert len({body["id"] for _, body in answers}) == 1
    assert await db.fetchval("SELECT count(*) FROM orders") == 1


async def test_the_same_code_at_another_merchant_and_activepay_are_not_limited(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    # The constraint is per merchant and only for PASSIVEPAY: ACTIVEPAY orders carry no code at all.
    for n, (merchant, kind, code) in enumerate(
        (("QC00005496", "PASSIVEPAY", "283456789012341234"), ("ON00004652", "PASSIVEPAY", "283456789012341234"))
        + (("QC00005496", "ACTIVEPAY", None),) * 2
    ):
        await db.execute(
            "INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, auth_code, idempotency_key,"
            " request_sha256) VALUES ($1, $2, $3, 'ALIPAY', 100, $4, $2, 'sha')",
            merchant, f"O{n}", kind, code,
        )  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM orders") == 4


async def test_openapi_documents_the_auth_code_conflict(database_url: str, redis_url: str) -> None:
    async with running_stack(database_url, redis_url) as stack:
        spec = await (await stack.api.get("/api/openapi.json")).json()

    conflict = spec["paths"]["/api/payments"]["post"]["responses"]["409"]
    assert "auth_code_used" in conflict["description"]
    assert "payment_id" in spec["components"]["schemas"]["Error"]["properties"]


MIGRATION = "_one_payment_per_wallet_code.sql"


@pytest.fixture
async def database_before(admin_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database migrated by the real runner up to the migration before this finding's, as production was."""
    name = f"ottrecon_ac_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    old = tmp_path / "sql"
    old.mkdir()
    ours = next(p.name for p in files(SQL_PACKAGE).iterdir() if p.name.endswith(MIGRATION))
    for path in files(SQL_PACKAGE).iterdir():
        if path.name.endswith(".sql") and path.name < ours:
            (old / path.name).write_text(path.read_text())
    url = with_database(admin_url, name)
    await migrate(url, old)
    yield url
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def test_migration_marks_codes_repeated_before_it_and_refuses_new_repeats(database_before: str) -> None:
    code = "283456789012346666"
    conn = await asyncpg.connect(database_before)
    try:
        insert = (
            "INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, auth_code, idempotency_key,"
            " request_sha256) VALUES ($1, $2, $3, 'ALIPAY', 100, $4, $2, 'sha')"
        )
        # Three orders of one merchant charged with one code (the bug), the code at another merchant, an ACTIVEPAY.
        for merchant, order_id, kind, auth_code in (
            (MERCHANT, "DUP1", "PASSIVEPAY", code),
            (MERCHANT, "DUP2", "PASSIVEPAY", code),
            (OTHER_MERCHANT, "OTHER1", "PASSIVEPAY", code),
            (MERCHANT, "DUP3", "PASSIVEPAY", code),
            (MERCHANT, "ACT1", "ACTIVEPAY", None),
        ):
            await conn.execute(insert, merchant, order_id, kind, auth_code)
        await migrate(database_before)
        repeats = await conn.fetch("SELECT order_id FROM orders WHERE auth_code_repeat ORDER BY id")
        with pytest.raises(asyncpg.UniqueViolationError) as refused:
            await conn.execute(insert, MERCHANT, "DUP4", "PASSIVEPAY", code)
    finally:
        await conn.close()

    assert [r["order_id"] for r in repeats] == ["DUP2", "DUP3"]
    assert refused.value.constraint_name == store.AUTH_CODE_KEY
