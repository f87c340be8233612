"""Partition leadership on PostgreSQL: leases with epochs, balanced between the live nodes by a thread of
each node, checked by every commit.

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

Balancing (``claim=None``): every ``poll_s`` the thread reads the leases and the ``node`` table (a node is
alive while its heartbeat, written with each renewal, is younger than the TTL). It claims free or expired
leases up to ``ceil(P / live nodes)``; when it leads more than that (a node joined), it stops leading the
extras at once (``leads`` says no, the runtime is told they are lost: it stops admitting their records and
aborts their attempts) and one round later, the batch in flight committed, sets their expiry to
``-infinity`` for the others to claim. ``claim`` as a set pins the node to exactly those partitions.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import psycopg

from unbroken.core import limits
from unbroken.core.storage import (
    ClusterView,
    Leadership,
    LeadershipChanged,
    NodeInfo,
    NotLeader,
    PartitionLeader,
    PartitionLost,
)
from unbroken.storage.postgres_schema import Location, bound_waits, connect

log = logging.getLogger("unbroken.storage.lease")

_ACQUIRE = """
WITH taken AS (
    UPDATE partition_lease SET node = %(node)s, epoch = epoch + 1,
        expires_at = now() + make_interval(secs => %(ttl)s)
    WHERE part = ANY(%(parts)s) AND (%(force)s OR node IS NULL OR expires_at < now()
        OR (node = %(node)s AND %(own)s))
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
_RELEASE = """
UPDATE partition_lease l SET expires_at = '-infinity'
FROM unnest(%s::int[], %s::bigint[]) AS mine(part, epoch)
WHERE l.part = mine.part AND l.epoch = mine.epoch AND l.node = %s
"""
_HEARTBEAT = """
INSERT INTO node (name, ingress_url, admin_url, started_at, heartbeat_at, pinned, backlog)
VALUES (%s, %s, %s, now(), now(), %s, %s)
ON CONFLICT (name) DO UPDATE SET heartbeat_at = now(), ingress_url = excluded.ingress_url,
    admin_url = excluded.admin_url, pinned = excluded.pinned, backlog = excluded.backlog
"""
# extract(epoch ...) of an infinite timestamp is infinite (subtracting one would be an error)
_LEASES = (
    "SELECT part, node, epoch, (extract(epoch FROM expires_at) - extract(epoch FROM now()))::float8"
    " FROM partition_lease"
)
_NODES = (
    "SELECT name, coalesce(ingress_url, ''), coalesce(admin_url, ''),"
    " coalesce((extract(epoch FROM now()) - extract(epoch FROM heartbeat_at))::float8, 'infinity'), pinned,"
    " backlog FROM node"
)
_NEVER_S = 1e9  # the age of a heartbeat of -infinity, and the expiry of a lease of -infinity


def _ranges(parts: Iterable[int]) -> str:
    """``0-3, 7`` for [0, 1, 2, 3, 7]: 64 partition numbers on one line."""
    out: list[str] = []
    for part in sorted(parts):
        if out and out[-1].split("-")[-1] == str(part - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{part}"
        else:
            out.append(str(part))
    return ", ".join(out)


def _seconds(value: object) -> float:
    """Seconds from the database, infinite ones (a lease of -infinity) clamped to ``_NEVER_S``."""
    return max(-_NEVER_S, min(_NEVER_S, float(str(value))))


class Leases:
    """The partitions this store leads and their epochs; renews and balances them on a thread of its own."""

    def __init__(
        self,
        location: Location,
        node: str,
        partitions: int,
        *,
        ttl_s: float = limits.pg_lease_ttl_s,
        renew_s: float = limits.pg_lease_renew_interval_s,
        poll_s: float = limits.pg_lease_poll_interval_s,
        claim: Collection[int] | None = None,
        fault_point: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.location = location
        # the node's named fault points (``runtime/faults.py``; storage cannot import it): crash tests
        self.fault_point = fault_point
        self.node = node
        self.partitions = partitions
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.poll_s = poll_s
        self.claim = None if claim is None else frozenset(claim)
        self._lock = threading.Lock()
        self.epochs: dict[int, int] = {}  # partition -> the epoch this store leads it with (its fence)
        self.releasing: set[int] = set()  # in epochs, but handed over at the next round: not led any more
        self.leading: frozenset[int] = frozenset()  # epochs minus releasing: read without the lock
        self.lost: dict[int, str] = {}  # partition -> why this store no longer leads it
        self._valid_until = 0.0  # monotonic: past it, no renewal was acknowledged in time (self-fenced)
        self._renewed_at = 0.0  # monotonic: when the last renewal round was sent
        self._listeners: list[LeadershipChanged] = []
        self._pinned: set[str] = set()  # the nodes leading only the partitions they claim (not balanced)
        self.ingress_url = ""
        self.admin_url = ""
        self.backlog: Callable[[], int] = lambda: 0  # records queued at this node's batch loop
        self.view = ClusterView(partitions, (), ())
        # for GET /metrics: added to by the lease thread (once a second at most), never by a batch
        self.acquired = 0  # leases taken, each with a new epoch
        self.renewals = 0  # renewal rounds acknowledged
        self.renewal_failures = 0  # renewal rounds the database did not answer
        self.lost_count = 0  # partitions lost to another node
        self.released_count = 0  # partitions handed over to balance the cluster
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    # ------------------------------------------------------------------------------------ the runtime's
    def leads(self, part: int) -> bool:
        return part in self.leading

    def on_change(self, changed: LeadershipChanged) -> None:
        with self._lock:
            self._listeners.append(changed)

    def _tell(self, gained: Iterable[int], lost: Iterable[int]) -> None:
        gained, lost = frozenset(gained), frozenset(lost)
        if not (gained or lost):
            return
        with self._lock:
            listeners = list(self._listeners)
        for changed in listeners:
            try:
                changed(gained, lost)
            except Exception:  # a listener's bug must not stop the leases
                log.exception("a leadership listener failed")

    def _publish(self) -> None:
        """Under the lock: what ``leads`` answers from."""
        self.leading = frozenset(p for p in self.epochs if p not in self.releasing)

    def advertise(self, ingress_url: str, admin_url: str, backlog: Callable[[], int] | None = None) -> None:
        """Where this node listens, and how to read its backlog (the records queued at its batch loop, its
        lag behind what it accepted): written to its ``node`` row with each heartbeat."""
        with self._lock:
            self.ingress_url, self.admin_url = ingress_url, admin_url
            if backlog is not None:
                self.backlog = backlog

    # ------------------------------------------------------------------------------------ taking them
    def start_up(self, *, force: bool = False) -> None:
        """Join the cluster: write this node's heartbeat and take its share of the leases now (a node alone
        takes every one; the leases of this node's name are taken back at once, with new epochs, which
        fence a process of the same name that may still run). ``force`` takes the claimed ones (all if none
        were named) even from a live leader: an operator's takeover, tests."""
        self._balance(first=True, force=force)
        self._heartbeat()  # after: a takeover takes everything before the others count this node
        self._read_view()  # with this node in it

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="unbroken-leases", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                if time.monotonic() - self._renewed_at >= self.renew_s - self.poll_s / 2:
                    self.renew()
                self._balance()
            except psycopg.Error as exc:  # the next round tries again; the deadline fences us meanwhile
                with self._lock:
                    self.renewal_failures += 1
                log.warning("could not renew the partition leases: %s", exc)
                self._drop_conn()
            except Exception:  # a bug: the thread must go on (without it the node fences itself for good)
                log.exception("the lease thread's round failed")
                self._drop_conn()

    def _read_view(self) -> ClusterView:
        rows = self._execute(_NODES, ())
        nodes = tuple(
            sorted(
                (
                    NodeInfo(str(n), str(i), str(a), _seconds(s), _seconds(s) < self.ttl_s, int(str(b)))
                    for n, i, a, s, _, b in rows
                ),
                key=lambda n: n.name,
            )
        )
        self._pinned = {str(row[0]) for row in rows if row[4]}
        leaders = sorted(
            (
                PartitionLeader(int(str(p)), None if n is None else str(n), int(str(e)), _seconds(s))
                for p, n, e, s in self._execute(_LEASES, ())
            ),
            key=lambda lead: lead.part,
        )
        view = ClusterView(self.partitions, nodes, tuple(leaders))
        self.view = view
        return view

    def _balance(self, *, first: bool = False, force: bool = False) -> None:
        """One round: hand over what was set aside last round, then claim or set aside to the fair share."""
        with self._lock:
            handing = sorted(self.releasing)
        if handing:
            self._release(handing)
        view = self._read_view()
        with self._lock:
            taken = [
                p
                for p, epoch in self.epochs.items()
                if p < len(view.leaders)
                and (view.leaders[p].node, view.leaders[p].epoch) != (self.node, epoch)
            ]
        if taken:  # seen before the next renewal would see it
            self.mark_lost(taken, "its lease was taken by another node")
        alive = {n.name for n in view.nodes if n.alive} | {self.node}
        with self._lock:
            mine = set(self.epochs) - self.releasing
            releasing = bool(self.releasing)
        wanted = set(range(self.partitions)) if self.claim is None else set(self.claim)
        free = {
            lead.part
            for lead in view.leaders
            if lead.node is None or lead.lease_expires_in_s <= 0 or (first and lead.node == self.node)
        }
        if self.claim is not None or force:
            take = sorted((wanted - mine) if force else (wanted & free) - mine)
        else:
            # the fair share of what the pinned nodes leave to the balancing ones
            pinned = (alive & self._pinned) - {self.node}
            held = sum(1 for lead in view.leaders if lead.node in pinned and lead.lease_expires_in_s > 0)
            share = math.ceil(max(0, self.partitions - held) / len(alive - pinned))
            if len(mine) > share and not releasing and not first:
                self._set_aside(sorted(mine)[share:])
                return
            # our own name's leases first (a restart takes them back), then the lowest free ones
            own = sorted(p for p in free - mine if view.leaders[p].node == self.node)
            others = sorted(free - mine - set(own))
            take = (own + others)[: max(0, share - len(mine))]
        if take:
            self._acquire(take, force=force, own=first)

    def _acquire(self, parts: list[int], *, force: bool, own: bool) -> None:
        self.fault_point("lease.before_acquire")  # free or expired leases chosen, not claimed yet
        sent = time.monotonic()
        rows = self._execute(
            _ACQUIRE, {"node": self.node, "ttl": self.ttl_s, "parts": parts, "force": force, "own": own}
        )
        gained = {int(str(part)): int(str(epoch)) for part, epoch in rows}
        if not gained:
            return
        # claimed with new epochs (committed: the old leader is fenced), nothing of them recovered yet
        self.fault_point("lease.after_acquire")
        with self._lock:
            renewed = bool(self.epochs)
            self.epochs.update(gained)
            for part in gained:
                self.lost.pop(part, None)
            self.acquired += len(gained)
            if not renewed:  # the first leases: they are as fresh as a renewal
                self._valid_until = sent + self.ttl_s - limits.pg_lease_self_fence_margin_s
            self._publish()
        leaders = list(self.view.leaders)  # the view says so at once, not only after the next read
        for part, epoch in gained.items():
            if part < len(leaders):
                leaders[part] = PartitionLeader(part, self.node, epoch, self.ttl_s)
        self.view = dataclasses.replace(self.view, leaders=tuple(leaders))
        log.info("node %s leads partitions %s now", self.node, _ranges(gained))
        self._tell(gained, ())

    def _set_aside(self, parts: list[int]) -> None:
        """Stop leading ``parts`` (more than the fair share): the runtime lets go of them now; the leases
        are handed over at the next round, once the batch in flight has committed."""
        with self._lock:
            self.releasing.update(parts)
            self._publish()
        log.info("node %s hands partitions %s over to balance the cluster", self.node, _ranges(parts))
        self._tell((), parts)

    def _release(self, parts: list[int]) -> None:
        # Epochs first: a batch fenced from now on is refused for these; one already fenced holds the
        # rows' locks, so whoever claims them next waits for its COMMIT.
        with self._lock:
            parts = [p for p in parts if p in self.epochs]  # not those taken meanwhile (``mark_lost``)
            epochs = [self.epochs[p] for p in parts]
            for part in parts:
                self.epochs.pop(part, None)
                self.releasing.discard(part)
                self.lost[part] = "it was handed over to another node"
            self.released_count += len(parts)
            self._publish()
        # set aside last round (the runtime let go of them), their leases not handed over yet
        self.fault_point("lease.before_release")
        self._execute(_RELEASE, (parts, epochs, self.node), rows=False)

    # ------------------------------------------------------------------------------------ keeping them
    def renew(self) -> None:
        """Extend every lease still held, and this node's heartbeat; those the table no longer gives this
        node are lost."""
        with self._lock:
            parts = sorted(self.epochs)
            epochs = [self.epochs[p] for p in parts]
        self.fault_point("lease.before_renew")  # the leases run down from the last round's renewal
        sent = time.monotonic()
        self._renewed_at = sent
        self._heartbeat()
        if not parts:
            return
        rows = self._execute(_RENEW, (self.ttl_s, parts, epochs, self.node))
        kept = {int(str(part)) for (part,) in rows}
        self.fault_point("lease.after_renew")  # renewed in the table, this node not told yet
        with self._lock:
            self._valid_until = sent + self.ttl_s - limits.pg_lease_self_fence_margin_s
            self.renewals += 1
        gone = [p for p in parts if p not in kept]
        if gone:
            self.mark_lost(gone, "its lease was taken by another node")

    def _heartbeat(self) -> None:
        with self._lock:
            urls = (self.ingress_url, self.admin_url)
        try:
            backlog = self.backlog()
        except Exception:  # noqa: BLE001 - a gauge: never worth a missed heartbeat
            log.exception("reading this node's backlog failed")
            backlog = -1
        self._execute(_HEARTBEAT, (self.node, *urls, self.claim is not None, backlog), rows=False)

    def mark_lost(self, parts: Iterable[int], why: str) -> None:
        gone = []
        with self._lock:
            for part in parts:
                if self.epochs.pop(part, None) is None:
                    continue
                self.lost[part] = why
                if part in self.releasing:  # set aside: the runtime has let go of it already
                    self.releasing.discard(part)
                else:
                    gone.append(part)
            self.lost_count += len(gone)
            self._publish()
        if gone:
            log.error(
                "%d partitions are no longer led by node %s (%s): %s",
                len(gone),
                self.node,
                _ranges(gone),
                why,
            )
            self._tell((), gone)

    def leadership(self) -> Leadership:
        """What this node leads now (none while it fences itself: it commits nothing) and the counts."""
        with self._lock:
            fenced = time.monotonic() > self._valid_until
            return Leadership(
                0 if fenced else len(self.leading),
                self.acquired,
                self.renewals,
                self.renewal_failures,
                self.lost_count,
            )

    def snapshot(self) -> dict[int, int]:
        """The partitions led now and their epochs (a batch remembers them from its start)."""
        with self._lock:
            return dict(self.epochs)

    # ------------------------------------------------------------------------------------ fencing
    def fence_args(self, touched: set[int]) -> tuple[list[int], list[int]]:
        """The partitions a batch fences (those it wrote; all led ones if it wrote only cluster-wide rows)
        and their epochs. Raises :class:`PartitionLost` if one is not led, :class:`NotLeader` if the leases
        were not renewed in time."""
        with self._lock:
            if not self.epochs:
                why = "; ".join(sorted(set(self.lost.values()))) or "it has not taken its leases"
                raise PartitionLost(f"node {self.node} leads no partition: {why}")
            if time.monotonic() > self._valid_until:
                raise NotLeader(
                    f"node {self.node} could not renew its partition leases in time: it commits nothing "
                    "until it leads again"
                )
            parts = sorted(touched) if touched else sorted(self.epochs)
            for part in parts:
                if part not in self.epochs:
                    why = self.lost.get(part, "its lease was never taken")
                    raise PartitionLost(f"partition {part} is not led by node {self.node}: {why}", (part,))
            return parts, [self.epochs[p] for p in parts]

    def refused(self, parts: list[int], granted: set[int]) -> NotLeader:
        """The fence updated only ``granted`` of ``parts``: the others were taken."""
        gone = [p for p in parts if p not in granted]
        self.mark_lost(gone, "another node took it (its epoch changed)")
        return PartitionLost(
            f"partitions {gone} are led by another node now: the batch was refused by their epoch",
            tuple(gone),
        )

    # ------------------------------------------------------------------------------------ the end
    def close(self, *, release: bool = True) -> None:
        """Stop renewing; ``release`` hands the leases over at once (a clean stop), so another node need
        not wait for them to expire, and marks this node gone so the others rebalance without it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_s + limits.pg_connect_timeout_s)
        with self._lock:
            parts = sorted(self.epochs)
            epochs = [self.epochs[p] for p in parts]
            self.epochs.clear()
            self.releasing.clear()
            self._publish()
        if release:
            try:
                if parts:
                    self._execute(_RELEASE, (parts, epochs, self.node), rows=False)
                self._execute(
                    "UPDATE node SET heartbeat_at = '-infinity' WHERE name = %s", (self.node,), rows=False
                )
            except psycopg.Error as exc:  # they expire on their own
                log.warning("could not release the partition leases: %s", exc)
        self._drop_conn()

    def _execute(
        self, query: str, params: Sequence[Any] | Mapping[str, Any], *, rows: bool = True
    ) -> list[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            conn = connect(self.location)
            bound_waits(conn)  # a renewal waiting on a lock past its TTL is pointless: fail, go on next round
            self._conn = conn
        cur = self._conn.execute(query, params)
        return cur.fetchall() if rows else []

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
