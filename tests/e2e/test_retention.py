"""Retention on a real server with short retentions and a short sweep interval: idempotent results are
kept until the idempotency retention and then forgotten (the same key runs again), journals go after the
journal retention while the result stays (at once with a retention of 0), workflow state and promises go
with the workflow's retention, object state stays."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Server, wait_until

APP = "tests/apps/ops_app.py"
IDEMPOTENCY_S, JOURNAL_S, WORKFLOW_S = 4.0, 2.0, 3.0
ENV = {
    "UNBROKEN_WORKER__CLEANUP_INTERVAL": "100ms",
    "UNBROKEN_DEFAULT_IDEMPOTENCY_RETENTION": f"{IDEMPOTENCY_S:g}s",
    "UNBROKEN_DEFAULT_JOURNAL_RETENTION": f"{JOURNAL_S:g}s",
    "UNBROKEN_DEFAULT_WORKFLOW_COMPLETION_RETENTION": f"{WORKFLOW_S:g}s",
}
SKEW_S = 0.2  # the server measures retention on its own clock, the test on its monotonic clock


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("retention") / "data", env=ENV).start()
    yield server
    server.kill()


def sql(srv: Server, query: str) -> list[dict[str, Any]]:
    resp = srv.admin_request("POST", "/query", {"query": query})
    assert resp.status_code == 200, resp.text
    return resp.json()["rows"]  # type: ignore[no-any-return]


def journal(srv: Server, inv: str) -> list[str]:
    return [
        r["entry_type"]
        for r in sql(srv, f"SELECT entry_type FROM sys_journal WHERE id = '{inv}' ORDER BY \"index\"")
    ]


def invocation(srv: Server, inv: str) -> dict[str, Any] | None:
    rows = sql(srv, f"SELECT status, completion_result, journal_size FROM sys_invocation WHERE id = '{inv}'")
    return rows[0] if rows else None


def test_idempotent_result_is_kept_until_the_retention_then_the_key_runs_again(srv: Server) -> None:
    key = uuid.uuid4().hex
    headers = {"idempotency-key": key}
    started = time.monotonic()
    first = srv.call("/Greeter/fresh", "a", headers=headers)
    assert first.status_code == 200 and "idempotency-expires" in first.headers
    inv = first.headers["x-restate-id"]
    again = srv.call("/Greeter/fresh", "a", headers=headers)
    assert (
        again.json() == first.json() and again.headers["x-restate-id"] == inv
    )  # the stored result, not a re-run
    attach = f"/restate/invocation/Greeter/fresh/{key}/attach"
    assert srv.get(attach).json() == first.json()
    assert srv.get(f"/restate/invocation/{inv}/output").json() == first.json()

    wait_until(
        lambda: srv.get(attach).status_code == 404, timeout=IDEMPOTENCY_S + 10, what="the result to expire"
    )
    assert time.monotonic() - started >= IDEMPOTENCY_S - SKEW_S
    assert srv.get(f"/restate/invocation/{inv}/output").status_code == 404
    assert invocation(srv, inv) is None and journal(srv, inv) == []

    rerun = srv.call("/Greeter/fresh", "a", headers=headers)
    assert rerun.status_code == 200 and rerun.headers["x-restate-id"] == inv  # same key, same id ...
    assert rerun.json()["run"] != first.json()["run"]  # ... but it ran again


def test_journal_goes_after_the_journal_retention_the_result_stays(srv: Server) -> None:
    key = uuid.uuid4().hex
    started = time.monotonic()
    resp = srv.call("/Greeter/greet", "Jo", headers={"idempotency-key": key})
    inv = resp.headers["x-restate-id"]
    assert journal(srv, inv) == ["Command: Input", "Command: Output"]
    assert invocation(srv, inv) == {"status": "completed", "completion_result": "success", "journal_size": 2}

    wait_until(lambda: journal(srv, inv) == [], timeout=JOURNAL_S + 10, what="the journal to expire")
    assert time.monotonic() - started >= JOURNAL_S - SKEW_S
    # The idempotency retention (4 s) is not over: the result is still there.
    assert invocation(srv, inv) == {"status": "completed", "completion_result": "success", "journal_size": 0}
    assert srv.get(f"/restate/invocation/Greeter/greet/{key}/attach").json() == "Hello Jo!"
    assert srv.call("/Greeter/greet", "Jo", headers={"idempotency-key": key}).headers["x-restate-id"] == inv


def test_journal_retention_zero_drops_the_journal_at_completion(srv: Server) -> None:
    patched = srv.admin_request("PATCH", "/services/Inbox", {"journal_retention": "0s"})
    assert patched.status_code == 200 and patched.json()["journal_retention"] == "0s"
    key, box = uuid.uuid4().hex, uuid.uuid4().hex
    resp = srv.call(f"/Inbox/{box}/put", {"x": 1}, headers={"idempotency-key": key})
    assert resp.status_code == 200
    inv = resp.headers["x-restate-id"]
    assert journal(srv, inv) == []
    assert invocation(srv, inv) == {"status": "completed", "completion_result": "success", "journal_size": 0}
    assert srv.get(f"/restate/invocation/{inv}/output").status_code == 200
    assert srv.call(f"/Inbox/{box}/get").json() == {"x": 1}


def test_workflow_state_and_promises_go_with_the_workflow_retention_object_state_stays(srv: Server) -> None:
    wf, obj = uuid.uuid4().hex, uuid.uuid4().hex
    started = time.monotonic()
    run = srv.call(f"/Approval/{wf}/run/send", "doc").json()["invocationId"]
    assert srv.call(f"/Approval/{wf}/decide", "yes").json() == "ok"
    assert srv.get(f"/restate/workflow/Approval/{wf}/attach").json() == "doc: yes"
    assert srv.call(f"/Counter/{obj}/add", 3).json() == 3
    add = sql(srv, f"SELECT id FROM sys_invocation WHERE target = 'Counter/{obj}/add'")[0]["id"]

    def wf_state() -> list[tuple[str, str]]:
        return [
            (r["key"], r["value_utf8"])
            for r in sql(
                srv,
                f"SELECT key, value_utf8 FROM state WHERE service_name = 'Approval' AND service_key = '{wf}' ORDER BY key",
            )
        ]

    def promises() -> list[Any]:
        return sql(
            srv,
            f"SELECT key, completed FROM sys_promise WHERE service_name = 'Approval' AND service_key = '{wf}'",
        )

    assert wf_state() == [("decision", '"yes"'), ("doc", '"doc"')]
    assert promises() == [{"key": "decision", "completed": True}]

    wait_until(
        lambda: not wf_state() and not promises(), timeout=WORKFLOW_S + 10, what="the workflow to expire"
    )
    assert time.monotonic() - started >= WORKFLOW_S - SKEW_S
    assert invocation(srv, run) is None
    assert srv.get(f"/restate/workflow/Approval/{wf}/output").status_code == 404
    # The object's invocation is purged after the idempotency retention; its state is not.
    wait_until(lambda: invocation(srv, add) is None, timeout=IDEMPOTENCY_S + 10, what="the add to expire")
    assert srv.call(f"/Counter/{obj}/total").json() == 3
    # The workflow key is free again: a new run starts.
    assert srv.call(f"/Approval/{wf}/run/send", "again").json()["status"] == "Accepted"
    assert srv.call(f"/Approval/{wf}/decide", "no").json() == "ok"
    assert srv.get(f"/restate/workflow/Approval/{wf}/attach").json() == "again: no"
