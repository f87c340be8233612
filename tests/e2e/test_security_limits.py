"""Security limits of a running server: bearer tokens on the admin API and the ingress, the default
request body limit, loopback-only listeners, a strictly read-only ``/query``, and handlers that exceed
the journal's size and encoding limits (each ends in a terminal, explained failure: never a crash, never
an invocation stuck holding its object's lock).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.harness import Server
from unbroken.admin.routes import ROUTES
from unbroken.config import load_config
from unbroken.core import limits

APP = "tests/apps/limits_app.py"
ADMIN_TOKEN = "admin-s3cret"
INGRESS_TOKEN = "ingress-s3cret"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
INGRESS = {"authorization": f"Bearer {INGRESS_TOKEN}"}
OVER = 32 * 1024 * 1024 + 1
HTTP = httpx.Client(timeout=60)  # one client: creating one per request costs ~30 ms (TLS context)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"UNBROKEN_ADMIN__TOKEN": ADMIN_TOKEN, "UNBROKEN_INGRESS__TOKEN": INGRESS_TOKEN}
    server = Server(APP, tmp_path_factory.mktemp("security") / "data", env=env).start()
    try:
        yield server
        assert server.proc is not None and server.proc.poll() is None, server.log()
    finally:
        server.kill()
        HTTP.close()


def ingress(
    srv: Server,
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 60,
) -> httpx.Response:
    content = raw if raw is not None else (b"" if body is None else orjson.dumps(body))
    h = {"content-type": "application/json", **(headers or {})}
    return HTTP.request(method, f"{srv.ingress}{path}", content=content, headers=h, timeout=timeout)


def call(srv: Server, path: str, body: Any = None, timeout: float = 60) -> httpx.Response:
    return ingress(srv, path, body, headers=INGRESS, timeout=timeout)


def admin(
    srv: Server, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    # /query answers Arrow unless asked for JSON (as Restate's does); these tests read its JSON
    headers = {"accept": "application/json", **(headers or {})}
    return HTTP.request(method, f"{srv.admin}{path}", json=json, headers=headers, timeout=30)


# ------------------------------------------------------------------------------------------- tokens
BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"authorization": "Bearer wrong"},
    {"authorization": f"Basic {ADMIN_TOKEN}"},
    {"authorization": ADMIN_TOKEN},
    {"authorization": f"Bearer {ADMIN_TOKEN}x"},
    {"authorization": "Bearer"},
    {"x-restate-token": ADMIN_TOKEN},
]


def _admin_routes() -> list[tuple[str, str]]:
    values = {
        "service": "Limits",
        "handler": "keys",
        "key": "k",
        "invocation_id": "inv_1" + "0" * 33,
        "deployment": "dp_1" + "0" * 22,
    }
    out = []
    for template, methods in ROUTES.items():
        path = template
        for name, value in values.items():
            path = path.replace("{" + name + "}", value)
        out += [(method, path) for method in methods]
    return out


@pytest.mark.parametrize(("method", "path"), _admin_routes())
def test_every_admin_route_but_health_needs_the_token(srv: Server, method: str, path: str) -> None:
    for headers in BAD_CREDENTIALS:
        resp = admin(srv, method, path, json={}, headers=headers)
        if path == "/health":
            assert resp.status_code == 200, resp.text
            continue
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.json() == {
            "message": "unauthorized: the admin API requires the header 'authorization: Bearer <token>'",
            "restate_code": None,
        }
        assert resp.headers["www-authenticate"].startswith("Bearer")
    # under an API version prefix too
    assert admin(srv, method, "/v2" + path, json={}).status_code == (200 if path == "/health" else 401)
    assert admin(srv, method, path, json={}, headers=ADMIN).status_code != 401


def test_admin_token_also_guards_unknown_paths_and_the_scheme_is_case_insensitive(srv: Server) -> None:
    assert admin(srv, "GET", "/no/such/route").status_code == 401
    assert admin(srv, "GET", "/no/such/route", headers=ADMIN).status_code == 404
    assert (
        admin(srv, "GET", "/services", headers={"authorization": f"bearer {ADMIN_TOKEN}"}).status_code == 200
    )
    # the ingress token does not open the admin API, nor the other way round
    assert admin(srv, "GET", "/services", headers=INGRESS).status_code == 401
    assert ingress(srv, "/Limits/k/keys", headers=ADMIN).status_code == 401


INGRESS_PATHS = [
    ("POST", "/Limits/k/keys"),
    ("GET", "/Limits/k/keys"),
    ("POST", "/Limits/k/set_small/send"),
    ("GET", "/restate/invocation/inv_1" + "0" * 33 + "/attach"),
    ("GET", "/restate/invocation/inv_1" + "0" * 33 + "/output"),
    ("POST", "/restate/awakeables/sign_1abc/resolve"),
    ("POST", "/restate/a/sign_1abc/reject"),
    ("GET", "/Nope/nothing"),
    ("PUT", "/Limits/k/keys"),
    ("GET", "/"),
]


@pytest.mark.parametrize(("method", "path"), INGRESS_PATHS)
def test_every_ingress_path_but_health_needs_the_token(srv: Server, method: str, path: str) -> None:
    for headers in BAD_CREDENTIALS:
        h = {k: v.replace(ADMIN_TOKEN, INGRESS_TOKEN) for k, v in headers.items()}
        resp = ingress(srv, path, method=method, headers=h)
        assert resp.status_code == 401, (h, resp.text)
        assert resp.json() == {
            "code": 401,
            "source": "ingress",
            "message": "unauthorized: this ingress requires the header 'authorization: Bearer <token>'",
        }
        assert resp.headers["x-restate-error-source"] == "ingress"
    assert ingress(srv, path, method=method, headers=INGRESS).status_code != 401


def test_health_stays_open_and_calls_with_the_token_work(srv: Server) -> None:
    assert HTTP.get(f"{srv.ingress}/restate/health").status_code == 200
    assert HTTP.get(f"{srv.admin}/health").status_code == 200
    assert call(srv, "/Limits/tok/set_small", {"v": 1}).status_code == 200
    assert call(srv, "/Limits/tok/get_small").json() == {"v": 1}
    state = admin(srv, "GET", "/services/Limits/state/tok", headers=ADMIN)
    assert state.status_code == 200 and state.json() == {"small": '{"v":1}'}


def test_tokens_come_from_toml_and_environment(tmp_path: Path) -> None:
    toml = tmp_path / "unbroken.toml"
    toml.write_text('[admin]\ntoken = "from-toml-a"\n\n[ingress]\ntoken = "from-toml-i"\n')
    config = load_config(str(toml), env={})
    assert (config.admin_token, config.ingress_token) == ("from-toml-a", "from-toml-i")
    config = load_config(
        str(toml), env={"UNBROKEN_INGRESS__TOKEN": "from-env", "RESTATE_ADMIN__TOKEN": "env-a"}
    )
    assert (config.admin_token, config.ingress_token) == ("env-a", "from-env")
    assert (load_config(env={}).admin_token, load_config(env={}).ingress_token) == (None, None)


# -------------------------------------------------------------------------------------- listeners
def test_listeners_default_to_loopback() -> None:
    config = load_config(env={})
    assert config.ingress_host_port == ("127.0.0.1", 8080)
    assert config.admin_host_port == ("127.0.0.1", 9070)


def _listening(pid: int) -> set[tuple[str, int]]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A = LISTEN
                    continue
                addr, port = fields[1].split(":")
                raw = bytes.fromhex(addr)
                if family == socket.AF_INET:
                    host = socket.inet_ntop(family, raw[::-1])
                else:  # four little-endian 32-bit words
                    host = socket.inet_ntop(family, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
                found.add((host, int(port, 16)))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")
def test_the_server_listens_on_loopback_only(srv: Server) -> None:
    assert srv.proc is not None
    assert _listening(srv.proc.pid) == {("127.0.0.1", srv.ingress_port), ("127.0.0.1", srv.admin_port)}


# ------------------------------------------------------------------------------------- body limit
@pytest.mark.parametrize("which", ["ingress", "admin"])
def test_default_body_limit_is_32_mib(srv: Server, which: str) -> None:
    """A body over 32 MiB is refused with 413 as soon as its length is declared (nothing is buffered)."""
    port, path, auth = (
        (srv.ingress_port, "/Limits/k/set_small", INGRESS)
        if which == "ingress"
        else (srv.admin_port, "/query", ADMIN)
    )
    head = (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"authorization: {auth['authorization']}\r\ncontent-length: {OVER}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"request body too large: the limit is 33554432 bytes" in answer


def test_a_body_of_exactly_the_limit_is_read(srv: Server) -> None:
    """At the limit the body is read in full: it then fails JSON validation (400), not the limit (413)."""
    exact = b"[" + b" " * (limits.request_body_bytes_max - 1)  # not JSON: the invocation is never created
    resp = ingress(srv, "/Limits/near/set_small", raw=exact, headers=INGRESS)
    assert resp.status_code == 400, resp.text[:300]
    assert "not valid JSON" in resp.json()["message"]
    resp = ingress(srv, "/Limits/near/set_small", raw=exact + b" ", headers=INGRESS)
    assert resp.status_code == 413, resp.text[:300]


# ----------------------------------------------------------------------------------------- /query
READ_ONLY_ATTACKS = [
    "PRAGMA writable_schema=1",
    "PRAGMA writable_schema = ON",
    "PRAGMA query_only=0",
    "PRAGMA journal_mode=DELETE",
    "ATTACH DATABASE '{dir}/evil.db' AS evil",
    "SELECT load_extension('{dir}/evil.so')",
    "VACUUM INTO '{dir}/copy.db'",
    "VACUUM",
    "SELECT 1; DELETE FROM state",
    "SELECT 1; DROP TABLE invocation",
    "DELETE FROM state",
    "UPDATE state SET value = x'00'",
    "INSERT INTO state VALUES ('Limits', 'q', 'x', x'00')",
    "REPLACE INTO state VALUES ('Limits', 'q', 'x', x'00')",
    "CREATE TABLE evil(x)",
    "CREATE TEMP TABLE evil(x)",
    "CREATE TEMP VIEW evil AS SELECT 1",
    "CREATE TEMP TRIGGER t AFTER INSERT ON state BEGIN DELETE FROM state; END",
    "DROP VIEW sys_invocation",
    "BEGIN",
    "SAVEPOINT s",
    "ANALYZE",
    "REINDEX",
    "WITH x AS (SELECT 1) DELETE FROM state",
    "SELECT * FROM state WHERE 1; --\nDELETE FROM state",
]


@pytest.mark.parametrize("sql", READ_ONLY_ATTACKS)
def test_query_is_strictly_read_only(srv: Server, tmp_path: Path, sql: str) -> None:
    assert call(srv, "/Limits/q/set_small", "kept").status_code == 200
    census = {
        "query": "SELECT (SELECT count(*) FROM state) AS n, (SELECT group_concat(name) FROM sqlite_temp_master) AS t"
    }
    before = admin(srv, "POST", "/query", census, ADMIN).json()
    resp = admin(srv, "POST", "/query", {"query": sql.format(dir=tmp_path)}, ADMIN)
    assert resp.status_code == 400, resp.text
    assert resp.json()["restate_code"] is None and resp.json()["message"]
    assert list(tmp_path.iterdir()) == []  # no file was created (VACUUM INTO, ATTACH)
    after = admin(srv, "POST", "/query", census, ADMIN).json()
    assert after == before  # no row changed, no temp object appeared or vanished
    assert call(srv, "/Limits/q/get_small").json() == "kept"


# ----------------------------------------------------------------------------- handler size limits
def _still_usable(srv: Server, key: str) -> None:
    """The object's lock was released: the next invocation on the key runs and completes."""
    assert call(srv, f"/Limits/{key}/set_small", "after").status_code == 200
    assert call(srv, f"/Limits/{key}/get_small").json() == "after"


