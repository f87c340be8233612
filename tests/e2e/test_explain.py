"""``GET /invocations/{id}/explain`` on a real server: one answer to "why is this invocation not
progressing" for each situation an invocation can be in, with the chain of what it waits on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Server, wait_until
from unbroken.core.ids import InvocationId, awakeable_id

APP = "tests/apps/ops_app.py"
ENV = {"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("explain") / "data", env=ENV).start()
    yield server
    server.kill()


def explain(srv: Server, inv: str) -> dict[str, Any]:
    resp = srv.admin_request("GET", f"/invocations/{inv}/explain")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    assert body["invocation_id"] == inv and isinstance(body["summary"], str) and "\n" not in body["summary"]
    return body


def status(srv: Server, inv: str) -> str | None:
    rows = srv.admin_request(
        "POST", "/query", {"query": f"SELECT status FROM sys_invocation WHERE id = '{inv}'"}
    )
    found = rows.json()["rows"]
    return found[0]["status"] if found else None


def wait_status(srv: Server, inv: str, want: str) -> None:
    wait_until(lambda: status(srv, inv) == want, timeout=15, what=f"{inv} to be {want}")


def send(srv: Server, path: str, body: Any) -> str:
    resp = srv.call(f"{path}/send", body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["invocationId"])


def published(srv: Server, box: str) -> dict[str, Any]:
    def get() -> Any:
        resp = srv.call(f"/Inbox/{box}/get")
        return resp.json() if resp.content else None

    return wait_until(get, timeout=10, what=f"Inbox/{box}")  # type: ignore[no-any-return]


def resolve(srv: Server, aid: str, value: Any) -> None:
    assert srv.call(f"/restate/awakeables/{aid}/resolve", value).status_code == 202


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def kinds(body: dict[str, Any]) -> list[str]:
    return [r["kind"] for r in body["reasons"]]


def test_queued_behind_the_lock_holder_and_since_when(srv: Server) -> None:
    key, box = uuid.uuid4().hex, uuid.uuid4().hex
    holder = send(srv, f"/Counter/{key}/hold", box)
    aid = published(srv, box)["aid"]
    first = send(srv, f"/Counter/{key}/add", 5)
    second = send(srv, f"/Counter/{key}/add", 1)
    wait_status(srv, holder, "suspended")

    body = explain(srv, second)
    assert body["status"] == "pending" and body["target"] == f"Counter/{key}/add"
    (queued,) = body["reasons"]
    assert queued["kind"] == "queued" and (queued["service"], queued["key"]) == ("Counter", key)
    assert queued["lock_holder"] == holder and queued["lock_holder_target"] == f"Counter/{key}/hold"
    assert queued["ahead_in_inbox"] == 1  # `first` is queued ahead of it
    assert ts(queued["holding_since"]) <= ts(queued["queued_since"]) <= datetime.now(UTC)
    assert (
        f"queued behind {holder} (Counter/{key}/hold), which holds the lock of Counter/{key} since "
        in body["summary"]
    )
    assert "1 more ahead of it" in body["summary"]
    # The chain says what the holder is doing: waiting on an awakeable.
    (hop,) = body["chain"]
    assert (hop["invocation_id"], hop["status"], hop["depth"], hop["waited_on_by"]) == (
        holder,
        "suspended",
        1,
        second,
    )
    assert hop["reasons"][0]["kind"] == "awakeable" and hop["reasons"][0]["awakeable_id"] == aid

    resolve(srv, aid, "done")
    wait_status(srv, second, "completed")
    assert explain(srv, first)["reasons"][0]["value"] == "5"
    done = explain(srv, second)
    assert (
        done["reasons"][0]["kind"] == "completed"
        and done["reasons"][0]["value"] == "6"
        and done["chain"] == []
    )


def test_sleeping_until(srv: Server) -> None:
    inv = send(srv, "/Waiter/nap", 3600)
    wait_status(srv, inv, "suspended")
    body = explain(srv, inv)
    (sleep,) = body["reasons"]
    assert sleep["kind"] == "sleep" and sleep["name"] == "long nap" and sleep["entry_index"] == 1
    left = ts(sleep["wake_up_at"]) - datetime.now(UTC)
    assert timedelta(minutes=58) < left <= timedelta(hours=1)
    assert (
        body["summary"]
        == f"suspended, sleeping until {sleep['wake_up_at']} (ctx.sleep 'long nap' at journal entry 1)"
    )
    assert srv.admin_request("PATCH", f"/invocations/{inv}/kill").status_code == 200


def test_awaiting_an_awakeable_created_at_a_journal_entry(srv: Server) -> None:
    box = uuid.uuid4().hex
    inv = send(srv, "/Waiter/wait", box)
    aid = published(srv, box)["aid"]
    wait_status(srv, inv, "suspended")
    body = explain(srv, inv)
    (wait,) = body["reasons"]
    assert wait["awakeable_id"] == aid == awakeable_id(InvocationId.parse(inv), 17)
    assert (wait["kind"], wait["signal_index"]) == ("awakeable", 17)
    # The awakeable's id is handed out by the send at entry 1 (Input is entry 0).
    assert (wait["entry_index"], wait["entry_type"]) == (1, "Command: OneWayCall")
    assert body["summary"].startswith(f"suspended, awaiting awakeable {aid} (created at journal entry 1")
    resolve(srv, aid, {"ok": True})
    wait_status(srv, inv, "completed")
    assert explain(srv, inv)["reasons"][0]["value"] == '{"ok":true}'


def test_awaiting_a_durable_promise(srv: Server) -> None:
    key = uuid.uuid4().hex
    inv = send(srv, f"/Approval/{key}/run", "contract")
    wait_status(srv, inv, "suspended")
    body = explain(srv, inv)
    (wait,) = body["reasons"]
    assert (
        wait["kind"] == "promise" and wait["promise"] == "decision" and wait["workflow"] == f"Approval/{key}"
    )
    assert wait["promise_completed"] is False and wait["entry_index"] == 2  # Input, SetState, GetPromise
    assert (
        f"awaiting durable promise 'decision' of workflow Approval/{key} (journal entry 2)" in body["summary"]
    )
    assert srv.call(f"/Approval/{key}/decide", "yes").json() == "ok"
    wait_status(srv, inv, "completed")
    assert explain(srv, inv)["summary"].startswith("completed successfully at ")


def test_waiting_on_a_call_follows_the_chain(srv: Server) -> None:
    box = uuid.uuid4().hex
    top = send(srv, "/Waiter/relay_twice", box)
    got = published(srv, box)
    leaf, aid = got["id"], got["aid"]
    wait_status(srv, leaf, "suspended")
    wait_status(srv, top, "suspended")
    body = explain(srv, top)
    (call,) = body["reasons"]
    middle = call["callee_id"]
    assert call["kind"] == "call" and call["target"] == "Waiter/relay" and call["entry_index"] == 1
    assert (
        body["summary"] == f"suspended, waiting on a call to Waiter/relay ({middle}) made at journal entry 1"
    )
    assert [(h["invocation_id"], h["target"], h["depth"], h["waited_on_by"]) for h in body["chain"]] == [
        (middle, "Waiter/relay", 1, top),
        (leaf, "Waiter/wait", 2, middle),
    ]
    assert body["chain"][0]["reasons"][0]["callee_id"] == leaf
    assert body["chain"][1]["reasons"][0]["awakeable_id"] == aid
    resolve(srv, aid, "through")
    wait_status(srv, top, "completed")
    assert explain(srv, top)["reasons"][0]["value"] == '"through"'


def test_running_inside_a_ctx_run(srv: Server, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    inv = send(srv, "/Waiter/until_file", str(flag))

    def run_journaled() -> bool:
        q = f"SELECT count(*) AS n FROM sys_journal WHERE id = '{inv}' AND entry_type = 'Command: Run'"
        return bool(srv.admin_request("POST", "/query", {"query": q}).json()["rows"][0]["n"])

    wait_until(run_journaled, timeout=10, what="the ctx.run to be journaled")
    body = explain(srv, inv)
    assert body["status"] == "running" and kinds(body) == ["running", "run"]
    assert body["reasons"][0]["attempt"] == 1 and body["attempts"] == 1
    assert body["reasons"][1] == {
        "kind": "run",
        "entry_index": 1,
        "name": "wait for file",
        "phrase": "executing ctx.run 'wait for file' (journal entry 1)",
    }
    assert body["summary"] == "running (attempt 1), executing ctx.run 'wait for file' (journal entry 1)"
    flag.touch()
    wait_status(srv, inv, "completed")
    assert explain(srv, inv)["reasons"][0]["value"] == '"found"'


def test_backing_off_after_an_error(srv: Server, tmp_path: Path) -> None:
    inv = send(srv, "/Flaky/slow_retry", str(tmp_path / "never"))
    wait_status(srv, inv, "backing-off")
    body = explain(srv, inv)
    backing, step = body["reasons"]
    assert backing["kind"] == "backing_off" and backing["attempt"] == 1 and backing["error_code"] == 500
    assert backing["error"] == "ctx.run 'check file' failed: RuntimeError('never is missing')"
    assert "Traceback" in backing["error_detail"]  # the failed step's traceback is kept
    # initial interval 1h, capped by the default max interval (1 min)
    assert timedelta(seconds=30) < ts(backing["next_retry_at"]) - datetime.now(UTC) <= timedelta(minutes=1)
    assert step["kind"] == "run" and step["name"] == "check file"
    assert body["summary"] == (
        "backing off after error 'ctx.run 'check file' failed: RuntimeError('never is missing')' on attempt 1 in ctx.run "
        f"'check file' (journal entry 1); next retry at {backing['next_retry_at']}"
    )
    assert srv.admin_request("PATCH", f"/invocations/{inv}/kill").status_code == 200


def test_paused_after_its_attempts_then_resumed(srv: Server, tmp_path: Path) -> None:
    path = tmp_path / "needed"
    inv = send(srv, "/Flaky/give_up", str(path))
    wait_status(srv, inv, "paused")
    body = explain(srv, inv)
    (paused,) = body["reasons"]
    assert (
        paused["kind"] == "paused"
        and paused["attempts"] == 2
        and paused["error"] == "RuntimeError('needed is missing')"
    )
    assert "Traceback" in paused["error_detail"]
    assert body["summary"] == (
        "paused after 2 attempts with error 'RuntimeError('needed is missing')'; "
        f"resume it with `unbroken invocations resume {inv}`"
    )
    path.touch()
    assert srv.admin_request("PATCH", f"/invocations/{inv}/resume").status_code == 200
    wait_status(srv, inv, "completed")
    assert explain(srv, inv)["attempts"] == 3


def test_paused_by_an_operator(srv: Server) -> None:
    inv = send(srv, "/Waiter/nap", 3600)
    wait_status(srv, inv, "suspended")
    assert srv.admin_request("PATCH", f"/invocations/{inv}/pause").status_code == 200
    body = explain(srv, inv)
    assert body["status"] == "paused" and body["reasons"][0]["error"] is None
    assert body["summary"].startswith("paused by an operator after 1 attempts; resume it with")
    assert srv.admin_request("PATCH", f"/invocations/{inv}/kill").status_code == 200


def test_scheduled_then_cancelled(srv: Server) -> None:
    resp = srv.call("/Greeter/greet/send?delay=1h", "later")
    inv = resp.json()["invocationId"]
    body = explain(srv, inv)
    (scheduled,) = body["reasons"]
    assert body["status"] == "scheduled" and scheduled["kind"] == "scheduled"
    assert timedelta(minutes=59) < ts(scheduled["start_at"]) - datetime.now(UTC) <= timedelta(hours=1)
    assert body["summary"] == f"scheduled (a delayed send): it starts at {scheduled['start_at']}"
    assert srv.admin_request("PATCH", f"/invocations/{inv}/cancel").status_code == 200
    done = explain(srv, inv)
    assert done["reasons"][0]["failure"] == {"code": 409, "message": "cancelled"}


def test_completed_with_a_result_or_a_failure(srv: Server) -> None:
    ok = srv.call("/Greeter/greet", "Ada").headers["x-restate-id"]
    body = explain(srv, ok)
    (done,) = body["reasons"]
    assert done["result"] == "success" and done["value"] == '"Hello Ada!"'
    assert ts(done["completed_at"]) < ts(done["expires_at"])
    assert body["summary"] == (
        f'completed successfully at {done["completed_at"]} with result "Hello Ada!"; '
        f"the result is kept until {done['expires_at']}"
    )
    failed = srv.call("/Greeter/fail", "nope").headers["x-restate-id"]
    body = explain(srv, failed)
    assert body["reasons"][0]["result"] == "failure" and body["reasons"][0]["failure"] == {
        "code": 418,
        "message": "nope",
    }
    assert body["summary"].startswith("completed at ") and "with failure [418] nope" in body["summary"]


def test_unknown_and_malformed_ids(srv: Server) -> None:
    unknown = str(InvocationId.new(1, b"\x01" * 10, 1_700_000_000_000))
    resp = srv.admin_request("GET", f"/invocations/{unknown}/explain")
    assert resp.status_code == 404
    assert resp.json() == {
        "message": f"The requested invocation '{unknown}' does not exist",
        "restate_code": None,
    }
    resp = srv.admin_request("GET", "/invocations/not-an-id/explain")
    assert resp.status_code == 400 and "invocation_id" in resp.json()["message"]
    assert srv.admin_request("POST", f"/invocations/{unknown}/explain").status_code == 405
    ok = srv.call("/Greeter/greet", "v4").headers["x-restate-id"]
    assert srv.admin_request("GET", f"/v4/invocations/{ok}/explain").json()["status"] == "completed"
