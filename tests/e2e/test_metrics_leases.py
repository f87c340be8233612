"""``GET /metrics`` of ``unbroken serve --store postgresql://...``: the partitions the node leads and how its
leases go, read from a real server on the machine's PostgreSQL, checked against the lease table; a lease
taken by another node shows as lost, a renewal whose connection the database cut as a failed renewal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import pg
from tests.harness import Server, wait_until
from tests.scrape import Samples, scrape, value
from unbroken.storage.postgres import PostgresStore

APP = "tests/apps/ui_app.py"
TOKEN = "lease-metrics-token"


@pytest.fixture
def schema() -> Iterator[str]:
    pg.require()
    name = pg.schema_for(f"lease-metrics-{uuid.uuid4()}")
    yield name
    pg.drop(name)


def _sql(query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(pg.URL, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def _server(tmp_path: Path, url: str, **env: str) -> Server:
    env = {"UNBROKEN_NODE_NAME": "n1", "UNBROKEN_ADMIN__TOKEN": TOKEN, **env}
    return Server(APP, tmp_path / "data", args=["--store", url], env=env)


def _renewed_since(srv: Server, before: float) -> Samples | None:
    samples = scrape(srv.admin, TOKEN)
    return samples if value(samples, "unbroken_lease_renewals_total") > before else None


def test_a_node_on_postgres_shows_the_64_partitions_it_leads_and_loses_them_to_a_takeover(
    tmp_path: Path, schema: str
) -> None:
    srv = _server(tmp_path, pg.url_for(schema)).start()
    thief: PostgresStore | None = None
    try:
        assert srv.call("/Shop/checkout", "o1").status_code == 200
        samples = wait_until(lambda: _renewed_since(srv, 0), timeout=10, what="a lease renewal")
        assert value(samples, "unbroken_partitions_led") == 64
        assert value(samples, "unbroken_lease_acquisitions_total") == 64
        assert value(samples, "unbroken_lease_renewal_failures_total") == 0
        assert value(samples, "unbroken_partitions_lost_total") == 0
        live = f"SELECT count(*) FROM {schema}.partition_lease WHERE node = 'n1' AND expires_at > now()"
        assert _sql(live) == [(64,)]  # what the database says agrees
        # the store's counts are read from PostgreSQL too
        completed = value(
            samples, "unbroken_invocations", service="Shop", handler="checkout", status="completed"
        )
        assert completed == 1

        # another node takes every lease (an operator's takeover): n1 learns it at its next renewal
        thief = PostgresStore(pg.url_for(schema), node="n2", steal=True)

        def lost() -> Samples | None:
            samples = scrape(srv.admin, TOKEN)
            return samples if value(samples, "unbroken_partitions_lost_total") == 64 else None

        samples = wait_until(lost, timeout=10, what="n1 to see its leases taken")
        assert value(samples, "unbroken_partitions_led") == 0
        assert value(samples, "unbroken_lease_acquisitions_total") == 64
    finally:
        if thief is not None:
            thief.close()
        srv.kill()


def test_the_configured_partition_count_and_a_failed_renewal(tmp_path: Path, schema: str) -> None:
    # a name for this server's connections, so that the test cuts the lease connection of this one only
    app_name = f"ub-lease-metrics-{uuid.uuid4().hex[:8]}"
    url = f"{pg.url_for(schema)}&application_name={app_name}"
    srv = _server(tmp_path, url, UNBROKEN_STORE__PARTITIONS="8").start()
    try:
        samples = wait_until(lambda: _renewed_since(srv, 0), timeout=10, what="a lease renewal")
        assert value(samples, "unbroken_partitions_led") == 8
        assert value(samples, "unbroken_lease_acquisitions_total") == 8
        renewals = value(samples, "unbroken_lease_renewals_total")

        # the database ends the lease thread's connection: its next renewal fails, the one after reconnects
        cut = _sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
            " AND query LIKE %s",
            app_name,
            "%extract(epoch FROM now())%",  # the lease thread's reads of the leases and the nodes
        )
        assert cut == [(True,)]

        def failed_then_renewed() -> Samples | None:
            samples = scrape(srv.admin, TOKEN)
            failed = value(samples, "unbroken_lease_renewal_failures_total") == 1
            return (
                samples if failed and value(samples, "unbroken_lease_renewals_total") > renewals + 1 else None
            )

        samples = wait_until(failed_then_renewed, timeout=10, what="a failed renewal, then renewals again")
        assert value(samples, "unbroken_partitions_led") == 8  # renewed in time: it still leads them all
        assert value(samples, "unbroken_partitions_lost_total") == 0
        assert srv.call("/Shop/checkout", "o2").status_code == 200
    finally:
        srv.kill()
