"""A node: the partitions it leads, and the routing of records and actions between them.

Every invocation id carries its partition key (``core/ids.py``: a u64; keyed services and workflows derive it
from their key). The key space is cut into ``partitions`` equal ranges, one per partition processor
(``runtime/partition.py``). A request's record goes to the partition owning its invocation (or, for an
admin state write, its key); with more than one partition, the actions a batch produced go to the partition
running that invocation's attempt (``StartAttempt``, ``Deliver``, ``AbortAttempt``), owning the invocation a
timer wakes (``ArmTimer``: a delayed call another partition's handler sent) or holding the waiting caller
(``Reply``, ``AwaitCompletion``, ``Completed``), so each attempt's records, and each timer's, are applied by
the partition that owns its invocation.

On SQLite the node leads every partition, and there is one: the store has one writer connection. More
partitions run over the memory store (tests of the routing); they share it, each with its own transaction
open while its batch commits, isolated from the others' (a rollback undoes its own partition's batch only;
a batch that touched a row another partition committed meanwhile fails its commit and is applied again).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable

from unbroken.core import actions as a
from unbroken.core import records as r
from unbroken.core.deployments import Deployment, deployed_schemas
from unbroken.core.errors import PartitionNotLed
from unbroken.core.ids import InvalidId, InvocationId, partition_key_for_key
from unbroken.core.schema import Schemas, ServiceKind, ServiceOverride, ServiceSchema, with_overrides
from unbroken.core.storage import Leadership, Store
from unbroken.protocol.transport import HandlerTransport
from unbroken.runtime.clock import Clock
from unbroken.runtime.entropy import RandomBytes
from unbroken.runtime.faults import FaultPoints
from unbroken.runtime.partition import EngineOptions, Partition, ProcessorFactory
from unbroken.runtime.stats import EngineStats
from unbroken.runtime.takeover import Takeover, record_partition_key

__all__ = ["EngineOptions", "Node", "ProcessorFactory", "partition_of_key"]


def partition_of_key(partition_key: int, partitions: int) -> int:
    """The partition (0..partitions-1) whose range of the u64 key space holds ``partition_key``."""
    return (partition_key * partitions) >> 64


def _partition_key(record: r.Record) -> int:
    invocation_id = getattr(record, "invocation_id", None)
    if invocation_id:
        return InvocationId.parse(invocation_id).partition_key
    if isinstance(record, r.SetStateFromAdmin):
        return partition_key_for_key(record.key)
    return 0


class Node:
    """What the ingress and the admin API talk to: requests in, replies out, health; the node's injected
    parts (clock, entropy, fault points) for them to use."""

    def __init__(
        self,
        store: Store,
        schemas: Schemas,
        transport: HandlerTransport,
        clock: Clock,
        options: EngineOptions | None = None,
        on_log: Callable[[str, str], None] | None = None,
        processor_factory: ProcessorFactory | None = None,
        faults: FaultPoints | None = None,
        entropy: RandomBytes | None = None,
        partitions: int = 1,
        service_defaults: ServiceSchema | None = None,
        on_deployments: Callable[[list[Deployment]], None] | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"a node leads at least one partition, not {partitions}")
        self.store = store
        self.schemas = schemas  # replaced by PATCH /services: partitions read it through a callable
        # Remote deployments (POST /deployments): their services join the in-process ones in ``schemas``,
        # with the configured defaults, and ``on_deployments`` routes their invocations to them.
        self.local_schemas = Schemas({n: s for n, s in schemas.services.items() if s.deployment_id is None})
        self.service_defaults = service_defaults or ServiceSchema("", ServiceKind.SERVICE, {})
        self.deployments: dict[str, Deployment] = {}
        self._overrides: dict[str, ServiceOverride] = {}
        self._on_deployments = on_deployments
        self.clock = clock
        self.options = options or EngineOptions()
        self.faults = faults if faults is not None else FaultPoints()
        self.entropy = entropy if entropy is not None else RandomBytes()  # ids of new invocations
        self._request_ids = itertools.count(1)
        self.stats = EngineStats()  # counted by every partition, read by GET /metrics
        count = partitions
        # A leased store (PostgreSQL) shares its storage partitions with other nodes: one batch loop leads
        # those this node holds (``owns``), recovering and letting go of them as they change hands.
        self.takeover: Takeover | None = None
        if store.cluster() is not None:
            if count != 1:
                raise ValueError("a node on a leased store runs one batch loop for the partitions it leads")
            self.takeover = Takeover(store, asyncio.get_running_loop())
        self.partitions = [
            Partition(
                store,
                self._schemas,
                self._update_schemas,
                transport,
                clock,
                self.options,
                self.faults,
                on_log,
                processor_factory,
                owns=self._owns_here(index, count),
                route=None if count == 1 else self._dispatch,
                index=index,
                live_awakeables=None if count == 1 else self._live_awakeables,
                stats=self.stats,
            )
            for index in range(count)
        ]

        if self.takeover is not None:
            self.partitions[0].led_here = self.takeover.owns
            self.takeover.let_go = self.partitions[0].let_go
            self.takeover.took_over = self.partitions[0].took_over

    def _owns_here(self, index: int, count: int) -> Callable[[str], bool] | None:
        if self.takeover is not None:
            return self.takeover.owns
        return None if count == 1 else functools.partial(self._owns, index)

    def _schemas(self) -> Schemas:
        return self.schemas

    def _update_schemas(self, change: a.UpdateService | a.UpdateDeployments) -> None:
        """A committed ``ModifyService`` or deployment change: every partition's later batches see it."""
        if isinstance(change, a.UpdateService):
            self._overrides[change.service] = change.override
            self.schemas = with_overrides(self.schemas, {change.service: change.override})
            return
        for deployment_id in change.removed:
            self.deployments.pop(deployment_id, None)
        if change.put is not None:
            self.deployments[change.put.id] = change.put
        self.serve_deployments(list(self.deployments.values()), self._overrides)

    def serve_deployments(self, deployments: list[Deployment], overrides: dict[str, ServiceOverride]) -> None:
        """Serve exactly these deployments' services (next to the in-process ones, which win a name both
        declare), with ``overrides`` (PATCH /services) applied."""
        self.deployments = {d.id: d for d in deployments}
        self._overrides = dict(overrides)
        remote = deployed_schemas(deployments, self.service_defaults)
        services = {**remote, **self.local_schemas.services}
        self.schemas = with_overrides(Schemas(services), self._overrides)
        if self._on_deployments is not None:
            self._on_deployments(deployments)

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.takeover is not None:  # told of every change from now on; recovers what it leads now
            self.store.on_leadership(self.takeover.changed)
            self.takeover.snapshot()
        for partition in self.partitions:
            partition.start()

    async def stop(self) -> None:
        for partition in self.partitions:
            await partition.stop()

    def kill(self, message: str = "the node crashed") -> None:
        """Die at once, as a SIGKILL would (tests): see ``Partition.kill``."""
        for partition in self.partitions:
            partition.kill(message)

    def health(self) -> str | None:
        """Why the node cannot serve now (None: healthy)."""
        for partition in self.partitions:
            why = partition.health()
            if why is not None:
                return why
        return None

    def leadership(self) -> Leadership | None:
        """The partitions this node leads through a leased store (PostgreSQL) and its lease counts, for
        ``GET /metrics``; None when the store is this node's alone (it leads ``partitions`` for good)."""
        return self.store.leadership()

    # ------------------------------------------------------------------------------------ routing
    def partition_of(self, invocation_id: str) -> Partition:
        partitions = self.partitions
        if len(partitions) == 1:
            return partitions[0]
        return partitions[partition_of_key(InvocationId.parse(invocation_id).partition_key, len(partitions))]

    def _live_awakeables(self, invocation_id: str) -> int:
        """The live awakeable count of an invocation's running attempt, on whichever partition runs it."""
        try:
            partition = self.partition_of(invocation_id)
        except InvalidId:
            return 0
        return partition.invoker.live_awakeables(invocation_id)

    def _owns(self, index: int, invocation_id: str) -> bool:
        return self.partition_of(invocation_id).index == index

    def route(self, record: r.Record) -> Partition:
        partitions = self.partitions
        if len(partitions) == 1:
            return partitions[0]
        return partitions[partition_of_key(_partition_key(record), len(partitions))]

    def _dispatch(self, source: Partition, actions: list[a.Action]) -> None:
        """With several partitions: each action to the partition it concerns (see the module's doc)."""
        for action in actions:
            match action:
                case a.StartAttempt():
                    self.partition_of(action.invocation.id).run_actions([action])
                case a.Deliver() | a.AbortAttempt() | a.ArmTimer():
                    self.partition_of(action.invocation_id).run_actions([action])
                case a.Reply() | a.AwaitCompletion():
                    self._waiting(source, action.request_id).run_actions([action])
                case a.Completed():  # its callers may have asked through any partition
                    for partition in self.partitions:
                        partition.run_actions([action])
                case _:
                    source.run_actions([action])

    def _waiting(self, source: Partition, request_id: int) -> Partition:
        if source.waits_for(request_id):
            return source
        return next((p for p in self.partitions if p.waits_for(request_id)), source)

    # ------------------------------------------------------------------------------------ requests
    def request(
        self,
        make: Callable[[int], r.Record],
        client_gone: Callable[[], Awaitable[object]] | None = None,
        bounded: bool = False,
    ) -> asyncio.Future[a.Reply]:
        """Submit a record that answers with a Reply; returns the future of that reply.

        ``bounded`` (the ingress): refused with ``EngineUnavailable`` while the store fails or a bound is
        reached. ``client_gone`` completes when the caller leaves; if that happens while the store fails
        and the record is still queued, it is withdrawn and the future answers ``gone``.
        """
        request_id = next(self._request_ids)
        record = make(request_id)
        if self.takeover is not None:
            self._check_led(record)
        partition = self.route(record)
        partition.admit(bounded)
        return partition.request(request_id, record, client_gone)

    def _check_led(self, record: r.Record) -> None:
        """Refuse at once a record of a storage partition another node leads (the ingress forwards it, or
        answers 503 with Retry-After); a record of no partition (a service change) is taken by any node."""
        key = record_partition_key(record)
        if key is None:
            return
        part = self.store.partition_of(key)
        if not self.store.leads(part):
            view = self.store.cluster()
            leader = None if view is None else view.leader_of(part)
            raise PartitionNotLed(part, self.node_name(), None if leader is None else leader.name)

    def node_name(self) -> str:
        """This node's name in a cluster (a leased store's), for messages."""
        return str(getattr(self.store, "node", "this node"))

    def forget(self, request_id: int) -> None:
        for partition in self.partitions:
            partition.forget(request_id)
