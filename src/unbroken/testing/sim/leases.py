"""Partition leadership that moves, in the simulator: leases with epochs over the memory store, as
``storage/postgres_lease.py`` keeps them in PostgreSQL, and the seeded world events that move them.

:class:`LeaseTable` is what PostgreSQL's ``partition_lease``/``partition_epoch`` rows hold (each partition's
holder and epoch), shared by the nodes' views of the store. :class:`NodeLeases` is one node's lease thread's
memory (``Leases``): the epochs it leads with, those set aside for a handover, those lost and why, whether it
fences itself for want of a renewal, and the runtime's listeners (``Store.on_leadership``). A view of the
store (``SimStore`` with ``leases`` set) answers ``leads``/``leadership``/``cluster`` from it, and every
commit is fenced as PostgreSQL's is (``fence``): by the epochs of the partitions the batch wrote or took
inbox records from (all led ones if it wrote only cluster-wide rows or only sent records); a partition not
led is :class:`PartitionLost`, a self-fenced node :class:`NotLeader`, an epoch that changed is refused
(``PartitionLost``, the partition marked lost and the runtime told, as ``Leases.refused`` does).

The events (``move_leases``, during the fault phase, each drawn from the seed):

* takeover: the other node takes partitions by force (their epochs bumped) while their leader is paused or
  cut off: it learns at its lease thread's next round, up to 10 s later, or before when a commit is refused;
* renewal failure: a node cannot renew: it commits nothing (``NotLeader``) for a while, then renews, or
  finds that the other node took its partitions once their leases expired;
* handover: a node sets partitions aside (the runtime lets go of them at once), releases them a round later
  and the other node claims them (a clean rebalance).

A crash (both nodes are one process) loses every node's lease memory; the restart takes each node's own
leases back with new epochs (``start_up``), and the free ones are shared out.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from unbroken.core.errors import TransactionConflict
from unbroken.core.ids import partition_key_for_key, partition_key_of_any
from unbroken.core.storage import (
    ClusterView,
    Leadership,
    LeadershipChanged,
    NodeInfo,
    NotLeader,
    PartitionLeader,
    PartitionLost,
)
from unbroken.testing.sim.faults import stream

if TYPE_CHECKING:
    from unbroken.storage.memory import MemoryStore, MemoryTransaction
    from unbroken.testing.sim.world import World

log = logging.getLogger("unbroken.sim.leases")

NODES = ("a", "b")


@dataclass
class LeaseTable:
    """The leases' rows (shared by every node): each partition's holder (None: free) and epoch."""

    partitions: int
    holder: dict[int, str | None] = field(default_factory=dict)
    epoch: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in range(self.partitions):
            self.holder.setdefault(part, None)
            self.epoch.setdefault(part, 0)

    def take(self, part: int, node: str) -> int:
        """``_ACQUIRE``: the lease is ``node``'s now, with a new epoch (which fences the previous holder)."""
        self.epoch[part] += 1
        self.holder[part] = node
        return self.epoch[part]


