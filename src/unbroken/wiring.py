"""The composition root: the one place that builds a node from its parts.

Everything a node depends on that is not pure — its store, its clock, its handler transport, its entropy
(ids of new invocations), its fault points — is passed in here, never taken from a module global, so the
same wiring runs ``unbroken serve`` (SQLite, the system clock, the OS's random bytes, ``UNBROKEN_FAULTS``),
an App under an ASGI server (``unbroken/embedded.py``) and the simulator (the memory store, the virtual
clock, a virtual-time committer). This module sits above every layer: it may import any of them, and none
of them imports it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from unbroken.cluster.directory import Directory
from unbroken.cluster.forward import Forwarder
from unbroken.cluster.schemas import SchemaFollower
from unbroken.config import Config
from unbroken.core.read_model import NoStoreError, ReadModel
from unbroken.core.schema import (
    OnMaxAttempts,
    RetryPolicy,
    Schemas,
    ServiceKind,
    ServiceSchema,
    with_overrides,
)
from unbroken.core.storage import Store, StoreError
from unbroken.protocol.remote import RemoteTransport
from unbroken.protocol.transport import HandlerTransport
from unbroken.runtime.clock import Clock, SystemClock
from unbroken.runtime.entropy import RandomBytes
from unbroken.runtime.faults import NO_FAULTS, FaultPoints
from unbroken.runtime.node import EngineOptions, Node, ProcessorFactory
from unbroken.runtime.startup import StartupError
from unbroken.sdk.app import App
from unbroken.sdk.local import LocalTransport
from unbroken.storage.sqlite import SqliteStore
from unbroken.storage.sqlite_reads import SqliteReadModel


@dataclass
class Parts:
    """What a node is built from (the defaults are production's)."""

    clock: Clock = field(default_factory=SystemClock)
    entropy: RandomBytes = field(default_factory=RandomBytes)
    faults: FaultPoints = field(default_factory=FaultPoints.from_env)
    processor_factory: ProcessorFactory | None = None  # None: the writer thread (production)
    partitions: int = 1  # the node leads them all (one on SQLite: one writer connection)


def build(
    schemas: Schemas,
    store: Store,
    transport: HandlerTransport,
    parts: Parts,
    options: EngineOptions | None = None,
    on_log: Callable[[str, str], None] | None = None,
    service_defaults: ServiceSchema | None = None,
    remote: RemoteTransport | None = None,
) -> Node:
    """A node (not started) over ``store``: its partitions (each its batch loop, invoker, timers and
    waiting callers) and the routing between them."""
    return Node(
        store,
        schemas,
        transport,
        parts.clock,
        options,
        on_log,
        processor_factory=parts.processor_factory,
        faults=parts.faults,
        entropy=parts.entropy,
        partitions=parts.partitions,
        service_defaults=service_defaults,
        on_deployments=remote.set_deployments if remote is not None else None,
    )


def local_transport(app: App, parts: Parts, loop: asyncio.AbstractEventLoop | None = None) -> LocalTransport:
    """The in-process handlers of ``app``, on the node's clock and fault points."""
    return LocalTransport(app.services, parts.clock.now_ms, loop, fault_point=parts.faults.point)


def _retry_defaults(config: Config) -> RetryPolicy:
    return RetryPolicy(
        config.retry_initial_interval_ms,
        config.retry_exponentiation_factor,
        config.retry_max_interval_ms,
        config.retry_max_attempts,
        OnMaxAttempts(config.retry_on_max_attempts),
    )


def service_defaults(config: Config) -> ServiceSchema:
    """The configured options a remote deployment's service gets where its manifest says nothing."""
    return ServiceSchema(
        "",
        ServiceKind.SERVICE,
        {},
        retry_policy=_retry_defaults(config),
        inactivity_timeout_ms=config.inactivity_timeout_ms,
        abort_timeout_ms=config.abort_timeout_ms,
        idempotency_retention_ms=config.idempotency_retention_ms,
        workflow_completion_retention_ms=config.workflow_completion_retention_ms,
        journal_retention_ms=config.journal_retention_ms,
    )


def app_schemas(app: App, config: Config, store: Store | None) -> Schemas:
    """``app``'s services with the configured defaults and the ``PATCH /services`` changes the store holds
    (None: without a store, the app's own)."""
    schemas = app.schemas(
        _retry_defaults(config),
        config.inactivity_timeout_ms,
        config.abort_timeout_ms,
        config.idempotency_retention_ms,
        config.workflow_completion_retention_ms,
        config.journal_retention_ms,
    )
    return schemas if store is None else with_overrides(schemas, store.service_overrides())


def open_store(config: Config, faults: FaultPoints = NO_FAULTS) -> Store:
    """The configured backend: PostgreSQL at ``store_url`` (leading every partition), else the SQLite file
    in the data dir. Raises :class:`StartupError` with the reason when PostgreSQL cannot be used."""
    if config.store_url is None:
        return SqliteStore(config.data_dir, fsync=config.fsync)
    try:  # imported here: psycopg is the optional extra ``unbroken[postgres]``
        from unbroken.storage.postgres import PostgresStore, StoreVersionError
    except ImportError as exc:
        raise StartupError(
            f"--store {config.store_url.split('@')[-1]} needs the PostgreSQL driver: "
            f"pip install 'unbroken[postgres]' ({exc})"
        ) from None
    try:
        return PostgresStore(
            config.store_url,
            partitions=config.store_partitions,
            node=config.node_name,
            lease_wait_s=config.store_lease_wait_ms / 1000,
            strict=config.store_strict,
            conflict_rate=faults.rate("pg.commit", "40001"),
            fault_point=faults.point,
            claim=config.store_claim,
        )
    except (StoreError, StoreVersionError, ValueError) as exc:
        raise StartupError(f"cannot use the PostgreSQL store: {exc}") from None


def advertise(
    store: Store, ingress_url: str, admin_url: str, backlog: Callable[[], int] | None = None
) -> None:
    """Tell a store shared by several nodes (PostgreSQL) where this node's listeners are bound, and how to
    read its backlog (the records queued at its batch loops)."""
    if store.cluster() is None:
        return
    from unbroken.storage.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        store.advertise(ingress_url, admin_url, backlog)


def cluster_parts(store: Store, node: Node) -> tuple[Forwarder, SchemaFollower] | None:
    """For a store several nodes share (PostgreSQL): the forwarder of requests to other partitions'
    leaders and the follower of schema changes another node applied. None for a store of one node (SQLite,
    memory): nothing is forwarded, nothing polled."""
    if store.cluster() is None:
        return None
    from unbroken.storage.postgres import PostgresStore

    name = store.node if isinstance(store, PostgresStore) else ""
    return Forwarder(Directory(store, name)), SchemaFollower(store, node.serve_deployments)


def read_model(store: Store) -> ReadModel:
    """The admin API's reads over ``store`` (the backend's own read model)."""
    if isinstance(store, SqliteStore):
        return SqliteReadModel(store.path)
    from unbroken.storage.postgres import PostgresStore
    from unbroken.storage.postgres_reads import PostgresReadModel
    from unbroken.storage.sqlite_mirror import query_rows

    if isinstance(store, PostgresStore):  # /query: the rows copied to SQLite, which has the views
        return PostgresReadModel(store.location, store.partitions, engine=query_rows)
    raise TypeError(f"no read model for {type(store).__name__}")


def read_model_beside(data_dir: str | None = None, store_url: str | None = None) -> ReadModel:
    """The typed reads of the store in ``data_dir`` (SQLite) or at ``store_url`` (PostgreSQL), for a tool
    that runs beside a node, or while none runs (``unbroken replay-check``, ``unbroken invocations export``).
    It opens no store: no SQLite writer, no PostgreSQL partition lease or epoch; every connection is
    read-only. Exactly one of the two (else ``ValueError``, as for a URL that is not PostgreSQL's); raises
    ``NoStoreError`` when nothing is there, ``StoreError`` when PostgreSQL cannot be read or holds a newer
    schema, ``StartupError`` without the PostgreSQL driver."""
    if (data_dir is None) == (store_url is None):
        raise ValueError("give exactly one of a data dir (SQLite) or a store URL (PostgreSQL)")
    if data_dir is not None:
        path = os.path.join(data_dir, "unbroken.db")
        if not os.path.exists(path):  # a read-only connection would fail with less to say
            raise NoStoreError(f"no Unbroken store in {data_dir} (no unbroken.db)")
        return SqliteReadModel(path)
    assert store_url is not None
    try:  # imported here: psycopg is the optional extra ``unbroken[postgres]``
        from unbroken.storage.postgres_reads import PostgresReadModel
        from unbroken.storage.postgres_schema import StoreVersionError
    except ImportError as exc:
        raise StartupError(
            f"--store needs the PostgreSQL driver: pip install 'unbroken[postgres]' ({exc})"
        ) from None
    try:
        return PostgresReadModel.at(store_url)
    except StoreVersionError as exc:
        raise StoreError(str(exc)) from None


def build_from_config(app: App, config: Config, parts: Parts | None = None) -> tuple[Node, Store]:
    """The node ``unbroken serve`` and an ASGI-served App run: SQLite in the data dir (or PostgreSQL at
    ``store_url``), in-process handlers and the remote deployments registered in the store (``POST
    /deployments``)."""
    parts = parts or Parts()
    store = open_store(config, parts.faults)
    transport = RemoteTransport(local_transport(app, parts, asyncio.get_running_loop()))
    dev_log = logging.getLogger("unbroken.dev")

    def on_log(invocation_id: str, message: str) -> None:
        dev_log.info("%s %s", invocation_id, message)

    options = EngineOptions(
        inactivity_timeout_ms=config.inactivity_timeout_ms,
        clean_interval_ms=config.cleanup_interval_ms,
        dev=config.dev,
    )
    node = build(
        app_schemas(app, config, store),
        store,
        transport,
        parts,
        options,
        on_log if config.dev else None,
        service_defaults(config),
        transport,
    )
    node.serve_deployments(store.deployments(), store.service_overrides())
    return node, store
