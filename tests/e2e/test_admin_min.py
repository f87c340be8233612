"""The admin API minimum (digest §2) on a real server: health, service metadata, invocation control
status codes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Server, wait_until
from unbroken.core.ids import InvocationId

APP = "tests/apps/semantics.py"
ENV = {"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s"}
BAD_ID = {"message": "The request field 'invocation_id' is invalid. Reason: bad format", "restate_code": None}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("admin") / "data", env=ENV).start()
    yield server
    server.kill()


def _services(srv: Server) -> dict[str, dict[str, Any]]:
    resp = srv.admin_request("GET", "/services")
    assert resp.status_code == 200, resp.text
    return {s["name"]: s for s in resp.json()["services"]}


def test_health(srv: Server) -> None:
    resp = srv.admin_request("GET", "/health")
    assert resp.status_code == 200
    assert resp.content == b""
    ingress = srv.get("/restate/health")
    assert ingress.status_code == 200
    assert ingress.json() == {"services": ["Approval", "Box", "Caller", "Echo", "Lock"]}


def test_services_carry_restate_service_metadata(srv: Server) -> None:
    services = _services(srv)
    assert set(services) == {"Approval", "Box", "Caller", "Echo", "Lock"}
    assert {n: s["ty"] for n, s in services.items()} == {
        "Approval": "Workflow",
        "Box": "VirtualObject",
        "Caller": "Service",
        "Echo": "Service",
        "Lock": "VirtualObject",
    }
    for svc in services.values():
        assert svc["deployment_id"].startswith("dp_"), svc
        assert isinstance(svc["revision"], int) and svc["revision"] >= 1
        assert svc["public"] is True
        assert svc["idempotency_retention"] == "1d"
        assert svc["journal_retention"] == "1d"
        assert svc["inactivity_timeout"] == "1s"  # from UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT
        assert svc["abort_timeout"] == "10m"
        assert svc["enable_lazy_state"] is False
        assert svc["retry_policy"] == {
            "initial_interval": "500ms",
            "exponentiation_factor": 2.0,
            "max_attempts": 70,
            "max_interval": "1m",
            "on_max_attempts": "Pause",
        }
        for h in svc["handlers"]:
            assert h["public"] is True, h
    handlers = {n: {h["name"]: h.get("ty") for h in s["handlers"]} for n, s in services.items()}
    assert handlers["Lock"] == {
        "hold": "Exclusive",
        "step": "Exclusive",
        "peek": "Shared",
        "state_ops": "Exclusive",
        "read_state": "Shared",
    }
    assert handlers["Approval"] == {
        "run": "Workflow",
        "decide": "Shared",
        "peek": "Shared",
        "status": "Shared",
    }
    assert set(handlers["Echo"]) == {"echo", "void", "fail", "wait_for", "greet_person"}
    assert set(handlers["Echo"].values()) == {None}  # plain service handlers have no ty
    assert services["Approval"]["workflow_completion_retention"] == "1d"
    assert "workflow_completion_retention" not in services["Lock"]


def test_single_service(srv: Server) -> None:
    one = srv.admin_request("GET", "/services/Lock")
    assert one.status_code == 200, one.text
    assert one.json() == _services(srv)["Lock"]
    missing = srv.admin_request("GET", "/services/Nope")
    assert missing.status_code == 404, missing.text
    assert missing.json()["restate_code"] is None
    assert "Nope" in missing.json()["message"]


def test_versioned_prefix(srv: Server) -> None:
    resp = srv.admin_request("GET", "/v4/services")
    assert resp.status_code == 200
    assert {s["name"] for s in resp.json()["services"]} == {"Approval", "Box", "Caller", "Echo", "Lock"}


@pytest.mark.parametrize("action", ["cancel", "kill"])
def test_control_of_unknown_and_malformed_ids(srv: Server, action: str) -> None:
    unknown = str(InvocationId.for_idempotent("Echo", None, "echo", uuid.uuid4().hex))
    resp = srv.admin_request("PATCH", f"/invocations/{unknown}/{action}")
    assert resp.status_code == 404, resp.text
    assert resp.json() == {
        "message": f"The requested invocation '{unknown}' does not exist",
        "restate_code": None,
    }
    bad = srv.admin_request("PATCH", f"/invocations/inv_1bogus/{action}")
    assert bad.status_code == 400, bad.text
    assert bad.json() == BAD_ID


def test_kill_of_a_completed_invocation_is_409(srv: Server) -> None:
    done = srv.call("/Echo/echo", "done")
    inv = done.headers["x-restate-id"]
    resp = srv.admin_request("PATCH", f"/invocations/{inv}/kill")
    assert resp.status_code == 409, resp.text
    assert resp.json() == {"message": f"The invocation '{inv}' was already completed.", "restate_code": None}
    # The stored result is untouched.
    assert srv.get(f"/restate/invocation/{inv}/output").json() == "done"


def test_cancel_is_202_and_kill_is_200_on_running_invocations(srv: Server) -> None:
    def waiter() -> tuple[str, str]:
        box = uuid.uuid4().hex
        sent = srv.call("/Echo/wait_for/send", {"box": box})
        assert sent.status_code == 202, sent.text

        def published() -> Any:
            resp = srv.call(f"/Box/{box}/get")
            return resp.json() if resp.content else None

        return sent.json()["invocationId"], wait_until(published, timeout=10, what="the waiter")["aid"]

    to_cancel, _ = waiter()
    cancel = srv.admin_request("PATCH", f"/invocations/{to_cancel}/cancel")
    assert cancel.status_code == 202, cancel.text
    assert cancel.content == b""
    # wait_for catches the terminal error and reports it as its result.
    cancelled = srv.get(f"/restate/invocation/{to_cancel}/attach", timeout=10)
    assert cancelled.json() == {"input": None, "rejected": "cancelled", "code": 409}

    to_kill, _ = waiter()
    kill = srv.admin_request("PATCH", f"/invocations/{to_kill}/kill")
    assert kill.status_code == 200, kill.text
    assert kill.content == b""
    killed = srv.get(f"/restate/invocation/{to_kill}/attach", timeout=10)
    assert killed.status_code == 409
    assert killed.json() == {"code": 409, "message": "killed", "source": "invocation"}


def test_wrong_method_and_unknown_path(srv: Server) -> None:
    assert srv.admin_request("POST", "/health").status_code == 405
    assert srv.admin_request("GET", f"/invocations/{uuid.uuid4().hex}/kill").status_code == 405
    assert srv.admin_request("GET", "/nothing-here").status_code == 404
