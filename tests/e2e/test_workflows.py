"""Workflows over real HTTP (digest §1.9, §4): ``run`` once per key, shared handlers and durable
promises, workflow attach/output, state visible to shared handlers."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

import pytest

from tests.harness import Server, unique_key, wait_until

APP = "tests/apps/semantics.py"
ENV = {"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s"}
ALREADY_INVOKED = {"code": 409, "message": "the workflow method was already invoked", "source": "invocation"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # dev mode logs "<id> suspended": the lifecycle test resolves the promise after run suspended.
    server = Server(APP, tmp_path_factory.mktemp("workflows") / "data", env=ENV, dev=True).start()
    yield server
    server.kill()


def test_workflow_lifecycle(srv: Server) -> None:
    key = unique_key()
    first = srv.call(f"/Approval/{key}/run/send", "alice")
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "Accepted"
    wf_id = first.json()["invocationId"]

    # Once per key: a second send collapses, a second sync run is refused.
    again = srv.call(f"/Approval/{key}/run/send", "mallory")
    assert again.status_code == 202, again.text
    assert again.json() == {"invocationId": wf_id, "status": "PreviouslyAccepted"}
    sync = srv.call(f"/Approval/{key}/run", "mallory")
    assert sync.status_code == 409, sync.text
    assert sync.json() == ALREADY_INVOKED
    assert sync.headers["x-restate-id"] == wf_id

    # State written by run is visible to shared handlers; the promise is not resolved yet.
    wait_until(
        lambda: srv.call(f"/Approval/{key}/status").content == b'"waiting"', timeout=10, what="run to wait"
    )
    # run waits on its promise longer than the inactivity timeout: it suspends (and must resume later).
    wait_until(lambda: f"{wf_id} suspended" in srv.log(), timeout=10, what="run to suspend")
    peek = srv.call(f"/Approval/{key}/peek")
    assert peek.status_code == 200, peek.text
    assert peek.content == b""  # peek of an unresolved promise: None
    not_ready = srv.get(f"/restate/workflow/Approval/{key}/output")
    assert not_ready.status_code == 470, not_ready.text

    with ThreadPoolExecutor(1) as pool:
        attached = pool.submit(srv.get, f"/restate/workflow/Approval/{key}/attach")
        done, _ = wait_futures([attached], timeout=0.3)
        assert not done, "workflow attach must block while run waits on its promise"
        decided = srv.call(f"/Approval/{key}/decide", "yes")
        assert decided.status_code == 200, decided.text
        assert decided.json() == "ok"
        result = attached.result(timeout=10)
    assert result.status_code == 200, result.text
    assert result.json() == "alice:yes"
    assert result.headers["x-restate-id"] == wf_id

    assert srv.call(f"/Approval/{key}/peek").json() == "yes"
    twice = srv.call(f"/Approval/{key}/decide", "no")
    assert twice.status_code == 409, twice.text
    assert twice.json() == {"code": 409, "message": "promise was already completed", "source": "invocation"}
    assert srv.call(f"/Approval/{key}/status").json() == "decided:yes"

    out = srv.get(f"/restate/workflow/Approval/{key}/output")
    assert out.status_code == 200, out.text
    assert out.json() == "alice:yes"
    # After completion: still once per key.
    after = srv.call(f"/Approval/{key}/run", "bob")
    assert after.status_code == 409
    assert after.json() == ALREADY_INVOKED
    resend = srv.call(f"/Approval/{key}/run/send", "bob")
    assert resend.json() == {"invocationId": wf_id, "status": "PreviouslyAccepted"}


def test_promise_resolved_before_run_awaits_it(srv: Server) -> None:
    key = unique_key()
    early = srv.call(f"/Approval/{key}/decide", "early")
    assert early.status_code == 200, early.text
    result = srv.call(f"/Approval/{key}/run", "bob", timeout=10)
    assert result.status_code == 200, result.text
    assert result.json() == "bob:early"


def test_workflow_keys_are_independent(srv: Server) -> None:
    k1, k2 = unique_key(), unique_key()
    s1 = srv.call(f"/Approval/{k1}/run/send", "one").json()["invocationId"]
    s2 = srv.call(f"/Approval/{k2}/run/send", "two").json()["invocationId"]
    assert s1 != s2
    assert srv.call(f"/Approval/{k2}/decide", "b").status_code == 200
    assert srv.get(f"/restate/workflow/Approval/{k2}/attach", timeout=10).json() == "two:b"
    assert srv.get(f"/restate/workflow/Approval/{k1}/output").status_code == 470
    assert srv.call(f"/Approval/{k1}/decide", "a").status_code == 200
    assert srv.get(f"/restate/workflow/Approval/{k1}/attach", timeout=10).json() == "one:a"


def test_idempotency_key_on_run_is_rejected(srv: Server) -> None:
    resp = srv.call(f"/Approval/{unique_key()}/run", "x", headers={"idempotency-key": "k"})
    assert resp.status_code == 400, resp.text
    assert resp.json() == {
        "code": 400,
        "message": "cannot use the idempotency key with workflow handlers. The handler invocation will already "
        "be idempotent by the workflow key itself.",
        "source": "ingress",
    }


def test_attach_to_a_workflow_never_started(srv: Server) -> None:
    for action in ("attach", "output"):
        resp = srv.get(f"/restate/workflow/Approval/{unique_key()}/{action}")
        assert resp.status_code == 404, resp.text
        assert resp.json() == {"code": 404, "message": "not found", "source": "invocation"}