def test_oversized_state_value_is_a_terminal_400_naming_the_key(srv: Server) -> None:
    resp = call(srv, "/Limits/big-state/set_big", OVER)
    assert resp.status_code == 400, resp.text[:300]
    message = resp.json()["message"]
    assert (
        "'big'" in message and f"{OVER + 2} bytes" in message and str(limits.state_value_bytes_max) in message
    )
    assert call(srv, "/Limits/big-state/keys").json() == []  # nothing stored
    _still_usable(srv, "big-state")


def test_oversized_run_result_fails_that_run_for_good(srv: Server) -> None:
    resp = call(srv, "/Limits/big-run/run_big", OVER)
    assert resp.status_code == 200, resp.text[:300]
    failure = resp.json()
    assert failure["code"] == 500
    assert "ctx.run 'produce' returned" in failure["message"]
    assert str(limits.journal_entry_bytes_max) in failure["message"]
    _still_usable(srv, "big-run")


def test_oversized_output_is_a_terminal_500(srv: Server) -> None:
    resp = call(srv, "/Limits/big-out/output_big", OVER)
    assert resp.status_code == 500, resp.text[:300]
    body = resp.json()
    assert body["source"] == "invocation"
    assert "the output of Limits/output_big is" in body["message"]
    assert str(limits.journal_entry_bytes_max) in body["message"]
    _still_usable(srv, "big-out")


