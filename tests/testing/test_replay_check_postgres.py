"""``unbroken replay-check APP --store postgresql://...`` and ``unbroken invocations export ID --store ...``
against a real ``unbroken serve APP --store ...`` on the machine's PostgreSQL.

The journals in flight (a service and a keyed object, each parked on an awakeable) are read from PostgreSQL
through the read model while the server keeps running: the check takes none of its partition leases and
bumps no epoch, and the server goes on completing them. Then again with the server stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import pg
from tests.harness import Server, wait_until
from unbroken.core.ids import InvocationId, awakeable_id

pytestmark = pytest.mark.crash

APP = """
import unbroken as restate


def act(name: str) -> str:
    return name


orders = restate.Service("Orders")
cart = restate.VirtualObject("Cart")


@orders.handler()
async def place(ctx: restate.Context, order: str) -> str:
    await ctx.run({step!r}, act, args=("reserve",))
    _, paid = ctx.awakeable()
    await paid
    await ctx.run("ship", act, args=("ship",))
    return order


@cart.handler()
async def add(ctx: restate.ObjectContext, item: str) -> None:
    ctx.set("items", [item])


@cart.handler()
async def checkout(ctx: restate.ObjectContext) -> list[str]:
    items = await ctx.get("items") or []
    await ctx.run({step!r}, act, args=("reserve",))
    _, paid = ctx.awakeable()
    await paid
    return items


app = restate.app([orders, cart])
"""


@pytest.fixture
def schema() -> Iterator[str]:
    pg.require()
    name = pg.schema_for(f"replay-check-{uuid.uuid4()}")
    yield name
    pg.drop(name)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unbroken.cli.main", *args], capture_output=True, text=True, timeout=60
    )


def _leadership(schema: str) -> list[tuple[object, ...]]:
    """Who leads each partition and with which epoch (the lease expiries move on as the leader renews)."""
    with psycopg.connect(pg.URL, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        return conn.execute(
            "SELECT l.part, l.node, l.epoch, e.epoch, e.leader FROM partition_lease l"
            " JOIN partition_epoch e USING (part) ORDER BY part"
        ).fetchall()


def _parked(srv: Server, inv: str, entries: int) -> bool:
    """``inv`` journaled its first ``entries`` entries (its step and the step's result) and waits (on its
    awakeable: running until its inactivity timeout suspends it, then suspended)."""
    query = f"SELECT status, journal_size FROM sys_invocation WHERE id = '{inv}'"
    rows = srv.admin_request("POST", "/query", {"query": query}).json()["rows"]
    return bool(rows) and rows[0]["status"] in ("running", "suspended") and rows[0]["journal_size"] == entries


def test_replay_check_and_export_read_a_running_postgres_server(tmp_path: Path, schema: str) -> None:
    apps = {}
    for name, step in {"v1": "reserve", "renamed": "reserve stock"}.items():
        apps[name] = tmp_path / f"shop_{name}.py"
        apps[name].write_text(APP.format(step=step))
    url = pg.url_for(schema)
    srv = Server(str(apps["v1"]), tmp_path / "data", args=["--store", url], env={"UNBROKEN_NODE_NAME": "n1"})
    srv.start()
    try:
        order = srv.call("/Orders/place/send", "o1").json()["invocationId"]
        key = uuid.uuid4().hex
        assert srv.call(f"/Cart/{key}/add", "socks").status_code == 200
        checkout = srv.call(f"/Cart/{key}/checkout/send").json()["invocationId"]
        for inv, entries in ((order, 3), (checkout, 4)):  # the checkout journaled its state read too
            wait_until(
                lambda inv=inv, n=entries: _parked(srv, inv, n), 20, what=f"{inv} to wait on its awakeable"
            )
        leaders = _leadership(schema)
        assert {row[1] for row in leaders} == {"n1"}

        # The server runs: the check reads beside it.
        ok = _cli("replay-check", str(apps["v1"]), "--store", url)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.strip().endswith("replayed 2 in-flight invocation(s): 0 would diverge")
        bad = _cli("replay-check", str(apps["renamed"]), "--store", url, "--json")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        doc = json.loads(bad.stdout)
        assert doc["replayed"] == 2
        assert sorted(
            (d["invocation_id"], d["target"], d["index"], d["expected"], d["actual"])
            for d in doc["diverging"]
        ) == sorted(
            [
                (order, "Orders/place", 1, "Run('reserve')", "Run('reserve stock')"),
                (checkout, f"Cart/{key}/checkout", 2, "Run('reserve')", "Run('reserve stock')"),
            ]
        )
        exported = tmp_path / "order.json"
        out = _cli("invocations", "export", order, "--store", url, "-o", str(exported))
        assert out.returncode == 0, out.stderr
        entries = [e["entry"] for e in json.loads(exported.read_text())["entries"]]
        assert entries == ["Input", "Run('reserve')", "Notification(run)"]
        cart_doc = json.loads(_cli("invocations", "export", checkout, "--store", url).stdout)
        assert cart_doc["target"] == {"service": "Cart", "handler": "checkout", "key": key}
        assert cart_doc["state"] is not None and set(cart_doc["state"]) == {"items"}

        assert _leadership(schema) == leaders  # no lease taken, no epoch bumped: the server still leads
        aid = awakeable_id(InvocationId.parse(order), 17)
        assert srv.call(f"/restate/awakeables/{aid}/resolve", "paid").status_code == 202
        assert srv.call(f"/restate/invocation/{order}/attach", method="GET").json() == "o1"

        # Stopped: the check reads the store alone; the completed order is no longer in flight.
        assert srv.stop() == 0
        after = _cli("replay-check", str(apps["renamed"]), "--store", url)
        assert after.returncode == 1, after.stdout + after.stderr
        assert (
            f"{checkout} Cart/{key}/checkout: entry 2: the journal has Run('reserve'), the new code issues "
            "Run('reserve stock')" in after.stdout
        )
        assert after.stdout.strip().endswith("replayed 1 in-flight invocation(s): 1 would diverge")
        assert _cli("replay-check", str(apps["v1"]), "--store", url).returncode == 0
    finally:
        srv.kill()


def _schema_exists(schema: str) -> bool:
    with psycopg.connect(pg.URL, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        return row == (1,)


def test_a_schema_without_a_store_and_an_unreachable_server_are_reported(tmp_path: Path, schema: str) -> None:
    app = tmp_path / "shop.py"
    app.write_text(APP.format(step="reserve"))
    empty = _cli("replay-check", str(app), "--store", pg.url_for(schema))
    assert empty.returncode == 2, empty.stdout + empty.stderr
    assert (
        f"error: no Unbroken store at postgresql://postgres@127.0.0.1:5432/test (schema {schema})"
        in empty.stderr
    )
    assert not _schema_exists(schema)  # read only: nothing was created there
    inv = str(InvocationId.new(1, bytes(16), 1_700_000_000_000))
    down = _cli("invocations", "export", inv, "--store", "postgresql://postgres@127.0.0.1:1/test")
    assert (
        down.returncode == 1
        and "error: cannot connect to postgresql://postgres@127.0.0.1:1/test" in down.stderr
    )
