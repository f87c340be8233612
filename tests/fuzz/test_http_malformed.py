"""Hand-made malformed HTTP against the ingress and the admin API, over raw sockets.

Bad JSON, oversized bodies and heads, wrong methods, odd and overlong paths, unicode keys, bad ids,
requests that are not HTTP at all, truncated requests, a client that sends its request one byte at a
time, and hundreds of connections opened and abandoned. For each: a 4xx (or a closed connection for
bytes that are not HTTP), never a 5xx, never a hang; the server keeps serving everybody else meanwhile
and afterwards, and nothing stored changes: the ``Counter/canary`` object keeps its exact value.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest

from tests.harness import Server

APP = "tests/apps/admin_app.py"
LIMIT = 256 * 1024  # request body limit of this server (the default 32 MiB is checked with a declared length)
CANARY = 7
IO_TIMEOUT_S = 5.0
HTTP = httpx.Client(timeout=IO_TIMEOUT_S)  # one client: creating one per request costs ~30 ms (TLS context)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def _read_answer(sock: socket.socket) -> Answer | None:
    """One HTTP/1.1 response, or None if the server closed the connection without answering."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(status, headers, body[:length])


def exchange(port: int, request: bytes, timeout: float = IO_TIMEOUT_S) -> Answer | None:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed) before taking everything: read what it said
        try:
            return _read_answer(sock)
        except ConnectionResetError:
            return None


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    head = {
        "host": "localhost",
        "content-type": "application/json",
        "content-length": str(len(body)),
        **(headers or {}),
    }
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode("latin-1") + body


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "UNBROKEN_INGRESS__REQUEST_SIZE_LIMIT": str(LIMIT),
        "UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s",
    }
    server = Server(APP, tmp_path_factory.mktemp("malformed") / "data", env=env).start()
    for n in range(CANARY):
        assert server.call("/Counter/canary/add", 1).json() == n + 1
    try:
        yield server
        assert server.proc is not None and server.proc.poll() is None, server.log()
        assert canary(server) == CANARY, "a malformed request changed stored state"
        assert "Traceback" not in server.log(), server.log()
    finally:
        server.kill()
        HTTP.close()


def canary(srv: Server) -> int:
    resp = HTTP.post(f"{srv.ingress}/Counter/canary/read")
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total"])


def serving(srv: Server) -> None:
    """Both listeners answer a normal request promptly."""
    assert HTTP.post(f"{srv.ingress}/Worker/echo", json="alive").json() == "alive"
    assert HTTP.get(f"{srv.admin}/health").status_code == 200


def client_error(answer: Answer | None, *allowed: int) -> None:
    """A 4xx (one of ``allowed`` if given), or the connection closed for bytes that are not HTTP."""
    if answer is None:
        return
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    if allowed:
        assert answer.status in allowed, (answer.status, answer.body[:300])


# ------------------------------------------------------------------------------------------ bodies
@pytest.mark.parametrize(
    "body",
    [b"{", b'{"a": ', b"nul", b"\xff\xfe\x00", b"[1, 2,]", b"1e999999", b'"\\ud800"', b"\x00" * 64],
    ids=repr,
)
def test_bad_json_is_400_everywhere(srv: Server, body: bytes) -> None:
    client_error(exchange(srv.ingress_port, request("POST", "/Counter/canary/add", body)), 400)
    client_error(exchange(srv.admin_port, request("POST", "/query", body)), 400)
    client_error(exchange(srv.admin_port, request("PATCH", "/services/Worker", body)), 400)
    client_error(exchange(srv.admin_port, request("POST", "/services/Counter/state", body)), 400)
    serving(srv)


def test_declared_oversized_body_is_413_without_reading_it(srv: Server) -> None:
    for port, path in ((srv.ingress_port, "/Counter/canary/add"), (srv.admin_port, "/query")):
        head = request("POST", path, headers={"content-length": str(32 * 1024 * 1024 + 1)})
        answer = exchange(port, head)
        client_error(answer, 413)
        assert answer is not None and str(LIMIT).encode() in answer.body
    serving(srv)


def test_streamed_oversized_body_is_413(srv: Server) -> None:
    big = b"[" + b"1," * LIMIT + b"1]"
    for port, path in ((srv.ingress_port, "/Counter/canary/add"), (srv.admin_port, "/query")):
        chunked = request("POST", path, headers={"transfer-encoding": "chunked"}).replace(
            b"content-length: 0\r\n", b""
        )
        for start in range(0, len(big), 65536):
            piece = big[start : start + 65536]
            chunked += b"%x\r\n%s\r\n" % (len(piece), piece)
        client_error(exchange(port, chunked + b"0\r\n\r\n"), 413)
    serving(srv)


