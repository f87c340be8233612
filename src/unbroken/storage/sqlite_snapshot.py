"""Typed reads of the SQLite store for the admin API (``core.read_model.Snapshot``), on a read-only
connection inside one read transaction (see ``SqliteReadModel.read``)."""

from __future__ import annotations

import sqlite3

from unbroken.core import journal as j
from unbroken.core.invocation import Invocation
from unbroken.core.read_model import InboxSpot, StoreCounts
from unbroken.core.txn import Promise, TimerKind
from unbroken.storage.sqlite import decode_invocation_row, decode_promise

_SEQ_OF = "(SELECT seq FROM main.invocation WHERE id = ?)"


class SqliteSnapshot:
    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def invocation(self, invocation_id: str) -> Invocation | None:
        row = self.conn.execute("SELECT data FROM main.invocation WHERE id = ?", (invocation_id,)).fetchone()
        return None if row is None else decode_invocation_row(bytes(row[0]), invocation_id)

    def journal(self, invocation_id: str) -> list[j.Entry]:
        rows = self.conn.execute(
            f"SELECT entry FROM main.journal WHERE seq = {_SEQ_OF} ORDER BY idx", (invocation_id,)
        )
        return [j.decode_entry(bytes(blob)) for (blob,) in rows]

    def journal_entry_containing(self, invocation_id: str, needle: bytes) -> tuple[int, j.Entry] | None:
        row = self.conn.execute(
            f"SELECT idx, entry FROM main.journal WHERE seq = {_SEQ_OF} AND instr(entry, ?) > 0 ORDER BY idx LIMIT 1",
            (invocation_id, needle),
        ).fetchone()
        return None if row is None else (int(row[0]), j.decode_entry(bytes(row[1])))

    def state(self, service: str, key: str) -> dict[str, bytes]:
        rows = self.conn.execute(
            "SELECT name, value FROM main.state WHERE service = ? AND service_key = ?", (service, key)
        )
        return {str(name): bytes(value) for name, value in rows}

    def lock_holder(self, service: str, key: str) -> str | None:
        row = self.conn.execute(
            "SELECT holder FROM main.lock WHERE service = ? AND service_key = ?", (service, key)
        ).fetchone()
        return None if row is None else str(row[0])

    def inbox_spot(self, service: str, key: str, invocation_id: str) -> InboxSpot | None:
        spot = self.conn.execute(
            "SELECT seq, created_at FROM main.inbox WHERE service = ? AND service_key = ? AND id = ?",
            (service, key, invocation_id),
        ).fetchone()
        if spot is None:
            return None
        ahead = self.conn.execute(
            "SELECT count(*) FROM main.inbox WHERE service = ? AND service_key = ? AND seq < ?",
            (service, key, spot[0]),
        ).fetchone()[0]
        return InboxSpot(int(ahead), spot[1])

    def next_timer_ms(self, invocation_id: str, kind: TimerKind) -> int | None:
        row = self.conn.execute(
            "SELECT min(fire_at) FROM main.timer WHERE invocation_id = ? AND kind = ?",
            (invocation_id, kind.value),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def promise(self, service: str, key: str, name: str) -> Promise | None:
        row = self.conn.execute(
            "SELECT data FROM main.promise WHERE service = ? AND service_key = ? AND name = ?",
            (service, key, name),
        ).fetchone()
        return None if row is None else decode_promise(bytes(row[0]))

    def in_flight_ids(self, after: str | None, limit: int) -> list[str]:
        # by id (its UNIQUE index), so a page starts where the last one ended without counting past rows
        rows = self.conn.execute(
            "SELECT id FROM main.invocation WHERE status != 'completed' AND id > ? ORDER BY id LIMIT ?",
            ("" if after is None else after, limit),
        )
        return [str(row[0]) for row in rows]

    def counts(self) -> StoreCounts:
        rows = self.conn.execute(
            "SELECT service, handler, status, count(*) FROM main.invocation GROUP BY service, handler, status"
        )
        invocations = {(str(s), str(h), str(st)): int(n) for s, h, st, n in rows}
        inboxed = int(self.conn.execute("SELECT count(*) FROM main.inbox").fetchone()[0])
        timers = int(self.conn.execute("SELECT count(*) FROM main.timer").fetchone()[0])
        return StoreCounts(invocations, inboxed, timers)
