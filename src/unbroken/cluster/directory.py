"""Where a request's storage partition is led: here, by another node (its addresses), or by nobody yet.

The store answers from memory both whether this node leads a partition (``Store.leads``) and who leads the
others (``Store.cluster()``: the ``node`` and ``partition_lease`` tables as its lease thread last read them,
every ``pg_lease_poll_interval_s``): nothing here waits on the database. A request whose partition has no
live leader (a failover) looks again every ``cluster_leader_poll_s`` (memory) until one appears or its
bound passes.
"""

from __future__ import annotations

import asyncio
import random
import time

from unbroken.core import limits
from unbroken.core.errors import EngineUnavailable
from unbroken.core.storage import ClusterView, NodeInfo, Store

_U64 = 1 << 64


def key_in_partition(part: int, partitions: int, raw: int) -> int:
    """A u64 partition key inside storage partition ``part`` (of ``partitions``), spread by ``raw``: the
    keys ``k`` with ``(k * partitions) >> 64 == part`` are ``ceil(part * 2**64 / P) .. ceil((part + 1) *
    2**64 / P) - 1``."""
    first = -(-(part * _U64) // partitions)
    end = -(-((part + 1) * _U64) // partitions)
    return first + raw % (end - first)


class NoLeader(EngineUnavailable):
    """No alive node leads the partition (a failover in progress): nothing was accepted, retry later."""


class Directory:
    """This node's view of who leads what, for the ingress and the admin API to forward requests."""

    def __init__(
        self,
        store: Store,
        node: str,
        *,
        refresh_s: float = limits.cluster_view_refresh_s,
        leader_wait_s: float = limits.cluster_leader_wait_s,
    ) -> None:
        self.store = store
        self.node = node
        self.refresh_s = refresh_s
        self.leader_wait_s = leader_wait_s
        self._suspects: dict[str, float] = {}  # node -> until when (monotonic) it is not asked again
        self._partitions = store.partition_of(_U64 - 1) + 1
        self._led = self._leading()  # replaced whole (by the lease thread): read without a lock
        store.on_leadership(lambda gained, lost: self._changed())

    # ------------------------------------------------------------------------------ this node (memory)
    def partition_of(self, partition_key: int) -> int:
        return self.store.partition_of(partition_key)

    def leads(self, part: int) -> bool:
        return self.store.leads(part)

    def _leading(self) -> tuple[int, ...]:
        return tuple(part for part in range(self._partitions) if self.store.leads(part))

    def _changed(self) -> None:
        self._led = self._leading()

    def led(self) -> tuple[int, ...]:
        """The storage partitions this node leads now (as of the last change the store told of)."""
        return self._led

    def mint_here(self, fresh: bytes) -> bytes:
        """``fresh`` (the bytes a new invocation id is made of, ``core/ids.py``) with the partition key of
        an unkeyed call moved into a partition this node leads, so the call needs no hop; unchanged when
        it leads none. Bytes 10..18 are that key; they mean nothing for keyed targets."""
        led = self._led
        if not led:
            return fresh
        raw = int.from_bytes(fresh[10:18], "big")
        part = led[raw % len(led)]
        key = key_in_partition(part, self._partitions, raw)
        return fresh[:10] + key.to_bytes(8, "big") + fresh[18:]

    # ------------------------------------------------------------------------------ the others
    def view(self) -> ClusterView | None:
        """The cluster as the store's lease thread last read it (no I/O here)."""
        return self.store.cluster()

    def suspect(self, node: str) -> None:
        """``node`` could not be reached: ask another (or it again, once the view is read again) meanwhile;
        a dead node's heartbeat stops, and its partitions' leases expire, within the lease TTL."""
        now = time.monotonic()
        if len(self._suspects) >= limits.cluster_suspects_max:  # one per node: only a long-gone node's stay
            self._suspects = {name: until for name, until in self._suspects.items() if until > now}
            if len(self._suspects) >= limits.cluster_suspects_max:
                self._suspects.clear()  # forgetting only means asking a node again
        self._suspects[node] = now + self.refresh_s

    async def leader(self, part: int | None, deadline: float | None = None) -> NodeInfo | None:
        """The alive node, other than this one, leading ``part`` (``None``: any partition, for a new
        invocation minted by its leader); None when this node leads it now. While nobody does, wait for a
        leader until ``deadline`` (monotonic; default ``leader_wait_s`` from now), then raise
        :class:`NoLeader`."""
        if deadline is None:
            deadline = time.monotonic() + self.leader_wait_s
        while True:
            if part is not None and self.store.leads(part):
                return None
            view = self.view()
            found = self._pick(view, part) if view is not None else None
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                what = f"partition {part}" if part is not None else "any partition"
                raise NoLeader(
                    f"no node leads {what} now (a failover is in progress?): nothing was accepted, retry",
                    503,
                    limits.retry_after_s,
                )
            await asyncio.sleep(min(limits.cluster_leader_poll_s, left))  # memory reads only

    def epoch_of(self, part: int | None, leader: NodeInfo) -> int | None:
        """The epoch ``leader`` leads ``part`` with in the view (None: any partition, or not that node)."""
        view = self.view()
        if part is None or view is None or not 0 <= part < len(view.leaders):
            return None
        lease = view.leaders[part]
        return lease.epoch if lease.node == leader.name else None

    def deposed(self, leader: NodeInfo, part: int | None, epoch: int | None) -> str | None:
        """Why a request sent to ``leader`` (leading ``part`` with ``epoch`` when it was sent) will not be
        answered by it any more (None: it may still be): another node or this one leads ``part`` now (a new
        epoch), or its heartbeat is older than the lease TTL (paused, cut off, dead). Memory only."""
        if part is not None and self.store.leads(part):
            return f"node {self.node} leads partition {part} now"
        view = self.view()
        if view is None:
            return None  # the database cannot be read: nothing is known to have changed
        info = next((n for n in view.nodes if n.name == leader.name), None)
        if info is None or not info.alive:
            age = "gone" if info is None else f"{info.heartbeat_age_s:.1f}s old"
            return f"node {leader.name}'s heartbeat is older than the lease TTL ({age})"
        if part is not None and 0 <= part < len(view.leaders):
            lease = view.leaders[part]
            if (lease.node, lease.epoch) != (leader.name, epoch if epoch is not None else lease.epoch):
                return f"partition {part} is led by {lease.node or 'nobody'} now (epoch {lease.epoch})"
        return None

    def _usable(self, node: NodeInfo) -> bool:
        suspect = self._suspects.get(node.name)
        if suspect is not None and suspect < time.monotonic():
            del self._suspects[node.name]
            suspect = None
        return node.alive and node.name != self.node and bool(node.ingress_url) and suspect is None

    def _pick(self, view: ClusterView, part: int | None) -> NodeInfo | None:
        if part is not None:
            info = view.leader_of(part)
            return info if info is not None and self._usable(info) else None
        leading = {leader.node for leader in view.leaders if leader.node is not None}
        nodes = [n for n in view.nodes if n.name in leading and self._usable(n)]
        return random.choice(nodes) if nodes else None  # noqa: S311 - spreading load, not a secret


__all__ = ["Directory", "NoLeader", "key_in_partition"]
