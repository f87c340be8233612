"""What a newcomer meets in the first hour, against real ``unbroken serve`` processes: a second server on
the same data dir, a port in use, config typos, empty tokens, untyped input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, Server, free_port

APP = "examples/demo.py"
EXIT_S = 30.0  # a refused start must end long before this (it is bounded, not waited for)


def serve_cmd(data_dir: Path, ingress_port: int, admin_port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "unbroken.cli.main",
        "serve",
        str(ROOT / APP),
        "--data-dir",
        str(data_dir),
        "--ingress-bind",
        f"127.0.0.1:{ingress_port}",
        "--admin-bind",
        f"127.0.0.1:{admin_port}",
        *extra,
    ]


def run_refused(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a server start that must be refused: it exits by itself, non-zero, with one ``error:`` line."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=EXIT_S, cwd=ROOT, env={**os.environ, **(env or {})}
    )
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "serving" not in proc.stderr, proc.stderr  # nothing announced before the refusal
    return proc


def start(srv: Server, *extra: str) -> Server:
    """Start ``srv`` with extra command-line arguments; wait until both listeners answer."""
    with open(srv.log_path, "ab") as log:
        cmd = serve_cmd(srv.data_dir, srv.ingress_port, srv.admin_port, *extra)
        srv.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    srv._wait_ready()
    return srv


@pytest.fixture
def first(tmp_path: Path) -> Iterator[Server]:
    srv = Server(APP, tmp_path / "data").start()
    yield srv
    srv.kill()


def test_second_server_on_the_same_data_dir_is_refused_until_the_first_dies(first: Server) -> None:
    assert first.proc is not None
    cmd = serve_cmd(first.data_dir, free_port(), free_port())
    proc = run_refused(cmd)
    assert f"data dir {first.data_dir} is in use by another unbroken server" in proc.stderr, proc.stderr
    assert f"pid {first.proc.pid}" in proc.stderr, proc.stderr
    assert f"127.0.0.1:{first.ingress_port}" in proc.stderr, proc.stderr
    # The first one is untouched.
    assert first.call("/Greeter/greet", "Ada").json() == "Hello Ada!"
    # SIGKILL leaves no stale lock: a second server now starts on the same data, and sees the first's work.
    first.kill()
    second = Server(APP, first.data_dir)
    second.log_path = first.data_dir.parent / "second.log"
    try:
        second.start()
        assert second.call("/Counter/bob/add", 2).json() == 2
    finally:
        second.kill()


def test_a_port_in_use_is_refused_before_anything_is_announced(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_refused(serve_cmd(tmp_path / "data", port, free_port()))
        assert f"port {port} is already in use" in proc.stderr, proc.stderr
        assert "--ingress-bind" in proc.stderr, proc.stderr
        proc = run_refused(serve_cmd(tmp_path / "data", free_port(), port))
        assert f"port {port} is already in use" in proc.stderr, proc.stderr
        assert "--admin-bind" in proc.stderr, proc.stderr
        dev = [a if a != "serve" else "dev" for a in serve_cmd(tmp_path / "data", port, free_port())]
        proc = run_refused(dev)
        assert f"port {port} is already in use" in proc.stderr, proc.stderr
        assert "http://" not in proc.stderr, proc.stderr  # `unbroken dev` shows its banner only once bound
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_config_typo_stops_the_server_naming_the_closest_key(tmp_path: Path) -> None:
    config = tmp_path / "unbroken.toml"
    config.write_text('[ingres]\nbind-address = "127.0.0.1:1"\n')
    for flag in ("--config", "--config-file"):  # Restate's spelling works too
        proc = run_refused(serve_cmd(tmp_path / "data", free_port(), free_port(), flag, str(config)))
        assert proc.returncode == 2, proc.stderr
        assert "unknown key 'ingres'" in proc.stderr and "did you mean 'ingress'?" in proc.stderr, proc.stderr


def test_config_file_is_a_synonym_of_config(tmp_path: Path) -> None:
    config = tmp_path / "restate.toml"
    config.write_text('[worker.invoker]\ninactivity-timeout = "5s"\n')
    srv = start(Server(APP, tmp_path / "data"), "--config-file", str(config))
    try:
        svc = srv.admin_request("GET", "/services/Greeter").json()
        assert svc["inactivity_timeout"] == "5s", svc
    finally:
        srv.kill()


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"UNBROKEN_ADMIN__TOKEN": ""}, "UNBROKEN_ADMIN__TOKEN"),
        ({"RESTATE_INGRESS__TOKEN": " "}, "RESTATE_INGRESS__TOKEN"),
    ],
)
def test_an_empty_token_refuses_to_start(tmp_path: Path, env: dict[str, str], key: str) -> None:
    proc = run_refused(serve_cmd(tmp_path / "data", free_port(), free_port()), env=env)
    assert f"{key}: expected a non-empty token" in proc.stderr, proc.stderr
    config = tmp_path / "unbroken.toml"
    config.write_text('[admin]\ntoken = ""\n')
    proc = run_refused(serve_cmd(tmp_path / "data", free_port(), free_port(), "--config", str(config)))
    assert "admin.token: expected a non-empty token" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------- typed inputs


def invocations_of(srv: Server, target: str) -> int:
    query = {"query": f"SELECT count(*) AS n FROM sys_invocation WHERE target LIKE '{target}%'"}
    return int(srv.admin_request("POST", "/query", query).json()["rows"][0]["n"])


def refused(resp: httpx.Response, *fragments: str) -> None:
    assert resp.status_code == 400, (resp.status_code, resp.text)
    message = resp.json()["message"]
    assert message.startswith("input validation error: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_an_empty_or_null_input_is_refused_before_anything_runs(first: Server) -> None:
    # `curl -X POST localhost:8080/Greeter/greet`: no body, no content type.
    resp = httpx.post(f"{first.ingress}/Greeter/greet", timeout=30)
    refused(resp, "Greeter/greet expects str, got an empty body")
    refused(first.call("/Greeter/greet", raw=b"null"), "Greeter/greet expects str", "got 'null'")
    refused(first.call("/Greeter/greet/send", raw=b""), "Greeter/greet expects str")
    assert invocations_of(first, "Greeter/greet") == 0  # nothing stored, nothing ran
    # `curl localhost:8080/Counter/bob/add --json null`: refused, and key bob is not blocked.
    refused(first.call("/Counter/bob/add", raw=b"null"), "Counter/add expects int", "got 'null'")
    refused(first.call("/Counter/bob/add", "2"), "Counter/add expects int", "got 'str'")
    assert invocations_of(first, "Counter/bob") == 0
    assert first.call("/Counter/bob/add", 2, timeout=10).json() == 2
    refused(first.call("/UserSignup/carol/run", {"name": "Carol"}), "UserSignup/run expects User", "email")
    assert (
        first.get("/restate/workflow/UserSignup/carol/output").status_code == 404
    )  # the run was not started
    assert first.call("/Greeter/greet", "Ada").json() == "Hello Ada!"


@pytest.fixture(scope="module")
def typed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server("tests/apps/typed_inputs.py", tmp_path_factory.mktemp("typed") / "data").start()
    yield srv
    srv.kill()


@pytest.mark.parametrize(
    ("handler", "body", "fragments"),
    [
        ("address", b'{"street": null}', ["Typed/address expects Address", "got 'null'", "$.street"]),
        ("address", b'{"number": 3}', ["Typed/address expects Address", "missing required field 'street'"]),
        ("address", b"null", ["Typed/address expects Address", "got 'null'"]),
        ("point", b'{"x": 1}', ["Typed/point expects Point", "missing required field 'y'"]),
        ("point", b'{"x": 1, "y": "2"}', ["Typed/point expects Point", "$.y"]),
        ("person", b'{"name": "Ada"}', ["Typed/person expects Person", "age: Field required"]),
        ("person", b"", ["Typed/person expects Person, got an empty body"]),
        ("items", b'[{"sku": "a", "qty": 1}, {"sku": "b"}]', ["Typed/items expects list[", "qty", "$[1]"]),
    ],
)
def test_a_body_that_does_not_fit_the_type_hint_is_a_400(
    typed: Server, handler: str, body: bytes, fragments: list[str]
) -> None:
    refused(typed.call(f"/Typed/{handler}", raw=body), *fragments)
    assert invocations_of(typed, f"Typed/{handler}") == 0


@pytest.mark.parametrize(
    ("handler", "body", "answer"),
    [
        ("address", b'{"street": "Main St"}', "1 Main St"),
        ("point", b'{"x": 1, "y": 2}', 3),
        ("person", b'{"name": "Ada", "age": 36}', "Ada (36)"),
        ("items", b'[{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]', 3),
        ("maybe", b"", "nothing"),
        ("maybe", b"null", "nothing"),
        ("maybe", b"7", "7"),
        ("anything", b"", "None"),
        ("anything", b'{"a": null}', "{'a': None}"),
        ("raw", b"", 0),
    ],
)
def test_a_body_that_fits_runs(typed: Server, handler: str, body: bytes, answer: object) -> None:
    resp = typed.call(f"/Typed/{handler}", raw=body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == answer


# ------------------------------------------------------------------------------------------------ CLI


def unbroken(*args: str, srv: Server | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if srv is not None:
        env.update(UNBROKEN_ADMIN_URL=srv.admin, UNBROKEN_INGRESS_URL=srv.ingress)
    proc = subprocess.run(
        [sys.executable, "-m", "unbroken.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def test_invocations_list_says_how_many_more_there_are(first: Server) -> None:
    for name in ("a", "b", "c", "d", "e"):
        assert first.call("/Greeter/greet", name).status_code == 200
    out = unbroken("invocations", "list", "--limit", "3", srv=first).stdout
    assert out.count("Greeter/greet") == 3, out
    assert "… and 2 older ones not shown: --limit 5 shows all" in out, out
    out = unbroken("invocations", "list", "--limit", "5", srv=first).stdout
    assert out.count("Greeter/greet") == 5 and "not shown" not in out, out
    out = unbroken("invocations", "list", "--limit", "4", "--service", "Greeter", srv=first).stdout
    assert "… and 1 older one not shown: --limit 5 shows all" in out, out
    rows = json.loads(unbroken("invocations", "list", "--limit", "3", "--json", srv=first).stdout)
    assert len(rows) == 3


@pytest.mark.parametrize(
    "command", [["serve"], ["invocations", "list"], ["invoke"], ["state", "keys"], ["--help"]]
)
def test_help_shows_flags_without_a_value_placeholder(command: list[str]) -> None:
    out = unbroken(*command, "--help").stdout
    assert "--help" in out, out
    assert "<bool>" not in out, out
