"""The ingress against hostile or careless clients, over a real ``unbroken serve``: awakeable ids computed
to cancel or plant results, bodies nested too deep or not JSON, heads that do not parse, clients that hang
up while waiting, idle and trickling connections, a low open-file limit, and bodies in flight beyond the
memory budget.
"""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.harness import Server, unique_key, wait_until
from unbroken.core import limits
from unbroken.core.ids import InvocationId, awakeable_id

APP = "tests/apps/semantics.py"
INGRESS_TOKEN = "ingress-s3cret"
AUTH = {"authorization": f"Bearer {INGRESS_TOKEN}"}
AUTH_LINE = f"authorization: Bearer {INGRESS_TOKEN}\r\n"
ENV = {"UNBROKEN_INGRESS__TOKEN": INGRESS_TOKEN, "UNBROKEN_ADMIN__TOKEN": "admin-s3cret"}
IO_TIMEOUT_S = 10.0
HEAD_TIMEOUT_S = limits.http_head_timeout_ms / 1000
BODY_TIMEOUT_S = limits.http_body_idle_timeout_ms / 1000


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("hardening") / "data", env=ENV).start()
    try:
        yield server
        assert server.proc is not None and server.proc.poll() is None, server.log()
    finally:
        server.kill()


def call(
    srv: Server,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    timeout: float = IO_TIMEOUT_S,
    method: str = "POST",
) -> httpx.Response:
    return srv.call(path, body, raw=raw, headers=AUTH, timeout=timeout, method=method)


def error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == status and body["source"] == "ingress", body
    return str(body["message"])


def waiting(srv: Server, value: Any = None) -> tuple[str, str]:
    """Start ``Echo/wait_for``; (invocation id, awakeable id) once it waits on its awakeable."""
    box = unique_key()
    sent = call(srv, "/Echo/wait_for/send", {"box": box, "value": value})
    assert sent.status_code == 202, sent.text
    published = read_box_auth(srv, box)
    return published["id"], published["aid"]


def read_box_auth(srv: Server, box: str) -> Any:
    def published() -> Any:
        resp = call(srv, f"/Box/{box}/get")
        assert resp.status_code == 200, resp.text
        return resp.json() if resp.content else None

    return wait_until(published, timeout=10, what=f"Box/{box} to be filled")


def attach(srv: Server, inv: str) -> httpx.Response:
    return srv.call(f"/restate/invocation/{inv}/attach", headers=AUTH, method="GET", timeout=15)


# ------------------------------------------------------------------------------------- point 2: signals
def test_a_computed_cancel_signal_is_refused_and_the_workflow_goes_on(srv: Server) -> None:
    """A workflow's invocation id is computable from its name and key: with signal index 1 (CANCEL) it used
    to make an awakeable id that cancelled the workflow, with only the ingress token."""
    key = unique_key()
    assert call(srv, f"/Approval/{key}/run/send", "n").status_code == 202
    wait_until(lambda: call(srv, f"/Approval/{key}/status").json() == "waiting", what="the workflow to wait")
    wf = InvocationId.for_workflow("Approval", key)
    for idx in (0, 1, 2, 16):
        for action, raw in (("resolve", b'"x"'), ("reject", b"stop")):
            aid = awakeable_id(wf, idx)
            msg = error(call(srv, f"/restate/awakeables/{aid}/{action}", raw=raw), 400)
            assert msg == f"bad awakeable id '{aid}': signal index {idx} is not an awakeable's", msg
    assert call(srv, f"/Approval/{key}/decide", "yes").json() == "ok"
    out = srv.call(f"/restate/workflow/Approval/{key}/attach", headers=AUTH, method="GET", timeout=15)
    assert out.status_code == 200, out.text
    assert out.json() == "n:yes"


def test_an_awakeable_of_an_invocation_not_started_is_refused(srv: Server) -> None:
    """An invocation that has not started has created no awakeable: its computed ids resolve nothing."""
    sent = call(srv, "/Echo/echo/send?delay=1h", "later")
    assert sent.status_code == 202, sent.text
    inv = InvocationId.parse(sent.json()["invocationId"])
    aid = awakeable_id(inv, 17)
    msg = error(call(srv, f"/restate/awakeables/{aid}/resolve", "planted"), 404)
    assert msg == f"awakeable '{aid}' not found: its invocation has not created it"


# ------------------------------------------------------------------------------ points 5, 6: bodies
def nested(depth: int, leaf: str = "[]") -> str:
    return "[" * (depth - 1) + leaf + "]" * (depth - 1)


