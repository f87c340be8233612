"""Schema changes another node applied (``PATCH /services``, deployments registered or removed), picked up.

A ``ModifyService`` or a deployment record is applied by one node: that node's schemas change when its
batch commits. The others read the ``service_override`` and ``deployment`` tables every
``cluster_schema_poll_s`` (two small reads on a thread) and serve what they hold when it changed: every node
routes and checks requests with the same schemas within that interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from unbroken.core import limits
from unbroken.core.deployments import Deployment
from unbroken.core.schema import ServiceOverride
from unbroken.core.storage import Store

log = logging.getLogger("unbroken.cluster")

Apply = Callable[[list[Deployment], dict[str, ServiceOverride]], None]
_Seen = tuple[list[Deployment], dict[str, ServiceOverride]]


class SchemaFollower:
    """Polls the store's schema tables and calls ``apply(deployments, overrides)`` on a change."""

    def __init__(self, store: Store, apply: Apply, interval_s: float = limits.cluster_schema_poll_s) -> None:
        self.store = store
        self.apply = apply
        self.interval_s = interval_s
        self._seen: _Seen | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="unbroken-schema-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _read(self) -> _Seen:
        deployments = sorted(self.store.deployments(), key=lambda d: d.id)
        return deployments, self.store.service_overrides()

    async def poll(self) -> bool:
        """Read the tables once; apply them if they changed since the last read. True if applied."""
        seen = await asyncio.to_thread(self._read)
        if seen == self._seen:
            return False
        first = self._seen is None
        self._seen = seen
        # the first read too: the node was built from these tables, but one may have changed since
        self.apply(*seen)
        if not first:
            log.info("schemas changed: %d deployments, %d service overrides", *map(len, seen))
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception as exc:  # the database fails: the next round tries again
                log.warning("cannot read the schema changes of other nodes: %s", exc)
            await asyncio.sleep(self.interval_s)


__all__ = ["SchemaFollower"]