def test_truncated_body_is_never_applied(srv: Server) -> None:
    """The client announces 5 bytes, sends ``12`` (valid JSON on its own) and hangs up: the request is
    abandoned, not executed with the truncated input."""
    for port, path in (
        (srv.ingress_port, "/Counter/canary/add"),
        (srv.ingress_port, "/Counter/canary/add/send"),
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as sock:
            sock.sendall(request("POST", path, headers={"content-length": "5"}) + b"12")
            sock.shutdown(socket.SHUT_WR)
            try:
                answer = _read_answer(sock)
            except ConnectionResetError:
                answer = None
        client_error(answer)
    serving(srv)
    assert canary(srv) == CANARY


# ----------------------------------------------------------------------------------- methods, paths
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
def test_wrong_methods(srv: Server, method: str) -> None:
    client_error(exchange(srv.ingress_port, request(method, "/Counter/canary/add", b"1")), 400, 405)
    client_error(exchange(srv.admin_port, request(method, "/health")), 400, 405)
    client_error(exchange(srv.admin_port, request(method, "/query", b'{"query": "SELECT 1"}')), 400, 405)
    serving(srv)


ODD_PATHS = [
    "//",
    "///Counter//canary//add",
    "/%00",
    "/%00/%00/%00",
    "/../../etc/passwd",
    "/./Worker/echo",
    "/%2e%2e/x",
    "/%",
    "/%zz",
    "/%ff%fe/x",
    "/Counter/%ff/add",
    "/Worker/echo/send/send",
    "/restate",
    "/restate/",
    "/restate/invocation//attach",
    "/restate/invocation/inv_/attach",
    "/restate/invocation/inv_1%00/output",
    "/restate/awakeables/%00/resolve",
    "/restate/a/sign_1AAAA/reject",
    "/restate/workflow/Vote//attach",
    "/Worker/echo?delay=1s",
    "/Worker/echo/send?delay=-1",
    "/Worker/echo/send?delay=99999999999999999999",
    "/Worker/echo/send?delay=P9999999999W",
    "/Counter/" + "k" * 5000 + "/add",
    "/" + "S" * 300 + "/h",
    "/Worker/" + "h" * 300,
    "/x?" + "q=1&" * 2000,
    "/" + "a/" * 4000,
]
ADMIN_ODD_PATHS = [
    "//",
    "/%00",
    "/../../etc/passwd",
    "/services/%00",
    "/services/" + "S" * 300,
    "/services/Counter/state/%ff",
    "/services/Counter/handlers/%00",
    "/invocations/%00/cancel",
    "/invocations/inv_1/kill",
    "/invocations/" + "i" * 1000 + "/purge",
    "/v2/v2/services",
    "/v9/services",
    "/deployments/%00",
]


@pytest.mark.parametrize("path", ODD_PATHS, ids=lambda p: p[:40])
def test_odd_ingress_paths(srv: Server, path: str) -> None:
    client_error(exchange(srv.ingress_port, request("POST", path, b"1")))
    client_error(exchange(srv.ingress_port, request("GET", path)))


@pytest.mark.parametrize("path", ADMIN_ODD_PATHS, ids=lambda p: p[:40])
def test_odd_admin_paths(srv: Server, path: str) -> None:
    for method in ("GET", "PATCH", "DELETE", "POST"):
        client_error(exchange(srv.admin_port, request(method, path, b"{}")))


def test_overlong_heads_are_414_and_431(srv: Server) -> None:
    for port in (srv.ingress_port, srv.admin_port):
        client_error(exchange(port, request("GET", "/" + "x" * 40_000)), 414)
        many = {f"x-h{i}": "v" for i in range(150)}
        client_error(exchange(port, request("POST", "/Worker/echo", b'"x"', many)), 431)
        client_error(exchange(port, request("POST", "/Worker/echo", b'"x"', {"x-big": "v" * 70_000})), 431)
        # an endless header: answered as soon as the limit is passed, not buffered
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-endless: ")
            answer: Answer | None = None
            try:
                for _ in range(200):
                    sock.sendall(b"v" * 4096)
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                answer = _read_answer(sock)
            except ConnectionResetError:
                answer = None
            client_error(answer, 431)
    serving(srv)


def test_unicode_keys_address_exactly_their_object(srv: Server) -> None:
    keys = ["ключ🔑", "a/b", "%41", "100%", " spaced ", "ｆｕｌｌ", "\u200b"]
    for n, key in enumerate(keys, start=1):
        answer = exchange(
            srv.ingress_port, request("POST", f"/Counter/{quote(key, safe='')}/add", str(n).encode())
        )
        assert answer is not None and answer.status == 200, answer
        assert answer.json() == n
    for n, key in enumerate(keys, start=1):
        state = HTTP.get(f"{srv.admin}/services/Counter/state/{quote(key, safe='')}")
        assert state.status_code == 200, state.text
        assert state.json() == {"total": str(n)}, (key, state.json())
    # '%41' is its own key, not 'A'; 'a/b' is one key, not a path
    assert HTTP.get(f"{srv.admin}/services/Counter/state/A").json() == {}


@pytest.mark.parametrize(
    "ident",
    [
        "inv_",
        "inv_1",
        "inv_1" + "z" * 33,
        "inv_1" + "!" * 33,
        "inv_2" + "0" * 33,
        "x" * 500,
        "sign_1abc",
        "%00",
        "é",
    ],
)
def test_bad_ids(srv: Server, ident: str) -> None:
    quoted = quote(ident, safe="")
    client_error(exchange(srv.ingress_port, request("GET", f"/restate/invocation/{quoted}/attach")), 400, 404)
    client_error(exchange(srv.ingress_port, request("GET", f"/restate/invocation/{quoted}/output")), 400, 404)
    client_error(
        exchange(srv.ingress_port, request("POST", f"/restate/awakeables/{quoted}/resolve", b"1")), 400, 404
    )
    for action in ("cancel", "kill", "purge", "pause", "resume", "purge-journal"):
        client_error(exchange(srv.admin_port, request("PATCH", f"/invocations/{quoted}/{action}")), 400, 404)
    client_error(exchange(srv.admin_port, request("DELETE", f"/invocations/{quoted}")), 400, 404)


# -------------------------------------------------------------------------------------- not HTTP
NOT_HTTP = [
    b"GARBAGE\r\n\r\n",
    b"\x00\x01\x02\x03\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET\r\n\r\n",
    b"POST /Worker/echo HTTP/1.1\r\nno-colon-here\r\n\r\n",
    b"POST /Worker/echo HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
    b"POST /Worker/echo HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n12",
    b"POST /Worker/echo HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n1\r\n0\r\n\r\n",
    b"POST /Worker/echo HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    b"POST /Worker/echo HTTP/1.1\r\nx-nul: a\x00b\r\n\r\n",
    b"POST /Worker/echo HTTP/1.1\r\nx-folded: a\r\n  b\r\n\r\n",
    b"POST /Wor\xffker/echo HTTP/1.1\r\nhost: x\r\n\r\n",
    b'POST /Worker/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 3\r\n\r\n"x"GARBAGE\r\n\r\n',
    b"\r\n" * 100,
]


@pytest.mark.parametrize("data", NOT_HTTP, ids=lambda d: repr(d[:30]))
def test_not_http(srv: Server, data: bytes) -> None:
    for port in (srv.ingress_port, srv.admin_port):
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while True:  # every answer on this connection (pipelined ones too) is a 4xx or a 2xx
                try:
                    answer = _read_answer(sock)
                except (ConnectionResetError, ValueError, IndexError):
                    break
                if answer is None:
                    break
                assert answer.status < 500, (data, answer.status, answer.body[:200])
    serving(srv)


def test_pipelined_requests_are_answered_in_order(srv: Server) -> None:
    both = request("POST", "/Worker/echo", b'"one"') + request("POST", "/Worker/echo", b'"two"')
    with socket.create_connection(("127.0.0.1", srv.ingress_port), timeout=IO_TIMEOUT_S) as sock:
        sock.sendall(both)
        first, second = _read_answer(sock), _read_answer(sock)
    assert first is not None and first.json() == "one"
    assert second is not None and second.json() == "two"


# ----------------------------------------------------------------------------------- slow and many
def test_a_slow_client_does_not_hold_up_the_others(srv: Server) -> None:
    """A client dribbles its request one byte at a time (about half a second); twenty others are served
    while it is still sending, then it gets its own answer."""
    slow = request("POST", "/Worker/echo", b'"slow but complete"')
    with socket.create_connection(("127.0.0.1", srv.ingress_port), timeout=IO_TIMEOUT_S) as sock:
        with ThreadPoolExecutor(max_workers=4) as pool:
            others = []
            for i in range(len(slow)):
                sock.sendall(slow[i : i + 1])
                if i == 10:
                    others = [
                        pool.submit(HTTP.post, f"{srv.ingress}/Worker/echo", json=f"fast {n}")
                        for n in range(20)
                    ]
                time.sleep(0.003)  # pacing the slow client (the scenario itself), not synchronization
            served_meanwhile = sum(f.done() for f in others)
            answers = [f.result(timeout=10) for f in others]
        answer = _read_answer(sock)
    assert served_meanwhile == 20, "the others waited for the slow client"
    assert [a.json() for a in answers] == [f"fast {n}" for n in range(20)]
    assert answer is not None and answer.status == 200 and answer.json() == "slow but complete"


def test_many_abandoned_connections(srv: Server) -> None:
    socks: list[socket.socket] = []
    try:
        for i in range(300):
            port = srv.ingress_port if i % 2 else srv.admin_port
            sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
            socks.append(sock)
            match i % 5:
                case 0:
                    sock.sendall(b"POST /Counter/canary/add HTTP/1.1\r\nhost: x\r\ncontent-le")
                case 1:
                    sock.sendall(
                        request("POST", "/Counter/canary/add", headers={"content-length": "100"}) + b"1"
                    )
                case 2:
                    sock.sendall(b"G")
                case _:
                    pass  # connect only
        serving(srv)  # while they are all still open
    finally:
        for i, sock in enumerate(socks):
            if i % 3 == 0:  # some vanish with a reset, the others close normally
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
    serving(srv)
    assert canary(srv) == CANARY


def test_header_injection_is_not_reflected(srv: Server) -> None:
    answer = exchange(srv.ingress_port, request("POST", "/Nope%0d%0ax-injected:%20yes/h", b"1"))
    assert answer is not None and answer.status == 404
    assert "x-injected" not in answer.headers
    assert re.search(rb"\r\n", answer.body) is None