def test_a_body_nested_too_deep_is_400_naming_the_limit(srv: Server) -> None:
    """1,000 levels used to be accepted, then the handler's output failed to serialize on every retry."""
    deepest = nested(limits.json_depth_max)
    assert call(srv, "/Echo/echo", raw=deepest.encode()).content == deepest.encode()
    objects = '{"a":' * limits.json_depth_max + "1" + "}" * limits.json_depth_max
    for body in (nested(limits.json_depth_max + 1), nested(1000), "[" + objects + "]"):
        msg = error(call(srv, "/Echo/echo", raw=body.encode()), 400)
        assert f"at most {limits.json_depth_max} levels" in msg, msg
    # Brackets inside strings (escaped quotes too) are text, not nesting.
    text = json.dumps(['\\"[{' * 2000, {"k]": "}" * 500}])
    assert call(srv, "/Echo/echo", raw=text.encode()).json() == json.loads(text)


def test_an_awakeable_resolved_with_a_body_that_is_not_json_is_400(srv: Server) -> None:
    """It used to be accepted (202), then the waiting handler failed to decode it on every retry."""
    inv, aid = waiting(srv, "v")
    for raw in (b"not json", b'{"a":', nested(1000).encode()):
        resp = call(srv, f"/restate/awakeables/{aid}/resolve", raw=raw)
        assert resp.status_code == 400 and "input validation error" in error(resp, 400), resp.text
    assert call(srv, f"/restate/awakeables/{aid}/resolve", {"ok": 1}).status_code == 202
    done = attach(srv, inv)
    assert done.status_code == 200 and done.json() == {"input": "v", "resolved": {"ok": 1}}, done.text


# -------------------------------------------------------------------------------- point 17: bad heads
def raw_exchange(port: int, data: bytes, timeout: float = IO_TIMEOUT_S) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "head",
    [
        b"POST /Echo/\xff\xfe/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n",
        b"POST /Echo/echo HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\ncontent-length: 2\r\n\r\n",
    ],
    ids=["non-ascii-path", "control-char-header"],
)
def test_a_head_that_does_not_parse_gets_the_json_error_body(srv: Server, head: bytes) -> None:
    status, headers, body = raw_exchange(srv.ingress_port, head + b"{}")
    assert status == 400, body
    assert headers["content-type"] == "application/json" and headers["x-restate-error-source"] == "ingress"
    answer = json.loads(body)
    assert (
        answer["code"] == 400
        and answer["source"] == "ingress"
        and "invalid HTTP request" in answer["message"]
    )
    status, headers, body = raw_exchange(srv.admin_port, head.replace(b"/Echo/", b"/services/") + b"{}")
    assert status == 400 and headers["content-type"] == "application/json", body
    assert "invalid HTTP request" in json.loads(body)["message"]


# ------------------------------------------------------------------------ point 14: clients hang up
def attach_request(inv: str) -> bytes:
    return f"GET /restate/invocation/{inv}/attach HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {INGRESS_TOKEN}\r\n\r\n".encode()


def test_waiters_whose_clients_hang_up_are_forgotten_and_shutdown_is_clean(
    server_factory: Callable[..., Server],
) -> None:
    """Attaches whose clients disconnected used to keep their tasks until the invocation completed, and the
    shutdown printed one traceback for each; one still connected at shutdown used to get a 500."""
    srv = server_factory(APP, env=ENV).start()
    inv, _aid = waiting(srv)
    gone = [
        socket.create_connection(("127.0.0.1", srv.ingress_port), timeout=IO_TIMEOUT_S) for _ in range(20)
    ]
    for sock in gone:
        sock.sendall(attach_request(inv))
    stays = socket.create_connection(("127.0.0.1", srv.ingress_port), timeout=IO_TIMEOUT_S)
    stays.sendall(attach_request(inv))
    assert call(srv, "/Echo/echo", "sync").json() == "sync"  # the attaches above were read by now
    for sock in gone:
        sock.close()
    assert srv.stop() == 0, srv.log()
    status, headers, body = read_answer(stays)
    stays.close()
    assert status == 503 and headers.get("retry-after") == "1", body
    assert "shutting down" in json.loads(body)["message"]
    log = srv.log()
    assert "Traceback" not in log and "Cancel" not in log and "Exception" not in log, log


