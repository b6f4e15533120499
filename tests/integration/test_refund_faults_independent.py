"""Refunds requested through the payments API, carried to a faulty OTT Pay, retried and confirmed, against a
reference of our own.

Written by a tester who did not write the refund code, from ../shared/ottpay/PROTOCOL.md (REFUND, STATUS_QUERY's
refund_amount, ORDER_USED, section 5's codes, section 7's ids), README ("Payments API": the refunds endpoint, payment
statuses), docs/SIMULATOR.md (REFUND's rules, faults, /sim endpoints), docs/RECONCILIATION.md (refunded_amount,
succeeded refunds booked on the day they happened), docs/ARCHITECTURE.md ("Refund"), docs/RELIABILITY.md and
decisions 0004, 0009, 0010, 0022 and 0028. The only fake is the project's own simulator; Postgres and Redis are real.

A round (seeded: OTTRECON_REFUND_FAULTS_SEED replays the plans and the simulator's dice, not the timing) pays a few
PASSIVEPAY orders (with and without tips) while the gateway is healthy, then switches the simulator's faults on
(answers lost after the refund was carried out, 503s before anything was done, latency below the client's
timeout) and asks for refunds through POST /api/payments/{id}/refunds: a full refund, a partial then the rest,
several partial refunds one after another or all at once, more than what is left (at once or after a partial one),
several at once that together exceed the payment, the same Idempotency-Key again (at once and later), the same key
with another amount, invalid amounts, and a refund of a declined payment. Two workers run,
and the test runs the refund jobs again meanwhile (arq is at-least-once): process_refund enqueued twice, called on
both workers' contexts at once, and retry_failed_submissions on both at once.

The reference: a refund the API accepted fits what the customer paid (amount + tip, decision 0009) minus every
refund accepted before it, so the gateway can never refuse it; under faults it must still end `succeeded` exactly
once at the gateway. For refunds sent at once, the accepted ones must fit together and each refused one must not
fit beside them (some serial order explains the answers). After the system heals, with every worker stopped:

1. the gateway (GET /sim/orders) never refunded more than an order's total, holds each of our refund ids at most
   once and no refund id we did not create, and refunded exactly the amounts we asked for;
2. every refund is succeeded iff the gateway has it, nothing is pending, nothing the API accepted ended failed,
   and every API answer (status pending/succeeded/failed) is no further than the final state; no REFUND the
   gateway refused (PARAM_INVALID, FAIL) was ever sent;
3. integer cents everywhere: per order our succeeded total == the gateway's refunded total == the model's
   accepted total; refused requests (409 not_refundable, "at most N cents" with N what the model says is left;
   422 for invalid amounts; 409 idempotency_conflict) store nothing; the payment's status is paid /
   partially_refunded / refunded as the refunded total says, in orders, payments and GET /api/payments/{id}
   (whose refunds list equals ours); the ledger's refunded_amount equals the gateway's total, ledger_refunds holds
   one row per succeeded refund with its amount, booked on the business date (America/Toronto) of when it
   happened, which is within seconds of the gateway's refund_time (Beijing time, decision 0007/0022);
4. each refund has its own order id ([A-Za-z0-9], at most 20 characters, never the payment's); the gateway's
   request count equals the sent attempts recorded (every request it answered is on record).

Knobs: OTTRECON_REFUND_FAULTS_ROUNDS (default 1; each round is a test of its own, about 5 s when it heals),
OTTRECON_REFUND_FAULTS_SEED (round r uses seed + r; a failure names its seed), OTTRECON_REFUND_FAULTS_ORDERS
(paid orders per round, default 7). Each round prints a stats line: the fault mix, what the client met, the jobs run
again, the API's answers and the refunds' final statuses.

The second test kills a real `ottrecon worker` (SIGKILL) while its REFUND is at the gateway (carried out, answer
held), asks for more refunds while the first is unresolved (the rest of the payment is accepted, a cent more is
refused), brings the killed worker's lease forward (`UPDATE refunds SET lease_until = now()`, instead of waiting
the 2 x timeout + 30 s lease), and checks that a new worker settles everything as the gateway's truth says
(it passes: the new worker's first REFUND gets ORDER_USED with nothing on record, stays pending, and the next one
confirms it by STATUS_QUERY's refund_amount). About 8 s.

The third test (about 4 s) fails on the code it was written against: with the simulator's amount_mismatch fault an
authentic callback says one cent more than the order and the gateway took, orders.paid_amount becomes 1001, and
the refunds endpoint then accepts (and sends) a refund of 1051 cents of a payment of 1000 + 50 tip, which the
gateway refuses (PARAM_INVALID, the refund ends failed); a full refund of the 1050 leaves the payment
partially_refunded while the gateway says fully_refunded. Whole file by default: about 20 s.

Teeth (production mutations tried by hand in the worktree, reverted; seed 795182489, 2 rounds): an unknown refund
outcome taken as failed; every re-send under a new refund id; pending refunds not counted in what is left; the
refundable amount without the tip; the refunded status computed without the tip; the gateway's refund_time read as
UTC; store_refund without the order lock (same-key races answer 500, concurrent refunds overbook); ORDER_USED for a
refund with no attempt on record taken as failed (the SIGKILL test). Not caught in 2 rounds: settlements of one
order's refunds without lock_order_for_refund (test_refund_settlement_race.py aims at that race).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq import Worker

from ottpay.keys import parse_merchant_keys
from ottrecon.api.app import create_app as create_api
from ottrecon.api.settings import ApiSettings, parse_tokens
from ottrecon.payments.submission import Policy
from ottrecon.queue import PROCESS_REFUND_JOB, QUEUE_NAME
from simulator.app import create_app as create_sim
from simulator.core import SIM
from simulator.faults import Faults
from tests.conftest import MERCHANT, NEW_KEY, OLD_KEY
from tests.integration.processes import worker_env, worker_process
from tests.integration.stack import (
    API_TOKEN,
    OPERATOR,
    Stack,
    running_stack,
    second_worker,
    sim_settings,
)
from worker.context import JobContext
from worker.payment_jobs import process_refund, retry_failed_submissions

ROUNDS = int(os.environ.get("OTTRECON_REFUND_FAULTS_ROUNDS", "1"))
SEED = int(os.environ.get("OTTRECON_REFUND_FAULTS_SEED", str(random.SystemRandom().randrange(10**9))))
ORDERS = int(os.environ.get("OTTRECON_REFUND_FAULTS_ORDERS", "7"))
POLICY = Policy(
    passivepay_code_ttl_s=5.0,
    max_attempts=6,
    base_delay_s=0.05,
    max_delay_s=0.3,
    sweep_after_s=0.5,
    unpaid_deadline_s=5.0,
    sweep_max_age_s=30.0,
    passivepay_give_up_s=5.0,
)
GATEWAY_TIMEOUT_S = 0.5
TIMEOUT_HOLD_S = 1.2  # longer than the client's timeout: a held answer is lost
HEAL_DEADLINE_S = 30.0
TORONTO, BEIJING = ZoneInfo("America/Toronto"), ZoneInfo("Asia/Shanghai")
REFUND_ID = re.compile(r"[A-Za-z0-9]{1,20}")
SHAPES = ("full", "partial_then_rest", "splits", "concurrent_splits", "overbooked_at_once", "exceed", "too_much")


@dataclass
class Ask:
    """One refund request as the POS sends it."""

    key: str
    amount: int


@dataclass
class Answer:
    key: str
    amount: int
    http: int
    body: dict[str, Any]


@dataclass
class Plan:
    n: int
    amount: int
    tip: int
    shape: str
    waves: list[list[Ask]]
    replay: str  # none, same_key_at_once, same_key_later, same_key_other_amount

    @property
    def total(self) -> int:
        return self.amount + self.tip


@dataclass
class Seen:
    payment_id: str = ""
    answers: list[Answer] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)  # refund id -> amount (the model's view)
    answered_status: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def draw_faults(rng: random.Random) -> Faults:
    faults = Faults(
        latency_ms=rng.choice([0, 0, 30, 120, 250]),  # below the client's 0.5 s timeout: a slow gateway
        timeout=rng.choice([0.0, 0.2, 0.4, 0.6]),
        error_5xx=rng.choice([0.0, 0.1, 0.25]),
    )
    if not (faults.timeout or faults.error_5xx):
        faults = dataclasses.replace(faults, timeout=0.4, error_5xx=0.2)
    return faults


def split(rng: random.Random, total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    edges = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(edges)]


def draw_plan(rng: random.Random, n: int) -> Plan:
    amount = rng.choice([1, 2, 100, 999, rng.randrange(1, 300_000)])
    tip = rng.choice([0, 0, 1, rng.randrange(1, 5_000)])
    total = amount + tip
    shape = SHAPES[n % len(SHAPES)] if n < len(SHAPES) else rng.choice(SHAPES)
    keys = (f"rf{n}-{i}" for i in range(100))
    waves: list[list[Ask]]
    if shape == "full" or total < 2:
        shape, waves = "full", [[Ask(next(keys), total)]]
    elif shape == "partial_then_rest":
        part = rng.randrange(1, total)
        waves = [[Ask(next(keys), part)], [Ask(next(keys), total - part)]]
    elif shape == "splits":
        parts = split(rng, total, rng.randint(2, 4))
        if rng.random() < 0.5:
            parts = parts[:-1]  # something is left unrefunded
        waves = [[Ask(next(keys), p)] for p in parts]
    elif shape == "concurrent_splits":
        waves = [[Ask(next(keys), p) for p in split(rng, total, rng.randint(2, 4))]]
    elif shape == "overbooked_at_once":
        parts = split(rng, total, rng.randint(2, 3))
        parts.append(rng.randint(1, total))  # together more than the payment: some must be refused
        rng.shuffle(parts)
        waves = [[Ask(next(keys), p) for p in parts], [Ask(next(keys), 1)]]
    elif shape == "exceed":
        part = rng.randrange(1, total)
        waves = [[Ask(next(keys), part)], [Ask(next(keys), total - part + 1)], [Ask(next(keys), total - part)]]
    else:  # too_much
        waves = [[Ask(next(keys), total + rng.choice([1, total]))], [Ask(next(keys), total)]]
    replay = rng.choice(["none", "none", "same_key_at_once", "same_key_later", "same_key_other_amount"])
    return Plan(n=n, amount=amount, tip=tip, shape=shape, waves=waves, replay=replay)


# --------------------------------------------------------------------------------------------------------------
# The POS, the at-least-once job runner.


async def refund(stack: Stack, payment_id: str, amount: Any, key: str) -> tuple[int, dict[str, Any]]:
    response = await stack.api.post(
        f"/api/payments/{payment_id}/refunds",
        json={"amount": amount},
        headers={"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": key},
    )
    body: dict[str, Any] = await response.json()
    return response.status, body


def accepted(http: int, body: dict[str, Any]) -> bool:
    return http in (200, 201, 202) and "id" in body


async def pos(stack: Stack, plan: Plan, seen: Seen, problems: list[str], rng: random.Random) -> None:
    """Send the plan's waves, checking every answer against the model as it comes."""
    tag = f"order {plan.n} ({seen.payment_id}, {plan.shape}, total {plan.total})"
    left = plan.total
    for number, wave in enumerate(plan.waves):
        await asyncio.sleep(rng.uniform(0, 0.2))
        asks = list(wave)
        if number == 0 and plan.replay == "same_key_at_once":
            asks.append(wave[0])
        results = await asyncio.gather(*(refund(stack, seen.payment_id, a.amount, a.key) for a in asks))
        taken: dict[str, int] = {}
        refused: list[tuple[Ask, dict[str, Any]]] = []
        by_key: dict[str, str] = {}
        for ask, (http, body) in zip(asks, results, strict=True):
            seen.answers.append(Answer(ask.key, ask.amount, http, body))
            if accepted(http, body):
                if body["amount"] != ask.amount or body["payment_id"] != seen.payment_id:
                    problems.append(f"{tag}: {ask.key} answered {body}")
                if by_key.setdefault(ask.key, body["id"]) != body["id"]:
                    problems.append(f"{tag}: key {ask.key} answered two refunds {by_key[ask.key]}, {body['id']}")
                taken[body["id"]] = ask.amount
                seen.answered_status[body["id"]].append(body["status"])
            elif http == 409 and body.get("error") == "not_refundable":
                refused.append((ask, body))
            else:
                problems.append(f"{tag}: {ask.key} ({ask.amount}) answered {http}: {body}")
        fits = sum(taken.values())
        if fits > left:
            problems.append(f"{tag}: wave {number} accepted {sorted(taken.values())}, only {left} left")
        for ask, body in refused:
            if ask.amount <= left - fits:
                problems.append(f"{tag}: {ask.amount} refused though {left - fits} is left after the others: {body}")
            said = " ".join(body.get("problems", []))
            # Nothing left: "at most 0 cents", or the payment is already refunded (once the refunds settled).
            clear = f"at most {left} cents" in said or (left == 0 and "payment is refunded" in said)
            if len(wave) == 1 and not clear:
                problems.append(f"{tag}: refusal of {ask.amount} does not say at most {left}: {body}")
        seen.accepted |= taken
        left -= fits
    if not seen.accepted:
        return
    first_key = plan.waves[0][0].key
    first_amount = plan.waves[0][0].amount
    first_id = next((a.body.get("id") for a in seen.answers if a.key == first_key and accepted(a.http, a.body)), None)
    if first_id is None:
        return
    if plan.replay == "same_key_later":
        await asyncio.sleep(0.3)
        http, body = await refund(stack, seen.payment_id, first_amount, first_key)
        seen.answers.append(Answer(first_key, first_amount, http, body))
        if http not in (200, 202) or body.get("id") != first_id:
            problems.append(f"{tag}: the same key again answered {http}: {body} (first {first_id})")
        else:
            seen.answered_status[first_id].append(body["status"])
    elif plan.replay == "same_key_other_amount":
        http, body = await refund(stack, seen.payment_id, first_amount + 1, first_key)
        if (http, body.get("error")) != (409, "idempotency_conflict"):
            problems.append(f"{tag}: the same key with another amount answered {http}: {body}")


