"""The full admin API on a real server: version, OpenAPI, deployments, services and handlers, PATCH of
service configuration (taking effect and surviving a restart), object state, invocation control with
Restate's status codes, and error handling (404 / 405 / 400, never 500 on bad input)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import Server, free_port, wait_until
from unbroken.admin.routes import ROUTES
from unbroken.core.ids import InvocationId

APP = "tests/apps/admin_app.py"
ENV = {"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s"}
SERVICES = {"Counter", "Inbox", "Patchable", "Sleeper", "Vote", "Worker"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("admin_api") / "data", env=ENV).start()
    yield server
    server.kill()


# ------------------------------------------------------------------------------------------- helpers
def raw(srv: Server, method: str, path: str, content: bytes) -> httpx.Response:
    return httpx.request(
        method,
        f"{srv.admin}{path}",
        content=content,
        headers={"content-type": "application/json"},
        timeout=10,
    )


def error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"message", "restate_code"} and body["restate_code"] is None, body
    return body["message"]  # type: ignore[no-any-return]


def status_of(srv: Server, inv: str) -> str | None:
    resp = srv.admin_request(
        "POST", "/query", {"query": f"SELECT status FROM sys_invocation WHERE id = '{inv}'"}
    )
    rows = resp.json()["rows"]
    return rows[0]["status"] if rows else None


def waiting(srv: Server, path: str) -> tuple[str, str]:
    """Send ``path`` (a handler that publishes an awakeable to Inbox/{box}); (invocation id, awakeable id)."""
    box = uuid.uuid4().hex
    sent = srv.call(f"{path}/send", box)
    assert sent.status_code == 202, sent.text

    def published() -> Any:
        resp = srv.call(f"/Inbox/{box}/get")
        return resp.json() if resp.content else None

    got = wait_until(published, timeout=10, what=f"{path} to publish its awakeable")
    assert got["id"] == sent.json()["invocationId"]
    return got["id"], got["aid"]


def resolve(srv: Server, aid: str, value: Any) -> None:
    resp = srv.call(f"/restate/awakeables/{aid}/resolve", value)
    assert resp.status_code == 202, resp.text


def unknown_id() -> str:
    return str(InvocationId.for_idempotent("Worker", None, "echo", uuid.uuid4().hex))


# ---------------------------------------------------------------------------------- general endpoints
def test_health_and_version(srv: Server) -> None:
    assert srv.admin_request("GET", "/health").status_code == 200
    version = srv.admin_request("GET", "/v3/version").json()
    assert version["min_admin_api_version"] == 2 and version["max_admin_api_version"] == 4
    assert version["ingress_endpoint"] == f"{srv.ingress}/"
    assert isinstance(version["version"], str)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_openapi_describes_exactly_the_routes(srv: Server) -> None:
    resp = srv.admin_request("GET", "/openapi")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] and doc["info"]["version"]
    documented = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops}
    routed = {(p, m) for p, methods in ROUTES.items() for m in methods}
    assert documented == routed
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    op_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(op_ids) == len(set(op_ids))
    for path, ops in doc["paths"].items():
        names = {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
        for op in ops.values():
            assert op["responses"], (path, op)
            assert {p["name"] for p in op.get("parameters", []) if p["in"] == "path"} == names, path
    # Every documented route answers (not the router's 404) on the real server.
    for path, methods in ROUTES.items():
        concrete = path.replace("{invocation_id}", "inv_1bad").replace("{", "").replace("}", "")
        for method in methods:
            answer = srv.admin_request(method, concrete)
            assert not answer.text.startswith('{"message":"not found'), (method, concrete, answer.text)
            assert answer.status_code < 500 or answer.status_code == 501, (method, concrete, answer.text)


def test_deployments(srv: Server) -> None:
    deployments = srv.admin_request("GET", "/deployments").json()["deployments"]
    assert len(deployments) == 1
    dep = deployments[0]
    assert dep["id"].startswith("dp_1") and dep["uri"].startswith("local:")
    assert dep["protocol_type"] == "BidiStream" and dep["created_at"].endswith("Z")
    assert {s["name"] for s in dep["services"]} == SERVICES
    assert all(s["revision"] == 1 for s in dep["services"])
    detailed = srv.admin_request("GET", f"/v4/deployments/{dep['id']}").json()
    assert detailed["id"] == dep["id"]
    assert {s["name"]: s["ty"] for s in detailed["services"]}["Vote"] == "Workflow"
    assert all(s["deployment_id"] == dep["id"] for s in detailed["services"])
    services = srv.admin_request("GET", "/services").json()["services"]
    assert {s["deployment_id"] for s in services} == {dep["id"]}
    assert "dp_1nope" in error(srv.admin_request("GET", "/deployments/dp_1nope"), 404)
    nobody = f"http://127.0.0.1:{free_port()}"  # registering needs an endpoint answering GET /discover
    assert "cannot reach" in error(srv.admin_request("POST", "/deployments", {"uri": nobody}), 400)


def test_handlers(srv: Server) -> None:
    handlers = srv.admin_request("GET", "/services/Counter/handlers").json()["handlers"]
    assert {h["name"]: h.get("ty") for h in handlers} == {
        "add": "Exclusive",
        "hold": "Exclusive",
        "read": "Shared",
    }
    add = srv.admin_request("GET", "/services/Counter/handlers/add").json()
    assert add["public"] is True and add["input_json_schema"] == {"type": "integer"}
    assert add["output_json_schema"] == {"type": "integer"}
    broken = srv.admin_request("GET", "/services/Worker/handlers/broken").json()
    assert "ty" not in broken
    assert (
        broken["retry_policy"]["max_attempts"] == 2 and broken["retry_policy"]["on_max_attempts"] == "Pause"
    )
    assert "nope" in error(srv.admin_request("GET", "/services/Counter/handlers/nope"), 404)
    assert "Nope" in error(srv.admin_request("GET", "/services/Nope/handlers"), 404)


# ------------------------------------------------------------------------------------------ PATCH
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inactivity_timeout": "2x"}, "inactivity_timeout"),
        ({"inactivity_timeout": 5}, "inactivity_timeout"),
        ({"abort_timeout": "-1s"}, "abort_timeout"),
        ({"public": "yes"}, "public"),
        ({"journal_retention": ""}, "journal_retention"),
        ({"workflow_completion_retention": "1d"}, "workflow_completion_retention"),
        ({"retry_policy": {"max_attempts": 0}}, "retry_policy.max_attempts"),
        ({"retry_policy": {"exponentiation_factor": 0.5}}, "retry_policy.exponentiation_factor"),
        ({"retry_policy": {"on_max_attempts": "Explode"}}, "retry_policy.on_max_attempts"),
        ({"retry_policy": {"initial_interval": "fast"}}, "retry_policy.initial_interval"),
        ({"retry_policy": "often"}, "retry_policy"),
        ({"inactivity_timout": "1s"}, "inactivity_timout"),
    ],
)
def test_patch_service_rejects_bad_values_naming_the_field(
    srv: Server, body: dict[str, Any], field: str
) -> None:
    before = srv.admin_request("GET", "/services/Worker").json()
    message = error(srv.admin_request("PATCH", "/services/Worker", body), 400)
    assert f"'{field}'" in message, message
    assert srv.admin_request("GET", "/services/Worker").json() == before


def test_patch_service_bad_requests(srv: Server) -> None:
    error(srv.admin_request("PATCH", "/services/Nope", {"public": True}), 404)
    assert "malformed JSON" in error(raw(srv, "PATCH", "/services/Worker", b'{"public": '), 400)
    error(srv.admin_request("PATCH", "/services/Worker", ["public"]), 400)


def test_patch_workflow_retention_and_retry_policy(srv: Server) -> None:
    resp = srv.admin_request(
        "PATCH",
        "/services/Vote",
        {
            "workflow_completion_retention": "2d",
            "idempotency_retention": "3h",
            "retry_policy": {"initial_interval": "100ms", "max_attempts": 9, "on_max_attempts": "kill"},
        },
    )
    assert resp.status_code == 200, resp.text
    meta = resp.json()
    assert meta["workflow_completion_retention"] == "2d" and meta["idempotency_retention"] == "3h"
    assert meta["retry_policy"] == {
        "initial_interval": "100ms",
        "exponentiation_factor": 2.0,
        "max_attempts": 9,
        "max_interval": "1m",
        "on_max_attempts": "Kill",
    }
    assert srv.admin_request("GET", "/services/Vote").json() == meta
    # A later PATCH of one retry field keeps the others.
    again = srv.admin_request("PATCH", "/services/Vote", {"retry_policy": {"max_attempts": 4}}).json()
    assert again["retry_policy"]["initial_interval"] == "100ms" and again["retry_policy"]["max_attempts"] == 4


def test_patch_public_false_makes_the_service_private(srv: Server) -> None:
    assert srv.admin_request("PATCH", "/services/Sleeper", {"public": False}).json()["public"] is False
    assert srv.call("/Sleeper/nap", 0).status_code == 400
    sql = {"query": "SELECT public FROM sys_service WHERE name = 'Sleeper'"}
    assert srv.admin_request("POST", "/query", sql).json()["rows"] == [{"public": False}]
    assert srv.admin_request("PATCH", "/services/Sleeper", {"public": True}).json()["public"] is True
    assert srv.call("/Sleeper/nap", 0).json() == "rested"


def test_patch_inactivity_timeout_takes_effect_and_survives_restart(server_factory: Any) -> None:
    server: Server = server_factory(APP, name="patched").start()  # default inactivity timeout: 1 minute
    before, _ = waiting(server, "/Patchable/wait_here")
    resp = server.admin_request("PATCH", "/services/Patchable", {"inactivity_timeout": "500ms"})
    assert resp.status_code == 200 and resp.json()["inactivity_timeout"] == "500ms"
    after, aid = waiting(server, "/Patchable/wait_here")
    wait_until(
        lambda: status_of(server, after) == "suspended", timeout=10, what="the new invocation to suspend"
    )
    assert status_of(server, before) == "running"  # started with the old timeout (1 minute)
    resolve(server, aid, "done")
    assert server.get(f"/restate/invocation/{after}/attach", timeout=10).json() == "done"
    assert server.admin_request("GET", "/services/Worker").json()["inactivity_timeout"] == "1m"

    server.restart()
    meta = server.admin_request("GET", "/services/Patchable").json()
    assert meta["inactivity_timeout"] == "500ms"
    third, _ = waiting(server, "/Patchable/wait_here")
    wait_until(
        lambda: status_of(server, third) == "suspended", timeout=10, what="suspension after the restart"
    )


def test_patched_options_are_a_committed_record_that_survives_sigkill(server_factory: Any) -> None:
    """PATCH is a ``ModifyService`` record committed to the store: after a SIGKILL the restarted server still
    has every patched option, and no side file holds them (before: ``service_overrides.json``)."""
    server: Server = server_factory(APP, name="patched_kill").start()
    first = server.admin_request(
        "PATCH",
        "/services/Vote",
        {
            "idempotency_retention": "3h",
            "journal_retention": "2h",
            "workflow_completion_retention": "2d",
            "retry_policy": {"initial_interval": "100ms", "on_max_attempts": "Kill"},
        },
    )
    assert first.status_code == 200, first.text
    second = server.admin_request(
        "PATCH",
        "/services/Vote",
        {"inactivity_timeout": "5s", "abort_timeout": "7s", "retry_policy": {"max_attempts": 4}},
    )
    assert second.status_code == 200, second.text
    patched = second.json()
    assert patched["idempotency_retention"] == "3h" and patched["inactivity_timeout"] == "5s"
    assert (
        patched["retry_policy"]["initial_interval"] == "100ms"
        and patched["retry_policy"]["max_attempts"] == 4
    )

    server.kill()  # SIGKILL: nothing of the shutdown path runs
    server.start()
    assert server.admin_request("GET", "/services/Vote").json() == patched
    listed = {s["name"]: s for s in server.admin_request("GET", "/services").json()["services"]}
    assert listed["Vote"] == patched and listed["Worker"]["inactivity_timeout"] == "1m"
    assert not (server.data_dir / "service_overrides.json").exists()
    assert sorted(p.name for p in server.data_dir.iterdir() if not p.name.startswith("unbroken.")) == []


# ----------------------------------------------------------------------------------------- state
def test_set_get_and_clear_object_state(srv: Server) -> None:
    key = uuid.uuid4().hex
    resp = srv.admin_request(
        "POST",
        "/services/Counter/state",
        {
            "object_key": key,
            "new_state": {"total": list(b"41"), "note": '"text"', "blob": [0, 255, 1]},
        },
    )
    assert resp.status_code == 202 and resp.content == b""
    state = srv.admin_request("GET", f"/services/Counter/state/{key}").json()
    assert state == {"blob": "AP8B", "note": '"text"', "total": "41"}
    assert srv.call(f"/Counter/{key}/add", 1).json() == 42  # the handler sees the new state
    # POST replaces the whole state.
    srv.admin_request("POST", "/v4/services/Counter/state", {"object_key": key, "new_state": {"total": "1"}})
    assert srv.admin_request("GET", f"/services/Counter/state/{key}").json() == {"total": "1"}
    assert srv.admin_request("DELETE", f"/services/Counter/state/{key}").status_code == 202
    assert srv.admin_request("GET", f"/services/Counter/state/{key}").json() == {}
    assert srv.call(f"/Counter/{key}/read").json() == {}


def test_state_key_with_slash_and_spaces(srv: Server) -> None:
    key = "a/b c"
    resp = srv.admin_request(
        "POST", "/services/Counter/state", {"object_key": key, "new_state": {"total": "5"}}
    )
    assert resp.status_code == 202
    assert srv.admin_request("GET", "/services/Counter/state/a%2Fb%20c").json() == {"total": "5"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"new_state": {}}, "object_key"),
        ({"object_key": 1, "new_state": {}}, "object_key"),
        ({"object_key": "k"}, "new_state"),
        ({"object_key": "k", "new_state": {"x": [256]}}, "new_state.x"),
        ({"object_key": "k", "new_state": {"x": 12}}, "new_state.x"),
        ({"object_key": "k", "new_state": {"x": [True]}}, "new_state.x"),
        ({"object_key": "k", "new_state": {}, "version": 5}, "version"),
        ({"object_key": "k", "new_state": {}, "scope": "s"}, "scope"),
        ({"object_key": "k", "new_state": {}, "extra": 1}, "extra"),
    ],
)
def test_set_state_rejects_bad_bodies(srv: Server, body: dict[str, Any], field: str) -> None:
    assert f"'{field}'" in error(srv.admin_request("POST", "/services/Counter/state", body), 400)


def test_set_state_with_a_version_applies_only_to_that_state(srv: Server) -> None:
    """Restate's CLI sends the version of the state it read (``state edit``): a stale one changes nothing."""
    key = "versioned"
    body = {"object_key": key, "new_state": {"total": "5"}}
    assert srv.admin_request("POST", "/services/Counter/state", body).status_code == 202
    # the version of {"total": b"5"} as Restate computes it (StateMutationVersion::from_user_state)
    digest = hashlib.sha256((0).to_bytes(8, "big") + b"\x01total\x025\x03").digest()
    current = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    stale = {"object_key": key, "new_state": {"total": "6"}, "version": "not-the-version"}
    resp = srv.admin_request("POST", "/services/Counter/state", stale)
    assert resp.status_code == 409 and current in resp.json()["message"], resp.text
    assert srv.admin_request("GET", f"/services/Counter/state/{key}").json() == {"total": "5"}
    fresh = {"object_key": key, "new_state": {"total": "7"}, "version": current}
    assert srv.admin_request("POST", "/services/Counter/state", fresh).status_code == 202
    assert srv.admin_request("GET", f"/services/Counter/state/{key}").json() == {"total": "7"}


