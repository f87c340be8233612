"""``POST /query`` on a real server: Restate-shaped views over real data (completed, failed, suspended,
inboxed and called invocations, object state, workflow promises, services, deployment), read-only
enforcement, time and row limits, and bad requests."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import Server, run_session, wait_until
from unbroken.core import limits
from unbroken.core.read_model import QueryAnswer, QueryBusy, QueryError
from unbroken.storage.sqlite import SqliteStore
from unbroken.storage.sqlite_reads import SqliteReadModel

APP = "tests/apps/admin_app.py"
ENV = {"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("query") / "data", env=ENV).start()
    yield server
    server.kill()


def sql(srv: Server, query: str, **extra: Any) -> list[dict[str, Any]]:
    resp = srv.admin_request("POST", "/query", {"query": query, **extra})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    return resp.json()["rows"]  # type: ignore[no-any-return]


def one(srv: Server, query: str) -> dict[str, Any]:
    rows = sql(srv, query)
    assert len(rows) == 1, rows
    return rows[0]


def refused(srv: Server, query: str, **extra: Any) -> str:
    resp = srv.admin_request("POST", "/query", {"query": query, **extra})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["restate_code"] is None
    return body["message"]  # type: ignore[no-any-return]


def _published(srv: Server, box: str) -> dict[str, Any]:
    def get() -> Any:
        resp = srv.call(f"/Inbox/{box}/get")
        return resp.json() if resp.content else None

    return wait_until(get, timeout=10, what=f"Inbox/{box}")  # type: ignore[no-any-return]


def _status(srv: Server, inv: str) -> str | None:
    rows = sql(srv, f"SELECT status FROM sys_invocation WHERE id = '{inv}'")
    return rows[0]["status"] if rows else None


def _ts(text: str) -> datetime:
    assert text.endswith("Z") and "T" in text, text
    return datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def world(srv: Server) -> dict[str, Any]:
    """One invocation in each interesting state, object state and two workflow promises."""
    w: dict[str, Any] = {"started": datetime.now(UTC)}
    w["completed"] = srv.call("/Worker/echo", "hello").headers["x-restate-id"]
    failed = srv.call("/Worker/fail", "nope")
    assert failed.status_code == 418
    w["failed"] = failed.headers["x-restate-id"]
    w["caller"] = srv.call("/Worker/call_echo", "via a call").headers["x-restate-id"]
    w["sleeping"] = srv.call("/Sleeper/nap/send", 3600).json()["invocationId"]
    w["lock_key"] = uuid.uuid4().hex
    box = uuid.uuid4().hex
    w["holder"] = srv.call(f"/Counter/{w['lock_key']}/hold/send", box).json()["invocationId"]
    assert _published(srv, box)["id"] == w["holder"]
    w["inboxed"] = srv.call(f"/Counter/{w['lock_key']}/add/send", 5).json()["invocationId"]
    assert srv.call("/Counter/c1/add", 7).json() == 7
    srv.call("/Vote/open/run/send", "lunch")
    srv.call("/Vote/closed/run/send", "dinner")
    assert srv.call("/Vote/closed/decide", "pizza").json() == "ok"
    assert srv.get("/restate/workflow/Vote/closed/attach").json() == "dinner:pizza"
    wait_until(lambda: _status(srv, w["sleeping"]) == "suspended", timeout=15, what="the nap to suspend")
    wait_until(lambda: _status(srv, w["holder"]) == "suspended", timeout=15, what="the holder to suspend")
    return w


def test_completed_and_failed_invocations(srv: Server, world: dict[str, Any]) -> None:
    ok = one(srv, f"SELECT * FROM sys_invocation WHERE id = '{world['completed']}'")
    assert ok["target"] == "Worker/echo"
    assert (ok["target_service_name"], ok["target_service_key"], ok["target_handler_name"]) == (
        "Worker",
        None,
        "echo",
    )
    assert ok["target_service_ty"] == "service"
    assert ok["status"] == "completed"
    assert ok["completion_result"] == "success" and ok["completion_failure"] is None
    assert ok["invoked_by"] == "ingress" and ok["invoked_by_id"] is None
    assert ok["journal_size"] == 2 and ok["retry_count"] == 0
    assert ok["suspended_waiting_for_completions"] is None and ok["scheduled_at"] is None
    created, completed = _ts(ok["created_at"]), _ts(ok["completed_at"])
    assert world["started"].replace(microsecond=0) <= created.replace(microsecond=0) <= completed
    assert _ts(ok["modified_at"]) >= created
    bad = one(
        srv,
        f"SELECT status, completion_result, completion_failure FROM sys_invocation WHERE id = '{world['failed']}'",
    )
    assert bad == {"status": "completed", "completion_result": "failure", "completion_failure": "[418] nope"}


def test_suspended_sleeping_invocation_and_its_journal(srv: Server, world: dict[str, Any]) -> None:
    inv = one(srv, f"SELECT * FROM sys_invocation WHERE id = '{world['sleeping']}'")
    assert inv["status"] == "suspended" and inv["target"] == "Sleeper/nap"
    assert inv["suspended_waiting_for_completions"] == [1]
    assert inv["suspended_waiting_for_signals"] == [
        1
    ]  # the CANCEL signal: a suspended handler stays cancellable
    assert inv["completion_result"] is None and inv["completed_at"] is None
    journal = sql(srv, f"SELECT * FROM sys_journal WHERE id = '{world['sleeping']}' ORDER BY \"index\"")
    assert [(e["index"], e["entry_type"]) for e in journal] == [(0, "Command: Input"), (1, "Command: Sleep")]
    sleep = journal[1]
    assert sleep["name"] == "long nap" and sleep["completed"] is False
    wake = _ts(sleep["sleep_wakeup_at"])
    assert 3500 < (wake - datetime.now(UTC)).total_seconds() <= 3600
    assert '"Command: Sleep"' in sleep["entry_json"] and '"long nap"' in sleep["entry_json"]
    assert _ts(sleep["appended_at"]) <= datetime.now(UTC)
    assert journal[0]["completed"] is True and journal[0]["name"] is None


def test_inboxed_invocation_inbox_and_lock_holder(srv: Server, world: dict[str, Any]) -> None:
    key = world["lock_key"]
    assert _status(srv, world["inboxed"]) == "pending"
    holder = one(srv, f"SELECT * FROM sys_invocation WHERE id = '{world['holder']}'")
    assert holder["status"] == "suspended" and holder["suspended_waiting_for_signals"] == [1, 17]
    assert holder["target"] == f"Counter/{key}/hold" and holder["target_service_ty"] == "virtual_object"
    row = one(srv, f"SELECT * FROM sys_inbox WHERE service_key = '{key}'")
    assert (row["service_name"], row["id"]) == ("Counter", world["inboxed"])
    assert isinstance(row["sequence_number"], int) and _ts(row["created_at"])
    lock = one(srv, f"SELECT * FROM sys_keyed_service_status WHERE service_key = '{key}'")
    assert lock == {"service_name": "Counter", "service_key": key, "invocation_id": world["holder"]}


def test_call_links_caller_and_callee(srv: Server, world: dict[str, Any]) -> None:
    call = one(
        srv, f"SELECT * FROM sys_journal WHERE id = '{world['caller']}' AND entry_type = 'Command: Call'"
    )
    assert call["invoked_target"] == "Worker/echo" and call["completed"] is True
    callee = one(srv, f"SELECT * FROM sys_invocation WHERE id = '{call['invoked_id']}'")
    assert callee["invoked_by"] == "service" and callee["invoked_by_id"] == world["caller"]
    assert callee["invoked_by_target"] == "Worker/call_echo"
    assert callee["status"] == "completed" and callee["completion_result"] == "success"
    types = [
        e["entry_type"]
        for e in sql(
            srv, f"SELECT entry_type FROM sys_journal WHERE id = '{world['caller']}' ORDER BY \"index\""
        )
    ]
    assert types == [
        "Command: Input",
        "Command: Call",
        "Notification: CallId",
        "Notification: Call",
        "Command: Output",
    ]


def test_object_state(srv: Server, world: dict[str, Any]) -> None:
    row = one(srv, "SELECT * FROM state WHERE service_name = 'Counter' AND service_key = 'c1'")
    assert row == {
        "service_name": "Counter",
        "service_key": "c1",
        "key": "total",
        "value_utf8": "7",
        "value": "37",
    }


def test_promises(srv: Server, world: dict[str, Any]) -> None:
    rows = {r["service_key"]: r for r in sql(srv, "SELECT * FROM sys_promise WHERE service_name = 'Vote'")}
    assert rows["open"] == {
        "service_name": "Vote",
        "service_key": "open",
        "key": "decision",
        "completed": False,
        "completion_success_value": None,
        "completion_success_value_utf8": None,
        "completion_failure": None,
    }
    assert rows["closed"]["completed"] is True
    assert rows["closed"]["completion_success_value_utf8"] == '"pizza"'
    assert rows["closed"]["completion_failure"] is None


def test_services_and_deployment(srv: Server, world: dict[str, Any]) -> None:
    deployment = srv.admin_request("GET", "/deployments").json()["deployments"][0]["id"]
    services = {r["name"]: r for r in sql(srv, "SELECT * FROM sys_service")}
    assert {n: s["ty"] for n, s in services.items()} == {
        "Counter": "virtual_object",
        "Inbox": "virtual_object",
        "Patchable": "service",
        "Sleeper": "service",
        "Vote": "workflow",
        "Worker": "service",
    }
    assert all(
        s["public"] is True and s["revision"] == 1 and s["deployment_id"] == deployment
        for s in services.values()
    )
    dep = one(srv, "SELECT * FROM sys_deployment")
    assert dep["id"] == deployment and dep["services"] == sorted(services)
    assert _ts(dep["created_at"]) <= datetime.now(UTC)


def test_joins_aggregates_and_versioned_prefix(srv: Server, world: dict[str, Any]) -> None:
    counts = {
        r["status"]: r["n"]
        for r in sql(srv, "SELECT status, count(*) AS n FROM sys_invocation GROUP BY status")
    }
    assert counts["completed"] >= 4 and counts["suspended"] >= 2 and counts["pending"] >= 1
    joined = sql(
        srv,
        (
            "SELECT i.target, j.entry_type FROM sys_invocation i JOIN sys_journal j ON j.id = i.id "
            f"WHERE i.id = '{world['completed']}' ORDER BY j.\"index\""
        ),
    )
    assert joined == [
        {"target": "Worker/echo", "entry_type": "Command: Input"},
        {"target": "Worker/echo", "entry_type": "Command: Output"},
    ]
    resp = httpx.post(
        f"{srv.admin}/v4/query",
        json={"query": "SELECT 1 AS one"},
        headers={"accept": "application/json"},
        timeout=10,
    )
    assert resp.json() == {"rows": [{"one": 1}]}


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO invocation (id) VALUES ('x')",
        "UPDATE invocation SET status = 'completed'",
        "DELETE FROM state",
        "DELETE FROM main.journal",
        "CREATE TABLE evil (x)",
        "CREATE TEMP TABLE evil (x)",
        "DROP TABLE invocation",
        "DROP VIEW sys_invocation",
        "ATTACH DATABASE '/tmp/evil.db' AS evil",
        "PRAGMA query_only = OFF",
        "PRAGMA journal_mode = DELETE",
        "BEGIN IMMEDIATE",
        "UPDATE sqlite_master SET name = 'x'",
        "REPLACE INTO state VALUES ('a', 'b', 'c', x'00')",
        "VACUUM",
    ],
)
def test_write_statements_are_refused(srv: Server, world: dict[str, Any], statement: str) -> None:
    before = sql(srv, "SELECT count(*) AS n FROM main.invocation")
    message = refused(srv, statement)
    assert "read-only" in message or "not permitted" in message, message
    assert sql(srv, "SELECT count(*) AS n FROM main.invocation") == before
    assert srv.call("/Worker/echo", "still works").json() == "still works"


def test_bad_queries_are_400(srv: Server) -> None:
    assert "syntax error" in refused(srv, "SELEKT 1")
    assert "no such table" in refused(srv, "SELECT * FROM sys_nothing")
    assert "one statement" in refused(srv, "SELECT 1; SELECT 2")
    for body in ({}, {"query": 42}, [], "SELECT 1", {"query": "SELECT 1", "timeout": "soon"}):
        resp = srv.admin_request("POST", "/query", body)
        assert resp.status_code == 400, (body, resp.text)
    resp = httpx.post(
        f"{srv.admin}/query", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400 and "malformed JSON" in resp.json()["message"]
    assert srv.admin_request("GET", "/query").status_code == 405


def test_runaway_query_is_stopped_at_the_time_limit(srv: Server) -> None:
    started = time.monotonic()
    message = refused(
        srv,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        timeout="1s",
    )
    elapsed = time.monotonic() - started
    assert "time limit of 1s" in message
    assert 0.9 <= elapsed < 5, elapsed
    # The reader is usable again right away.
    assert sql(srv, "SELECT 2 AS two") == [{"two": 2}]


def test_row_limit_truncates_and_says_so(srv: Server) -> None:
    query = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10005) SELECT x FROM c"
    body = srv.admin_request("POST", "/query", {"query": query}).json()
    assert len(body["rows"]) == 10_000 and body["truncated"] is True
    assert body["rows"][-1] == {"x": 10_000}
    small = srv.admin_request("POST", "/query", {"query": "SELECT 1 AS x"}).json()
    assert "truncated" not in small


def test_table_info_introspection(srv: Server) -> None:
    columns = [r["name"] for r in sql(srv, "PRAGMA table_info(sys_invocation)")]
    for name in ("id", "target", "status", "created_at", "completion_result", "journal_size"):
        assert name in columns


def test_default_time_limit_and_cap_in_process(tmp_path: Path) -> None:
    """Without a per-query timeout the engine's limit applies; a per-query timeout cannot raise it."""
    store = SqliteStore(str(tmp_path / "data"), fsync=False)
    engine = SqliteReadModel(store.path, timeout_s=0.3)
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    try:
        for timeout in (None, 60.0):
            started = time.monotonic()
            with pytest.raises(QueryError, match="time limit of 0.3s"):
                engine.query_sync(runaway, timeout_s=timeout)
            assert time.monotonic() - started < 3
        assert engine.query_sync("SELECT count(*) AS n FROM sys_invocation") == QueryAnswer([{"n": 0}])
        assert engine.query_sync("SELECT * FROM sys_service") == QueryAnswer([])
    finally:
        engine.close()
        store.close()


