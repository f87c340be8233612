"""A signup workflow that waits for the user to click the link in a verification email.

``run`` executes once per workflow key (the user id). It sends the email as a durable step, then
waits on the durable promise ``emailVerified``; the shared handler ``click`` resolves that promise
from the "link" the user clicked. The wait survives restarts: the workflow is suspended, not parked
in memory.

    unbroken serve examples/user_signup.py
    curl localhost:8080/UserSignup/alice/run/send -H 'content-type: application/json' \
         -d '{"name": "Alice", "email": "alice@example.com"}'
    # the server log shows the verification link with its secret, then:
    curl localhost:8080/UserSignup/alice/click -H 'content-type: application/json' -d '"<secret>"'
    curl localhost:8080/restate/workflow/UserSignup/alice/attach
"""

from __future__ import annotations

import json
import logging

from pydantic import BaseModel

import unbroken as restate

log = logging.getLogger("examples.user_signup")


class User(BaseModel):
    name: str
    email: str


class SignupResult(BaseModel):
    user_id: str
    verified: bool
    message: str


def send_verification_email(user_id: str, user: User, secret: str) -> str:
    """Stand-in for an email provider: the "email" is a log line with the verification link."""
    link = f"/UserSignup/{user_id}/click"
    log.info("verification email to %s: confirm with POST %s, body %s", user.email, link, json.dumps(secret))
    return link


signup = restate.Workflow("UserSignup")


@signup.main()
async def run(ctx: restate.WorkflowContext, user: User) -> SignupResult:
    user_id = ctx.key()
    ctx.set("user", user)
    ctx.set("status", "waiting for email verification")

    # ctx.uuid() is deterministic per invocation: a replay after a crash gets the same secret.
    secret = str(ctx.uuid())
    await ctx.run("send verification email", lambda: send_verification_email(user_id, user, secret))

    clicked = await ctx.promise("emailVerified", type_hint=str).value()
    if clicked != secret:
        ctx.set("status", "verification failed")
        return SignupResult(user_id=user_id, verified=False, message="the verification link is not valid")
    ctx.set("status", "verified")
    return SignupResult(user_id=user_id, verified=True, message=f"welcome, {user.name}!")


@signup.handler()
async def click(ctx: restate.WorkflowSharedContext, secret: str) -> str:
    # Resolving a promise twice fails with 409 "promise was already completed": a link works once.
    await ctx.promise("emailVerified", type_hint=str).resolve(secret)
    return "thanks, your email address is being verified"


@signup.handler()
async def status(ctx: restate.WorkflowSharedContext) -> dict[str, object]:
    user = await ctx.get("user", type_hint=User)
    return {
        "user": None if user is None else user.model_dump(),
        "status": await ctx.get("status", type_hint=str) or "unknown",
    }


app = restate.app([signup])
