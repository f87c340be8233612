"""Services written with Restate's own Python SDK (restate-sdk 1.2.0, served by hypercorn in a process of
its own) registered with a real ``unbroken serve`` and invoked through its ingress, over Restate's service
protocol v6: every test runs twice, over HTTP/2 bidirectional streams (h2c prior knowledge, Restate's default)
and over HTTP/1.1 request/response (``use_http_11``).

Server A runs without an APP (the engine alone, as restate-server); server B runs an APP whose in-process
services call the remote ones and are called by them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ROOT, Server, free_port, unique_key, wait_until

MODES = ["h2", "http1.1"]


class Peer:
    """A restate-sdk (or raw ASGI) app served by hypercorn (HTTP/1.1 and h2c) on a free port."""

    def __init__(self, app: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.ledger = Path((env or {}).get("PEER_LEDGER", log.with_suffix(".ledger")))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{self.port}", app]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
            )
        self.log = log

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{app} exited:\n{log.read_text()[-3000:]}")
            try:
                accept = {"accept": "application/vnd.restate.endpointmanifest.v3+json"}
                return httpx.get(f"{self.url}/discover", headers=accept, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(up, timeout=20, what=f"{app} to serve")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture(scope="module", params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Path:
    return tmp_path_factory.mktemp(f"remote-{mode}")


@pytest.fixture(scope="module")
def peer(tmp: Path) -> Iterator[Peer]:
    p = Peer("tests.apps.restate_peer:app", tmp / "peer.log", {"PEER_LEDGER": str(tmp / "ledger.jsonl")})
    yield p
    p.stop()


def register(server: Server, url: str, mode: str, **extra: Any) -> httpx.Response:
    body = {"uri": url, "use_http_11": mode == "http1.1", **extra}
    return server.admin_request("POST", "/deployments", body)


@pytest.fixture(scope="module")
def bad_peer(tmp: Path) -> Iterator[Peer]:
    p = Peer("tests.apps.bad_peer:app", tmp / "bad.log")
    yield p
    p.stop()


@pytest.fixture(scope="module")
def srv(tmp: Path, peer: Peer, mode: str) -> Iterator[Server]:
    """Server A: no APP. The peer is registered with the CLI (``unbroken deployments register URL``)."""
    server = Server(None, tmp / "data-a").start()
    flags = ["--use-http1.1"] if mode == "http1.1" else []
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "unbroken.cli.main",
            "deployments",
            "register",
            peer.url,
            *flags,
            "--admin-url",
            server.admin,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "restate-sdk-python/1.2.0" in cli.stdout and "PeerCounter" in cli.stdout
    yield server
    server.kill()


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "unbroken.cli.main", "deployments", *args, "--admin-url", server.admin]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def ledger(peer: Peer, step: str) -> int:
    path = peer.ledger
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return sum(1 for row in rows if row["step"] == step)


def status(server: Server, invocation_id: str) -> str | None:
    resp = server.admin_request(
        "POST", "/query", {"query": f"SELECT status FROM sys_invocation WHERE id = '{invocation_id}'"}
    )
    assert resp.status_code == 200, resp.text
    rows = resp.json()["rows"]
    return rows[0]["status"] if rows else None


def send(server: Server, path: str, body: Any) -> str:
    resp = server.call(f"{path}/send", body)
    assert resp.status_code == 202, resp.text
    invocation_id: str = resp.json()["invocationId"]
    return invocation_id


def output(server: Server, invocation_id: str) -> httpx.Response:
    return server.get(f"/restate/invocation/{invocation_id}/attach", timeout=30)


# ------------------------------------------------------------------------------------------- registration
def test_registered_services_appear_with_their_handler_kinds(srv: Server, peer: Peer, mode: str) -> None:
    deployments = srv.admin_request("GET", "/deployments").json()["deployments"]
    (dep,) = deployments  # no APP: no in-process deployment
    assert dep["uri"] == peer.url and dep["sdk_version"] == "restate-sdk-python/1.2.0"
    assert sorted(s["name"] for s in dep["services"]) == [
        "PeerCounter",
        "PeerGreeter",
        "PeerLazy",
        "PeerSignup",
    ]
    detail = srv.admin_request("GET", f"/deployments/{dep['id']}").json()
    counter = next(s for s in detail["services"] if s["name"] == "PeerCounter")
    assert counter["ty"] == "VirtualObject" and counter["deployment_id"] == dep["id"]
    kinds = {h["name"]: h.get("ty") for h in counter["handlers"]}
    assert kinds["add"] == "Exclusive" and kinds["get"] == "Shared"
    svc = srv.admin_request("GET", "/services/PeerGreeter").json()
    assert svc["ty"] == "Service" and svc["deployment_id"] == dep["id"]
    assert dep["protocol_type"] == ("BidiStream" if mode == "h2" else "RequestResponse")
    rows = srv.admin_request("POST", "/query", {"query": "SELECT id, endpoint, services FROM sys_deployment"})
    assert [(r["id"], r["endpoint"]) for r in rows.json()["rows"]] == [(dep["id"], peer.url)]
    again = register(srv, peer.url, mode)
    assert again.status_code == 200 and again.json()["id"] == dep["id"]  # as Restate: unchanged


def test_bad_registrations_are_refused_with_a_reason(srv: Server, tmp: Path) -> None:
    nobody = srv.admin_request("POST", "/deployments", {"uri": f"http://127.0.0.1:{free_port()}"})
    assert nobody.status_code == 400 and "cannot reach" in nobody.json()["message"]
    bad_uri = srv.admin_request("POST", "/deployments", {"uri": "ftp://x"})
    assert bad_uri.status_code == 400 and "'uri'" in bad_uri.json()["message"]
    lam = srv.admin_request("POST", "/deployments", {"arn": "arn:aws:lambda:x"})
    assert lam.status_code == 400 and "Lambda" in lam.json()["message"]


# ------------------------------------------------------------------------------------------- invocations
def test_run_and_sleep_in_a_restate_sdk_handler(srv: Server, peer: Peer, mode: str) -> None:
    name = unique_key()
    resp = srv.call("/PeerGreeter/greet", name)
    assert resp.status_code == 200, resp.text
    assert resp.json() == f"Hello {name}!"
    # HTTP/2 streams the run's result and the sleep's end into the open attempt; request/response ends the
    # attempt at each wait (suspension) and replays the journal in the next one.
    assert ledger(peer, f"greet.attempt.{name}") == (1 if mode == "h2" else 3)


def test_object_state_exclusive_and_shared_handlers(srv: Server) -> None:
    key = unique_key()
    assert srv.call(f"/PeerCounter/{key}/add", 5).json() == 5
    assert srv.call(f"/PeerCounter/{key}/add", 2).json() == 7
    assert srv.call(f"/PeerCounter/{key}/get").json() == 7
    assert srv.call(f"/PeerCounter/{key}/reset").status_code == 200
    assert srv.call(f"/PeerCounter/{key}/get").json() == 0


def test_large_values_both_ways(srv: Server) -> None:
    """4 MiB out (a SetState command) and back in (the eager state of the next attempt's StartMessage):
    well past HTTP/2's initial flow-control window of 64 KiB, in both directions."""
    key = unique_key()
    size = 4 * 1024 * 1024
    assert srv.call(f"/PeerCounter/{key}/put_blob", size, timeout=60).json() == size
    assert srv.call(f"/PeerCounter/{key}/blob_size", timeout=60).json() == size


def test_lazy_state_reads_are_answered_by_the_engine(srv: Server) -> None:
    key = unique_key()
    assert srv.call(f"/PeerLazy/{key}/put", "a").json() == ["seen.None", "v"]
    assert srv.call(f"/PeerLazy/{key}/put", "b").json() == ["seen.None", "seen.a", "v"]
    assert srv.call(f"/PeerLazy/{key}/wipe").json() == []
    assert srv.admin_request("GET", f"/services/PeerLazy/state/{key}").json() == {}


def test_a_terminal_error_is_the_invocation_result(srv: Server) -> None:
    resp = srv.call("/PeerGreeter/fail", "nope")
    assert resp.status_code == 418 and resp.json()["message"] == "nope"


def test_an_awakeable_resolved_through_the_ingress(srv: Server) -> None:
    key = unique_key()
    invocation_id = send(srv, f"/PeerCounter/{key}/wait_awakeable", None)

    def awakeable_id() -> str | None:
        state = srv.admin_request("GET", f"/services/PeerCounter/state/{key}").json()
        return json.loads(state["awakeable"]) if "awakeable" in state else None

    awakeable = wait_until(awakeable_id, timeout=20, what="the handler to publish its awakeable id")
    assert awakeable.startswith("sign_1")
    resolved = srv.call(f"/restate/awakeables/{awakeable}/resolve", "woken")
    assert resolved.status_code == 202, resolved.text
    result = output(srv, invocation_id)
    assert result.status_code == 200 and result.json() == "woken"


def test_an_error_is_retried_by_the_engine(srv: Server) -> None:
    name = unique_key()
    resp = srv.call("/PeerGreeter/flaky", name)
    assert resp.status_code == 200 and resp.json() == "ok after 2 attempts"


def test_a_run_failing_terminally_fails_the_handler(srv: Server) -> None:
    resp = srv.call("/PeerGreeter/run_fails", "bad input")
    assert resp.status_code == 422 and resp.json()["message"] == "bad input"


def test_a_one_way_call_then_attach_by_invocation_id(srv: Server) -> None:
    key = unique_key()
    assert srv.call("/PeerGreeter/fire_and_attach", key).json() == 1
    assert srv.call(f"/PeerCounter/{key}/get").json() == 1


def test_a_named_signal_between_two_remote_invocations(srv: Server) -> None:
    waiting = send(srv, f"/PeerCounter/{unique_key()}/wait_signal", None)
    wait_until(lambda: status(srv, waiting) == "suspended", timeout=20, what="the wait to suspend")
    assert srv.call("/PeerGreeter/signal_other", waiting).json() == "sent"
    result = output(srv, waiting)
    assert result.status_code == 200 and result.json() == "signalled"


def test_a_workflow_with_a_durable_promise(srv: Server) -> None:
    key = unique_key()
    run_id = send(srv, f"/PeerSignup/{key}/run", "ada@example.com")
    wait_until(lambda: status(srv, run_id) == "suspended", timeout=20, what="the run to wait on its promise")
    unresolved = srv.call(f"/PeerSignup/{key}/peek")
    assert unresolved.status_code == 200 and unresolved.content in (b"", b"null")  # restate-sdk's None
    assert srv.call(f"/PeerSignup/{key}/confirm", "1234").status_code == 200
    result = output(srv, run_id)
    assert result.status_code == 200 and result.json() == "ada@example.com confirmed with 1234"
    assert srv.call(f"/PeerSignup/{key}/peek").json() == "1234"


def test_cancel_reaches_a_suspended_remote_handler(srv: Server) -> None:
    invocation_id = send(srv, f"/PeerCounter/{unique_key()}/wait_awakeable", None)
    wait_until(lambda: status(srv, invocation_id) == "suspended", timeout=20, what="the wait to suspend")
    assert srv.admin_request("PATCH", f"/invocations/{invocation_id}/cancel").status_code in (200, 202)
    result = output(srv, invocation_id)
    assert result.status_code == 409, result.text


def test_an_in_flight_invocation_stays_on_the_deployment_it_started_on(
    srv: Server, tmp: Path, mode: str
) -> None:
    in_flight = send(srv, "/PeerGreeter/nap", 1000)
    wait_until(lambda: status(srv, in_flight) == "suspended", timeout=20, what="the nap to suspend")
    newer = Peer("tests.apps.restate_peer:app", tmp / "peer-b.log", {"PEER_NAME": "b"})
    try:
        reg = register(srv, newer.url, mode)
        assert reg.status_code == 201, reg.text
        assert srv.admin_request("GET", "/services/PeerGreeter").json()["deployment_id"] == reg.json()["id"]
        assert srv.call("/PeerGreeter/nap", 1).json() == "slept 1 on b"  # new invocations: the newest
        result = output(srv, in_flight)
        assert result.status_code == 200 and result.json() == "slept 1000 on a"  # pinned
        assert srv.admin_request("DELETE", f"/deployments/{reg.json()['id']}").status_code == 202
        assert srv.call("/PeerGreeter/nap", 1).json() == "slept 1 on a"  # the older one serves again
    finally:
        newer.stop()


@pytest.mark.crash
def test_sigkill_mid_sleep_then_the_call_completes_once(srv: Server, peer: Peer) -> None:
    invocation_id = send(srv, "/PeerGreeter/nap", 1500)
    wait_until(lambda: status(srv, invocation_id) == "suspended", timeout=20, what="the nap to suspend")
    assert ledger(peer, "nap.before.1500") == 1
    srv.kill()
    srv.start()
    result = output(srv, invocation_id)
    assert result.status_code == 200 and result.json() == "slept 1500 on a"
    assert ledger(peer, "nap.after.1500") == 1 and ledger(peer, "nap.before.1500") == 1  # each ran once
    assert (
        srv.call("/PeerGreeter/greet", "after restart").json() == "Hello after restart!"
    )  # still registered


# ------------------------------------------------------------------------------------------- bad deployments
@pytest.mark.parametrize(
    ("handler", "says"),
    [
        ("garbage", "unknown command message type 0x0777"),
        ("version", "protocol version mismatch"),
        ("truncated", "ended inside a message"),
        ("silent", "without an End, Suspension or Error"),
    ],
)
def test_a_deployment_breaking_the_protocol_fails_its_attempts_not_the_engine(
    srv: Server, bad_peer: Peer, handler: str, says: str, mode: str
) -> None:
    reg = register(srv, bad_peer.url, mode)
    assert reg.status_code in (200, 201), reg.text
    invocation_id = send(srv, f"/Bad/{handler}", None)

    def failure() -> dict[str, Any] | None:
        resp = srv.admin_request(
            "POST",
            "/query",
            {
                "query": f"SELECT last_failure, last_failure_error_code FROM sys_invocation WHERE id = '{invocation_id}'"
            },
        )
        rows = resp.json()["rows"]
        return rows[0] if rows and rows[0]["last_failure"] else None

    row = wait_until(failure, timeout=20, what="the attempt to fail")
    assert says in row["last_failure"], row
    assert "571" in str(row["last_failure_error_code"])
    assert srv.admin_request("GET", "/health").status_code == 200
    assert srv.call("/PeerGreeter/greet", "still here").json() == "Hello still here!"
    srv.admin_request("PATCH", f"/invocations/{invocation_id}/kill")


def test_removing_a_deployment_stops_serving_its_services(srv: Server, bad_peer: Peer, mode: str) -> None:
    reg = register(srv, bad_peer.url, mode)
    dep_id = reg.json()["id"]
    listed = cli(srv, "list", "--json")
    assert listed.returncode == 0 and dep_id in {d["id"] for d in json.loads(listed.stdout)}
    described = cli(srv, "describe", dep_id)
    assert described.returncode == 0 and bad_peer.url in described.stdout and "garbage" in described.stdout
    removed = cli(srv, "remove", dep_id)
    assert removed.returncode == 0 and f"deployment {dep_id} removed" in removed.stdout
    assert srv.admin_request("GET", f"/deployments/{dep_id}").status_code == 404
    assert srv.call("/Bad/garbage").status_code == 404
    assert srv.admin_request("DELETE", f"/deployments/{dep_id}").status_code == 404
    gone = cli(srv, "describe", dep_id)
    assert gone.returncode == 1 and f"deployment '{dep_id}' not found" in gone.stderr


# ------------------------------------------------------------------------------------------- side by side
def test_in_process_and_remote_services_call_each_other(tmp: Path, peer: Peer, mode: str) -> None:
    server = Server("tests/apps/protocol_local.py", tmp / "data-b").start()
    try:
        reg = register(server, peer.url, mode)
        assert reg.status_code == 201, reg.text
        names = {d["uri"] for d in server.admin_request("GET", "/deployments").json()["deployments"]}
        assert names == {"local://in-process", peer.url}
        key = unique_key()
        # remote -> in-process: PeerCounter/add_via_local calls LocalDoubler/double(3) = 6
        assert server.call(f"/PeerCounter/{key}/add_via_local", 3).json() == 6
        # in-process -> remote -> in-process: LocalCaller calls PeerCounter/add_via_local(5): 6 + 10
        assert server.call("/LocalCaller/add_remote", key).json() == 16
        clash = register(server, peer.url, mode, force=True)
        assert clash.status_code == 200  # as Restate: forced, the same URI's services registered again
        assert {s["name"]: s["revision"] for s in clash.json()["services"]}["PeerCounter"] == 2
        assert server.admin_request("GET", "/services/PeerCounter").json()["revision"] == 2
        assert server.call(f"/PeerCounter/{key}/get").json() == 16  # state kept across revisions
    finally:
        server.kill()