async def at_least_once(
    stack: Stack, second: Worker, database_url: str, rng: random.Random, stop: asyncio.Event, counts: Counter[str]
) -> None:
    """Run the worker's refund jobs again, twice at once, while both workers run them too."""
    contexts = [cast(JobContext, stack.worker.ctx), cast(JobContext, second.ctx)]
    conn = await asyncpg.connect(database_url)
    try:
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.02, 0.12))
            pks = [r["id"] for r in await conn.fetch("SELECT id FROM refunds ORDER BY id")]
            choice = rng.random()
            if pks and choice < 0.35:
                pk = rng.choice(pks)
                for _ in range(2):
                    await stack.worker.pool.enqueue_job(PROCESS_REFUND_JOB, pk, _queue_name=QUEUE_NAME)
                counts["process_refund enqueued twice"] += 1
            elif pks and choice < 0.75:
                pk = rng.choice(pks)
                await asyncio.gather(*(process_refund(ctx, pk) for ctx in contexts))
                counts["process_refund run twice"] += 1
            else:
                await asyncio.gather(*(retry_failed_submissions(ctx) for ctx in contexts))
                counts["retry run twice"] += 1
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------------------------
# The reference, compared.


def beijing(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)


def order_status_for(refunded: int, total: int) -> str:
    return "refunded" if refunded >= total else "partially_refunded" if refunded else "paid"


