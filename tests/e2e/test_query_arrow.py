"""``POST /query`` in Arrow IPC stream format, negotiated as Restate does (Arrow unless the client asks for
JSON; Restate's CLI sends ``accept: */*``), read back with a real Arrow reader, and the dialect the CLI
speaks (``information_schema``, ``::`` casts, DataFusion type names, ``sys_invocation_status``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from tests.harness import Server
from unbroken.core import limits

APP = "tests/apps/admin_app.py"
ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("query-arrow") / "data").start()
    assert server.call("/Counter/arrow/add", 3).status_code == 200
    assert server.call("/Worker/echo", "hi").json() == "hi"
    yield server
    server.kill()


def post(srv: Server, query: str, accept: str | None = "*/*", path: str = "/v4/query") -> httpx.Response:
    headers = {} if accept is None else {"accept": accept}
    return httpx.post(f"{srv.admin}{path}", json={"query": query}, headers=headers, timeout=30)


def arrow(srv: Server, query: str, accept: str | None = "*/*") -> pa.Table:
    resp = post(srv, query, accept)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == ARROW
    return ipc.open_stream(resp.content).read_all()


def json_rows(srv: Server, query: str) -> list[dict[str, Any]]:
    resp = post(srv, query, "application/json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json", resp.text
    return resp.json()["rows"]  # type: ignore[no-any-return]


def test_arrow_unless_json_is_asked_for(srv: Server) -> None:
    query = (
        "SELECT id, target, status, journal_size, created_at, completed_at FROM sys_invocation"
        " WHERE target = 'Worker/echo'"
    )
    for accept in ("*/*", None, ARROW):
        table = arrow(srv, query, accept)
        assert table.schema.field("journal_size").type == pa.int64()
        assert table.schema.field("status").type == pa.string()
        assert table.to_pylist() == json_rows(srv, query)
    assert post(srv, "SELECT 1 AS one", "application/json, */*").headers["content-type"] == "application/json"


def test_counts_are_int64_as_the_cli_reads_them(srv: Server) -> None:
    """Restate's CLI reads column 0 of a count as Int64 (it panics on another type)."""
    table = arrow(
        srv,
        "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'sys_invocation' AND column_name IN ('idempotency_key')",
    )
    assert table.schema.types == [pa.int64()] and table.column(0).to_pylist() == [1]
    cli_count = (
        "SELECT COUNT(1) FROM (SELECT * FROM sys_invocation inv LIMIT 50000) WHERE status = 'completed'"
    )
    completed = json_rows(srv, "SELECT count(*) AS n FROM sys_invocation WHERE status = 'completed'")[0]["n"]
    assert arrow(srv, cli_count).column(0).to_pylist() == [completed]


def test_empty_answers_keep_their_columns_and_declared_types(srv: Server) -> None:
    table = arrow(srv, "SELECT id, \"index\", completed FROM sys_journal WHERE id = 'none'")
    assert table.num_rows == 0 and table.column_names == ["id", "index", "completed"]
    assert table.schema.types == [pa.string(), pa.int64(), pa.bool_()]
    nulls = arrow(
        srv,
        "SELECT retry_count, public FROM sys_invocation, sys_service WHERE 0 = 1 UNION ALL SELECT NULL, NULL",
    )
    assert nulls.schema.types == [pa.int64(), pa.bool_()]


def test_booleans_and_blobs(srv: Server) -> None:
    table = arrow(
        srv,
        "SELECT key, value, value_utf8 FROM state WHERE service_name = 'Counter' AND service_key = 'arrow'",
    )
    assert table.to_pylist() == json_rows(
        srv,
        "SELECT key, value, value_utf8 FROM state WHERE service_name = 'Counter' AND service_key = 'arrow'",
    )
    journal = arrow(srv, 'SELECT "index", completed FROM sys_journal ORDER BY id, "index" LIMIT 3')
    assert journal.schema.field("completed").type == pa.bool_()
    services = arrow(srv, "SELECT name, public, ty FROM sys_service WHERE name = 'Counter'")
    assert services.to_pylist() == [{"name": "Counter", "public": True, "ty": "virtual_object"}]


def test_restate_tables_and_dialect(srv: Server) -> None:
    tables = {r["table_name"] for r in json_rows(srv, "SELECT table_name FROM information_schema.tables")}
    assert {
        "sys_invocation",
        "sys_invocation_status",
        "sys_journal",
        "state",
        "sys_inbox",
        "sys_keyed_service_status",
        "sys_promise",
        "sys_service",
        "sys_deployment",
        "sys_idempotency",
    } <= tables
    for table in tables:  # every table answers
        assert post(srv, f"SELECT * FROM {table} LIMIT 1").status_code == 200
    status = json_rows(srv, "SELECT status FROM sys_invocation_status WHERE target = 'Worker/echo'")
    assert status == [{"status": "completed"}]
    cast = json_rows(
        srv, "SELECT '41'::BIGINT + 1 AS n, CAST(2 AS STRING) AS s, CAST(1 AS INT UNSIGNED) AS u"
    )
    assert cast == [{"n": 42, "s": "2", "u": 1}]
    deployment = json_rows(srv, "SELECT id FROM sys_deployment")[0]["id"]
    pinned = json_rows(
        srv, "SELECT pinned_deployment_id, last_start_at FROM sys_invocation WHERE target = 'Worker/echo'"
    )
    assert pinned[0]["pinned_deployment_id"] == deployment and pinned[0]["last_start_at"].endswith("Z")


def test_errors_stay_json_and_clear(srv: Server) -> None:
    for query, words in (
        ("SELEKT 1", "syntax error"),
        ("DELETE FROM state", "read-only"),
        ("SELECT '" + "x" * limits.query_sql_bytes_max + "'", "too long"),
        (
            "SELECT zeroblob(50000000) AS big FROM (VALUES (1), (2), (3))",
            f"more than {limits.query_answer_bytes_max} bytes",
        ),
    ):
        resp = post(srv, query, "*/*")
        assert resp.status_code == 400 and resp.headers["content-type"] == "application/json", resp.text
        assert words in resp.json()["message"]


def test_truncated_arrow_answer_says_so(srv: Server) -> None:
    query = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10005) SELECT x FROM c"
    resp = post(srv, query)
    assert resp.status_code == 200 and resp.headers["x-unbroken-truncated"] == "true"
    table = ipc.open_stream(resp.content).read_all()
    assert (
        table.num_rows == limits.query_rows_max and table.column(0).to_pylist()[-1] == limits.query_rows_max
    )
