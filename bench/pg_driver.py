"""Which PostgreSQL driver for the store: the batch transaction the processor commits, four ways.

The store seam is synchronous (``core/storage.py``: the state machine reads and writes through plain calls on
the event loop; the COMMIT runs on the writer thread), so what matters is the cost of one batch as the seam
issues it: per record one read that needs its answer (``get_invocation``) and two writes that do not
(``put_invocation``, ``append_journal``), then the fencing UPDATE and COMMIT.

* ``psycopg``: psycopg 3, synchronous, one round trip per statement.
* ``psycopg-pipeline``: the same in pipeline mode: writes are queued, a read flushes them with it.
* ``psycopg-pipeline-nofence``: the same without the fencing UPDATE (what the fence costs).
* ``asyncpg-bridge``: asyncpg on a loop of its own thread, each call of the seam a ``run_coroutine_threadsafe``
  hop (what the synchronous seam would have to do to use it).
* ``asyncpg-native``: asyncpg awaited directly (an upper bound: the seam cannot call it this way).

Usage: ``python bench/pg_driver.py [--url URL] [--batches N] [--records R]``. Prints µs per batch and per
record for each, best of ``--rounds`` interleaved runs; every run in its own schema, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import psycopg

_T = TypeVar("_T")
SCHEMA = f"ub_driver_bench_{os.getpid()}"
DDL = [
    "CREATE TABLE inv (p int, id text, data bytea, PRIMARY KEY (p, id))",
    "CREATE TABLE journal (p int, id text, idx int, entry bytea, PRIMARY KEY (p, id, idx))",
    "CREATE TABLE epoch (p int PRIMARY KEY, epoch bigint, batches bigint)",
    "INSERT INTO epoch SELECT g, 1, 0 FROM generate_series(0, 63) g",
]
BLOB = os.urandom(190)
ENTRY = os.urandom(60)


def _ids(batch: int, records: int) -> list[tuple[int, str]]:
    return [(i % 64, f"inv_{batch}_{i}") for i in range(records)]


def run_psycopg(url: str, batches: int, records: int, pipeline: bool, fence: bool = True) -> float:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f"SET search_path TO {SCHEMA}")
    start = time.perf_counter()
    for b in range(batches):
        conn.execute("BEGIN")
        manager = conn.pipeline() if pipeline else None
        pipe = manager.__enter__() if manager is not None else None
        touched = set()
        for p, inv_id in _ids(b, records):
            conn.execute("SELECT data FROM inv WHERE p = %s AND id = %s", (p, inv_id)).fetchone()
            conn.execute(
                "INSERT INTO inv VALUES (%s, %s, %s) ON CONFLICT (p, id) DO UPDATE SET data = excluded.data",
                (p, inv_id, BLOB),
            )
            conn.execute("INSERT INTO journal VALUES (%s, %s, 0, %s)", (p, inv_id, ENTRY))
            touched.add(p)
        ps = sorted(touched)
        if fence:
            cur = conn.execute(
                "UPDATE epoch e SET batches = e.batches + 1 FROM unnest(%s::int[], %s::bigint[]) f(p, ep)"
                " WHERE e.p = f.p AND e.epoch = f.ep",
                (ps, [1] * len(ps)),
            )
            if pipe is not None:
                pipe.sync()
            assert cur.rowcount == len(ps)
        conn.execute("COMMIT")
        if manager is not None:
            manager.__exit__(None, None, None)
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def _asyncpg_batch(conn: asyncpg.Connection, b: int, records: int) -> None:
    async with conn.transaction():
        touched = set()
        for p, inv_id in _ids(b, records):
            await conn.fetchrow("SELECT data FROM inv WHERE p = $1 AND id = $2", p, inv_id)
            await conn.execute(
                "INSERT INTO inv VALUES ($1, $2, $3) ON CONFLICT (p, id) DO UPDATE SET data = excluded.data",
                p,
                inv_id,
                BLOB,
            )
            await conn.execute("INSERT INTO journal VALUES ($1, $2, 0, $3)", p, inv_id, ENTRY)
            touched.add(p)
        ps = sorted(touched)
        status = await conn.execute(
            "UPDATE epoch e SET batches = e.batches + 1 FROM unnest($1::int[], $2::bigint[]) f(p, ep)"
            " WHERE e.p = f.p AND e.epoch = f.ep",
            ps,
            [1] * len(ps),
        )
        assert status == f"UPDATE {len(ps)}"


def run_asyncpg_native(url: str, batches: int, records: int) -> float:
    async def main() -> float:
        conn = await asyncpg.connect(url, server_settings={"search_path": SCHEMA})
        start = time.perf_counter()
        for b in range(batches):
            await _asyncpg_batch(conn, b, records)
        elapsed = time.perf_counter() - start
        await conn.close()
        return elapsed

    return asyncio.run(main())


class _Bridge:
    """A loop on its own thread; ``call`` runs one coroutine there and waits (a seam call)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def run_asyncpg_bridge(url: str, batches: int, records: int) -> float:
    bridge = _Bridge()
    conn: asyncpg.Connection = bridge.call(
        lambda: asyncpg.connect(url, server_settings={"search_path": SCHEMA})
    )
    start = time.perf_counter()
    for b in range(batches):
        bridge.call(lambda: conn.execute("BEGIN"))
        touched = set()
        for p, inv_id in _ids(b, records):
            bridge.call(
                lambda p=p, i=inv_id: conn.fetchrow("SELECT data FROM inv WHERE p = $1 AND id = $2", p, i)
            )
            bridge.call(
                lambda p=p, i=inv_id: conn.execute(
                    "INSERT INTO inv VALUES ($1, $2, $3) ON CONFLICT (p, id) DO UPDATE SET data = excluded.data",
                    p,
                    i,
                    BLOB,
                )
            )
            bridge.call(
                lambda p=p, i=inv_id: conn.execute("INSERT INTO journal VALUES ($1, $2, 0, $3)", p, i, ENTRY)
            )
            touched.add(p)
        ps = sorted(touched)
        bridge.call(
            lambda ps=ps: conn.execute(  # type: ignore[misc]
                "UPDATE epoch e SET batches = e.batches + 1 FROM unnest($1::int[], $2::bigint[]) f(p, ep)"
                " WHERE e.p = f.p AND e.epoch = f.ep",
                ps,
                [1] * len(ps),
            )
        )
        bridge.call(lambda: conn.execute("COMMIT"))
    elapsed = time.perf_counter() - start
    bridge.call(conn.close)
    bridge.close()
    return elapsed


