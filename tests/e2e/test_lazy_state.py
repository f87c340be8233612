"""Lazy state over a real server (``enable_lazy_state``, tests/apps/lazy_app.py): a lazy-state object gets,
sets and reads back its state; a SIGKILL mid-way replays the journaled reads; the admin API reports it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Server, unique_key, wait_until

APP = "tests/apps/lazy_app.py"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("lazy") / "data").start()
    yield server
    server.kill()


def _call(srv: Server, path: str, body: Any = None) -> Any:
    resp = srv.call(path, body)
    assert resp.status_code == 200, resp.text
    return resp.json() if resp.content else None


def test_a_lazy_state_object_gets_sets_and_reads_back(srv: Server) -> None:
    key = unique_key()
    assert _call(srv, f"/LazyBox/{key}/fill", {"n": 50, "size": 100_000}) == 50  # 5 MB it never reads
    assert _call(srv, f"/LazyBox/{key}/add", {"by": 2}) == {"before": 0, "after": 2, "keys": ["count"]}
    assert _call(srv, f"/LazyBox/{key}/add", {"by": 3}) == {"before": 2, "after": 5, "keys": ["count"]}
    assert _call(srv, f"/LazyBox/{key}/count") == 5


def test_a_kill_mid_way_replays_the_journaled_reads(srv: Server, tmp_path: Path) -> None:
    """The first read is journaled before the kill; the admin API changes the state before the replay
    reaches it: the replay still reads the journaled value (a fresh read would see 100)."""
    key = unique_key()
    _call(srv, f"/LazyBox/{key}/add", {"by": 1})
    sent = srv.call(f"/LazyBox/{key}/add/send", {"by": 10, "dir": str(tmp_path)})
    assert sent.status_code == 202, sent.text
    inv = sent.json()["invocationId"]
    runs = tmp_path / "gate.runs"
    wait_until(runs.exists, 10, what="the gate step to start")
    srv.kill()
    srv.start()
    wait_until(lambda: len(runs.read_text().splitlines()) == 2, 10, what="the gate step to run again")
    changed = srv.admin_request(
        "POST", "/services/LazyBox/state", {"object_key": key, "new_state": {"count": "100"}}
    )
    assert changed.status_code in (200, 202), changed.text
    (tmp_path / "go").touch()
    done = srv.get(f"/restate/invocation/{inv}/attach", timeout=20)
    assert done.status_code == 200, done.text
    assert done.json() == {"before": 1, "after": 11, "keys": ["count"]}  # after: its own write, known locally
    assert _call(srv, f"/LazyBox/{key}/count") == 100
    query = f"SELECT entry_type FROM sys_journal WHERE id = '{inv}' ORDER BY \"index\""
    rows = srv.admin_request("POST", "/query", {"query": query}).json()["rows"]
    types = [row["entry_type"] for row in rows]
    assert types[:4] == [
        "Command: Input",
        "Command: GetLazyState",
        "Notification: GetLazyState",
        "Command: SetState",
    ]
    assert "Command: GetLazyStateKeys" in types and "Notification: GetLazyStateKeys" in types


def test_the_admin_api_reports_lazy_state(srv: Server) -> None:
    meta = srv.admin_request("GET", "/services/LazyBox")
    assert meta.status_code == 200, meta.text
    assert meta.json()["enable_lazy_state"] is True