SIM_STATUS = {"paid": "success", "partially_refunded": "partial_refunded", "refunded": "fully_refunded"}


async def compare(
    db: asyncpg.Connection, sim: TestClient[Any, Any], plans: list[Plan], seen: dict[int, Seen]
) -> tuple[list[str], Counter[str]]:
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    gateway = {o["order_id"]: o for o in (await (await sim.get("/sim/orders")).json())["orders"]}
    rows = await db.fetch(
        "SELECT r.*, o.order_id AS ori FROM refunds r JOIN orders o ON o.id = r.order_ref ORDER BY r.id"
    )
    ours = {r["refund_order_id"]: r for r in rows}
    orders = {r["order_id"]: r for r in await db.fetch("SELECT order_id, status FROM orders")}
    payments = {r["order_id"]: r["status"] for r in await db.fetch("SELECT order_id, status FROM payments")}
    ledger = {r["order_id"]: r for r in await db.fetch("SELECT * FROM ledger")}
    booked: dict[str, dict[str, asyncpg.Record]] = defaultdict(dict)
    for r in await db.fetch("SELECT * FROM ledger_refunds"):
        booked[r["order_id"]][r["refund_order_id"]] = r
    gateway_refund_ids: Counter[str] = Counter()
    for order in gateway.values():
        for r in order["refunds"]:
            gateway_refund_ids[r["order_id"]] += 1
    if doubled := [i for i, c in gateway_refund_ids.items() if c > 1]:
        problems.append(f"gateway holds refund ids more than once: {doubled}")
    if strangers := sorted(set(gateway_refund_ids) - set(ours)):
        problems.append(f"gateway refunds we never created: {strangers}")
    for plan in plans:
        s = seen[plan.n]
        pid = s.payment_id
        tag = f"order {plan.n} ({pid}, {plan.shape})"
        truth = gateway.get(pid)
        if truth is None:
            problems.append(f"{tag}: the gateway has no such order")
            continue
        at_gateway = {r["order_id"]: r for r in truth["refunds"]}
        refunded = sum(r["amount"] for r in truth["refunds"])
        if refunded > truth["total"] or truth["total"] != plan.total:
            problems.append(f"{tag}: gateway refunded {refunded} of {truth['total']} (paid {plan.total})")
        mine = {i: r for i, r in ours.items() if r["ori"] == pid}
        if set(mine) != set(s.accepted):
            problems.append(f"{tag}: stored refunds {sorted(mine)} but the API accepted {sorted(s.accepted)}")
        succeeded = 0
        for rid, r in mine.items():
            outcomes[f"refund {r['status']}"] += 1
            if not REFUND_ID.fullmatch(rid) or rid == pid:
                problems.append(f"{tag}: refund id {rid!r}")
            if r["amount"] != s.accepted.get(rid):
                problems.append(f"{tag}: refund {rid} stored {r['amount']}, asked {s.accepted.get(rid)}")
            g = at_gateway.get(rid)
            if g is not None and g["amount"] != r["amount"]:
                problems.append(f"{tag}: refund {rid} of {r['amount']} refunded {g['amount']} at the gateway")
            if r["status"] == "pending":
                problems.append(f"{tag}: refund {rid} still pending ({r['status_reason']})")
            elif (r["status"] == "succeeded") != (g is not None):
                problems.append(
                    f"{tag}: refund {rid} {r['status']} ({r['status_reason']}) but gateway has it: {g is not None}"
                )
            elif r["status"] == "failed":
                problems.append(f"{tag}: refund {rid} the API accepted ended failed ({r['status_reason']})")
            if r["status"] == "succeeded":
                succeeded += r["amount"]
            for answered in s.answered_status.get(rid, []):
                if answered not in ("pending", r["status"]):
                    problems.append(f"{tag}: refund {rid} answered {answered}, ended {r['status']}")
        model = sum(s.accepted.values())
        if not succeeded == refunded == model:
            problems.append(f"{tag}: succeeded {succeeded}, gateway refunded {refunded}, model {model}")
        want = order_status_for(model, plan.total)
        order = orders.get(pid)
        got = (order["status"] if order else None, payments.get(pid), SIM_STATUS.get(want))
        if got != (want, want, truth["status"]):
            problems.append(f"{tag}: order/payment/gateway status {got[:2]}, {truth['status']}; expected {want}")
        row = ledger.get(pid)
        if row is None or row["refunded_amount"] != refunded:
            problems.append(f"{tag}: ledger refunded_amount {row and row['refunded_amount']}, gateway {refunded}")
        elif (row["recon_status"], row["amount_at_risk"]) != ("matched", 0):
            problems.append(f"{tag}: ledger {row['recon_status']} at risk {row['amount_at_risk']}")
        lines = booked.get(pid, {})
        if {i: b["amount"] for i, b in lines.items()} != {i: g["amount"] for i, g in at_gateway.items()}:
            problems.append(f"{tag}: ledger_refunds {[(i, b['amount']) for i, b in lines.items()]}")
        for rid, b in lines.items():
            stored = ours.get(rid)
            if stored is None or stored["succeeded_at"] is None:
                continue
            when = stored["succeeded_at"]
            happened = beijing(at_gateway[rid]["refund_time"]) if rid in at_gateway else None
            if happened is not None and abs(when - happened) > timedelta(seconds=30):
                problems.append(f"{tag}: refund {rid} succeeded_at {when}, gateway {happened}")
            if b["business_date"] != when.astimezone(TORONTO).date():
                problems.append(f"{tag}: refund {rid} booked on {b['business_date']}, happened {when}")
    return problems, outcomes


