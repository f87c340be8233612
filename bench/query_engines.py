"""How ``POST /query`` should run Restate's SQL: measured on a generated store (docs/architecture.md).

    python bench/query_engines.py [--invocations 1000000] [--dir DIR]

1. Generates a store of N invocations (a tenth of them running, the rest completed; one journal entry
   each is not needed for these queries) straight into the SQLite file, as the engine would store them.
2. SQLite views + the dialect rewrite (what Unbroken does): a fresh reader's first query (the views built,
   the import of the rewrite), then the queries Restate's CLI sends: by id, a page of active invocations,
   the bounded count of ``invocations list``.
3. An engine that speaks the dialect over the read model (DataFusion's Python package, DuckDB), when
   installed (neither is a dependency): its import, and the load of the invocations it would have to read
   and decode from the store to query them (it cannot push a WHERE down into the SQLite blobs), then the
   same query by id.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
from typing import Any

from unbroken.core.ids import InvocationId
from unbroken.core.invocation import Invocation, Status
from unbroken.core.schema import ServiceKind, Target
from unbroken.storage.codec import encode_invocation
from unbroken.storage.sqlite import SqliteStore

_BATCH = 20_000


def generate(data_dir: str, n: int) -> tuple[str, list[str]]:
    """A store of ``n`` invocations; returns its path and a few ids to look up."""
    store = SqliteStore(data_dir, fsync=False)
    path = store.path
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    rng = random.Random(7)
    now = int(time.time() * 1000)
    picked: list[str] = []
    for start in range(0, n, _BATCH):
        rows = []
        for seq in range(start, min(n, start + _BATCH)):
            inv_id = str(InvocationId.new(rng.getrandbits(64), rng.randbytes(10), now - (n - seq)))
            running = seq % 10 == 0
            key = f"user-{seq % 5000}"
            inv = Invocation(
                id=inv_id,
                target=Target("Counter", "add", key),
                service_kind=ServiceKind.VIRTUAL_OBJECT,
                handler_kind=None,
                status=Status.RUNNING if running else Status.COMPLETED,
                created_at_ms=now - (n - seq),
                modified_at_ms=now - (n - seq),
                random_seed=seq,
                journal_length=3,
            )
            status = inv.status.value
            rows.append(
                (
                    seq + 1,
                    inv_id,
                    status,
                    "Counter",
                    key,
                    "add",
                    inv.created_at_ms,
                    inv.modified_at_ms,
                    0,
                    encode_invocation(inv),
                )
            )
            if seq % (n // 5 or 1) == 0:
                picked.append(inv_id)
        conn.executemany("INSERT INTO invocation VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.commit()
    conn.close()
    return path, picked


def _time(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def measure_sqlite(path: str, ids: list[str]) -> None:
    started = time.perf_counter()
    from unbroken.storage.sqlite_reads import SqliteReadModel

    reads = SqliteReadModel(path)
    first, _ = _time(lambda: reads.query_sync(f"SELECT id, status FROM sys_invocation WHERE id = '{ids[0]}'"))
    print(
        f"sqlite views: import + first query (fresh reader, views built) {1000 * (time.perf_counter() - started):.1f} ms"
        f" (the query itself {1000 * first:.1f} ms)"
    )
    queries = {
        "by id": f"SELECT * FROM sys_invocation WHERE id = '{ids[1]}'",
        "by id, CLI describe (LEFT JOIN sys_deployment)": (
            "SELECT inv.id, inv.status, inv.created_at, dp.id IS NOT NULL AS pinned_deployment_exists"
            " FROM sys_invocation inv LEFT JOIN sys_deployment dp ON dp.id = inv.pinned_deployment_id"
            f" WHERE inv.id IN ('{ids[2]}', '{ids[3]}')"
        ),
        "CLI list: 100 active, newest first": (
            "SELECT id FROM sys_invocation inv WHERE status != 'completed' ORDER BY inv.created_at DESC, inv.id LIMIT 100"
        ),
        "CLI list: bounded count": (
            "SELECT COUNT(1) FROM (SELECT * FROM sys_invocation inv LIMIT 50000) WHERE status != 'completed'"
        ),
        "count by status (full scan)": "SELECT status, count(*) AS n FROM sys_invocation GROUP BY status",
    }
    for name, sql in queries.items():
        best = min(_time(lambda sql=sql: reads.query_sync(sql))[0] for _ in range(3))
        print(f"sqlite views: {name}: {1000 * best:.1f} ms")
    reads.close()


def _load_rows(path: str) -> dict[str, list[Any]]:
    """What an engine over the read model needs first: every invocation, read and decoded."""
    from unbroken.storage.sqlite_views import _inv_fields

    cols: dict[str, list[Any]] = {"id": [], "status": [], "target_service_name": [], "retry_count": []}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    for inv_id, status, service, data in conn.execute("SELECT id, status, service, data FROM invocation"):
        fields = _inv_fields(data)
        cols["id"].append(inv_id)
        cols["status"].append(status)
        cols["target_service_name"].append(service)
        cols["retry_count"].append(fields["retry_count"])
    conn.close()
    return cols


def measure_engines(path: str, ids: list[str]) -> None:
    load_s, cols = _time(lambda: _load_rows(path))
    print(f"read model -> columns (read + decode every invocation): {1000 * load_s:.0f} ms")
    try:
        started = time.perf_counter()
        import datafusion
        import pyarrow as pa

        print(f"datafusion: import {1000 * (time.perf_counter() - started):.0f} ms")
        ctx = datafusion.SessionContext()
        build_s, _ = _time(
            lambda: ctx.register_record_batches("sys_invocation", [[pa.RecordBatch.from_pydict(cols)]])
        )
        query_s, _ = _time(lambda: ctx.sql(f"SELECT * FROM sys_invocation WHERE id = '{ids[1]}'").to_pylist())
        print(f"datafusion: to Arrow + register {1000 * build_s:.0f} ms, query by id {1000 * query_s:.1f} ms")
    except ImportError:
        print("datafusion: not installed (pip install datafusion pyarrow)")
    try:
        started = time.perf_counter()
        import duckdb

        print(f"duckdb: import {1000 * (time.perf_counter() - started):.0f} ms")
        import pyarrow as pa

        table = pa.table(cols)
        db = duckdb.connect()
        build_s, _ = _time(lambda: db.register("sys_invocation", table))
        query_s, _ = _time(
            lambda: db.execute(f"SELECT * FROM sys_invocation WHERE id = '{ids[1]}'").fetchall()
        )
        print(f"duckdb: register {1000 * build_s:.0f} ms, query by id {1000 * query_s:.1f} ms")
    except ImportError:
        print("duckdb: not installed (pip install duckdb)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invocations", type=int, default=1_000_000)
    parser.add_argument(
        "--dir", default=None, help="where to generate the store (default: a temp dir); one there is reused"
    )
    args = parser.parse_args()
    data_dir = args.dir or tempfile.mkdtemp(prefix="unbroken-query-bench-")
    existing = os.path.join(data_dir, "unbroken.db")
    if os.path.exists(existing):  # measure again on a store generated before
        conn = sqlite3.connect(existing)
        count = conn.execute("SELECT count(*) FROM invocation").fetchone()[0]
        step = max(1, count // 5)
        ids = [
            conn.execute("SELECT id FROM invocation WHERE seq = ?", (1 + i * step,)).fetchone()[0]
            for i in range(5)
        ]
        conn.close()
        print(f"reusing {count} invocations at {existing}", file=sys.stderr)
        measure_sqlite(existing, ids)
        measure_engines(existing, ids)
        return
    gen_s, (path, ids) = _time(lambda: generate(data_dir, args.invocations))
    size = os.path.getsize(path) / 1e6
    print(
        f"generated {args.invocations} invocations in {gen_s:.1f} s ({size:.0f} MB) at {path}",
        file=sys.stderr,
    )
    measure_sqlite(path, ids)
    measure_engines(path, ids)


if __name__ == "__main__":
    main()
