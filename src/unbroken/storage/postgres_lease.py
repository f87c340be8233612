"""Partition leadership on PostgreSQL: leases with epochs, renewed by a thread, checked by every commit.

A node leads a partition while it holds its lease (``partition_lease``: node, epoch, expiry by the
database's clock). Taking a lease bumps the epoch in ``partition_lease`` and ``partition_epoch`` in one
transaction; the ``partition_epoch`` update waits for the row lock a committing batch of the previous leader
holds, so that batch either commits before the takeover or fails its fence after it.

Every batch is fenced in its own transaction by one conditional statement (``FENCE``): it updates the
``partition_epoch`` rows of the partitions the batch wrote, where the epoch is still this node's, and writes
the batch's token there. Fewer rows than partitions: another node took one, the batch is rolled back
(``NotLeader``) and those partitions are lost for this store. The token lets a COMMIT whose answer never came
be resolved: the batch committed exactly when its token is in the rows.

Renewal touches ``partition_lease`` only, never ``partition_epoch``: it never waits on a committing batch.
A leader that could not renew for ``ttl - margin`` (measured from when its last acknowledged renewal was
sent, on the monotonic clock) fences itself: it commits nothing more, before another node may take over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import psycopg

from unbroken.core import limits
from unbroken.core.storage import Leadership, NotLeader
from unbroken.storage.postgres_schema import Location, connect

log = logging.getLogger("unbroken.storage.lease")

_ACQUIRE = """
WITH taken AS (
    UPDATE partition_lease SET node = %(node)s, epoch = epoch + 1,
        expires_at = now() + make_interval(secs => %(ttl)s)
    WHERE part = ANY(%(parts)s) AND (%(force)s OR node = %(node)s OR node IS NULL OR expires_at < now())
    RETURNING part, epoch
)
UPDATE partition_epoch e SET epoch = taken.epoch, leader = %(node)s FROM taken WHERE e.part = taken.part
RETURNING e.part, e.epoch
"""
_RENEW = """
UPDATE partition_lease l SET expires_at = now() + make_interval(secs => %s)
FROM unnest(%s::int[], %s::bigint[]) AS mine(part, epoch)
WHERE l.part = mine.part AND l.epoch = mine.epoch AND l.node = %s
RETURNING l.part
"""
FENCE = """
UPDATE partition_epoch e SET last_batch = %s
FROM unnest(%s::int[], %s::bigint[]) AS mine(part, epoch)
WHERE e.part = mine.part AND e.epoch = mine.epoch
RETURNING e.part
"""
_HEARTBEAT = "UPDATE node SET heartbeat_at = now() WHERE name = %s"
_RELEASE = """
UPDATE partition_lease l SET expires_at = '-infinity'
FROM unnest(%s::int[], %s::bigint[]) AS mine(part, epoch)
WHERE l.part = mine.part AND l.epoch = mine.epoch AND l.node = %s
"""


def _ranges(parts: list[int]) -> str:
    """``0-3, 7`` for [0, 1, 2, 3, 7]: 64 partition numbers on one line."""
    out: list[str] = []
    for part in sorted(parts):
        if out and out[-1].split("-")[-1] == str(part - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{part}"
        else:
            out.append(str(part))
    return ", ".join(out)


class Leases:
    """The partitions this store leads and their epochs; renews them on a thread of its own."""

    def __init__(
        self,
        location: Location,
        node: str,
        partitions: int,
        *,
        ttl_s: float = limits.pg_lease_ttl_s,
        renew_s: float = limits.pg_lease_renew_interval_s,
        claim: Collection[int] | None = None,
    ) -> None:
        self.location = location
        self.node = node
        self.partitions = partitions
        self.claim = frozenset(range(partitions)) if claim is None else frozenset(claim)
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self._lock = threading.Lock()
        self.epochs: dict[int, int] = {}  # partition -> the epoch this store leads it with
        self.lost: dict[int, str] = {}  # partition -> why this store no longer leads it
        self._valid_until = 0.0  # monotonic: past it, no renewal was acknowledged in time (self-fenced)
        # for GET /metrics: added to by the renewal thread (once a second at most), never by a batch
        self.acquired = 0  # leases taken, each with a new epoch
        self.renewals = 0  # renewal rounds acknowledged
        self.renewal_failures = 0  # renewal rounds the database did not answer
        self.lost_count = 0  # partitions lost to another node
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    # ------------------------------------------------------------------------------------ taking them
    def acquire(
        self,
        *,
        force: bool = False,
        wait_s: float = limits.pg_lease_acquire_wait_s,
        parts: Collection[int] | None = None,
    ) -> None:
        """Lead every partition (or exactly ``parts``): take each lease that is free, expired or this node's,
        bumping its epoch; wait up to ``wait_s`` for the others to expire. ``force`` takes them even from a
        live leader (an operator's takeover; tests). Raises :class:`NotLeader` naming the holders if some
        stay taken."""
        deadline = time.monotonic() + wait_s
        wanted = set(self.claim) if parts is None else set(parts)
        said = False
        while True:
            sent = time.monotonic()
            rows = self._execute(
                _ACQUIRE,
                {"node": self.node, "ttl": self.ttl_s, "parts": sorted(wanted), "force": force},
            )
            with self._lock:
                for part, epoch in rows:
                    self.epochs[int(str(part))] = int(str(epoch))
                    wanted.discard(int(str(part)))
                self.acquired += len(rows)
                self._valid_until = sent + self.ttl_s - limits.pg_lease_self_fence_margin_s
            if not wanted:
                return
            if not said:
                log.warning(
                    "node %s: %d partitions are led by another node; waiting up to %gs for their leases",
                    self.node,
                    len(wanted),
                    wait_s,
                )
                said = True
            if time.monotonic() >= deadline:
                holders = self._execute(
                    "SELECT DISTINCT node FROM partition_lease WHERE part = ANY(%s)", (sorted(wanted),)
                )
                names = ", ".join(sorted(str(node) for (node,) in holders))
                raise NotLeader(
                    f"{len(wanted)} partitions of {self.location.describe()} stay led by another node "
                    f"({names}) after {wait_s:g}s: stop it, or wait for its leases ({self.ttl_s:g}s) to expire"
                )
            time.sleep(min(self.renew_s, max(0.0, deadline - time.monotonic())))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._renew_forever, name="unbroken-leases", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ keeping them
    def _renew_forever(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew()
            except psycopg.Error as exc:  # the next round tries again; the deadline fences us meanwhile
                with self._lock:
                    self.renewal_failures += 1
                log.warning("could not renew the partition leases: %s", exc)
                self._drop_conn()

    def renew(self) -> None:
        """Extend every lease still held; those the table no longer gives this node are lost."""
        with self._lock:
            parts = sorted(self.epochs)
            epochs = [self.epochs[p] for p in parts]
        self._execute(_HEARTBEAT, (self.node,), rows=False)  # alive, even leading nothing
        if not parts:
            return
        sent = time.monotonic()
        rows = self._execute(_RENEW, (self.ttl_s, parts, epochs, self.node))
        kept = {int(str(part)) for (part,) in rows}
        with self._lock:
            self._valid_until = sent + self.ttl_s - limits.pg_lease_self_fence_margin_s
            self.renewals += 1
        gone = [p for p in parts if p not in kept]
        if gone:
            self.mark_lost(gone, "its lease was taken by another node")

    def mark_lost(self, parts: Iterable[int], why: str) -> None:
        gone = []
        with self._lock:
            for part in parts:
                if self.epochs.pop(part, None) is not None:
                    self.lost[part] = why
                    gone.append(part)
            self.lost_count += len(gone)
        if gone:
            log.error(
                "%d partitions are no longer led by node %s (%s): %s",
                len(gone),
                self.node,
                _ranges(gone),
                why,
            )

    def led(self) -> frozenset[int]:
        """The partitions this store leads now (its lease held; a self-fenced store still lists them)."""
        with self._lock:
            return frozenset(self.epochs)

    def leadership(self) -> Leadership:
        """What this node leads now (none while it fences itself: it commits nothing) and the counts."""
        with self._lock:
            fenced = time.monotonic() > self._valid_until
            return Leadership(
                0 if fenced else len(self.epochs),
                self.acquired,
                self.renewals,
                self.renewal_failures,
                self.lost_count,
            )

    # ------------------------------------------------------------------------------------ fencing
    def fence_args(self, touched: set[int]) -> tuple[list[int], list[int]]:
        """The partitions a batch fences (those it wrote; all led ones if it wrote none) and their epochs.
        Raises :class:`NotLeader` if one is not led, or the leases were not renewed in time."""
        with self._lock:
            if not self.epochs:
                why = "; ".join(sorted(set(self.lost.values()))) or "it has not taken its leases"
                raise NotLeader(f"node {self.node} leads no partition: {why}")
            if time.monotonic() > self._valid_until:
                raise NotLeader(
                    f"node {self.node} could not renew its partition leases in time: it commits nothing "
                    "until it leads again"
                )
            parts = sorted(touched) if touched else sorted(self.epochs)
            for part in parts:
                if part not in self.epochs:
                    why = self.lost.get(part, "its lease was never taken")
                    raise NotLeader(f"partition {part} is not led by node {self.node}: {why}")
            return parts, [self.epochs[p] for p in parts]

    def refused(self, parts: list[int], granted: set[int]) -> NotLeader:
        """The fence updated only ``granted`` of ``parts``: the others were taken."""
        gone = [p for p in parts if p not in granted]
        self.mark_lost(gone, "another node took it (its epoch changed)")
        return NotLeader(
            f"partitions {gone} are led by another node now: the batch was refused by their epoch"
        )

    # ------------------------------------------------------------------------------------ the end
    def close(self, *, release: bool = True) -> None:
        """Stop renewing; ``release`` hands the leases over at once (a clean stop), so another node need
        not wait for them to expire."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_s + limits.pg_connect_timeout_s)
        with self._lock:
            parts = sorted(self.epochs)
            epochs = [self.epochs[p] for p in parts]
            self.epochs.clear()
        if release and parts:
            try:
                self._execute(_RELEASE, (parts, epochs, self.node), rows=False)
            except psycopg.Error as exc:  # they expire on their own
                log.warning("could not release the partition leases: %s", exc)
        self._drop_conn()

    def _execute(
        self, query: str, params: Sequence[Any] | Mapping[str, Any], *, rows: bool = True
    ) -> list[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.location)
        cur = self._conn.execute(query, params)
        return cur.fetchall() if rows else []

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
