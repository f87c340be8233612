"""``unbroken serve APP --store postgresql://...``: a real server on the machine's PostgreSQL.

Calls, object state, a sleeping invocation and a workflow promise survive in PostgreSQL; the admin API's
typed reads (state, explain) answer from it, and ``/query`` too (the rows copied to SQLite's views); a
SIGTERM hands the partition leases over at once; a database holding a newer schema is refused at start.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import pg
from tests.harness import Server, wait_until

pytestmark = pytest.mark.crash

APP = "tests/apps/admin_app.py"


@pytest.fixture
def schema() -> Iterator[str]:
    pg.require()
    name = pg.schema_for(f"serve-{uuid.uuid4()}")
    yield name
    pg.drop(name)


def _sql(schema: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(pg.URL, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        cur = conn.execute(query)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def _server(tmp_path: Path, schema: str) -> Server:
    return Server(
        APP, tmp_path / "data", args=["--store", pg.url_for(schema)], env={"UNBROKEN_NODE_NAME": "n1"}
    )


def test_serve_on_postgres_keeps_state_and_answers_the_admin_api(tmp_path: Path, schema: str) -> None:
    srv = _server(tmp_path, schema).start()
    try:
        key = uuid.uuid4().hex
        assert srv.call(f"/Counter/{key}/add", 2).json() == 2
        assert srv.call(f"/Counter/{key}/add", 3).json() == 5
        assert srv.admin_request("GET", f"/services/Counter/state/{key}").json() == {"total": "5"}
        resp = srv.call("/Sleeper/nap/send", 3600)
        inv = resp.json()["invocationId"]

        def explained() -> str:
            body = srv.admin_request("GET", f"/invocations/{inv}/explain").json()
            return str(body["summary"])

        wait_until(lambda: "sleep" in explained(), 10, what="the nap to be explained as sleeping")
        rows = srv.admin_request(
            "POST", "/query", {"query": f"SELECT target, journal_size FROM sys_invocation WHERE id = '{inv}'"}
        )
        assert rows.status_code == 200 and rows.json()["rows"] == [
            {"target": "Sleeper/nap", "journal_size": 2}
        ]
        state = srv.admin_request(
            "POST", "/query", {"query": f"SELECT key, value_utf8 FROM state WHERE service_key = '{key}'"}
        )
        assert state.json()["rows"] == [{"key": "total", "value_utf8": "5"}]
        write = srv.admin_request("POST", "/query", {"query": "DELETE FROM state"})
        assert write.status_code == 400 and "read-only" in write.text
        assert _sql(schema, "SELECT count(*) FROM timer") == [(1,)]  # the nap's timer is in PostgreSQL
        assert (srv.data_dir / "unbroken.db").exists() is False  # nothing went to SQLite

        assert srv.stop() == 0  # SIGTERM: the leases are handed over at once
        leases = _sql(schema, "SELECT count(*) FROM partition_lease WHERE expires_at > now()")
        assert leases == [(0,)]
        srv.start()
        assert srv.call(f"/Counter/{key}/add", 1).json() == 6
        assert "sleep" in explained()
    finally:
        srv.kill()


def test_a_database_with_a_newer_schema_is_refused_at_start(tmp_path: Path, schema: str) -> None:
    srv = _server(tmp_path, schema).start()
    srv.stop()
    _sql(schema, "UPDATE meta SET v = '999' WHERE k = 'schema_version'")
    with pytest.raises(RuntimeError, match="store schema 999, this Unbroken knows up to"):
        srv.start()
    assert srv.proc is not None and srv.proc.returncode == 1


def test_an_unreachable_database_is_refused_at_start_with_the_reason(tmp_path: Path) -> None:
    srv = Server(APP, tmp_path / "data", args=["--store", "postgresql://postgres@127.0.0.1:1/test"])
    with pytest.raises(
        RuntimeError, match=r"cannot use the PostgreSQL store: cannot connect to .*port 1 failed"
    ):
        srv.start()
    assert srv.proc is not None and srv.proc.returncode == 1