def test_state_of_unknown_or_stateless_services(srv: Server) -> None:
    error(srv.admin_request("POST", "/services/Nope/state", {"object_key": "k", "new_state": {}}), 404)
    error(srv.admin_request("GET", "/services/Nope/state/k"), 404)
    assert "Worker" in error(
        srv.admin_request("POST", "/services/Worker/state", {"object_key": "k", "new_state": {}}), 400
    )
    error(srv.admin_request("GET", "/services/Worker/state/k"), 400)
    error(srv.admin_request("DELETE", "/services/Worker/state/k"), 400)
    error(raw(srv, "POST", "/services/Counter/state", b"not json"), 400)


# ----------------------------------------------------------------------------------- invocations
@pytest.mark.parametrize("action", ["cancel", "kill", "purge", "purge-journal", "pause", "resume"])
def test_control_of_unknown_and_malformed_ids(srv: Server, action: str) -> None:
    inv = unknown_id()
    assert error(srv.admin_request("PATCH", f"/invocations/{inv}/{action}"), 404) == (
        f"The requested invocation '{inv}' does not exist"
    )
    assert error(srv.admin_request("PATCH", f"/invocations/inv_1bogus/{action}"), 400) == (
        "The request field 'invocation_id' is invalid. Reason: bad format"
    )


