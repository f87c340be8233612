"""Handler-to-handler calls, sends, ``ctx.run`` retries, combinators, deterministic randomness,
cancellation and kill, over a real ``unbroken serve``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Server, read_box, unique_key, wait_until

APP = "tests/apps/semantics.py"
ENV = {
    "UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s",
    "UNBROKEN_DEFAULT_RETRY_POLICY__INITIAL_INTERVAL": "50ms",
    "UNBROKEN_DEFAULT_RETRY_POLICY__MAX_INTERVAL": "200ms",
}
CANCELLED = {"code": 409, "message": "cancelled", "source": "invocation"}
KILLED = {"code": 409, "message": "killed", "source": "invocation"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("calls") / "data", env=ENV).start()
    yield server
    server.kill()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _send(srv: Server, path: str, body: Any) -> str:
    resp = srv.call(path + "/send", body)
    assert resp.status_code == 202, resp.text
    return resp.json()["invocationId"]  # type: ignore[no-any-return]


def _attach(srv: Server, inv: str) -> Any:
    return srv.get(f"/restate/invocation/{inv}/attach", timeout=15)


# ---------------------------------------------------------------------------------- calls & sends
def test_service_calls_object_and_gets_its_result(srv: Server) -> None:
    obj = unique_key()
    assert srv.call(f"/Lock/{obj}/step", "direct").status_code == 200
    resp = srv.call("/Caller/call_object", {"key": obj, "label": "via caller"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == ["direct", "via caller"]
    assert srv.call(f"/Lock/{obj}/peek").json() == ["direct", "via caller"]


def test_one_way_send_runs_exactly_once_across_a_retry(srv: Server, tmp_path: Path) -> None:
    obj, attempts = unique_key(), tmp_path / "attempts"
    resp = srv.call("/Caller/send_then_fail_once", {"key": obj, "label": "sent", "attempts": str(attempts)})
    assert resp.status_code == 200, resp.text
    assert len(_lines(attempts)) == 2  # the caller's first attempt failed after the send, then was retried
    child = resp.json()
    assert child.startswith("inv_1")
    done = _attach(srv, child)
    assert done.status_code == 200, done.text
    assert done.json() == ["sent"]
    # A later call on the same key runs after the send and sees one "sent" only.
    assert srv.call(f"/Box/{obj}/append", "marker").json() == ["sent", "marker"]


def test_delayed_send_runs_after_its_delay(srv: Server) -> None:
    obj = unique_key()
    resp = srv.call("/Caller/delayed_send", {"key": obj, "label": "later", "delay_ms": 600})
    assert resp.status_code == 200, resp.text
    sent_at = resp.json()
    assert srv.call(f"/Box/{obj}/stamps").json() == []
    stamps = wait_until(lambda: srv.call(f"/Box/{obj}/stamps").json(), timeout=10, what="the delayed send")
    assert [s["label"] for s in stamps] == ["later"]
    assert stamps[0]["at"] - sent_at >= 600, (sent_at, stamps)


# ------------------------------------------------------------------------------------------ ctx.run
def test_run_is_retried_until_it_succeeds(srv: Server, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    resp = srv.call("/Caller/flaky_run", {"path": str(counter), "fail_times": 2}, timeout=20)
    assert resp.status_code == 200, resp.text
    assert resp.json() == 3
    assert len(_lines(counter)) == 3  # two transient failures, one success, nothing after
    # The journaled result is returned again without re-running the action.
    again = _attach(srv, resp.headers["x-restate-id"])
    assert again.json() == 3
    assert len(_lines(counter)) == 3


def test_run_with_max_attempts_ends_in_terminal_error(srv: Server, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    resp = srv.call("/Caller/run_max_attempts", {"path": str(counter)}, timeout=20)
    assert resp.status_code == 500, resp.text
    body = resp.json()
    assert body["code"] == 500
    assert body["source"] == "invocation"
    assert "always failing, attempt 2" in body["message"], body
    assert len(_lines(counter)) == 2


# ------------------------------------------------------------------------------------- combinators
def test_select_returns_the_first_completed(srv: Server) -> None:
    resp = srv.call("/Caller/select_call_vs_sleep", "quick", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json() == ["call", "quick"]
    resp = srv.call("/Caller/select_sleep_vs_awakeable", unique_key(), timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json() == ["nap", None]


def test_gather_waits_for_calls_and_sleep(srv: Server) -> None:
    resp = srv.call("/Caller/gather_calls", [1, "two", {"three": 3}], timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json() == [1, "two", {"three": 3}]


# -------------------------------------------------------------------------------------- determinism
def test_random_uuid_and_time_are_stable_across_replay(srv: Server, tmp_path: Path) -> None:
    record = tmp_path / "randoms"
    resp = srv.call("/Caller/randoms", str(record), timeout=20)
    assert resp.status_code == 200, resp.text
    attempts = [json.loads(line) for line in _lines(record)]
    assert len(attempts) == 2
    assert attempts[0] == attempts[1] == resp.json()
    assert str(uuid.UUID(resp.json()["uuid"])) == resp.json()["uuid"]
    assert abs(resp.json()["time"] - time.time()) < 60  # ctx.time(): seconds since the epoch
    # A different invocation draws different values.
    other_record = tmp_path / "randoms-2"
    other = srv.call("/Caller/randoms", str(other_record), timeout=20).json()
    assert other["uuid"] != resp.json()["uuid"]
    assert other["random"] != resp.json()["random"]


# ------------------------------------------------------------------------------------ cancel & kill
def test_cancel_runs_compensation_and_fails_with_409(srv: Server, tmp_path: Path) -> None:
    box, notes = unique_key(), tmp_path / "compensations"
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(srv.call, "/Caller/cancellable", {"box": box, "path": str(notes)})
        inv = read_box(srv, box)["id"]
        cancel = srv.admin_request("PATCH", f"/invocations/{inv}/cancel")
        assert cancel.status_code == 202, cancel.text
        result = call.result(timeout=15)
    assert result.status_code == 409, result.text
    assert result.json() == CANCELLED
    assert result.headers["x-restate-id"] == inv
    assert _lines(notes) == [json.dumps("compensated 409 cancelled")]
    # Cancelling again once it completed changes nothing.
    assert srv.admin_request("PATCH", f"/invocations/{inv}/cancel").status_code in (200, 202, 409)
    assert _attach(srv, inv).json() == CANCELLED
    assert _lines(notes) == [json.dumps("compensated 409 cancelled")]


def test_cancel_of_a_queued_invocation_never_runs_it(srv: Server) -> None:
    obj, box = unique_key(), unique_key()
    holder = _send(srv, f"/Lock/{obj}/hold", box)
    aid = read_box(srv, box)["aid"]
    queued = _send(srv, f"/Lock/{obj}/step", "never")
    after = _send(srv, f"/Lock/{obj}/step", "after")
    cancel = srv.admin_request("PATCH", f"/invocations/{queued}/cancel")
    assert cancel.status_code in (200, 202), cancel.text
    cancelled = _attach(srv, queued)
    assert cancelled.status_code == 409, cancelled.text
    assert cancelled.json() == CANCELLED
    assert srv.call(f"/restate/awakeables/{aid}/resolve", None).status_code == 202
    assert _attach(srv, holder).json() == ["hold-start", "hold-end"]
    assert _attach(srv, after).json() == ["hold-start", "hold-end", "after"]


def test_cancel_propagates_to_the_awaited_call(srv: Server, tmp_path: Path) -> None:
    box, notes = unique_key(), tmp_path / "compensations"
    parent = _send(srv, "/Caller/parent", {"box": box, "path": str(notes)})
    child = read_box(srv, box)["id"]
    assert child != parent
    cancel = srv.admin_request("PATCH", f"/invocations/{parent}/cancel")
    assert cancel.status_code in (200, 202), cancel.text
    parent_result = _attach(srv, parent)
    assert parent_result.status_code == 409, parent_result.text
    assert parent_result.json() == CANCELLED
    child_result = _attach(srv, child)
    assert child_result.status_code == 409, child_result.text
    assert child_result.json() == CANCELLED
    assert _lines(notes) == [json.dumps("compensated 409 cancelled")]


def test_kill_fails_at_once_and_releases_the_object_lock(srv: Server) -> None:
    obj, box = unique_key(), unique_key()
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(srv.call, f"/Lock/{obj}/hold", box)
        holder = read_box(srv, box)["id"]
        queued = _send(srv, f"/Lock/{obj}/step", "after")
        assert srv.get(f"/restate/invocation/{queued}/output").status_code == 470
        kill = srv.admin_request("PATCH", f"/invocations/{holder}/kill")
        assert kill.status_code == 200, kill.text
        result = call.result(timeout=15)
    assert result.status_code == 409, result.text
    assert result.json() == KILLED
    killed = srv.get(f"/restate/invocation/{holder}/output")
    assert killed.status_code == 409, killed.text
    assert killed.json() == KILLED
    nxt = _attach(srv, queued)
    assert nxt.status_code == 200, nxt.text
    assert nxt.json() == ["hold-start", "after"]  # the killed holder never logged hold-end
    again = srv.admin_request("PATCH", f"/invocations/{holder}/kill")
    assert again.status_code == 409, again.text


def test_kill_takes_the_call_tree_and_runs_no_user_code(srv: Server, tmp_path: Path) -> None:
    box, notes = unique_key(), tmp_path / "compensations"
    parent = _send(srv, "/Caller/parent", {"box": box, "path": str(notes)})
    child = read_box(srv, box)["id"]
    kill = srv.admin_request("PATCH", f"/invocations/{parent}/kill")
    assert kill.status_code == 200, kill.text
    for inv in (parent, child):
        out = _attach(srv, inv)
        assert out.status_code == 409, out.text
        assert out.json() == KILLED
    assert _lines(notes) == []  # no compensation: kill does not run the handler again
