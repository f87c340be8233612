"""The handlers the cluster tests load every node with (tests/cluster/).

Every handler writes what it does to ledger tables in the same PostgreSQL, *outside the engine* (a schema of
its own, named by ``CLUSTER_LEDGER_SCHEMA``, autocommit), so a checker can count from outside what ran where
and when, whatever the engine claims:

* ``effect (inv, step, token, node, pid, at)``: one row per execution of a ``ctx.run`` action; the action
  returns its token, so the journaled result names exactly one of the executions.
* ``lock (id, key, inv, node, pid, enter_at, exit_at)``: one row per execution of the exclusive
  ``Counter.add`` body, entered and left on the database's clock (one clock for every node), so the checker
  finds two executions on the same key that overlap.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

import unbroken as restate

_local = threading.local()  # one autocommit connection per thread (the loop's and the run executors')


def _conn() -> psycopg.Connection[Any]:
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = psycopg.connect(os.environ["CLUSTER_LEDGER_URL"], autocommit=True, connect_timeout=5)
        _local.conn = conn
    return conn


def _table(name: str) -> sql.Composable:
    return sql.Identifier(os.environ["CLUSTER_LEDGER_SCHEMA"], name)


def _node() -> str:
    return os.environ.get("UNBROKEN_NODE_NAME", "?")


def record_effect(inv: str, step: str) -> str:
    """The side effect of a ``ctx.run`` action: one ledger row per execution; returns its token."""
    token = uuid.uuid4().hex
    _conn().execute(
        sql.SQL("INSERT INTO {} (inv, step, token, node, pid) VALUES (%s, %s, %s, %s, %s)").format(
            _table("effect")
        ),
        (inv, step, token, _node(), os.getpid()),
    )
    return token


def _enter(key: str, inv: str) -> int:
    row = (
        _conn()
        .execute(
            sql.SQL(
                "INSERT INTO {} (key, inv, node, pid, enter_at) VALUES (%s, %s, %s, %s, clock_timestamp()) "
                "RETURNING id"
            ).format(_table("lock")),
            (key, inv, _node(), os.getpid()),
        )
        .fetchone()
    )
    assert row is not None
    return int(row[0])


def _exit(row_id: int) -> None:
    _conn().execute(
        sql.SQL("UPDATE {} SET exit_at = clock_timestamp() WHERE id = %s").format(_table("lock")), (row_id,)
    )


# ------------------------------------------------------------------------------------------- objects
counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, n: int) -> int:
    """Exclusive: read, pause a little (widens any overlap the checker should find), write."""
    row = _enter(ctx.key(), ctx.request().id)
    try:  # an aborted attempt (cancelled coroutine) leaves too; only a killed process leaves no exit
        count = (await ctx.get("count")) or 0
        await asyncio.sleep(0.002)
        ctx.set("count", count + n)
        return int(count + n)
    finally:
        _exit(row)


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    return int((await ctx.get("count")) or 0)


# ------------------------------------------------------------------------------------------ services
work = restate.Service("Work")


@work.handler()
async def steps(ctx: restate.Context, _req: Any) -> list[str]:
    """W2's shape: three ``ctx.run`` steps, each a side effect in the ledger."""
    inv = ctx.request().id
    return [await ctx.run(f"s{i}", lambda i=i: record_effect(inv, f"s{i}")) for i in range(3)]


@work.handler()
async def nap(ctx: restate.Context, req: dict[str, Any]) -> list[str]:
    """A durable sleep (a timer of this partition), then a step."""
    inv = ctx.request().id
    await ctx.sleep(timedelta(milliseconds=int(req["ms"])))
    return [await ctx.run("after", lambda: record_effect(inv, "after"))]


@work.handler()
async def fan(ctx: restate.Context, req: dict[str, str]) -> int:
    """A call and a send to counters whose keys live in other partitions than this invocation."""
    called = await ctx.object_call(add, req["call_key"], 1)
    ctx.object_send(add, req["send_key"], 1)
    return int(called)


# ----------------------------------------------------------------------------------------- workflows
job = restate.Workflow("Job")


@job.main()
async def run(ctx: restate.WorkflowContext, _req: Any) -> dict[str, str]:
    inv = ctx.request().id
    value = await ctx.promise("go").value()
    token = await ctx.run("after", lambda: record_effect(inv, "after"))
    return {"go": str(value), "token": token}


@job.handler()
async def signal(ctx: restate.WorkflowSharedContext, value: str) -> None:
    await ctx.promise("go").resolve(value)


app = restate.app([counter, work, job])
