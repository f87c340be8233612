"""Awakeables over real HTTP (digest §1.10): ids, resolve/reject endpoints, repeats and bad ids; and
suspension: an invocation waiting longer than the inactivity timeout suspends and resumes by replay."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Server, read_box, unique_key, wait_until
from unbroken.core.ids import InvocationId, awakeable_id

APP = "tests/apps/semantics.py"
# A short inactivity timeout makes waiting invocations suspend; dev mode logs "<id> suspended".
ENV = {"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s"}
AWAKEABLE_ID = re.compile(r"^sign_1[A-Za-z0-9_-]+$")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("awakeables") / "data", env=ENV, dev=True).start()
    yield server
    server.kill()


def _waiting(srv: Server, value: Any = None, **extra: str) -> tuple[str, str]:
    """Start ``Echo/wait_for``; returns (invocation id, awakeable id) once it waits."""
    box = unique_key()
    resp = srv.call("/Echo/wait_for/send", {"box": box, "value": value, **extra})
    assert resp.status_code == 202, resp.text
    published = read_box(srv, box)
    assert published["id"] == resp.json()["invocationId"]
    return published["id"], published["aid"]


def _result(srv: Server, inv: str) -> Any:
    resp = srv.get(f"/restate/invocation/{inv}/attach", timeout=15)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_awakeable_id_format(srv: Server) -> None:
    inv, aid = _waiting(srv)
    assert AWAKEABLE_ID.match(aid), aid
    srv.call(f"/restate/awakeables/{aid}/resolve", None)
    _result(srv, inv)


@pytest.mark.parametrize("prefix", ["/restate/awakeables", "/restate/a"], ids=["long", "short"])
def test_resolve(srv: Server, prefix: str) -> None:
    inv, aid = _waiting(srv, "in")
    resp = srv.call(f"{prefix}/{aid}/resolve", {"approved": True, "by": ["x"]})
    assert resp.status_code == 202, resp.text
    assert resp.content == b""
    assert _result(srv, inv) == {"input": "in", "resolved": {"approved": True, "by": ["x"]}}


@pytest.mark.parametrize("prefix", ["/restate/awakeables", "/restate/a"], ids=["long", "short"])
def test_reject_is_a_terminal_error_in_the_handler(srv: Server, prefix: str) -> None:
    inv, aid = _waiting(srv, "r")
    resp = srv.call(f"{prefix}/{aid}/reject", raw=b"no way", headers={"content-type": "text/plain"})
    assert resp.status_code == 202, resp.text
    assert _result(srv, inv) == {"input": "r", "rejected": "no way", "code": 500}


def test_resolving_twice_is_harmless(srv: Server) -> None:
    inv, aid = _waiting(srv)
    assert srv.call(f"/restate/awakeables/{aid}/resolve", "first").status_code == 202
    assert srv.call(f"/restate/awakeables/{aid}/resolve", "second").status_code == 202
    assert _result(srv, inv) == {"input": None, "resolved": "first"}
    # Also after the invocation completed.
    assert srv.call(f"/restate/awakeables/{aid}/reject", raw=b"late").status_code == 202
    assert _result(srv, inv) == {"input": None, "resolved": "first"}


def test_bad_awakeable_id_is_400(srv: Server) -> None:
    for bad in ("sign_1bogus", "nonsense", "inv_1abc"):
        resp = srv.call(f"/restate/awakeables/{bad}/resolve", "x")
        assert resp.status_code == 400, (bad, resp.text)
        body = resp.json()
        assert body["code"] == 400 and body["source"] == "ingress", body
        assert bad in body["message"], body


def test_awakeable_endpoints_are_post_only(srv: Server) -> None:
    inv, aid = _waiting(srv)
    resp = srv.get(f"/restate/awakeables/{aid}/resolve")
    assert resp.status_code == 405, resp.text
    srv.call(f"/restate/awakeables/{aid}/resolve", "ok")
    assert _result(srv, inv)["resolved"] == "ok"


def test_waiting_invocation_suspends_and_resumes(srv: Server, tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    inv, aid = _waiting(srv, "s", attempts=str(starts))
    wait_until(lambda: f"{inv} suspended" in srv.log(), timeout=10, what="the invocation to suspend")
    resp = srv.call(f"/restate/awakeables/{aid}/resolve", "after suspension")
    assert resp.status_code == 202, resp.text
    assert _result(srv, inv) == {"input": "s", "resolved": "after suspension"}
    # The handler body ran twice: the first attempt (which suspended) and the replay that resumed it.
    assert starts.read_text().splitlines() == ["x", "x"]


def _row(srv: Server, inv: str) -> dict[str, Any]:
    query = f"SELECT status, journal_size, retry_count FROM sys_invocation WHERE id = '{inv}'"
    resp = srv.admin_request("POST", "/query", {"query": query})
    assert resp.status_code == 200, resp.text
    (row,) = resp.json()["rows"]
    return row  # type: ignore[no-any-return]


def test_an_index_never_allocated_is_refused_and_leaves_the_invocation_alone(
    srv: Server, tmp_path: Path
) -> None:
    """A started invocation's computed awakeable ids past the ones it created resolve nothing (it used to
    be accepted and stored, and the handler's next ``ctx.awakeable()`` got the planted value at once)."""
    starts = tmp_path / "starts"
    inv, aid = _waiting(srv, "s", attempts=str(starts))
    wait_until(lambda: f"{inv} suspended" in srv.log(), timeout=10, what="the invocation to suspend")
    before = _row(srv, inv)
    assert before["status"] == "suspended", before
    for idx in (18, 19, 500):
        planted = awakeable_id(InvocationId.parse(inv), idx)
        for verb in ("resolve", "reject"):
            resp = srv.call(f"/restate/awakeables/{planted}/{verb}", "planted")
            assert resp.status_code == 404, resp.text
            assert (
                resp.json()["message"]
                == f"awakeable '{planted}' not found: its invocation has not created it"
            )
    assert _row(srv, inv) == before  # not woken, nothing journaled
    assert starts.read_text().splitlines() == ["x"]
    assert srv.call(f"/restate/awakeables/{aid}/resolve", "real").status_code == 202
    assert _result(srv, inv) == {"input": "s", "resolved": "real"}


def test_cancel_reaches_a_suspended_invocation(srv: Server, tmp_path: Path) -> None:
    box, notes = unique_key(), tmp_path / "notes"
    sent = srv.call("/Caller/cancellable/send", {"box": box, "path": str(notes)})
    assert sent.status_code == 202, sent.text
    inv = sent.json()["invocationId"]
    read_box(srv, box)
    wait_until(lambda: f"{inv} suspended" in srv.log(), timeout=10, what="the invocation to suspend")
    cancel = srv.admin_request("PATCH", f"/invocations/{inv}/cancel")
    assert cancel.status_code in (200, 202), cancel.text
    resp = srv.get(f"/restate/invocation/{inv}/attach", timeout=15)
    assert resp.status_code == 409, resp.text
    assert resp.json() == {"code": 409, "message": "cancelled", "source": "invocation"}
    assert notes.read_text().splitlines() == [json.dumps("compensated 409 cancelled")]
