"""Virtual objects over real HTTP: one exclusive handler per key at a time, in arrival order; other keys
and shared handlers are not blocked; K/V state operations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Server, read_box, unique_key, wait_until

APP = "tests/apps/semantics.py"
ENV = {"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # dev mode logs "<id> suspended": the lock must stay held while its holder is suspended.
    server = Server(APP, tmp_path_factory.mktemp("objects") / "data", env=ENV, dev=True).start()
    yield server
    server.kill()


def _send(srv: Server, path: str, body: Any) -> str:
    resp = srv.call(path + "/send", body)
    assert resp.status_code == 202, resp.text
    return resp.json()["invocationId"]  # type: ignore[no-any-return]


def test_exclusive_handlers_queue_in_arrival_order(srv: Server) -> None:
    obj, box = unique_key(), unique_key()
    hold_id = _send(srv, f"/Lock/{obj}/hold", box)
    aid = read_box(srv, box)["aid"]  # the holder is running and waits on its awakeable
    wait_until(lambda: f"{hold_id} suspended" in srv.log(), timeout=10, what="the holder to suspend")
    queued = [_send(srv, f"/Lock/{obj}/step", label) for label in ("a", "b", "c")]

    # A shared handler is not blocked by the exclusive holder and sees its committed state.
    peek = srv.call(f"/Lock/{obj}/peek", timeout=5)
    assert peek.status_code == 200, peek.text
    assert peek.json() == ["hold-start"]
    # The queued calls have not run.
    for inv in queued:
        out = srv.get(f"/restate/invocation/{inv}/output")
        assert out.status_code == 470, out.text
    # Another key of the same object runs at once.
    other = srv.call(f"/Lock/{unique_key()}/step", "elsewhere", timeout=5)
    assert other.status_code == 200, other.text
    assert other.json() == ["elsewhere"]

    resolved = srv.call(f"/restate/awakeables/{aid}/resolve", None)
    assert resolved.status_code == 202, resolved.text
    held = srv.get(f"/restate/invocation/{hold_id}/attach", timeout=10)
    assert held.status_code == 200, held.text
    assert held.json() == ["hold-start", "hold-end"]
    results = [srv.get(f"/restate/invocation/{inv}/attach", timeout=10).json() for inv in queued]
    assert results == [
        ["hold-start", "hold-end", "a"],
        ["hold-start", "hold-end", "a", "b"],
        ["hold-start", "hold-end", "a", "b", "c"],
    ]
    assert srv.call(f"/Lock/{obj}/peek").json() == ["hold-start", "hold-end", "a", "b", "c"]


def test_sync_calls_on_one_key_are_serialized(srv: Server) -> None:
    obj = unique_key()
    assert srv.call(f"/Lock/{obj}/step", "1").json() == ["1"]
    assert srv.call(f"/Lock/{obj}/step", "2").json() == ["1", "2"]
    assert srv.call(f"/Lock/{obj}/peek").json() == ["1", "2"]


def test_state_get_set_clear_clear_all_and_keys(srv: Server) -> None:
    obj = unique_key()

    def ops(*operations: list[Any]) -> dict[str, Any]:
        resp = srv.call(f"/Lock/{obj}/state_ops", list(operations))
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def read() -> dict[str, Any]:
        resp = srv.call(f"/Lock/{obj}/read_state")
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    assert read() == {"keys": [], "values": {}}
    after_set = ops(["set", "a", 1], ["set", "b", {"x": [1, None]}], ["set", "c", "s"])
    assert after_set == {"keys": ["a", "b", "c"], "values": {"a": 1, "b": {"x": [1, None]}, "c": "s"}}
    assert read() == after_set  # persisted, visible to the next (shared) invocation
    assert ops(["set", "a", 2], ["clear", "b"]) == {"keys": ["a", "c"], "values": {"a": 2, "c": "s"}}
    assert read() == {"keys": ["a", "c"], "values": {"a": 2, "c": "s"}}
    assert ops(["clear", "never-set"]) == {"keys": ["a", "c"], "values": {"a": 2, "c": "s"}}
    assert ops(["clear_all"], ["set", "z", True]) == {"keys": ["z"], "values": {"z": True}}
    assert ops(["clear_all"]) == {"keys": [], "values": {}}
    assert read() == {"keys": [], "values": {}}
    # State is per key: another key of the same object never saw any of it.
    other = srv.call(f"/Lock/{unique_key()}/read_state").json()
    assert other == {"keys": [], "values": {}}


def test_missing_state_reads_as_none(srv: Server) -> None:
    # restate-sdk serializes a None result as an empty body (JsonSerde), so does Unbroken.
    resp = srv.call(f"/Box/{unique_key()}/get")
    assert resp.status_code == 200, resp.text
    assert resp.content == b""
