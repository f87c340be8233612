"""The partition inbox on PostgreSQL: records one node's batch sends to a partition another node leads.

``partition_inbox (part, source_part, source_seq, seq, record)``: a batch that has an effect on an invocation
of a partition it does not lead inserts the record there, in its own transaction (so it is sent exactly when
that batch commits). The row is not fenced: it is an append to another partition's inbox, never a row of
that partition, and the primary key ``(part, source_part, source_seq)`` (``source_seq`` a digest of the
message) makes the same message sent again from the same partition one row. ``seq`` orders the rows. The
leader of ``part`` takes the rows with ``DELETE ... RETURNING`` inside its own fenced batch and applies them
there: a deposed leader's take is rolled back with the rest of its batch, so each record is applied once.

After a commit that sent records, a ``NOTIFY`` (on a connection of its own, outside the transaction, several
commits' partitions coalesced into one) wakes the leaders; each node ``LISTEN``s on another connection. The
NOTIFY is a hint: a lost one costs the receiver its next poll (``limits.inbox_poll_interval_s``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Collection
from typing import Any

import psycopg

from unbroken.core import limits
from unbroken.core.records import Record
from unbroken.core.storage import StoreError
from unbroken.storage.codec import decode_message, encode_message, message_seq
from unbroken.storage.postgres_batch import SEND_RECORD, Writes
from unbroken.storage.postgres_schema import Location, connect, partition_of_key

log = logging.getLogger("unbroken.storage.inbox")

# The oldest rows of the led partitions, deleted by this transaction (rows another transaction is deleting
# are skipped: only the leader takes a partition's rows, so that is a deposed one's batch in flight).
TAKE = (
    b"DELETE FROM partition_inbox WHERE (part, seq) IN (SELECT part, seq FROM partition_inbox"
    b" WHERE part = ANY(%s) ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING seq, part, record"
)


class InboxTransaction:
    """The partition inbox's side of ``PostgresTransaction`` (``core.storage.PartitionInbox``)."""

    __slots__ = ()
    c: psycopg.Connection[tuple[Any, ...]]
    parts: int  # the cluster's partition count
    led: frozenset[int]  # the partitions led as the batch started (the fence has the last word)
    sent: set[int]  # the partitions this batch sent records to: NOTIFY after its commit
    touched: set[int]  # the partitions the batch is fenced by
    writes: Writes  # held until the batch is sent

    def is_led(self, partition_key: int) -> bool:
        return partition_of_key(partition_key, self.parts) in self.led

    def enter(self) -> None:
        """Open the batch's transaction if not yet (``PostgresTransaction.enter``)."""
        raise NotImplementedError

    def send(self, partition_key: int, record: Record, source_key: int = 0) -> None:
        """Not fenced (not in ``touched``): an append to another partition's inbox, held with the batch's
        writes (sent with them)."""
        part = partition_of_key(partition_key, self.parts)
        data = encode_message(record)
        self.writes.add(
            SEND_RECORD, (part, partition_of_key(source_key, self.parts), message_seq(data), data)
        )
        self.sent.add(part)

    def take_inbox(self, limit: int) -> list[Record]:
        try:
            self.enter()
            rows = self.c.execute(TAKE, (sorted(self.led), limit), binary=True).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc
        self.touched.update(int(part) for _, part, _ in rows)  # fenced: only their leader may take them
        return [decode_message(bytes(data)) for _, _, data in sorted(rows, key=lambda row: int(row[0]))]


def channel(location: Location) -> str:
    """The NOTIFY channel of the store at ``location``: one per schema (channels are per database), short
    enough to stay a whole identifier."""
    return "unbroken_inbox_" + hashlib.blake2b(location.schema.encode(), digest_size=6).hexdigest()


class InboxSignals:
    """The hints around the inbox: NOTIFY after commits that sent records (``sent``, from the writer
    thread; coalesced by a thread of its own), and LISTEN (``listen``: ``wake`` is called when a record may
    have arrived for a partition ``led()`` holds)."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.channel = channel(location)
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self._notify_now = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._notifier_started = False

    # ------------------------------------------------------------------------------------ NOTIFY
    def sent(self, parts: Collection[int]) -> None:
        """A batch that sent records to ``parts`` committed: notify their leaders (soon, coalesced)."""
        with self._lock:
            self._pending.update(parts)
            if not self._notifier_started:
                self._notifier_started = True
                self._start(self._notify_forever, "unbroken-inbox-notify")
        self._notify_now.set()

    def _notify_forever(self) -> None:
        conn: psycopg.Connection[tuple[Any, ...]] | None = None
        while not self._stop.is_set():
            self._notify_now.wait(limits.inbox_poll_interval_s)
            self._notify_now.clear()
            with self._lock:
                parts, self._pending = self._pending, set()
            if not parts:
                continue
            try:
                if conn is None or conn.closed:
                    conn = connect(self.location)
                payload = ",".join(str(p) for p in sorted(parts))
                conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            except psycopg.Error as exc:  # a hint lost: the receivers' polls find the records
                log.debug("inbox NOTIFY failed: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------------------------ LISTEN
    def listen(self, led: Callable[[], Collection[int]], wake: Callable[[], None]) -> None:
        self._start(lambda: self._listen_forever(led, wake), "unbroken-inbox-listen")

    def _listen_forever(self, led: Callable[[], Collection[int]], wake: Callable[[], None]) -> None:
        conn: psycopg.Connection[tuple[Any, ...]] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = connect(self.location)
                    conn.execute(f"LISTEN {self.channel}".encode())
                    wake()  # what was sent before this LISTEN was heard by nobody: look now
                for notice in conn.notifies(timeout=limits.inbox_poll_interval_s):
                    mine = led()
                    if any(int(p) in mine for p in notice.payload.split(",") if p.isdigit()):
                        wake()
            except psycopg.Error as exc:  # the poll covers the gap; try again after one interval
                log.debug("inbox LISTEN failed: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(limits.inbox_poll_interval_s)
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------------------------ the end
    def _start(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def close(self) -> None:
        self._stop.set()
        self._notify_now.set()
        for thread in self._threads:
            thread.join(timeout=limits.inbox_poll_interval_s + limits.pg_connect_timeout_s)