def test_oversized_call_argument_is_a_terminal_error_at_the_call(srv: Server) -> None:
    resp = call(srv, "/Limits/big-call/call_big", OVER)
    assert resp.status_code == 200, resp.text[:300]
    failure = resp.json()
    assert failure["code"] == 400
    assert failure["message"].startswith("journal entry too large: Call(Limits/big-call/set_small)")
    assert call(srv, "/Limits/big-call/get_small").content == b""  # None: the callee never ran
    _still_usable(srv, "big-call")


def test_unencodable_state_key_fails_the_handler_and_stores_nothing(srv: Server) -> None:
    """A lone surrogate cannot be stored: it used to drop the SetState record in the processor while
    the handler went on and answered 200 "stored" (the state was silently lost)."""
    resp = call(srv, "/Limits/surrogate/surrogate_key")
    assert resp.status_code == 400, resp.text
    assert "cannot journal SetState('bad\\udcffkey')" in resp.json()["message"]
    assert call(srv, "/Limits/surrogate/keys").json() == []
    _still_usable(srv, "surrogate")


@pytest.mark.parametrize(
    ("handler", "status", "message"),
    [
        ("surrogate_error", 418, "bad \\udcff message"),  # used to leave the invocation stuck forever
        ("string_status", 500, "teapot"),  # a non-int status code used to be stored as is
    ],
)
def test_unstorable_failures_are_made_storable(srv: Server, handler: str, status: int, message: str) -> None:
    key = f"fail-{handler}"
    resp = call(srv, f"/Limits/{key}/{handler}", timeout=15)
    assert resp.status_code == status, resp.text
    assert resp.json()["message"] == message
    _still_usable(srv, key)


def test_unstorable_run_failure_is_made_storable(srv: Server) -> None:
    resp = call(srv, "/Limits/fail-run/surrogate_run_error", timeout=15)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"code": 422, "message": "run failed \\ud800"}
    _still_usable(srv, "fail-run")


def test_huge_error_messages_are_cut(srv: Server) -> None:
    resp = call(srv, "/Limits/huge-error/huge_error", 1_000_000)
    assert resp.status_code == 400
    message = resp.json()["message"]
    assert message.startswith("e" * limits.failure_message_chars_max)
    assert message.endswith("... [cut: the message had 1000000 characters]")
    _still_usable(srv, "huge-error")