class NodeLeases:
    """One node's lease memory (``postgres_lease.Leases``), lost with its process."""

    def __init__(self, table: LeaseTable, node: str, store: MemoryStore) -> None:
        self.table = table
        self.node = node
        self.store = store  # the node's view: its ``led`` is kept equal to ``leading`` (the inbox, the scans)
        self.epochs: dict[int, int] = {}
        self.releasing: set[int] = set()
        self.lost: dict[int, str] = {}
        self.fenced = False  # self-fenced: no renewal acknowledged in time
        self.listeners: list[LeadershipChanged] = []
        self.context: contextvars.Context | None = None  # the engine's (its tasks die with it)
        self.acquired = self.renewal_failures = self.lost_count = 0

    @property
    def leading(self) -> frozenset[int]:
        return frozenset(p for p in self.epochs if p not in self.releasing)

    def _publish(self) -> None:
        self.store.led = self.leading

    def tell(self, gained: Iterable[int], lost: Iterable[int]) -> None:
        gained, lost = frozenset(gained), frozenset(lost)
        if not (gained or lost):
            return
        for changed in list(self.listeners):
            if self.context is not None:  # the lease thread's hop lands in the engine's context
                self.context.copy().run(changed, gained, lost)
            else:
                changed(gained, lost)

    # ------------------------------------------------------------------------------------ changes
    def acquire(self, parts: Iterable[int]) -> list[int]:
        # a lease round reads the rows first: what was taken meanwhile is lost before anything is gained
        # (``Leases._balance``), so the runtime recovers a partition taken back
        self.notice()
        gained = sorted(set(parts))
        for part in gained:
            self.epochs[part] = self.table.take(part, self.node)
            self.lost.pop(part, None)
            self.releasing.discard(part)
        self.acquired += len(gained)
        self._publish()
        self.tell(gained, ())
        return gained

    def set_aside(self, parts: Iterable[int]) -> list[int]:
        aside = sorted(p for p in parts if p in self.epochs and p not in self.releasing)
        self.releasing.update(aside)
        self._publish()
        self.tell((), aside)
        return aside

    def release(self) -> list[int]:
        """``_release``: what was set aside is handed over (epochs dropped, the lease freed)."""
        parts = sorted(p for p in self.releasing if p in self.epochs)
        for part in parts:
            if self.table.holder[part] == self.node and self.table.epoch[part] == self.epochs[part]:
                self.table.holder[part] = None
            del self.epochs[part]
            self.lost[part] = "it was handed over to another node"
        self.releasing.clear()
        self._publish()
        return parts

    def mark_lost(self, parts: Iterable[int], why: str) -> list[int]:
        gone = []
        for part in parts:
            if self.epochs.pop(part, None) is None:
                continue
            self.lost[part] = why
            if part in self.releasing:
                self.releasing.discard(part)
            else:
                gone.append(part)
        self.lost_count += len(gone)
        self._publish()
        if gone:
            log.warning("node %s no longer leads partitions %s: %s", self.node, gone, why)
            self.tell((), gone)
        return gone

    def notice(self) -> list[int]:
        """A lease round: the partitions whose lease another node holds now are lost."""
        taken = [
            p
            for p, epoch in self.epochs.items()
            if (self.table.holder[p], self.table.epoch[p]) != (self.node, epoch)
        ]
        return self.mark_lost(taken, "its lease was taken by another node")

    def stale(self, part: int) -> bool:
        """Whether this node believes it leads ``part`` with an epoch another node has bumped since."""
        epoch = self.epochs.get(part)
        return epoch is not None and epoch != self.table.epoch[part]

    def crash(self) -> None:
        """The process died: the lease memory is gone (the rows stay)."""
        self.epochs.clear()
        self.releasing.clear()
        self.lost.clear()
        self.fenced = False
        self.listeners.clear()
        self.context = None
        self._publish()

    # ------------------------------------------------------------------------------------ the store's
    def leadership(self) -> Leadership:
        return Leadership(
            0 if self.fenced else len(self.leading), self.acquired, 0, self.renewal_failures, self.lost_count
        )

    def fence(self, txn: MemoryTransaction, begun: dict[int, int]) -> None:
        """Before a commit publishes anything: raise as ``PostgresTransaction.commit`` does when its fence
        refuses the batch (the caller rolls back)."""
        touched, wrote_global, sent = touched_partitions(txn)
        # and the led ones whose rows it read: a deposed leader that does not know it yet must not commit a
        # decision taken on them (a signal ignored as never allocated, read from a row another node now
        # writes: --leases seed 1342)
        touched |= read_partitions(txn) & begun.keys()
        if not (touched or wrote_global or sent):
            return
        if not self.epochs:
            why = "; ".join(sorted(set(self.lost.values()))) or "it has not taken its leases"
            raise PartitionLost(f"node {self.node} leads no partition: {why}")
        if self.fenced:
            raise NotLeader(f"node {self.node} could not renew its partition leases in time")
        parts = sorted(touched) if touched else sorted(self.epochs)
        for part in parts:
            if part not in self.epochs:
                why = self.lost.get(part, "its lease was never taken")
                raise PartitionLost(f"partition {part} is not led by node {self.node}: {why}", (part,))
        if any(begun.get(part) != self.epochs[part] for part in parts):
            raise TransactionConflict(f"the leadership of partitions {parts} changed during the batch")
        gone = [part for part in parts if self.table.epoch[part] != self.epochs[part]]
        if gone:
            self.mark_lost(gone, "another node took it (its epoch changed)")
            raise PartitionLost(
                f"partitions {gone} are led by another node now: the batch was refused by their epoch",
                tuple(gone),
            )


