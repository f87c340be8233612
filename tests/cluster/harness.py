"""N real ``unbroken serve`` processes on one fresh PostgreSQL schema, and the outside ledger they write.

Each node has its own data dir, ports and ``node-name``; its store connections carry the application name
``ub-<schema>-<node>`` so a test can find and terminate exactly that node's PostgreSQL connections. The
handlers (tests/cluster/app.py) write their ledger tables into a second schema of the same database with
connections of another application name, untouched by that. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from tests import pg
from tests.harness import Server

APP = "tests/cluster/app.py"
LEDGER_DDL = (
    "CREATE TABLE {schema}.effect (inv text NOT NULL, step text NOT NULL, token text PRIMARY KEY,"
    " node text NOT NULL, pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE TABLE {schema}.lock (id bigserial PRIMARY KEY, key text NOT NULL, inv text NOT NULL,"
    " node text NOT NULL, pid int NOT NULL, enter_at timestamptz NOT NULL, exit_at timestamptz)",
)


def balanced() -> bool:
    """Whether this build balances partitions between live nodes and takes a dead node's over (#10's
    leadership). Before it, the first node leads every partition and the others are standbys."""
    from unbroken.storage import postgres_lease

    return hasattr(postgres_lease.Leases, "start_up")


def pinnable() -> bool:
    """Whether a node can be given a fixed set of partitions to lead (``[store] claim``)."""
    from unbroken.config import Config

    return "store_claim" in Config.__dataclass_fields__


def shared_mode() -> str:
    """How three nodes share the work in this build: ``balanced``, ``pinned`` (a third of the partitions
    each, no takeover) or ``standby`` (one leads all)."""
    return "balanced" if balanced() else "pinned" if pinnable() else "standby"


def sql_rows(query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.URL, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query, params).fetchall()


def pg_now() -> float:
    """The database's clock (what the lock ledger is stamped with), as epoch seconds."""
    return float(sql_rows("SELECT extract(epoch FROM clock_timestamp())")[0][0])


