"""Services for the observability tests (metrics, logs, traces, the web UI): a bit of everything an
operator looks at — a retried step, a suspension, a call, a workflow with a promise, object state, a
long timer and an invocation that waits until it is cancelled."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import unbroken as restate
from unbroken import TerminalError

log = restate.getLogger("ui_app")
plain_log = logging.getLogger(
    "ui_app.plain"
)  # a plain logger: the server's log handler drops its replayed lines

# ------------------------------------------------------------------------------------------- Shop
shop = restate.Service("Shop")
_flaky_seen: set[str] = set()  # in-process memory: the first attempt of each order fails, the retry works


def price(order: str) -> int:
    """A plain function run by ctx.run on a worker thread: its log line still names the invocation."""
    plain_log.info("pricing %s", order)
    return len(order) * 10


@shop.handler()
async def checkout(ctx: restate.Context, order: str) -> str:
    log.info("checking out %s", order)
    total = await ctx.run("price", lambda: price(order))
    stock = await ctx.service_call(reserve, arg=order)
    return f"{order}: {total} ({stock})"


@shop.handler()
async def reserve(ctx: restate.Context, order: str) -> str:
    return f"reserved {order}"


@shop.handler()
async def flaky(ctx: restate.Context, order: str) -> str:
    def once() -> str:
        if order not in _flaky_seen:
            _flaky_seen.add(order)
            raise RuntimeError(f"the warehouse is down for {order}")
        return "ok"

    return await ctx.run("warehouse", once)


@shop.handler()
async def nap(ctx: restate.Context, seconds: float) -> str:
    plain_log.info("napping for %ss", seconds)
    await ctx.sleep(timedelta(seconds=seconds))
    plain_log.info("woke up")
    return "rested"


@shop.handler()
async def refuse(ctx: restate.Context, order: str) -> str:
    raise TerminalError(f"no stock for {order}", 409)


@shop.handler()
async def wait_forever(ctx: restate.Context, label: str) -> str:
    log.info("waiting for %s", label)
    _aid, fut = ctx.awakeable()
    return str(await fut)


@shop.handler()
async def current_spans(ctx: restate.Context) -> list[str]:
    """The OpenTelemetry span current in the handler and in a ctx.run action (the tracing tests)."""
    from opentelemetry import trace

    async def in_run() -> str:
        return f"{trace.get_current_span().get_span_context().span_id:016x}"

    outer = f"{trace.get_current_span().get_span_context().span_id:016x}"
    return [outer, await ctx.run("inner", in_run)]


# ----------------------------------------------------------------------------------------- Cart
cart = restate.VirtualObject("Cart")


@cart.handler()
async def add(ctx: restate.ObjectContext, item: str) -> list[str]:
    items: list[str] = (await ctx.get("items")) or []
    items.append(item)
    ctx.set("items", items)
    return items


@cart.handler()
async def hold(ctx: restate.ObjectContext) -> str:
    """Holds the key's lock until its awakeable is completed (or it is killed): later calls queue."""
    _aid, fut = ctx.awakeable()
    return str(await fut)


@cart.handler(kind="shared")
async def items(ctx: restate.ObjectSharedContext) -> Any:
    return await ctx.get("items")


# ------------------------------------------------------------------------------------- Delivery
delivery = restate.Workflow("Delivery")


@delivery.main()
async def run(ctx: restate.WorkflowContext, address: str) -> str:
    label = await ctx.run("label", lambda: f"label for {address}")
    await ctx.service_call(reserve, arg=address)
    ctx.service_send(reserve, arg=f"{address} (copy)")
    signed = await ctx.promise("signed").value()
    return f"{label}, signed by {signed}"


@delivery.handler()
async def sign(ctx: restate.WorkflowSharedContext, name: str) -> None:
    await ctx.promise("signed").resolve(name)


app = restate.app([shop, cart, delivery])
