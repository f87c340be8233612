"""Cancellation and failing ``ctx.run`` steps on a real ``unbroken serve``: a cancel reaches a handler whose
step keeps failing (no new side effect first, compensation once), values that cannot be serialized pause
at once, failed steps are logged with their traceback kept, explain tells the truth after a cancel, a
``ctx.run`` never awaited is warned about, and a cancel reaches a whole A→B→A call tree."""

from __future__ import annotations

import subprocess
import sys
import uuid
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
    proc = subprocess.run(
        [sys.executable, "-m", "unbroken.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
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


# ------------------------------------------------------------------------------------------ hardening 13
def test_cancelling_the_root_of_a_call_cycle_cancels_the_queued_inner_call(
    srv: Server, tmp_path: Path
) -> None:
    """A→B→A on one key: the inner A call waits behind the root's lock. Cancelling the root cancels the
    whole tree before the lock is released: the inner call never runs and commits nothing."""
    key, notes = uuid.uuid4().hex, tmp_path / "inner"
    root = send(srv, f"/Cyc/{key}/outer", {"mid": uuid.uuid4().hex, "path": str(notes)})

    def queued_inner() -> str | None:
        rows = query(srv, f"SELECT id, status FROM sys_invocation WHERE target = 'Cyc/{key}/inner'")
        return rows[0]["id"] if rows and rows[0]["status"] == "pending" else None

    inner = wait_until(queued_inner, timeout=10, what="the inner call to queue behind the root's lock")
    cancel(srv, root)
    for inv in (root, inner):
        out = attach(srv, inv)
        assert out.status_code == 409, out.text
        assert out.json() == CANCELLED
    assert lines(notes) == []
    peek = srv.call(f"/Cyc/{key}/peek")
    assert peek.status_code == 200 and peek.content in (b"", b"null"), peek.text  # never set


def log_lines(srv: Server, *parts: str) -> list[str]:
    text = srv.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if all(p in line for p in parts)]


# ------------------------------------------------------------------------------- first-hour 3
def test_a_run_value_that_cannot_be_serialized_pauses_at_once(srv: Server, tmp_path: Path) -> None:
    """No retry fixes it and each retry would repeat the side effect: paused after one execution, with a
    message naming the step, the type and what would serialize it (log, describe, explain)."""
    notes = tmp_path / "made"
    inv = send(srv, "/Steps/unserializable", str(notes))
    wait_until(lambda: status(srv, inv) == "paused", timeout=10, what="the invocation to pause")
    assert lines(notes) == ["made"]
    for text in (
        explain(srv, inv)["summary"],
        cli(srv, "invocations", "describe", inv),
        cli(srv, "explain", inv),
    ):
        assert "ctx.run 'make opaque'" in text, text
        assert "Opaque" in text and "serde=" in text, text
    warned = wait_until(lambda: log_lines(srv, inv, "WARNING", "paused", "make opaque"), what="the warning")
    assert len(warned) == 1, warned
    # Resuming (after a fix is deployed) runs the step again: once, and pauses again here.
    assert srv.admin_request("PATCH", f"/invocations/{inv}/resume").status_code == 200
    wait_until(lambda: len(lines(notes)) == 2 and status(srv, inv) == "paused", what="the resumed attempt")
    assert lines(notes) == ["made", "made"]


# ------------------------------------------------------------------------------- hardening 5
@pytest.mark.parametrize("deep", [False, True], ids=["opaque", "nested-too-deep"])
def test_a_handler_output_that_cannot_be_serialized_pauses_at_once(
    srv: Server, tmp_path: Path, deep: bool
) -> None:
    """No retry fixes it (each would run the handler again): paused after one execution, with a message
    naming the handler, the type and what would serialize it."""
    notes = tmp_path / "ran"
    inv = send(srv, "/Steps/unserializable_output", {"path": str(notes), "deep": deep})
    wait_until(lambda: status(srv, inv) == "paused", timeout=10, what="the invocation to pause")
    assert lines(notes) == ["ran"]
    text = explain(srv, inv)["summary"]
    assert "the handler Steps/unserializable_output returned" in text, text
    assert ("type list" if deep else "type cancel_app.Opaque") in text and "output_serde" in text, text


@pytest.mark.parametrize("deep", [False, True], ids=["opaque", "nested-too-deep"])
def test_a_state_value_that_cannot_be_serialized_pauses_at_once(
    srv: Server, tmp_path: Path, deep: bool
) -> None:
    """``ctx.set`` of such a value: paused at once (not retried for an hour with the key held), the handler
    not run past the set, a message naming the state key, the type and what would serialize it."""
    notes = tmp_path / "ran"
    inv = send(srv, f"/Keeper/{uuid.uuid4().hex}/keep", {"path": str(notes), "deep": deep})
    wait_until(lambda: status(srv, inv) == "paused", timeout=10, what="the invocation to pause")
    assert lines(notes) == ["ran"]
    text = explain(srv, inv)["summary"]
    assert "ctx.set('thing') of Keeper/keep" in text, text
    assert ("type list" if deep else "type cancel_app.Opaque") in text and "serde=" in text, text


# ------------------------------------------------------------------------------- first-hour 5
@pytest.fixture(scope="module")
def dev_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("cancel-dev") / "data", env=ENV, dev=True).start()
    yield server
    server.kill()


