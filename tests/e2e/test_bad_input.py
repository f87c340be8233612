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
    # Refused by the ingress before an invocation exists (it used to be accepted, then fail in the handler).
    assert err["code"] == 400 and err["source"] == "ingress", err
    assert "x-restate-id" not in resp.headers, resp.headers
    assert problem in err["message"], err
    ok = srv.call("/Echo/greet_person", {"name": "ann", "age": 7})
    assert ok.status_code == 200, ok.text
    assert ok.json() == "ann is 7"


def test_bad_idempotency_key_and_delay(srv: Server) -> None:
    _ingress_error(srv.call("/Echo/echo", "x", headers={"idempotency-key": ""}), 400)
    _ingress_error(srv.call("/Echo/echo/send?delay=-5s", "x"), 400)
    _ingress_error(srv.call("/Echo/echo/send?delay=", "x"), 400)
    _still_serving(srv)


# --------------------------------------------------------------------------------- bounded input
def test_delay_beyond_the_limit_is_400_not_500(srv: Server) -> None:
    """A delay of 10**16 ms used to crash the 202 answer (OverflowError formatting the execution time)."""
    for delay in ("9999999999999999", "P99999999D", "3651d"):
        msg = _ingress_error(srv.call(f"/Echo/echo/send?delay={delay}", "x"), 400)
        assert "at most" in msg, msg
    ok = srv.call("/Echo/echo/send?delay=3650d", "x")
    assert ok.status_code == 202 and "executionTime" in ok.json(), ok.text
    _still_serving(srv)


def test_overlong_names_keys_and_idempotency_keys_are_400(srv: Server) -> None:
    assert (
        _ingress_error(srv.call("/" + "S" * 256 + "/echo", "x"), 400)
        == "service name too long: at most 255 bytes"
    )
    assert (
        _ingress_error(srv.call("/Echo/" + "h" * 256, "x"), 400) == "handler name too long: at most 255 bytes"
    )
    assert (
        _ingress_error(srv.call("/Lock/" + "k" * 4097 + "/step", "x"), 400)
        == "object key too long: at most 4096 bytes"
    )
    msg = _ingress_error(srv.call("/Echo/echo", "x", headers={"idempotency-key": "i" * 1025}), 400)
    assert "1 to 1024 bytes" in msg
    resp = srv.admin_request("GET", "/services/" + "S" * 256)
    assert resp.status_code == 400 and resp.json()["message"] == "service name too long: at most 255 bytes"
    _still_serving(srv)


def test_oversized_heads_are_414_and_431_in_restate_error_shape(srv: Server) -> None:
    assert "at most 32768 bytes" in _ingress_error(srv.call("/Echo/echo?" + "q" * 40_000, "x"), 414)
    many = {f"x-h{i}": "v" for i in range(101)}
    assert (
        _ingress_error(srv.call("/Echo/echo", "x", headers=many), 431)
        == "too many request headers: at most 100"
    )
    big = {"x-big": "v" * (64 * 1024)}
    assert "at most 65536 bytes" in _ingress_error(srv.call("/Echo/echo", "x", headers=big), 431)
    admin = httpx.get(f"{srv.admin}/services", headers=many, timeout=10)
    assert admin.status_code == 431 and admin.json() == {
        "message": "too many request headers: at most 100",
        "restate_code": None,
    }
    # 100 headers in all (httpx adds host, accept, accept-encoding, connection, user-agent, content-*) are fine
    fits = {f"x-h{i}": "v" for i in range(100 - 7)}
    assert srv.call("/Echo/echo", "ok", headers=fits).json() == "ok"
    _still_serving(srv)


def test_admin_body_limit_is_the_configured_one(srv: Server) -> None:
    resp = httpx.post(f"{srv.admin}/query", content=b" " * (LIMIT + 1), timeout=10)
    assert resp.status_code == 413, resp.text
    assert resp.json()["message"] == f"request body too large: the limit is {LIMIT} bytes"


def test_keys_are_decoded_once_per_segment(srv: Server) -> None:
    """``%2F`` inside a key is part of the key; ``%2541`` is the key ``%41`` (it used to be decoded twice,
    to ``A``: another object); bytes that are not UTF-8 are refused rather than mapped to U+FFFD."""
    for key, raw in (("a/b", "a%2Fb"), ("%41", "%2541"), ("100%", "100%25")):
        assert srv.call(f"/Box/{raw}/put", key).status_code == 200
        assert srv.call(f"/Box/{raw}/get").json() == key
        state = srv.admin_request("GET", f"/services/Box/state/{raw}").json()
        assert state == {"value": f'"{key}"'}, (key, state)
    assert srv.call("/Box/A/get").content == b""  # never written
    msg = _ingress_error(srv.call("/Box/%ff/put", "x"), 400)
    assert msg == "bad path: a percent-encoded segment is not valid UTF-8"
    assert srv.admin_request("GET", "/services/Box/state/%ff").status_code == 400
    _still_serving(srv)
