"""``abort_timeout`` on a real server: an attempt that cannot suspend (here stuck in a ``ctx.run``) is aborted
once it has been silent for its inactivity timeout and then its abort timeout, and the retry policy runs
it again (Restate's RT0001). Each ``ctx.run`` execution is counted outside the engine (tests/apps/hang_app.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Server

APP = "tests/apps/hang_app.py"
INACTIVITY_S, ABORT_S = 0.3, 0.7
ENV = {
    "UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "300ms",
    "UNBROKEN_WORKER__INVOKER__ABORT_TIMEOUT": "700ms",
    "UNBROKEN_DEFAULT_RETRY_POLICY__INITIAL_INTERVAL": "100ms",
}
CALL_TIMEOUT_S = 20.0  # without the abort, the call never returns


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("abort") / "data", env=ENV).start()
    yield server
    server.kill()


def runs(directory: Path) -> list[str]:
    path = directory / "runs.log"
    return path.read_text().splitlines() if path.exists() else []


def last_attempt(srv: Server, invocation_id: str) -> dict[str, Any]:
    resp = srv.admin_request(
        "POST",
        "/query",
        {"query": f"SELECT retry_count, last_failure FROM sys_invocation WHERE id = '{invocation_id}'"},
    )
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = resp.json()["rows"]
    assert len(rows) == 1, rows
    return rows[0]


def call(srv: Server, handler: str, body: dict[str, Any]) -> tuple[Any, str, float]:
    started = time.monotonic()
    resp = srv.call(f"/Hang/{handler}", body, timeout=CALL_TIMEOUT_S)
    elapsed = time.monotonic() - started
    assert resp.status_code == 200, resp.text
    return resp.json(), resp.headers["x-restate-id"], elapsed


def test_a_ctx_run_that_hangs_is_aborted_after_abort_timeout_and_its_retry_completes(
    srv: Server, tmp_path: Path
) -> None:
    result, invocation_id, elapsed = call(srv, "once", {"dir": str(tmp_path)})
    assert result == "done"
    assert runs(tmp_path) == ["started", "cancelled", "started", "done"]  # the aborted run was cancelled
    assert elapsed >= INACTIVITY_S + ABORT_S
    row = last_attempt(srv, invocation_id)
    assert row["retry_count"] == 1 and "RT0001" in row["last_failure"], row


def test_a_blocked_sync_ctx_run_is_aborted_too_and_its_late_result_is_ignored(
    srv: Server, tmp_path: Path
) -> None:
    """A thread cannot be cancelled: the attempt is aborted all the same, and what the blocked action
    returns once released is not journaled (the retry's value is)."""
    try:
        result, invocation_id, _ = call(srv, "once", {"dir": str(tmp_path), "sync": "1"})
        assert result == "done"
        assert runs(tmp_path) == ["started", "started", "done"]
    finally:
        (tmp_path / "release").touch()
    assert last_attempt(srv, invocation_id)["retry_count"] == 1


def test_the_handler_s_own_abort_timeout_is_enforced(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``inactivity_timeout`` / ``abort_timeout`` set on the handler (300ms / 700ms), on a server whose own
    are the defaults (1m / 10m)."""
    data = tmp_path_factory.mktemp("abort-own")
    server = Server(
        APP, data / "data", env={"UNBROKEN_DEFAULT_RETRY_POLICY__INITIAL_INTERVAL": "100ms"}
    ).start()
    try:
        meta = server.admin_request("GET", "/services/Hang").json()
        assert meta["abort_timeout"] == "10m" and meta["inactivity_timeout"] == "1m"
        handler = {h["name"]: h for h in meta["handlers"]}["own_timeouts"]
        assert (handler["inactivity_timeout"], handler["abort_timeout"]) == ("300ms", "700ms")
        work = data / "work"
        work.mkdir()
        result, invocation_id, elapsed = call(server, "own_timeouts", {"dir": str(work)})
        assert result == "done"
        assert runs(work) == ["started", "cancelled", "started", "done"]
        assert elapsed >= INACTIVITY_S + ABORT_S
        assert last_attempt(server, invocation_id)["retry_count"] == 1
    finally:
        server.kill()