@pytest.mark.parametrize("mode", ["serve", "dev"])
def test_a_failed_step_is_logged_once_per_attempt_and_its_traceback_kept(
    mode: str, srv: Server, dev_srv: Server, tmp_path: Path
) -> None:
    server = dev_srv if mode == "dev" else srv
    path = tmp_path / "charges"
    inv = send(server, "/Steps/flaky", str(path))
    wait_until(lambda: len(lines(path)) >= 3, timeout=15, what="three failed attempts")
    for attempt in (1, 2):
        logged = wait_until(
            lambda a=attempt: log_lines(server, inv, f"attempt {a} failed"), what="the log line"
        )
        assert len(logged) == 1, logged
        assert "WARNING" in logged[0] and "ctx.run 'charge'" in logged[0] and "retry" in logged[0], logged[0]
        assert "ConnectionError('payment service unreachable')" in logged[0], logged[0]
    described = cli(server, "invocations", "describe", inv)
    assert "Traceback" in described and "in charge" in described, described
    assert "Traceback" in cli(server, "explain", inv)
    (tmp_path / "charges.ok").touch()
    done = attach(server, inv, timeout=15)
    assert done.status_code == 200 and done.json() == "charged", done.text


# ------------------------------------------------------------------------------- first-hour 9
def test_a_run_never_awaited_is_warned_about_by_name(srv: Server, tmp_path: Path) -> None:
    inv = send(srv, "/Steps/forgets", str(tmp_path / "ran"))
    assert attach(srv, inv).json() == "done"
    warned = wait_until(
        lambda: log_lines(srv, inv, "WARNING", "'forgotten step'", "never awaited"), what="warning"
    )
    assert len(warned) == 1, warned


# ------------------------------------------------------------------------------- first-hour 7
def test_explain_after_a_cancel_says_the_compensation_runs(srv: Server, tmp_path: Path) -> None:
    base = tmp_path / "nap"
    inv = send(srv, "/Saga/napping", str(base))
    wait_until(
        lambda: query(srv, f"SELECT 1 FROM sys_journal WHERE id = '{inv}' AND name = 'long nap'"),
        what="the sleep to be journaled",
    )
    assert "sleeping until" in explain(srv, inv)["summary"]
    cancel(srv, inv)
    wait_until(lambda: lines(Path(f"{base}.undo")), what="the compensation to start")
    body = explain(srv, inv)
    summary = body["summary"]
    assert "sleeping until" not in summary and "next await" not in summary, summary
    assert "ctx.run 'undo'" in summary and "compensation" in summary, summary
    cancelled = [r for r in body["reasons"] if r["kind"] == "cancel_requested"]
    assert cancelled and cancelled[0]["handler_got_it"] is True, body["reasons"]
    Path(f"{base}.release").touch()
    assert attach(srv, inv).json() == CANCELLED


def test_explain_names_the_awakeable_of_a_running_handler_before_it_suspends(
    srv: Server, tmp_path: Path
) -> None:
    """The inactivity timeout is the default minute here: the handler is running, not suspended."""
    published = tmp_path / "aid"
    inv = send(srv, "/Saga/awaits_awakeable", str(published))
    aid = wait_until(lambda: "".join(lines(published)), what="the awakeable id")

    def named() -> str | None:
        summary = str(explain(srv, inv)["summary"])
        return summary if aid in summary else None

    summary = wait_until(named, timeout=5, what="explain to name the awakeable")
    assert status(srv, inv) == "running" and "not resolved yet" in summary, summary
    assert srv.call(f"/restate/awakeables/{aid}/resolve", "ok").status_code == 202
    assert attach(srv, inv).json() == "ok"