def test_purge_and_purge_journal(srv: Server) -> None:
    running, aid = waiting(srv, "/Worker/wait")
    assert "not yet completed" in error(srv.admin_request("PATCH", f"/invocations/{running}/purge"), 409)
    error(srv.admin_request("PATCH", f"/invocations/{running}/purge-journal"), 409)
    resolve(srv, aid, "finished")
    assert srv.get(f"/restate/invocation/{running}/attach", timeout=10).json() == "finished"

    journal = {"query": f"SELECT count(*) AS n FROM sys_journal WHERE id = '{running}'"}
    assert srv.admin_request("POST", "/query", journal).json()["rows"][0]["n"] >= 3
    assert srv.admin_request("PATCH", f"/invocations/{running}/purge-journal").status_code == 200
    assert srv.admin_request("POST", "/query", journal).json()["rows"] == [{"n": 0}]
    assert srv.get(f"/restate/invocation/{running}/output").json() == "finished"  # the result is kept

    assert srv.admin_request("PATCH", f"/invocations/{running}/purge").status_code == 200
    assert srv.get(f"/restate/invocation/{running}/output").status_code == 404
    assert status_of(srv, running) is None
    error(srv.admin_request("PATCH", f"/invocations/{running}/purge"), 404)


def test_pause_and_resume_a_running_invocation(srv: Server) -> None:
    inv, aid = waiting(srv, "/Worker/wait")
    assert srv.admin_request("PATCH", f"/invocations/{inv}/pause").status_code == 200
    assert status_of(srv, inv) == "paused"
    resume = srv.admin_request("PATCH", f"/invocations/{inv}/resume?deployment=Latest")
    assert resume.status_code == 200, resume.text
    assert status_of(srv, inv) in ("running", "suspended")
    resolve(srv, aid, "after resume")
    assert srv.get(f"/restate/invocation/{inv}/attach", timeout=10).json() == "after resume"
    assert "already completed" in error(srv.admin_request("PATCH", f"/invocations/{inv}/resume"), 409)
    error(srv.admin_request("PATCH", f"/invocations/{inv}/pause"), 409)
    error(srv.admin_request("PATCH", f"/invocations/{inv}/resume?deployment=dp_1other"), 400)