# ------------------------------------------------------------------------------------- hardening (#10-#17)
_SLOW_PRINTF = "length(printf('%.*c', 60000000, 'x'))"  # ~0.3 s each: SQLite checks no deadline inside a row


def _slow_row(calls: int) -> str:
    return "SELECT " + ", ".join(f"{_SLOW_PRINTF} AS c{i}" for i in range(calls))


def test_a_slow_row_is_answered_at_the_time_limit(srv: Server) -> None:
    """12 slow calls in one row take ~4 s: the answer still comes at the 1 s limit."""
    started = time.monotonic()
    message = refused(srv, _slow_row(12), timeout="1s")
    elapsed = time.monotonic() - started
    assert "time limit of 1s" in message
    assert elapsed < 2.5, elapsed


def test_slow_queries_do_not_starve_state_and_explain(srv: Server, world: dict[str, Any]) -> None:
    """Two slow queries occupy the query pool (~4 s each); the state and explain endpoints answer meanwhile."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = [
            pool.submit(srv.admin_request, "POST", "/query", {"query": _slow_row(12), "timeout": "3s"})
            for _ in range(2)
        ]
        latencies = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(f.done() for f in slow):
            for path in ("/services/Counter/state/c1", f"/invocations/{world['sleeping']}/explain"):
                started = time.monotonic()
                assert srv.admin_request("GET", path).status_code == 200
                latencies.append(time.monotonic() - started)
        assert [f.result().status_code for f in slow] == [400, 400]
    assert latencies and max(latencies) < 1.5, latencies


def test_answers_are_capped_in_bytes(srv: Server) -> None:
    """Three 50 MB blobs (300 MB as hex) are refused, with the limit and how to narrow the query."""
    message = refused(srv, "SELECT zeroblob(50000000) AS big FROM (VALUES (1), (2), (3))")
    assert f"more than {limits.query_answer_bytes_max} bytes" in message
    assert "LIMIT" in message and "substr(" in message
    assert (
        sql(srv, "SELECT length(zeroblob(50000000)) AS n FROM (VALUES (1), (2), (3))")
        == [{"n": 50_000_000}] * 3
    )


def test_fts3_tokenizer_is_refused(srv: Server) -> None:
    """It answers a process address (a pointer leak)."""
    for query in ("SELECT fts3_tokenizer('simple')", "SELECT hex(fts3_tokenizer('porter')) AS x"):
        message = refused(srv, query)
        assert "fts3_tokenizer" in message and "not permitted" in message, message


def test_table_valued_pragmas_are_allowed(srv: Server) -> None:
    names = [r["name"] for r in sql(srv, "SELECT name FROM pragma_table_info('state')")]
    assert names == ["service_name", "service_key", "key", "value_utf8", "value"]
    views = [
        r["name"]
        for r in sql(srv, "SELECT name FROM pragma_table_list WHERE name LIKE 'sys_%' ORDER BY name")
    ]
    assert "sys_invocation" in views and "sys_journal" in views
    assert "not permitted" in refused(srv, "UPDATE sqlite_master SET sql = ''")
    assert "not permitted" in refused(srv, "SELECT * FROM pragma_journal_mode")


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_metadata_queries_do_not_pin_large_results(tmp_path: Path) -> None:
    """Six invocations returning 20 MiB each: listing them (the CLI) and their journals leaves no blob resident."""
    server = Server("tests/apps/limits_app.py", tmp_path / "data").start()
    try:
        ids = [
            server.call(f"/Limits/k{i}/output_big/send", 20 * 1024 * 1024).json()["invocationId"]
            for i in range(6)
        ]
        done = "SELECT count(*) AS n FROM sys_invocation WHERE status = 'completed'"
        wait_until(lambda: sql(server, done) == [{"n": 6}], timeout=60, what="the six invocations")
        assert server.proc is not None
        before = _rss_bytes(server.proc.pid)
        code, out, err = run_session(
            [
                sys.executable,
                "-m",
                "unbroken.cli.main",
                "invocations",
                "list",
                "--json",
                "--admin-url",
                server.admin,
            ],
            timeout=60,
            what="unbroken invocations list",
        )
        assert code == 0, err
        assert {r["id"] for r in orjson.loads(out)} == set(ids)
        entries = sql(server, 'SELECT id, "index", entry_type, completed FROM sys_journal')
        assert len([e for e in entries if e["entry_type"] == "Command: Output"]) == 6
        grown = _rss_bytes(server.proc.pid) - before
        assert grown < 100 * 1024 * 1024, f"+{grown / 2**20:.0f} MiB resident after two metadata queries"
    finally:
        server.kill()


def test_queries_in_flight_are_bounded_in_process(tmp_path: Path) -> None:
    """Past ``query_inflight_max`` running or waiting queries, the next is refused at once (429), not queued."""
    store = SqliteStore(str(tmp_path / "data"), fsync=False)
    reads = SqliteReadModel(store.path, timeout_s=0.5)
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"

    async def many() -> list[BaseException | QueryAnswer]:
        jobs = [reads.query(runaway, None, _NoCatalog()) for _ in range(limits.query_inflight_max + 2)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    try:
        outcomes = asyncio.run(many())
        busy = [o for o in outcomes if isinstance(o, QueryBusy)]
        slow = [o for o in outcomes if isinstance(o, QueryError) and "time limit" in str(o)]
        assert (len(busy), len(slow)) == (2, limits.query_inflight_max), outcomes
        assert "retry later" in str(busy[0])
        assert reads.query_sync("SELECT 1 AS one") == QueryAnswer([{"one": 1}])
    finally:
        reads.close()
        store.close()


class _NoCatalog:
    def services_json(self) -> str:
        return "[]"

    def deployments_json(self) -> str:
        return "[]"
