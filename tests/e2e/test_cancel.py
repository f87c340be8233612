"""Cancellation and failing ``ctx.run`` steps on a real ``unbroken serve``: a cancel reaches a handler whose
step keeps failing (no new side effect first, compensation once), values that cannot be serialized pause
at once, failed steps are logged with their traceback kept, explain tells the truth after a cancel, a
``ctx.run`` never awaited is warned about, and a cancel reaches a whole A→B→A call tree."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, Server, wait_until

APP = "tests/apps/cancel_app.py"
ENV = {
    "UNBROKEN_DEFAULT_RETRY_POLICY__INITIAL_INTERVAL": "300ms",
    "UNBROKEN_DEFAULT_RETRY_POLICY__MAX_INTERVAL": "1s",
    "UNBROKEN_DEFAULT_RETRY_POLICY__MAX_ATTEMPTS": "1000",
}
CANCELLED = {"code": 409, "message": "cancelled", "source": "invocation"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("cancel") / "data", env=ENV).start()
    yield server
    server.kill()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def send(srv: Server, path: str, body: Any) -> str:
    resp = srv.call(f"{path}/send", body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["invocationId"])


def attach(srv: Server, inv: str, timeout: float = 10) -> Any:
    return srv.get(f"/restate/invocation/{inv}/attach", timeout=timeout)


def cancel(srv: Server, inv: str) -> None:
    resp = srv.admin_request("PATCH", f"/invocations/{inv}/cancel")
    assert resp.status_code in (200, 202), resp.text


def query(srv: Server, sql: str) -> list[dict[str, Any]]:
    resp = srv.admin_request("POST", "/query", {"query": sql})
    assert resp.status_code == 200, resp.text
    return resp.json()["rows"]  # type: ignore[no-any-return]


def status(srv: Server, inv: str) -> str | None:
    rows = query(srv, f"SELECT status FROM sys_invocation WHERE id = '{inv}'")
    return rows[0]["status"] if rows else None


def explain(srv: Server, inv: str) -> dict[str, Any]:
    resp = srv.admin_request("GET", f"/invocations/{inv}/explain")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def cli(srv: Server, *args: str) -> str:
    env = {"UNBROKEN_ADMIN_URL": srv.admin, "UNBROKEN_INGRESS_URL": srv.ingress, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "unbroken.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc.stdout


# ------------------------------------------------------------------------------- first-hour 2
def test_cancel_reaches_a_handler_whose_step_keeps_failing(srv: Server, tmp_path: Path) -> None:
    """Backing off on a failing step: the cancel wakes it at once, the step does not run again, the
    compensation runs once and it ends 409 cancelled within seconds."""
    base = tmp_path / "saga"
    inv = send(srv, "/Saga/failing", str(base))
    wait_until(lambda: len(lines(Path(f"{base}.a"))) >= 3, timeout=15, what="step a to fail 3 times")
    before = len(lines(Path(f"{base}.a")))
    cancel(srv, inv)
    result = attach(srv, inv, timeout=5)
    assert result.status_code == 409, result.text
    assert result.json() == CANCELLED
    assert lines(Path(f"{base}.b")) == ["undo 409 cancelled"]
    # At most the execution already under way when the cancel was stored: none starts after it.
    assert len(lines(Path(f"{base}.a"))) <= before + 1


def test_a_step_failing_after_the_cancel_was_seen_is_not_retried(srv: Server, tmp_path: Path) -> None:
    """The cancel arrives while step a runs: the handler compensates at once; when a then fails, it is not
    retried (that would run a again and replay the compensation): a and b each ran exactly once."""
    base = tmp_path / "slow"
    inv = send(srv, "/Saga/slow_failing", str(base))
    wait_until(lambda: lines(Path(f"{base}.a")), what="step a to start")
    cancel(srv, inv)
    wait_until(lambda: lines(Path(f"{base}.b")), what="the compensation to start")
    Path(f"{base}.release-a").touch()  # a fails now, while the compensation is still running

    def a_settled() -> bool:
        rows = query(srv, f"SELECT completed FROM sys_journal WHERE id = '{inv}' AND name = 'a'")
        return bool(rows) and rows[0]["completed"] == 1

    wait_until(a_settled, timeout=10, what="step a's failure to be journaled (not retried)")
    Path(f"{base}.release-b").touch()
    result = attach(srv, inv)
    assert result.status_code == 409, result.text
    assert result.json() == CANCELLED
    assert lines(Path(f"{base}.a")) == ["a"]
    assert lines(Path(f"{base}.b")) == ["b"]