# ---------------------------------------------------------------------- point 8: idle connections
def test_connections_that_send_no_complete_head_or_stall_their_body_are_closed(srv: Server) -> None:
    """Connections that never sent a request, or stopped sending their body, used to stay open for ever
    (on both listeners), the latter holding its share of the body budget."""
    idle = socket.create_connection(("127.0.0.1", srv.ingress_port))
    admin_idle = socket.create_connection(("127.0.0.1", srv.admin_port))
    partial = socket.create_connection(("127.0.0.1", srv.ingress_port))
    partial.sendall(b"POST /Echo/echo HTTP/1.1\r\nhost: x\r\n")
    stalled = socket.create_connection(("127.0.0.1", srv.ingress_port))
    stalled.sendall(
        f"POST /Echo/echo HTTP/1.1\r\nhost: x\r\n{AUTH_LINE}content-length: 100\r\n\r\n[1,".encode()
    )
    started = time.monotonic()
    socks = (idle, admin_idle, partial, stalled)
    for sock in socks:
        sock.settimeout(BODY_TIMEOUT_S + 10)
    try:
        assert idle.recv(1) == b""
        assert admin_idle.recv(1) == b""
        status, _headers, body = read_answer(partial)
        assert status == 408 and f"within {limits.http_head_timeout_ms} ms" in json.loads(body)["message"], (
            body
        )
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 5
        status, _headers, body = read_answer(stalled)
        assert status == 408 and "request body too slow" in json.loads(body)["message"], body
        assert time.monotonic() - started < BODY_TIMEOUT_S + 5
    finally:
        for sock in socks:
            sock.close()
    assert call(srv, "/Echo/echo", "still").json() == "still"


def open_idle(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) for _ in range(count)]


def test_a_thousand_idle_connections_leave_both_listeners_serving(
    server_factory: Callable[..., Server],
) -> None:
    """Under the common soft limit of 1,024 open files, 1,000 idle connections used to make every new
    client fail: the server now raises its soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096 or soft < 2200:
        pytest.skip("needs a hard open-file limit of 4,096 and 2,200 descriptors for this test")
    srv = server_factory(APP, env=ENV)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the server inherits it
    try:
        srv.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    socks = open_idle(srv.ingress_port, 1000) + open_idle(srv.admin_port, 100)
    try:
        assert call(srv, "/Echo/echo", "served").json() == "served"
        assert httpx.get(f"{srv.admin}/health", timeout=IO_TIMEOUT_S).status_code == 200
    finally:
        for sock in socks:
            sock.close()


def test_connections_past_the_cap_get_503_and_the_admin_listener_keeps_serving(
    server_factory: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a hard file limit of 300, 400 idle connections used to exhaust the descriptors of both listeners;
    each listener now caps its connections below the limit and answers the ones past it with a 503."""
    import subprocess

    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> Any:
        limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))  # noqa: E731
        return real_popen(*args, preexec_fn=limit, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", popen)
    srv = server_factory(APP, env=ENV).start()
    monkeypatch.undo()
    socks = open_idle(srv.ingress_port, 400)
    try:
        assert httpx.get(f"{srv.admin}/health", timeout=IO_TIMEOUT_S).status_code == 200
        resp = call(srv, "/Echo/echo", "refused")
        assert "too many open connections" in error(resp, 503) and resp.headers["retry-after"] == "1"
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: call(srv, "/Echo/echo", "back").status_code == 200, what="the ingress to serve again")


# -------------------------------------------------------------------------- point 9: bodies in flight
def test_bodies_in_flight_beyond_the_budget_get_503_with_retry_after(srv: Server) -> None:
    """Request bodies used to have no overall bound: concurrent 30 MiB bodies cost ~100 MB of RSS each."""
    size = 30 * 1024 * 1024
    holders = limits.ingress_inflight_body_bytes_max // size
    head = (
        f"POST /Echo/void HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {INGRESS_TOKEN}\r\n"
        f"content-type: application/json\r\ncontent-length: {size}\r\n\r\n"
    ).encode()
    socks = []
    try:
        for _ in range(holders):  # bodies being sent: their declared length is held
            sock = socket.create_connection(("127.0.0.1", srv.ingress_port), timeout=IO_TIMEOUT_S)
            sock.sendall(head + b'"' + b"x" * 1024)
            socks.append(sock)
        assert call(srv, "/Echo/echo", "small").json() == "small"  # what fits still goes through
        status, headers, body = raw_exchange(srv.ingress_port, head)
        assert status == 503 and headers["retry-after"] == "1", body
        assert "ingress_inflight_body_bytes_max" in json.loads(body)["message"]
    finally:
        for sock in socks:
            sock.close()
    big = b'"' + b"x" * (size - 2) + b'"'
    wait_until(
        lambda: call(srv, "/Echo/void", raw=big, timeout=60).status_code == 200, what="a big body to fit"
    )