def test_retries_exhausted_pause_then_resume_retries(srv: Server) -> None:
    inv = srv.call("/Worker/broken/send", "always broken").json()["invocationId"]
    wait_until(lambda: status_of(srv, inv) == "paused", timeout=10, what="retries to be exhausted")
    query = {"query": f"SELECT retry_count, last_failure FROM sys_invocation WHERE id = '{inv}'"}
    row = srv.admin_request("POST", "/query", query).json()["rows"][0]
    assert row["retry_count"] == 2 and "always broken" in row["last_failure"]
    assert srv.admin_request("PATCH", f"/invocations/{inv}/resume").status_code == 200

    def retried() -> bool:
        again = srv.admin_request("POST", "/query", query).json()["rows"][0]
        return again["retry_count"] == 4 and status_of(srv, inv) == "paused"

    wait_until(retried, timeout=10, what="the resumed invocation to fail twice more and pause again")
    assert srv.admin_request("PATCH", f"/invocations/{inv}/kill").status_code == 200


def test_resume_of_an_inboxed_invocation_is_425(srv: Server) -> None:
    key = uuid.uuid4().hex
    holder, aid = waiting(srv, f"/Counter/{key}/hold")
    queued = srv.call(f"/Counter/{key}/add/send", 1).json()["invocationId"]
    assert status_of(srv, queued) == "pending"
    assert "not started" in error(srv.admin_request("PATCH", f"/invocations/{queued}/resume"), 425)
    resolve(srv, aid, "released")
    assert srv.get(f"/restate/invocation/{queued}/attach", timeout=10).json() == 1
    assert status_of(srv, holder) == "completed"