def touched_partitions(txn: MemoryTransaction) -> tuple[set[int], bool, bool]:
    """The partitions a transaction wrote (rows, timers, inbox records it took), whether it wrote a
    cluster-wide row, whether it sent inbox records (what the PostgreSQL transaction tracks as it writes)."""
    store = txn.s

    def of_id(invocation_id: str) -> int:
        return store.partition_of(partition_key_of_any(invocation_id))

    def of_key(key: str) -> int:
        return store.partition_of(partition_key_for_key(key))

    parts: set[int] = set()
    for table in (txn._invocations, txn._journals, txn._signals):
        parts.update(of_id(k) for k in table.written)
    for keyed in (txn._state, txn._locks, txn._inboxes, txn._promises):
        parts.update(of_key(k[1]) for k in keyed.written)
    for timer_id, row in txn._timers.written.items():
        timer = row if row is not None else store.timer_rows.get(timer_id)
        if timer is not None:
            parts.add(of_id(timer.invocation_id))
    sent = False
    for key, message in txn._messages.written.items():
        if message is None:
            parts.add(key[0])  # taken from the partition's inbox
        else:
            sent = True
    wrote_global = bool(txn._overrides.written or txn._deployments.written)
    return parts, wrote_global, sent


def read_partitions(txn: MemoryTransaction) -> set[int]:
    """The partitions whose invocation rows a transaction read (``PostgresTransaction.get_invocation``)."""
    store = txn.s
    return {store.partition_of(partition_key_of_any(k)) for k in txn._invocations.seen}


def cluster_view(table: LeaseTable, leases: dict[str, NodeLeases]) -> ClusterView:
    nodes = tuple(NodeInfo(name, "", "", 0.0, True) for name in sorted(leases))
    leaders = tuple(
        PartitionLeader(p, table.holder[p], table.epoch[p], 10.0 if table.holder[p] else -1.0)
        for p in range(table.partitions)
    )
    return ClusterView(table.partitions, nodes, leaders)