def _reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(f"SET search_path TO {SCHEMA}")
        for statement in DDL:
            conn.execute(statement)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("UNBROKEN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ways: dict[str, Callable[[], float]] = {
        "psycopg": lambda: run_psycopg(args.url, args.batches, args.records, pipeline=False),
        "psycopg-pipeline": lambda: run_psycopg(args.url, args.batches, args.records, pipeline=True),
        "psycopg-pipeline-nofence": lambda: run_psycopg(
            args.url, args.batches, args.records, pipeline=True, fence=False
        ),
        "asyncpg-bridge": lambda: run_asyncpg_bridge(args.url, args.batches, args.records),
        "asyncpg-native": lambda: run_asyncpg_native(args.url, args.batches, args.records),
    }
    try:
        print(f"{args.batches} batches of {args.records} records (1 read + 2 writes each) + fence + COMMIT")
        best = dict.fromkeys(ways, float("inf"))
        for _ in range(args.rounds):  # interleaved: the machine is shared, its load drifts
            for name, way in ways.items():
                _reset(args.url)
                best[name] = min(best[name], way())
        for name, seconds in best.items():
            per_batch = seconds / args.batches * 1e6
            print(f"{name:18} {per_batch:8.0f} us/batch {per_batch / args.records:6.1f} us/record")
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


if __name__ == "__main__":
    main()
