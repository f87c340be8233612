"""``POST /query`` for a backend without SQL views of its own: its rows copied into a throwaway SQLite store
file, queried with the SQLite read model (the same views, limits and read-only rules as on SQLite).

A backend exports its tables as ``core.read_model.EXPORT_COLUMNS`` say; ``wiring`` hands this engine to its
read model. The copy is made per query: fine for what ``/query`` is for (looking at a few thousand
invocations), refused past ``limits.pg_query_rows_copied_max`` rows by the exporting backend.
"""

from __future__ import annotations

import os
import tempfile

from unbroken.core.read_model import Catalog, Export, QueryAnswer
from unbroken.storage.sqlite import SqliteStore
from unbroken.storage.sqlite_reads import SqliteReadModel


def query_rows(
    rows: Export, sql: str, timeout_s: float | None, catalog: Catalog, arrived: float
) -> QueryAnswer:
    """Implements :class:`unbroken.core.read_model.QueryEngine`."""
    with tempfile.TemporaryDirectory(prefix="unbroken-query-") as directory:
        _fill(directory, rows)
        model = SqliteReadModel(os.path.join(directory, "unbroken.db"), threads=1)
        try:
            return model.query_sync(sql, timeout_s, catalog, arrived=arrived)
        finally:
            model.close()


def _fill(directory: str, rows: Export) -> None:
    store = SqliteStore(directory, fsync=False)
    conn = store.conn
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO invocation (seq, id, status, service, service_key, handler, created_at, modified_at,"
            " expires_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows["invocation"],
        )
        seqs = {row[1]: row[0] for row in rows["invocation"]}
        # a journal without its invocation row (never visible in the views) is left out
        conn.executemany(
            "INSERT INTO journal VALUES (?, ?, ?, ?)",
            [(seqs[i], idx, entry, at) for i, idx, entry, at in rows["journal"] if i in seqs],
        )
        conn.executemany("INSERT INTO state VALUES (?, ?, ?, ?)", rows["state"])
        conn.executemany("INSERT INTO lock VALUES (?, ?, ?)", rows["lock"])
        conn.executemany(
            "INSERT INTO inbox (seq, service, service_key, id, created_at) VALUES (?, ?, ?, ?, ?)",
            rows["inbox"],
        )
        conn.executemany(
            "INSERT INTO timer (id, fire_at, kind, invocation_id, completion_id) VALUES (?, ?, ?, ?, ?)",
            rows["timer"],
        )
        conn.executemany("INSERT INTO promise VALUES (?, ?, ?, ?)", rows["promise"])
        conn.execute("COMMIT")
    finally:
        store.close()