def test_deprecated_delete_invocation(srv: Server) -> None:
    to_kill, _ = waiting(srv, "/Worker/wait")
    assert srv.admin_request("DELETE", f"/invocations/{to_kill}?mode=Kill").status_code == 202
    killed = srv.get(f"/restate/invocation/{to_kill}/attach", timeout=10)
    assert killed.status_code == 409 and killed.json()["message"] == "killed"
    to_cancel, _ = waiting(srv, "/Worker/wait")
    assert srv.admin_request("DELETE", f"/invocations/{to_cancel}").status_code == 202  # default: cancel
    assert srv.get(f"/restate/invocation/{to_cancel}/attach", timeout=10).json()["message"] == "cancelled"
    assert srv.admin_request("DELETE", f"/invocations/{to_cancel}?mode=purge").status_code == 202
    assert status_of(srv, to_cancel) is None
    assert "'mode'" in error(srv.admin_request("DELETE", f"/invocations/{to_kill}?mode=explode"), 400)
    error(srv.admin_request("DELETE", f"/invocations/{unknown_id()}?mode=kill"), 404)
    error(srv.admin_request("DELETE", "/invocations/inv_1bogus"), 400)


# ---------------------------------------------------------------------------------------- errors
def test_unknown_routes_and_wrong_methods(srv: Server) -> None:
    for path in (
        "/nothing",
        "/v5/services",
        "/services/Worker/handlers/echo/extra",
        "/invocations/x/restart",
    ):
        error(srv.admin_request("GET", path), 404)
    for method, path in (
        ("POST", "/health"),
        ("DELETE", "/services"),
        ("GET", "/invocations/x/kill"),
        ("PUT", "/services/Worker"),
        ("GET", "/query"),
        ("POST", "/services/Worker/state/k"),
    ):
        assert "not allowed" in error(srv.admin_request(method, path), 405)


def test_garbage_bodies_never_cause_a_500(srv: Server) -> None:
    bodies = [b"", b"{", b"null", b"[]", b"42", b'"s"', b"\xff\xfe", b'{"query": null}', b"{}" * 1000]
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=srv.admin, headers=headers, timeout=10) as client:
        for path, methods in ROUTES.items():
            concrete = path.replace("{service}", "Counter").replace("{key}", "k").replace("{handler}", "add")
            concrete = concrete.replace("{invocation_id}", unknown_id()).replace("{deployment}", "dp_1x")
            for method in methods:
                for body in bodies:
                    resp = client.request(method, concrete, content=body)
                    assert resp.status_code < 500 or resp.status_code == 501, (
                        method,
                        concrete,
                        body,
                        resp.text,
                    )