class Node(Server):
    """A cluster node: a Server with a name, its application name, and signals."""

    def __init__(self, tmp_path: Path, cluster: Cluster, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.index = ord(name) - ord("a")
        self.app_name = f"ub-{cluster.schema}-{name}"[:63]
        store_url = f"{cluster.url}&application_name={self.app_name}"
        ledger_url = f"{pg.URL}{'&' if '?' in pg.URL else '?'}application_name=ledger-{name}"
        node_env = {
            "UNBROKEN_STORE__URL": store_url,
            "UNBROKEN_STORE__PARTITIONS": str(cluster.partitions),
            "UNBROKEN_NODE_NAME": name,
            "UNBROKEN_STORE__LEASE_WAIT": "10m",  # a node that finds every lease held waits (a standby)
            "CLUSTER_LEDGER_URL": ledger_url,
            "CLUSTER_LEDGER_SCHEMA": cluster.ledger_schema,
            **env,
        }
        if cluster.mode == "pinned":  # node i of n leads the i-th slice of the partitions
            n, p = len(cluster.names), cluster.partitions
            node_env["UNBROKEN_STORE__CLAIM"] = f"{self.index * p // n}-{(self.index + 1) * p // n - 1}"
        super().__init__(APP, tmp_path / f"data-{name}", env=node_env)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def serving(self, client: httpx.Client | None = None) -> bool:
        """Both health endpoints answer (a standby's ports are bound but unanswered). ``client``: one to
        reuse (a fresh one per call costs its TLS context and connections: tens of ms of CPU)."""
        if not self.alive():
            return False
        get = client.get if client is not None else httpx.get
        try:
            a = get(f"{self.admin}/health", timeout=0.5)
            i = get(f"{self.ingress}/restate/health", timeout=0.5)
        except httpx.HTTPError:
            return False
        return a.status_code == 200 and i.status_code == 200

    def terminate_pg_connections(self) -> int:
        """``pg_terminate_backend`` every PostgreSQL connection of this node's store; how many there were."""
        rows = sql_rows(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            self.app_name,
        )
        return sum(1 for (ok,) in rows if ok)


class Cluster:
    """``n`` nodes named a, b, c, ... on one fresh schema; ``close`` kills them all and drops the schemas.
    ``mode``: ``balanced`` (the nodes share the partitions themselves), ``pinned`` (each a fixed slice),
    ``standby`` (the first leads all, the others wait for its leases)."""

    def __init__(
        self,
        tmp_path: Path,
        n: int = 3,
        partitions: int = 16,
        env: dict[str, str] | None = None,
        mode: str | None = None,
    ) -> None:
        pg.require()
        self.mode = mode or ("balanced" if balanced() else "standby")
        self.names = [chr(ord("a") + i) for i in range(n)]
        self.schema = pg.schema_for(f"cluster-{uuid.uuid4()}")
        self.ledger_schema = f"{self.schema}_l"
        self.url = pg.url_for(self.schema)
        self.partitions = partitions
        with psycopg.connect(pg.URL, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.ledger_schema)))
            for ddl in LEDGER_DDL:
                conn.execute(ddl.format(schema=self.ledger_schema))
        self.nodes = [Node(tmp_path, self, name, dict(env or {})) for name in self.names]
        # the health checks of every thread (the load's workers ask who serves twice a second each): one
        # client, not a fresh one (its TLS context, its connections) per check
        self.client = httpx.Client()

    def node(self, name: str) -> Node:
        (node,) = [n for n in self.nodes if n.name == name]
        return node

    def start(self, timeout_s: float = 40.0) -> Cluster:
        """Start the first node, wait until it serves, then the others; unless standbys: until all serve,
        and, balanced, until each leads its share (a load begun before would see partitions handed over:
        503s to retry, and a step in flight at a handover run again, as a handover allows)."""
        first, *rest = self.nodes
        first.start()
        for node in rest:
            node.start(wait=False)
        if self.mode != "standby":
            began = time.monotonic()
            self.wait_serving(self.nodes, timeout_s)
            if self.mode == "balanced":
                self.wait_balanced(max(1.0, timeout_s - (time.monotonic() - began)))
        return self

    def wait_balanced(self, timeout_s: float) -> None:
        """Wait (bounded) until every partition is led and no node leads more than its fair share (the
        balancer's: ``ceil(partitions / nodes)``; what it sheds down to and takes up to)."""
        share = -(-self.partitions // len(self.nodes))
        deadline = time.monotonic() + timeout_s
        while True:
            held = Counter(node for _, node, _, live in self.leases() if live)
            if sum(held.values()) == self.partitions and max(held.values()) <= share:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the nodes hold {dict(held)} leases, not {share} each, after {timeout_s:.0f}s"
                )
            time.sleep(0.1)  # polling the lease table: there is no event to await

    def wait_serving(self, nodes: Iterable[Node], timeout_s: float) -> float:
        """Wait (bounded) until every one of ``nodes`` serves; the seconds it took."""
        began = time.monotonic()
        pending = list(nodes)
        while pending:
            for node in pending:
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"node {node.name} exited {node.proc.returncode}:\n{node.log()}")
            pending = [n for n in pending if not n.serving()]
            if pending and time.monotonic() - began > timeout_s:
                logs = "\n".join(f"--- {n.name}\n{n.log()}" for n in pending)
                raise TimeoutError(
                    f"nodes {[n.name for n in pending]} not serving after {timeout_s}s\n{logs}"
                )
            if pending:
                time.sleep(0.1)  # polling other processes' health: there is no event to await
        return time.monotonic() - began

    def serving(self) -> list[Node]:
        return [n for n in self.nodes if n.serving(self.client)]

    def close(self) -> None:
        self.client.close()
        for node in self.nodes:
            if node.alive():
                with contextlib.suppress(ProcessLookupError):
                    node.signal(signal.SIGCONT)  # a stopped process must be running to die of SIGKILL
            node.kill()
        for schema in (self.schema, self.ledger_schema):
            with contextlib.suppress(psycopg.Error):
                pg.drop(schema)

    def ledger(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the ledger tables: ``{L}`` in ``query`` stands for the ledger schema."""
        return sql_rows(query.replace("{L}", self.ledger_schema), *params)

    def leases(self) -> list[tuple[int, str | None, int, bool]]:
        """(part, node, epoch, live) of every partition lease, from the table itself."""
        rows = sql_rows(
            f'SELECT part, node, epoch, expires_at > now() FROM "{self.schema}".partition_lease ORDER BY part'
        )
        return [(int(p), n, int(e), bool(live)) for p, n, e, live in rows]


@contextlib.contextmanager
def cluster(tmp_path: Path, n: int = 3, **kwargs: Any) -> Iterator[Cluster]:
    c = Cluster(tmp_path, n, **kwargs)
    try:
        yield c.start()
    except BaseException:
        for node in c.nodes:  # what the nodes said (pytest shows it with the failure): CI keeps no files
            problems = [line for line in node.log().splitlines() if " WARNING " in line or " ERROR " in line]
            print(
                f"--- node {node.name}: the last of {len(problems)} warnings and errors",
                *problems[-15:],
                sep="\n",
            )
        raise
    finally:
        c.close()
