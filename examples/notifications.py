"""Per-user notification inboxes fed by one-way messages from an order service.

``Notifications`` is a virtual object keyed by user id: ``notify`` and ``mark_read`` are exclusive
(one at a time per user, so no update is lost), ``unread_count`` and ``list`` are shared (they read
concurrently, even while an exclusive handler runs). ``Orders.place`` fires one-way messages with
``ctx.object_send``: it does not wait for them, and the engine delivers each exactly once, in order.

    unbroken serve examples/notifications.py
    curl localhost:8080/Orders/place -H 'content-type: application/json' \
         -d '{"order_id": "o1", "user_id": "alice", "items": ["book", "lamp"]}'
    curl localhost:8080/Notifications/alice/unread_count
    curl localhost:8080/Notifications/alice/mark_read -X POST
"""

from __future__ import annotations

from pydantic import BaseModel

import unbroken as restate


class Notification(BaseModel):
    id: int
    text: str
    read: bool = False


class Order(BaseModel):
    order_id: str
    user_id: str
    items: list[str]


# --- one inbox per user --------------------------------------------------------------------------------
notifications = restate.VirtualObject("Notifications")


@notifications.handler()
async def notify(ctx: restate.ObjectContext, msg: str) -> int:
    """Append a message; returns its id."""
    inbox = await ctx.get("inbox", type_hint=list[Notification]) or []
    note = Notification(id=len(inbox) + 1, text=msg)
    inbox.append(note)
    ctx.set("inbox", inbox)
    return note.id


@notifications.handler(kind="shared")
async def unread_count(ctx: restate.ObjectSharedContext) -> int:
    inbox = await ctx.get("inbox", type_hint=list[Notification]) or []
    return sum(1 for n in inbox if not n.read)


@notifications.handler(name="list", kind="shared")
async def list_notifications(ctx: restate.ObjectSharedContext) -> list[Notification]:
    return await ctx.get("inbox", type_hint=list[Notification]) or []


@notifications.handler()
async def mark_read(ctx: restate.ObjectContext) -> int:
    """Mark every notification read; returns how many were unread."""
    inbox = await ctx.get("inbox", type_hint=list[Notification]) or []
    unread = [n for n in inbox if not n.read]
    for n in unread:
        n.read = True
    ctx.set("inbox", inbox)
    return len(unread)


# --- the service that produces notifications -------------------------------------------------------------
orders = restate.Service("Orders")


@orders.handler()
async def place(ctx: restate.Context, order: Order) -> dict[str, str]:
    if not order.items:
        raise restate.TerminalError("an order needs at least one item", status_code=400)
    await ctx.run("reserve stock", lambda: f"reserved {len(order.items)} items")
    # Fire and forget: each send is journaled with this invocation, so it happens exactly once.
    ctx.object_send(notify, order.user_id, f"order {order.order_id} confirmed: {', '.join(order.items)}")
    ctx.object_send(notify, order.user_id, f"order {order.order_id} is being packed")
    return {"order_id": order.order_id, "status": "placed"}


app = restate.app([notifications, orders])