async def api_view_problems(stack: Stack, db: asyncpg.Connection, seen: dict[int, Seen]) -> list[str]:
    """GET /api/payments/{id} says what the tables say: the status and every refund."""
    problems = []
    for s in seen.values():
        view = await stack.get(f"/api/payments/{s.payment_id}")
        rows = await db.fetch(
            "SELECT r.refund_order_id, r.amount, r.status FROM refunds r JOIN orders o ON o.id = r.order_ref "
            "WHERE o.order_id = $1 ORDER BY r.id",
            s.payment_id,
        )
        status = await db.fetchval("SELECT status FROM orders WHERE order_id = $1", s.payment_id)
        listed = sorted((r["id"], r["amount"], r["status"]) for r in view["refunds"])
        if view["status"] != status or listed != sorted(tuple(r) for r in rows):
            problems.append(f"{s.payment_id}: API shows {view['status']} {listed}, tables {status} {rows}")
    return problems


async def audit(db: asyncpg.Connection, sim_requests: int) -> tuple[list[str], Counter[str]]:
    problems: list[str] = []
    met: Counter[str] = Counter()
    rows = await db.fetch("SELECT action, outcome, rsp_code, error, sent, refund_ref FROM submission_attempts")
    recorded = 0
    for row in rows:
        if row["sent"] and row["error"] != "http_503":
            recorded += 1
        if row["refund_ref"] is None:
            continue
        met[f"{row['action']} {row['rsp_code'] or row['error']}"] += 1
        if row["action"] == "REFUND" and row["rsp_code"] in ("PARAM_INVALID", "FAIL", "ORDER_TYPE_ERROR"):
            problems.append(f"a REFUND the gateway refused was sent: {dict(row)}")
    if recorded != sim_requests:
        problems.append(f"the gateway answered {sim_requests} requests, submission_attempts records {recorded}")
    return problems, met


