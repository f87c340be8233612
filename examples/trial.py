"""A 30-day free trial: a workflow that sleeps for a month, then charges the card unless it was cancelled.

``run`` sends a welcome email, sleeps 27 days, sends a reminder, then waits for whichever comes first:
the last 3 days passing, or the durable promise ``cancel`` (resolved by the shared handler ``cancel``).
Emails and the charge are durable steps: a crash, a restart or a deploy in the middle of the month sends no
email twice and never charges twice. ``docs/testing.md`` tests it in milliseconds with virtual time.

    unbroken serve examples/trial.py
    curl localhost:8080/Trial/ada/run/send -H 'content-type: application/json' -d '"ada@example.com"'
    curl localhost:8080/Trial/ada/cancel -X POST
"""

from __future__ import annotations

import logging
from datetime import timedelta

import unbroken as restate

log = logging.getLogger("examples.trial")

TRIAL = timedelta(days=30)
REMIND_BEFORE = timedelta(days=3)

SENT: list[str] = []  # what the stand-in providers did (tests count them)
CHARGED: list[str] = []


def send_email(to: str, subject: str) -> None:
    """Stand-in for an email provider."""
    log.info("email to %s: %s", to, subject)
    SENT.append(f"{to}: {subject}")


def charge_card(email: str) -> str:
    """Stand-in for a payment provider: a side effect that must happen once."""
    CHARGED.append(email)
    return f"receipt-{len(CHARGED)}"


trial = restate.Workflow("Trial")


@trial.main()
async def run(ctx: restate.WorkflowContext, email: str) -> str:
    ctx.set("status", "trial")
    await ctx.run("welcome email", send_email, args=(email, "welcome to your 30-day trial"))
    await ctx.sleep(TRIAL - REMIND_BEFORE)
    await ctx.run("reminder email", send_email, args=(email, "your trial ends in 3 days"))
    match await restate.select(
        ended=ctx.sleep(REMIND_BEFORE), cancelled=ctx.promise("cancel", type_hint=bool).value()
    ):
        case ["cancelled", _]:
            ctx.set("status", "cancelled")
            return "cancelled"
    receipt = await ctx.run("charge", charge_card, args=(email,))
    ctx.set("status", "subscribed")
    return receipt


@trial.handler()
async def cancel(ctx: restate.WorkflowSharedContext) -> None:
    await ctx.promise("cancel", type_hint=bool).resolve(True)


@trial.handler()
async def status(ctx: restate.WorkflowSharedContext) -> str:
    return await ctx.get("status", type_hint=str) or "unknown"


app = restate.app([trial])
