"""Runs in-process handlers: the ``HandlerTransport`` for services defined in this Python process."""

from __future__ import annotations

import asyncio
import logging
import traceback
import weakref
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any

from unbroken.core import journal as j
from unbroken.protocol.transport import AttemptSink, AttemptStart
from unbroken.sdk import tracing
from unbroken.sdk.attempt import Attempt, failure, safe_repr, value_result
from unbroken.sdk.exceptions import (
    NonDeterminismError,
    RetryableError,
    SdkInternalBaseException,
    TerminalError,
)
from unbroken.sdk.invocation_context import InvocationContext, unserializable_message
from unbroken.sdk.replay_logging import current_session
from unbroken.sdk.serde import SerdeError
from unbroken.sdk.service import HandlerDef, _ServiceBase

log = logging.getLogger("unbroken.handler")


class LocalTransport:
    def __init__(
        self,
        services: Iterable[_ServiceBase],
        now_ms: Callable[[], int],
        loop: asyncio.AbstractEventLoop | None = None,
        fault_point: Callable[[str], None] = lambda name: None,
        dry_run: bool = False,
    ) -> None:
        self.dry_run = dry_run  # replay journals without running any ctx.run action (a replay check)
        self.handlers: dict[tuple[str, str], HandlerDef] = {}
        for svc in services:
            for name, hdef in svc.handlers.items():
                self.handlers[(svc.name, name)] = hdef
        self.now_ms = now_ms
        self.fault_point = fault_point  # the node's named fault points (``sdk.run.before_propose``)
        # The engine's loop, when the caller knows it: asyncio.get_running_loop() makes a getpid() system
        # call, and showed as ~4% of the event loop's samples when asked once per attempt.
        self.loop = loop

    def start(self, start: AttemptStart, sink: AttemptSink) -> Attempt:
        loop = self.loop or asyncio.get_running_loop()
        traced = tracing.active()
        trace = None
        if traced is not None:  # off: this test is all tracing costs an attempt
            trace = traced.attempt(start)
            sink = tracing.TracingSink(sink, trace)
        session = Attempt(start, sink, loop, self.dry_run)
        session.trace = trace
        hdef = self.handlers.get((start.target.service, start.target.handler))
        if hdef is None:
            sink.fail(404, f"no handler {start.target} in this process")
            session.end()
            return session
        ctx = InvocationContext(session, hdef, self.now_ms, self.fault_point)
        session.task = loop.create_task(run_handler(session, ctx, hdef))
        return session


def _input(hdef: HandlerDef, session: Attempt) -> object:
    first = session.start.journal[0]
    assert isinstance(first, j.InputCommand)
    try:
        return hdef.input_serde.deserialize(first.value)
    except SerdeError as exc:
        raise TerminalError(f"invalid input for {hdef.service}/{hdef.name}: {exc}", 400) from None


async def _call_within(session: Attempt, ctx: InvocationContext, hdef: HandlerDef) -> Any:
    """The handler inside restate-sdk's ``invocation_context_managers``, entered around each attempt."""
    async with AsyncExitStack() as stack:
        for make in hdef.options.invocation_context_managers or ():
            await stack.enter_async_context(make())
        return await (hdef.fn(ctx, _input(hdef, session)) if hdef.takes_input else hdef.fn(ctx))


def _output_bytes(session: Attempt, hdef: HandlerDef, out: Any) -> bytes | None:
    """The handler's output serialized; None if it cannot be: a programming error no retry fixes (each retry
    would run the handler again), so the invocation is paused at once with what to change."""
    try:
        return hdef.output_serde.serialize(out)
    except TerminalError:  # a custom serde's own verdict: the invocation fails for good
        raise
    except Exception as exc:
        what = f"the handler {hdef.service}/{hdef.name} returned"
        fix = "give the handler an output_serde"
        session.pause(
            500, unserializable_message(what, out, hdef.output_serde, exc, session.start.invocation_id, fix)
        )
        return None


async def run_handler(session: Attempt, ctx: InvocationContext, hdef: HandlerDef) -> None:
    """Run the user's coroutine to its end and turn how it ended into Output, suspension or error."""
    current_session.set(
        weakref.ref(session)
    )  # this task's own context: restate.getLogger drops replayed lines
    if session.trace is not None:
        session.trace.activate()  # the user's own spans nest under the attempt's
    try:
        if hdef.options.invocation_context_managers:
            out = await _call_within(session, ctx, hdef)
        elif hdef.takes_input:
            out = await hdef.fn(ctx, _input(hdef, session))
        else:
            out = await hdef.fn(ctx)
        data = _output_bytes(session, hdef, out)
        if data is None:
            return
        result = value_result(data, f"the output of {hdef.service}/{hdef.name}")
    except TerminalError as exc:
        result = j.Result(failure=failure(exc.status_code, exc.message, exc.metadata))
    except NonDeterminismError as exc:
        log.error("%s: %s", session.start.invocation_id, exc)
        session.fail(exc.code, str(exc))
        return
    except SdkInternalBaseException:
        return
    except asyncio.CancelledError:
        if not session.ended:
            session.fail(500, "the handler was cancelled (asyncio.CancelledError)")
        return
    except RetryableError as exc:
        delay = int(exc.retry_after.total_seconds() * 1000) if exc.retry_after else None
        session.fail(exc.status_code, exc.message, delay)
        return
    except BaseException as exc:  # noqa: B036 - a SystemExit in a handler must not stop the engine's loop
        if session.ended:
            return
        # not logged here: the engine logs every failed attempt once, with the retry decision
        session.fail(500, f"{safe_repr(exc)}\n{traceback.format_exc(limit=8)}")
        return
    if session.ended:
        return
    try:
        try:
            session.command(j.OutputCommand(result))
        except TerminalError as exc:  # the result cannot be journaled (e.g. a custom serde returned a str)
            session.command(j.OutputCommand(j.Result(failure=failure(500, exc.message))))
    except NonDeterminismError as exc:
        session.fail(exc.code, str(exc))
        return
    session.end()