# --------------------------------------------------------------------------------------------------------------


async def invalid_and_unpaid(stack: Stack, db: asyncpg.Connection, payment_id: str, round_seed: int) -> list[str]:
    """422 for amounts that are not positive integer cents, 409 for a declined payment: nothing stored."""
    problems = []
    before = await db.fetchval("SELECT count(*) FROM refunds")
    for bad in (0, -5, 1.5, "100", True, None):
        http, body = await refund(stack, payment_id, bad, f"bad-{bad!r}")
        if (http, body.get("error")) != (422, "invalid_request"):
            problems.append(f"refund amount {bad!r} answered {http}: {body}")
    _, declined = await stack.pay(
        f"declined-{round_seed}", kind="PASSIVEPAY", amount=700, auth_code=f"28{round_seed % 10**8:08d}000000"
    )
    final = await stack.wait_status(declined["id"], {"declined", "failed"}, timeout_s=15)
    http, body = await refund(stack, declined["id"], 100, "unpaid-1")
    if (http, body.get("error")) != (409, "not_refundable"):
        problems.append(f"refund of a {final['status']} payment answered {http}: {body}")
    if await db.fetchval("SELECT count(*) FROM refunds") != before:
        problems.append("refused refund requests stored refunds")
    return problems


async def run_round(seed: int, database_url: str, redis_url: str, db: asyncpg.Connection) -> str:
    rng = random.Random(seed)
    faults = draw_faults(rng)
    plans = [draw_plan(rng, n) for n in range(ORDERS)]
    seen = {plan.n: Seen() for plan in plans}
    problems: list[str] = []
    chaos: Counter[str] = Counter()
    merchants = parse_merchant_keys(f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY}")
    sim_app = create_sim(sim_settings(merchants, seed=seed, timeout_hold_s=TIMEOUT_HOLD_S))
    started = time.monotonic()
    differences = ["not compared yet"]
    outcomes: Counter[str] = Counter()
    async with TestClient(TestServer(sim_app)) as sim:
        async with running_stack(
            database_url, redis_url, policy=POLICY, api_wait_s=1.0, gateway_timeout_s=GATEWAY_TIMEOUT_S, sim=sim
        ) as stack:
            # Paid while the gateway is healthy: the payment path has a test of its own.
            for plan in plans:
                code = f"28{plan.n:04d}{seed % 10**8:08d}{rng.randrange(1, 9999):04d}"
                code = code[:-4] + "1234" if code.endswith(("0000", "9999")) else code
                body: dict[str, Any] = {"kind": "PASSIVEPAY", "amount": plan.amount, "auth_code": code}
                if plan.tip:
                    body["tip"] = plan.tip
                http, payment = await stack.pay(f"pay-{plan.n}", **body)
                assert http in (201, 202), payment
                seen[plan.n].payment_id = payment["id"]
                await stack.wait_status(payment["id"], {"paid"})
            problems.extend(await invalid_and_unpaid(stack, db, seen[0].payment_id, seed))
            sim_app[SIM].settings = dataclasses.replace(sim_app[SIM].settings, faults=faults)
            stop_chaos = asyncio.Event()
            async with second_worker(stack) as second:
                jobs = asyncio.create_task(
                    at_least_once(stack, second, database_url, random.Random(seed + 1), stop_chaos, chaos)
                )
                try:
                    pos_rng = random.Random(seed + 2)
                    await asyncio.gather(*(pos(stack, p, seen[p.n], problems, pos_rng) for p in plans))
                    while time.monotonic() - started < HEAL_DEADLINE_S:
                        differences, outcomes = await compare(db, sim, plans, seen)
                        if not differences:
                            break
                        await asyncio.sleep(0.25)
                finally:
                    stop_chaos.set()
                    await jobs
            healed_s = time.monotonic() - started
            problems.extend(await api_view_problems(stack, db, seen))
        # Every worker has stopped; held answers have been given (they count on arrival anyway).
        await asyncio.sleep(TIMEOUT_HOLD_S)
        final_differences, outcomes = await compare(db, sim, plans, seen)
        stats = await (await sim.get("/sim/stats")).json()
    audited, met = await audit(db, stats["requests"])
    if differences:
        problems.append(f"not healed within {HEAL_DEADLINE_S} s:")
        problems.extend(f"  {d}" for d in differences)
    problems.extend(d for d in final_differences if d not in differences)
    problems.extend(audited)
    if stats["charges_by_order_max"] > 1:
        problems.append(f"charged twice: {stats['orders_charged_more_than_once']}")
    api_codes = Counter(
        f"{a.http} {a.body.get('status') or a.body.get('error')}" for s in seen.values() for a in s.answers
    )
    line = (
        f"seed {seed}: faults {dataclasses.asdict(faults)}; shapes {dict(Counter(p.shape for p in plans))}; "
        f"client saw {dict(sorted(met.items()))}; jobs again {dict(chaos)}; api {dict(sorted(api_codes.items()))}; "
        f"outcomes {dict(sorted(outcomes.items()))}; gateway refunds {stats['refunds']}; healed in {healed_s:.1f} s"
    )
    print("\n" + line)
    assert not problems, f"seed {seed} (OTTRECON_REFUND_FAULTS_SEED={seed} ..._ROUNDS=1):\n" + "\n".join(problems)
    return line