class LeaseWorld:
    """The lease rows and both nodes' lease memories of one run, and the events that move them."""

    def __init__(self, world: World, views: list[MemoryStore]) -> None:
        self.world = world
        self.table = LeaseTable(views[0].partitions)
        self.nodes = {
            name: NodeLeases(self.table, name, view) for name, view in zip(NODES, views, strict=True)
        }
        half = self.table.partitions // 2
        for part in range(self.table.partitions):  # the first start: each node its half
            self.table.holder[part] = NODES[0] if part < half else NODES[1]
        self.moves = 0
        self.rng = stream(world.seed, "leases")
        self.zombie_runs = 0  # ctx.run actions a deposed leader's attempt ran after the result was durable

    def start_up(self, context: contextvars.Context) -> None:
        """A (re)start: each node takes its own leases back with new epochs, the free ones are shared out."""
        for node in self.nodes.values():
            node.crash()
            node.context = context
        for name, node in self.nodes.items():
            node.acquire(p for p, holder in self.table.holder.items() if holder == name)
        for part in sorted(p for p, holder in self.table.holder.items() if holder is None):
            min(self.nodes.values(), key=lambda n: (len(n.epochs), n.node)).acquire([part])

    def crash(self) -> None:
        for node in self.nodes.values():
            node.crash()

    def zombie(self, invocation_id: str) -> bool:
        """Whether a node deposed without knowing it still leads ``invocation_id``'s partition (its attempts
        may still run a ``ctx.run`` whose result the new leader has made durable: that is allowed)."""
        part = self.nodes[NODES[0]].store.partition_of(partition_key_of_any(invocation_id))
        return any(node.stale(part) for node in self.nodes.values())

    def leader_of(self, part: int) -> str | None:
        return self.table.holder[part]

    # ------------------------------------------------------------------------------------ the events
    async def move_leases(self, until: float) -> None:
        w = self.world
        rng = self.rng
        mean = rng.uniform(2.0, 15.0)
        while True:
            await asyncio.sleep(rng.expovariate(1.0 / mean))
            if w.loop.time() >= until or not w.faults.active:
                return
            if w.engine is None:
                continue  # the process is down: no lease thread runs
            kind = rng.choice(("takeover", "takeover", "renewal", "handover"))
            src, dst = rng.sample(list(self.nodes.values()), 2)
            mine = sorted(src.leading)
            if not mine and kind != "renewal":
                src, dst = dst, src
                mine = sorted(src.leading)
            parts = rng.sample(mine, rng.randint(1, len(mine))) if mine else []
            self.moves += 1
            if kind == "takeover" and parts:
                await self._takeover(src, dst, parts, rng.random())
            elif kind == "handover" and parts:
                await self._handover(src, dst, parts, rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0))
            else:
                await self._renewal_failure(src, dst, rng.uniform(0.1, 8.0), rng.random())

    async def _takeover(self, src: NodeLeases, dst: NodeLeases, parts: list[int], told: float) -> None:
        """``dst`` takes ``parts`` by force while ``src`` is paused: ``src`` learns late, or only when a
        commit of its is refused."""
        self.world.trace(f"LEASES takeover of {parts}: {src.node} -> {dst.node}")
        dst.acquire(parts)
        # its lease thread's next round comes (a paused node resumes, a cut-off one reconnects), maybe long
        # after its commits to them began being refused
        await asyncio.sleep(told * told * 10)
        self.world.trace(f"LEASES {src.node}'s lease round")
        src.notice()

    async def _handover(
        self, src: NodeLeases, dst: NodeLeases, parts: list[int], release_s: float, claim_s: float
    ) -> None:
        self.world.trace(f"LEASES handover of {parts}: {src.node} -> {dst.node}")
        src.set_aside(parts)
        await asyncio.sleep(release_s)  # the lease thread's next round: the batch in flight committed
        released = src.release()
        await asyncio.sleep(claim_s)
        free = [p for p in released if self.table.holder[p] is None]
        self.world.trace(f"LEASES {dst.node} claims {free}")
        dst.acquire(free)

    async def _renewal_failure(self, src: NodeLeases, dst: NodeLeases, for_s: float, fate: float) -> None:
        """``src`` cannot renew for ``for_s``: it fences itself; its leases may expire and ``dst`` take
        them (``fate``), which ``src`` learns when it renews again."""
        self.world.trace(f"LEASES {src.node} cannot renew for {for_s:.2f}s")
        src.fenced = True
        src.renewal_failures += 1
        if fate < 0.5 and src.leading:
            await asyncio.sleep(for_s * fate * 2)
            taken = [p for p in sorted(src.leading) if self.table.holder[p] == src.node]
            self.world.trace(f"LEASES {src.node}'s leases expired: {dst.node} takes {taken}")
            dst.acquire(taken)
            await asyncio.sleep(for_s * (1 - fate * 2))
        else:
            await asyncio.sleep(for_s)
        src.fenced = False
        self.world.trace(f"LEASES {src.node} renews")
        src.notice()
