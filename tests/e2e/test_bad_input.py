"""Bad requests get precise 4xx answers in Restate's error shape, never a 500, and the server keeps
serving afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import Server

APP = "tests/apps/semantics.py"
LIMIT = 64 * 1024
ENV = {
    "UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s",
    "UNBROKEN_INGRESS__REQUEST_SIZE_LIMIT": str(LIMIT),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("bad-input") / "data", env=ENV).start()
    yield server
    assert server.proc is not None and server.proc.poll() is None, server.log()
    assert "Traceback" not in server.log(), server.log()
    server.kill()


def _ingress_error(resp: httpx.Response, status: int) -> str:
    """Assert Restate's ingress error shape; returns the message."""
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert set(body) == {"code", "message", "source"}, body
    assert body["code"] == status
    assert body["source"] == "ingress"
    assert resp.headers["x-restate-error-source"] == "ingress"
    assert isinstance(body["message"], str) and body["message"]
    return body["message"]


def _still_serving(srv: Server) -> None:
    resp = srv.call("/Echo/echo", "alive")
    assert resp.status_code == 200, resp.text
    assert resp.json() == "alive"


def test_unknown_service_and_handler(srv: Server) -> None:
    msg = _ingress_error(srv.call("/Nope/greet", "x"), 404)
    assert msg == "service 'Nope' not found, make sure to register the service before calling it."
    msg = _ingress_error(srv.call("/Echo/nope", "x"), 404)
    assert msg == (
        "the service 'Echo' exists, but the handler 'nope' was not found, check that the handler exists in the "
        "latest registered service version."
    )
    _ingress_error(srv.call(f"/Lock/{uuid.uuid4().hex}/nope", "x"), 404)
    _still_serving(srv)


@pytest.mark.parametrize("raw", [b"{not json", b'{"a": 1', b"'single'", b"\xff\xfe"], ids=repr)
def test_malformed_json_is_400(srv: Server, raw: bytes) -> None:
    msg = _ingress_error(srv.call("/Echo/echo", raw=raw), 400)
    assert "JSON" in msg, msg
    _still_serving(srv)


def test_wrong_content_type_is_400(srv: Server) -> None:
    resp = srv.call("/Echo/echo", raw=b"hello", headers={"content-type": "text/plain"})
    msg = _ingress_error(resp, 400)
    assert msg == "input validation error: Content-type 'text/plain' does not match 'application/json'"


def test_oversized_body_is_413(srv: Server) -> None:
    big = b'"' + b"x" * LIMIT + b'"'
    msg = _ingress_error(srv.call("/Echo/echo", raw=big), 413)
    assert str(LIMIT) in msg, msg
    # Just under the limit is fine.
    fits = b'"' + b"y" * (LIMIT - 10) + b'"'
    resp = srv.call("/Echo/echo", raw=fits)
    assert resp.status_code == 200, resp.text[:200]
    assert resp.content == fits
    _still_serving(srv)


def test_oversized_chunked_body_is_413(srv: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'"'
        for _ in range(LIMIT // 4096 + 2):
            yield b"z" * 4096
        yield b'"'

    resp = httpx.post(
        f"{srv.ingress}/Echo/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    _ingress_error(resp, 413)
    _still_serving(srv)


def test_missing_object_key_is_4xx(srv: Server) -> None:
    resp = srv.call("/Lock/step", "x")
    assert 400 <= resp.status_code < 500, resp.text
    _ingress_error(resp, resp.status_code)
    wf = srv.call("/Approval/run", "x")
    assert 400 <= wf.status_code < 500, wf.text
    _still_serving(srv)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405(srv: Server, method: str) -> None:
    msg = _ingress_error(srv.call("/Echo/echo", "x", method=method), 405)
    assert "method not allowed" in msg
    _still_serving(srv)


def test_bad_paths_are_400(srv: Server) -> None:
    _ingress_error(srv.call("/Echo/echo/extra/segments", "x"), 400)
    _ingress_error(srv.call("/Echo/echo/notsend", "x"), 400)
    _still_serving(srv)


@pytest.mark.parametrize(
    ("body", "problem"),
    [({"name": "ann"}, "age"), ({"name": "ann", "age": "old"}, "age"), ([1, 2], "Person"), ("ann", "Person")],
    ids=["missing-field", "wrong-type", "list", "string"],
)
def test_typed_handler_with_wrong_shape_is_400(srv: Server, body: Any, problem: str) -> None:
    resp = srv.call("/Echo/greet_person", body)
    assert resp.status_code == 400, resp.text
    err = resp.json()
    assert err["code"] == 400 and err["source"] == "invocation", err
    assert problem in err["message"], err
    ok = srv.call("/Echo/greet_person", {"name": "ann", "age": 7})
    assert ok.status_code == 200, ok.text
    assert ok.json() == "ann is 7"


def test_bad_idempotency_key_and_delay(srv: Server) -> None:
    _ingress_error(srv.call("/Echo/echo", "x", headers={"idempotency-key": ""}), 400)
    _ingress_error(srv.call("/Echo/echo/send?delay=-5s", "x"), 400)
    _ingress_error(srv.call("/Echo/echo/send?delay=", "x"), 400)
    _still_serving(srv)