@pytest.mark.parametrize("round_no", range(ROUNDS))
async def test_refunds_under_gateway_faults_match_the_reference(
    round_no: int, database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    await run_round(SEED + round_no, database_url, redis_url, db)


# --------------------------------------------------------------------------------------------------------------
# A worker killed while its REFUND is at the gateway (carried out, answer held): nothing of the attempt is on record.


async def wait_for(check: Any, what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(90)
async def test_a_worker_killed_while_a_refund_is_at_the_gateway_is_taken_over(
    tmp_path: Path, database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    merchants = parse_merchant_keys(f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY}")
    sim_app = create_sim(sim_settings(merchants, timeout_hold_s=20.0))
    api_settings = ApiSettings(
        database_url=database_url,
        redis_url=redis_url,
        token_digests=parse_tokens(API_TOKEN),
        merchant_ids=frozenset({MERCHANT}),
        wait_s=0.5,
    )
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    amount, tip, first_amount = 5000, 250, 1999
    total = amount + tip

    async with TestClient(TestServer(sim_app)) as sim, TestClient(TestServer(create_api(api_settings))) as api:

        async def ask_refund(cents: int, key: str) -> tuple[int, dict[str, Any]]:
            response = await api.post(
                f"/api/payments/{payment_id}/refunds",
                json={"amount": cents},
                headers=headers | {"Idempotency-Key": key},
            )
            body: dict[str, Any] = await response.json()
            return response.status, body

        async def gateway_order() -> dict[str, Any]:
            result: dict[str, Any] = await (await sim.get(f"/sim/orders/{MERCHANT}/{payment_id}")).json()
            return result

        env = worker_env(
            database_url,
            redis_url,
            OTTPAY_BASE_URL=str(sim.make_url("/")),
            OTTPAY_OPERATORS=f"{MERCHANT}={OPERATOR}",
            OTTPAY_TIMEOUT_SECONDS="2",
            OTTRECON_CALLBACK_URL="http://127.0.0.1:9/ottpay/callback",
            OTTRECON_CRON_EVERY_SECONDS="1",
            OTTRECON_SUBMIT_BASE_DELAY_SECONDS="0.1",
            OTTRECON_SUBMIT_MAX_DELAY_SECONDS="0.5",
        )
        with worker_process(env, tmp_path / "first.log") as first:
            response = await api.post(
                "/api/payments",
                json={
                    "merchant_id": MERCHANT,
                    "kind": "PASSIVEPAY",
                    "biz_type": "WECHATPAY",
                    "amount": amount,
                    "tip": tip,
                    "auth_code": "283456789012345672",
                },
                headers=headers | {"Idempotency-Key": "kill-pay"},
            )
            payment = await response.json()
            assert response.status in (201, 202), payment
            payment_id = payment["id"]

            async def paid() -> bool:
                return bool(await db.fetchval("SELECT status = 'paid' FROM orders WHERE order_id = $1", payment_id))

            await wait_for(paid, "the payment to be paid", 20)
            # From now on every REFUND is carried out but its answer held far past the client's 2 s timeout.
            sim_app[SIM].settings = dataclasses.replace(sim_app[SIM].settings, faults=Faults(timeout=1.0))
            http, first_refund = await ask_refund(first_amount, "kill-r1")
            assert (http, first_refund["status"]) == (201, "pending"), first_refund

            async def at_gateway() -> bool:
                return bool((await gateway_order())["refunds"])

            await wait_for(at_gateway, "the REFUND to reach the gateway", 15)
            assert first.poll() is None
            first.kill()  # SIGKILL while it waits for the held answer
            first.wait(timeout=10)
        sim_app[SIM].settings = dataclasses.replace(sim_app[SIM].settings, faults=Faults())  # the network heals
        # While the first refund is unresolved it still counts: a cent more than the rest is refused, the rest is not.
        too_much, refused = await ask_refund(total - first_amount + 1, "kill-r2")
        assert (too_much, refused.get("error")) == (409, "not_refundable"), refused
        assert f"at most {total - first_amount} cents" in " ".join(refused["problems"]), refused
        http, rest = await ask_refund(total - first_amount, "kill-r3")
        assert http in (201, 202) and rest["status"] == "pending", rest  # no worker runs
        # The killed worker's lease (2 x timeout + 30 s) is brought forward rather than waited for.
        await db.execute("UPDATE refunds SET lease_until = now() WHERE refund_order_id = $1", first_refund["id"])
        with worker_process(env, tmp_path / "second.log"):

            async def settled() -> bool:
                return not await db.fetchval("SELECT count(*) FROM refunds WHERE status = 'pending'")

            await wait_for(settled, "both refunds to settle", 40)

            async def reconciled() -> bool:
                value = await db.fetchval("SELECT refunded_amount FROM ledger WHERE order_id = $1", payment_id)
                return bool(value == total)

            with contextlib.suppress(AssertionError):
                await wait_for(reconciled, "the ledger", 10)
            truth = await gateway_order()
            view = await (await api.get(f"/api/payments/{payment_id}", headers=headers)).json()
            again = await ask_refund(first_amount, "kill-r1")
        refunds = [
            tuple(r)
            for r in await db.fetch("SELECT refund_order_id, amount, status, status_reason FROM refunds ORDER BY id")
        ]
        attempts = [
            tuple(r)
            for r in await db.fetch(
                "SELECT action, rsp_code, error, sent FROM submission_attempts WHERE refund_ref IS NOT NULL ORDER BY id"
            )
        ]
        ledger = await db.fetchrow("SELECT refunded_amount, recon_status FROM ledger WHERE order_id = $1", payment_id)
        booked = await db.fetch("SELECT refund_order_id, amount FROM ledger_refunds WHERE order_id = $1", payment_id)

    print(f"\nrefunds {refunds}; attempts {attempts}; gateway {truth['status']} {truth['refunds']}; ledger {ledger}")
    at_gateway_ids = sorted((r["order_id"], r["amount"]) for r in truth["refunds"])
    assert at_gateway_ids == sorted([(first_refund["id"], first_amount), (rest["id"], total - first_amount)])
    assert [(r[0], r[1], r[2]) for r in refunds] == [
        (first_refund["id"], first_amount, "succeeded"),
        (rest["id"], total - first_amount, "succeeded"),
    ], refunds
    assert truth["status"] == "fully_refunded" and view["status"] == "refunded", view
    assert again == (200, again[1]) and again[1]["status"] == "succeeded", again
    assert ledger is not None and ledger["refunded_amount"] == total, ledger
    assert sorted((r["refund_order_id"], r["amount"]) for r in booked) == at_gateway_ids


# --------------------------------------------------------------------------------------------------------------
# What is left to refund is what the customer paid. SIMULATOR.md's amount_mismatch: an authentic callback reports
# the ordered amount plus one cent, "the order itself is unchanged" (STATUS_QUERY and the gateway's refundable amount
# say 1000 + 50). Decision 0009 takes orders.paid_amount from what the gateway reported, and the refunds endpoint
# computes what is left from it, so 1051 cents (more than the 1050 the customer paid) is accepted and sent, and a
# full refund of the 1050 the customer paid leaves the payment partially_refunded while the gateway says
# fully_refunded. Fails on the code it was written against (the ledger does flag amount_mismatch, 1 cent at risk).


async def test_a_refund_beyond_what_the_gateway_took_is_refused_even_after_a_callback_said_more(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url, faults=Faults(amount_mismatch=1.0)) as stack:
        _, payment = await stack.pay("mismatch-pay", kind="ACTIVEPAY", amount=1000, tip=50)
        response = await stack.sim.post(f"/sim/orders/{MERCHANT}/{payment['id']}/pay")
        assert response.status == 200, await response.text()
        paid = await stack.wait_status(payment["id"], {"paid"})
        truth = await (await stack.sim.get(f"/sim/orders/{MERCHANT}/{payment['id']}")).json()
        over = await refund(stack, payment["id"], truth["total"] + 1, "mismatch-over")
        full = await refund(stack, payment["id"], truth["total"], "mismatch-full")
        await stack.wait_status(payment["id"], {"partially_refunded", "refunded"})
        after = await stack.get(f"/api/payments/{payment['id']}")
        truth = await (await stack.sim.get(f"/sim/orders/{MERCHANT}/{payment['id']}")).json()
    sent = await db.fetch("SELECT rsp_code FROM submission_attempts WHERE action = 'REFUND' ORDER BY id")
    print(f"\npaid_amount {paid['paid_amount']}; over {over}; full {full}; gateway {truth['status']}; sent {sent}")
    assert truth["total"] == 1050 and full[1]["status"] == "succeeded", (truth, full)
    problems = []
    if over[0] != 409 or over[1].get("error") != "not_refundable":
        problems.append(f"a refund of {truth['total'] + 1} cents of a 1050 payment answered {over}")
    if [r["rsp_code"] for r in sent] != ["SUCCESS"]:
        problems.append(f"REFUNDs sent: {[r['rsp_code'] for r in sent]}")
    if (truth["status"], after["status"]) != ("fully_refunded", "refunded"):
        problems.append(f"the gateway refunded everything ({truth['status']}) but the payment is {after['status']}")
    assert not problems, "\n".join(problems)
