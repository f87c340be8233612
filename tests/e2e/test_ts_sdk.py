"""Services written with Restate's TypeScript SDK (``@restatedev/restate-sdk`` 1.17.2, plain JavaScript under
tests/e2e/ts_services, run by node) registered with a real ``unbroken serve`` and invoked through its
ingress, over Restate's service protocol: every test runs twice, over HTTP/2 bidirectional streams (h2c, the
SDK's default) and over HTTP/1.1 request/response (the SDK's ``http1Handler``).

The SDK is installed from npm by ``scripts/ts-sdk`` (cached in ``.cache/ts-sdk``); without node, npm or the
registry the tests skip, saying so, except in CI (``CI=true``), where they fail. Server A runs without an
APP (the engine alone, as restate-server); server B runs tests/apps/ts_local.py, whose in-process services
call the JS ones and are called by them. Mirrors tests/e2e/test_remote_deployments.py (restate-sdk 1.2.0).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ROOT, Server, free_port, unique_key, wait_until

pytestmark = pytest.mark.timeout(300)

MODES = ["h2", "http1.1"]
SERVICES = ROOT / "tests" / "e2e" / "ts_services" / "services.cjs"


@pytest.fixture(scope="module")
def node_path() -> str:
    """The node_modules holding the pinned SDK (installed once by scripts/ts-sdk)."""
    node = shutil.which("node")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "ts-sdk")], capture_output=True, text=True, timeout=360, cwd=ROOT
    )
    if node is None or proc.returncode != 0:
        reason = (
            f"Restate's TypeScript SDK is not available: {proc.stderr.strip() or 'node is not installed'}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return proc.stdout.strip()


class JsPeer:
    """services.cjs run by node: the same endpoint over h2c and over HTTP/1.1, each on a free port."""

    def __init__(self, node_path: str, mode: str, log: Path, name: str = "a") -> None:
        self.ledger = log.with_suffix(".ledger")
        h2, h1 = free_port(), free_port()
        self.url = f"http://127.0.0.1:{h2 if mode == 'h2' else h1}"
        env = {**os.environ, "NODE_PATH": node_path, "LEDGER": str(self.ledger), "PEER_NAME": name}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                ["node", str(SERVICES), str(h2), str(h1)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        accept = {"accept": "application/vnd.restate.endpointmanifest.v3+json"}

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node services.cjs exited:\n{log.read_text()[-3000:]}")
            try:
                return (
                    httpx.get(f"http://127.0.0.1:{h1}/discover", headers=accept, timeout=1).status_code == 200
                )
            except httpx.TransportError:
                return False

        try:
            wait_until(up, timeout=20, what="the TypeScript services to serve")
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

    def count(self, step: str) -> int:
        lines = self.ledger.read_text().splitlines() if self.ledger.exists() else []
        return sum(1 for line in lines if json.loads(line)["step"] == step)


@pytest.fixture(scope="module", params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Path:
    return tmp_path_factory.mktemp(f"ts-{mode}")


@pytest.fixture(scope="module")
def peer(node_path: str, mode: str, tmp: Path) -> Iterator[JsPeer]:
    p = JsPeer(node_path, mode, tmp / "node.log")
    yield p
    p.stop()


def register(server: Server, peer: JsPeer, mode: str) -> httpx.Response:
    return server.admin_request("POST", "/deployments", {"uri": peer.url, "use_http_11": mode == "http1.1"})


@pytest.fixture(scope="module")
def srv(tmp: Path, peer: JsPeer, mode: str) -> Iterator[Server]:
    """Server A: no APP, the JS endpoint registered through ``POST /deployments``."""
    server = Server(None, tmp / "data-a").start()
    reg = register(server, peer, mode)
    assert reg.status_code == 201, reg.text
    yield server
    server.kill()


def status(server: Server, invocation_id: str) -> str | None:
    query = f"SELECT status FROM sys_invocation WHERE id = '{invocation_id}'"
    resp = server.admin_request("POST", "/query", {"query": query})
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


def state(server: Server, service: str, key: str) -> dict[str, Any]:
    raw = server.admin_request("GET", f"/services/{service}/state/{key}").json()
    return {k: json.loads(v) for k, v in raw.items()}


# ------------------------------------------------------------------------------------------- registration
def test_the_ts_services_are_registered_with_their_kinds(srv: Server, peer: JsPeer, mode: str) -> None:
    (dep,) = srv.admin_request("GET", "/deployments").json()["deployments"]
    assert dep["uri"] == peer.url
    assert dep["protocol_type"] == ("BidiStream" if mode == "h2" else "RequestResponse")
    assert sorted(s["name"] for s in dep["services"]) == ["TsCounter", "TsGreeter", "TsLazy", "TsSignup"]
    counter = srv.admin_request("GET", "/services/TsCounter").json()
    assert counter["ty"] == "VirtualObject"
    kinds = {h["name"]: h.get("ty") for h in counter["handlers"]}
    assert kinds["add"] == "Exclusive" and kinds["get"] == "Shared"
    assert srv.admin_request("GET", "/services/TsSignup").json()["ty"] == "Workflow"


# ------------------------------------------------------------------------------------------- invocations
def test_object_state(srv: Server) -> None:
    key = unique_key()
    assert srv.call(f"/TsCounter/{key}/add", 5).json() == 5
    assert srv.call(f"/TsCounter/{key}/add", 2).json() == 7
    assert srv.call(f"/TsCounter/{key}/get").json() == 7
    assert state(srv, "TsCounter", key) == {"count": 7}
    assert srv.call(f"/TsCounter/{key}/reset").status_code == 200
    assert srv.call(f"/TsCounter/{key}/get").json() == 0


def test_run_and_sleep(srv: Server, peer: JsPeer, mode: str) -> None:
    name = unique_key()
    resp = srv.call("/TsGreeter/greet", name)
    assert resp.status_code == 200, resp.text
    assert resp.json() == f"Hello {name}!"
    # HTTP/2 streams the run's result and the sleep's end into the open attempt; request/response ends the
    # attempt at each wait and replays the journal in the next one.
    assert peer.count(f"greet.attempt.{name}") == (1 if mode == "h2" else 3)


def test_a_terminal_error_is_the_invocation_result(srv: Server) -> None:
    resp = srv.call("/TsGreeter/fail", "nope")
    assert resp.status_code == 418 and resp.json()["message"] == "nope"


def test_an_awakeable_resolved_through_the_ingress(srv: Server) -> None:
    key = unique_key()
    invocation_id = send(srv, f"/TsCounter/{key}/waitAwakeable", None)
    awakeable = wait_until(
        lambda: state(srv, "TsCounter", key).get("awakeable"), timeout=20, what="the awakeable id"
    )
    assert awakeable.startswith("sign_1")
    resolved = srv.call(f"/restate/awakeables/{awakeable}/resolve", "woken")
    assert resolved.status_code == 202, resolved.text
    result = output(srv, invocation_id)
    assert result.status_code == 200 and result.json() == "woken"


def test_a_one_way_call_then_attach_by_invocation_id(srv: Server) -> None:
    key = unique_key()
    assert srv.call("/TsGreeter/fireAndAttach", key).json() == 1
    assert srv.call(f"/TsCounter/{key}/get").json() == 1


def test_a_workflow_with_a_durable_promise(srv: Server) -> None:
    key = unique_key()
    run_id = send(srv, f"/TsSignup/{key}/run", "ada@example.com")
    wait_until(lambda: status(srv, run_id) == "suspended", timeout=20, what="the run to wait on its promise")
    unresolved = srv.call(f"/TsSignup/{key}/peek")
    assert unresolved.status_code == 200 and unresolved.json() is None
    assert srv.call(f"/TsSignup/{key}/confirm", "1234").json() == "ok"
    result = output(srv, run_id)
    assert result.status_code == 200 and result.json() == "ada@example.com confirmed with 1234"
    assert srv.call(f"/TsSignup/{key}/peek").json() == "1234"


def test_cancel_reaches_a_suspended_js_handler_which_compensates(srv: Server) -> None:
    key = unique_key()
    invocation_id = send(srv, f"/TsCounter/{key}/waitAwakeable", None)
    wait_until(lambda: status(srv, invocation_id) == "suspended", timeout=20, what="the wait to suspend")
    assert srv.admin_request("PATCH", f"/invocations/{invocation_id}/cancel").status_code in (200, 202)
    result = output(srv, invocation_id)
    assert result.status_code == 409, result.text
    assert state(srv, "TsCounter", key)["compensated"] == 409


def test_a_failing_step_is_retried_then_given_up_terminally(srv: Server, peer: JsPeer) -> None:
    name = unique_key()
    resp = srv.call("/TsGreeter/runGivesUp", name, timeout=60)
    assert resp.status_code == 200 and resp.json() == "gave up", resp.text
    assert peer.count(f"giveup.{name}") == 3  # maxRetryAttempts: each attempt ran the step once


def test_combinators_all_and_race_over_sleep_call_and_step(srv: Server) -> None:
    assert srv.call("/TsGreeter/together", 41, timeout=60).json() == [41, 42, "timer"]


def test_a_named_signal_between_two_js_invocations(srv: Server) -> None:
    waiting = send(srv, f"/TsCounter/{unique_key()}/waitSignal", None)
    wait_until(lambda: status(srv, waiting) == "suspended", timeout=20, what="the wait to suspend")
    assert srv.call("/TsGreeter/signalOther", waiting).json() == "sent"
    result = output(srv, waiting)
    assert result.status_code == 200 and result.json() == "signalled"


def test_large_values_both_ways(srv: Server) -> None:
    """4 MiB out (a SetState command) and back in (the next attempt's eager state)."""
    key = unique_key()
    size = 4 * 1024 * 1024
    assert srv.call(f"/TsCounter/{key}/putBlob", size, timeout=60).json() == size
    assert srv.call(f"/TsCounter/{key}/blobSize", timeout=60).json() == size


def test_lazy_state_reads_are_answered_by_the_engine(srv: Server) -> None:
    key = unique_key()
    assert srv.call(f"/TsLazy/{key}/put", "a").json() == [None, 1]
    assert srv.call(f"/TsLazy/{key}/put", "b").json() == ["a", 1]
    assert state(srv, "TsLazy", key) == {"v": "b"}


@pytest.mark.crash
def test_sigkill_mid_sleep_then_the_call_completes_once(srv: Server, peer: JsPeer) -> None:
    invocation_id = send(srv, "/TsGreeter/nap", 1500)
    wait_until(lambda: status(srv, invocation_id) == "suspended", timeout=20, what="the nap to suspend")
    assert peer.count("nap.before.1500") == 1
    srv.kill()
    srv.start()
    result = output(srv, invocation_id)
    assert result.status_code == 200 and result.json() == "slept 1500 on a"
    assert peer.count("nap.after.1500") == 1 and peer.count("nap.before.1500") == 1  # each ran once
    assert srv.call("/TsGreeter/greet", "after restart").json() == "Hello after restart!"  # still registered


# ------------------------------------------------------------------------------------------- side by side
def test_in_process_and_js_services_call_and_send_both_ways(tmp: Path, peer: JsPeer, mode: str) -> None:
    server = Server("tests/apps/ts_local.py", tmp / "data-b").start()
    try:
        reg = register(server, peer, mode)
        assert reg.status_code == 201, reg.text
        uris = {d["uri"] for d in server.admin_request("GET", "/deployments").json()["deployments"]}
        assert uris == {"local://in-process", peer.url}
        key = unique_key()
        # JS -> in-process: a call (LocalDoubler/double(4) = 8) and a send (LocalTally/{key}/add(4))
        assert server.call("/TsGreeter/callLocal", {"n": 4, "key": key}).json() == 8
        wait_until(
            lambda: server.call(f"/LocalTally/{key}/total").json() == 4,
            timeout=20,
            what="the JS send to land",
        )
        # in-process -> JS -> in-process: LocalCaller calls TsCounter/addViaLocal(5), which doubles it
        assert server.call("/LocalCaller/add_remote", key).json() == 10
        # in-process -> JS, one way: TsCounter/{key}/add(100)
        assert server.call("/LocalCaller/send_remote", key).json() == "sent"
        wait_until(
            lambda: server.call(f"/TsCounter/{key}/get").json() == 110, timeout=20, what="the send to land"
        )
    finally:
        server.kill()
