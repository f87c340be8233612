"""The reverse of the protocol tests: services written with Unbroken's SDK (``tests/apps/unbroken_on_restate.py``)
run on the real Restate server (npm ``@restatedev/restate-server`` 1.7.12, installed by
``scripts/restate-server`` into ``.cache/restate-server``), which registers the App as a deployment and drives
every attempt over its service protocol. Each test runs twice:

* ``h2``: the App as it is (both roles) served by hypercorn, which Restate reaches with h2c prior knowledge:
  bidirectional streams, notifications streamed into the open attempt;
* ``http1.1``: ``app.deployment()`` (the protocol only) served by uvicorn, registered with ``use_http_11``:
  request/response, every wait a suspension and the next attempt a replay.

Restate's inactivity timeout is 1 s here, so that a handler waiting longer suspends over HTTP/2 too. Without
npm or its registry the tests skip, saying so, except in CI (``CI=true``), where they fail.

The same tests also run with ``unbroken serve`` (no APP) in Restate's place: Unbroken's server side of the
protocol (``protocol/remote.py``) driving Unbroken's SDK side.
"""

from __future__ import annotations

import contextlib
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
SERVERS = ["restate", "unbroken"]
QUIET = {"RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s"}
APP = "tests.apps.unbroken_on_restate"


def _restate_server_binary() -> str:
    done = subprocess.run(
        [str(ROOT / "scripts" / "restate-server")], capture_output=True, text=True, timeout=360, cwd=ROOT
    )
    if done.returncode != 0:
        reason = done.stderr.strip() or "scripts/restate-server failed"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return done.stdout.strip()


class Process:
    """A process in a session of its own, so that killing it kills what it started too (hypercorn serves
    from a worker process it spawns: SIGKILL to hypercorn alone left that worker serving the port)."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL to the process and everything it started; waits for the process."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def check(self, what: str) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # what is left of it (a worker its SIGTERM did not reach, or it, stuck)


class RestateServer(Process):
    """restate-server on free ports (ingress, admin, node-to-node), its data in a directory of the test's."""

    def __init__(self, binary: str, base: Path) -> None:
        self.ingress_port, self.admin_port, node = free_port(), free_port(), free_port()
        self.ingress = f"http://127.0.0.1:{self.ingress_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        env = {
            "RESTATE_BASE_DIR": str(base / "restate-data"),
            "RESTATE_LISTEN_MODE": "tcp",
            "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{self.ingress_port}",
            "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{self.admin_port}",
            "RESTATE_BIND_ADDRESS": f"127.0.0.1:{node}",
            "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{node}",
            "RESTATE_DEFAULT_NUM_PARTITIONS": "1",
            **QUIET,
            "RESTATE_DEFAULT_RETRY_POLICY__INITIAL_INTERVAL": "100ms",
        }
        super().__init__([binary, "--no-logo"], base / "restate.log", env, base)

        def up() -> bool:
            self.check("restate-server")
            try:
                return (
                    httpx.get(f"{self.admin}/health", timeout=1).status_code == 200
                    and httpx.get(f"{self.ingress}/restate/health", timeout=1).status_code == 200
                )
            except httpx.TransportError:
                return False

        try:
            wait_until(up, timeout=60, interval=0.2, what="restate-server to serve")
        except BaseException:
            self.stop()
            raise

    def call(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        content = None if body is None else json.dumps(body).encode()
        hdrs = {**({"content-type": "application/json"} if body is not None else {}), **(headers or {})}
        return httpx.post(f"{self.ingress}{path}", content=content, headers=hdrs, timeout=60)

    def send(self, path: str, body: Any = None) -> str:
        resp = self.call(f"{path}/send", body)
        assert resp.status_code == 202, resp.text
        return str(resp.json()["invocationId"])

    def output(self, invocation_id: str) -> httpx.Response:
        return httpx.get(f"{self.ingress}/restate/invocation/{invocation_id}/attach", timeout=60)

    def admin_request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, f"{self.admin}{path}", json=body, timeout=60)

    def query(self, sql: str) -> list[dict[str, Any]]:
        resp = httpx.post(
            f"{self.admin}/query", json={"query": sql}, headers={"accept": "application/json"}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        rows: list[dict[str, Any]] = resp.json()["rows"]
        return rows

    def status(self, invocation_id: str) -> str | None:
        rows = self.query(f"SELECT status FROM sys_invocation WHERE id = '{invocation_id}'")
        return rows[0]["status"] if rows else None


class UnbrokenServer(RestateServer):
    """``unbroken serve`` without an APP, in Restate's place (the same calls)."""

    def __init__(self, base: Path) -> None:  # not RestateServer.__init__: a harness Server underneath
        self.server = Server(None, base / "unbroken-data", env=QUIET).start()
        self.ingress, self.admin = self.server.ingress, self.server.admin

    def stop(self) -> None:
        self.server.kill()


class Deployment(Process):
    """The Unbroken App: hypercorn (h2c and HTTP/1.1) serving it whole, or uvicorn (HTTP/1.1) serving
    ``app.deployment()``."""

    def __init__(self, mode: str, base: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ledger = base / "ledger.jsonl"
        bind = f"127.0.0.1:{self.port}"
        if mode == "h2":
            self.cmd = [sys.executable, "-m", "hypercorn", "--bind", bind, f"{APP}:app"]
        else:
            self.cmd = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port)]
            self.cmd += ["--log-level", "warning", f"{APP}:deployment"]
        self.env = {
            "PEER_LEDGER": str(self.ledger),
            "UNBROKEN_DATA_DIR": str(base / "embedded-data"),  # the App whole also starts its own engine
            "PYTHONPATH": str(ROOT),
        }
        self.logfile = base / "deployment.log"
        self._start()

    def _start(self) -> None:
        super().__init__(self.cmd, self.logfile, self.env, ROOT)

        def up() -> bool:
            self.check("the deployment")
            try:
                accept = {"accept": "application/vnd.restate.endpointmanifest.v3+json"}
                return httpx.get(f"{self.url}/discover", headers=accept, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(up, timeout=30, what="the deployment to serve")
        except BaseException:
            self.stop()
            raise

    def crash_and_restart(self) -> None:
        """SIGKILL, then the same App again on the same port (the server's URI for it)."""
        self.kill()
        self._start()

    def count(self, step: str) -> int:
        path = self.ledger
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return sum(1 for row in rows if row["step"] == step)


@pytest.fixture(scope="module", params=SERVERS)
def server_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module", params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def setup(
    server_kind: str, mode: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RestateServer, Deployment]]:
    binary = _restate_server_binary() if server_kind == "restate" else ""
    base = tmp_path_factory.mktemp(f"on-{server_kind}-{mode}")
    dep = Deployment(mode, base)
    try:
        server = RestateServer(binary, base) if server_kind == "restate" else UnbrokenServer(base)
    except BaseException:
        dep.stop()
        raise
    try:
        reg = server.admin_request("POST", "/deployments", {"uri": dep.url, "use_http_11": mode == "http1.1"})
        assert reg.status_code == 201, reg.text
        yield server, dep
    finally:
        server.stop()
        dep.stop()


@pytest.fixture
def rs(setup: tuple[RestateServer, Deployment]) -> RestateServer:
    return setup[0]


@pytest.fixture
def dep(setup: tuple[RestateServer, Deployment]) -> Deployment:
    return setup[1]


# ------------------------------------------------------------------------------------------- registration
def test_restate_registers_the_services_with_their_handler_kinds(
    rs: RestateServer, dep: Deployment, mode: str
) -> None:
    (listed,) = rs.admin_request("GET", "/deployments").json()["deployments"]
    assert listed["uri"].rstrip("/") == dep.url and listed["sdk_version"].startswith("unbroken/")
    assert listed["protocol_type"] == ("BidiStream" if mode == "h2" else "RequestResponse")
    assert (listed["min_protocol_version"], listed["max_protocol_version"]) == (5, 6)
    counter = rs.admin_request("GET", "/services/Counter").json()
    assert counter["ty"] == "VirtualObject"
    kinds = {h["name"]: h.get("ty") for h in counter["handlers"]}
    assert kinds["add"] == "Exclusive" and kinds["get"] == "Shared"
    signup = rs.admin_request("GET", "/services/Signup").json()
    assert signup["ty"] == "Workflow"
    assert {h["name"]: h.get("ty") for h in signup["handlers"]}["run"] == "Workflow"
    assert rs.admin_request("GET", "/services/Greeter").json()["ty"] == "Service"


# ------------------------------------------------------------------------------------------- semantics
def test_run_and_sleep(rs: RestateServer, dep: Deployment, mode: str) -> None:
    name = unique_key()
    resp = rs.call("/Greeter/greet", name)
    assert resp.status_code == 200 and resp.json() == f"Hello {name}!", resp.text
    # HTTP/2 streams the run's stored result and the sleep's end into the open attempt; request/response
    # suspends at each wait and replays the journal in the next attempt.
    assert dep.count(f"greet.attempt.{name}") == (1 if mode == "h2" else 3)


def test_sleep_suspends_and_resumes(rs: RestateServer, dep: Deployment) -> None:
    ms = 2500  # past the 1 s inactivity timeout: over HTTP/2 too, the attempt suspends
    invocation_id = rs.send("/Greeter/nap", ms)
    wait_until(lambda: rs.status(invocation_id) == "suspended", timeout=30, what="the nap to suspend")
    result = rs.output(invocation_id)
    assert result.status_code == 200 and result.json() == f"slept {ms}", result.text
    assert dep.count(f"nap.before.{ms}") == 1 and dep.count(f"nap.after.{ms}") == 1


def test_state_with_exclusive_and_shared_handlers(rs: RestateServer) -> None:
    key = unique_key()
    assert rs.call(f"/Counter/{key}/add", 5).json() == 5
    assert rs.call(f"/Counter/{key}/add", 2).json() == 7
    assert rs.call(f"/Counter/{key}/get").json() == 7
    # an exclusive handler holds the key: another exclusive one waits in the inbox, a shared one does not
    blocker = rs.send(f"/Counter/{key}/block")
    awakeable = wait_until(
        lambda: rs.call(f"/Counter/{key}/awakeable_of").json(), timeout=30, what="the awakeable id"
    )
    queued = rs.send(f"/Counter/{key}/add", 1)
    wait_until(lambda: rs.status(queued) == "pending", timeout=30, what="the add to wait in the inbox")
    assert rs.call(f"/Counter/{key}/get").json() == 7  # shared: runs while the key is held
    assert rs.call(f"/restate/awakeables/{awakeable}/resolve", "go").status_code == 202
    assert rs.output(blocker).json() == "go"
    assert rs.output(queued).json() == 8
    assert rs.call(f"/Counter/{key}/reset").status_code == 200
    assert rs.call(f"/Counter/{key}/get").json() == 0


def test_workflow_with_a_durable_promise(rs: RestateServer) -> None:
    key = unique_key()
    run_id = rs.send(f"/Signup/{key}/run", "ada@example.com")
    wait_until(lambda: rs.status(run_id) == "suspended", timeout=30, what="the run to wait on its promise")
    unresolved = rs.call(f"/Signup/{key}/peek")
    assert unresolved.status_code == 200 and unresolved.content in (b"", b"null")
    assert rs.call(f"/Signup/{key}/confirm", "1234").status_code == 200
    result = rs.output(run_id)
    assert result.status_code == 200 and result.json() == "ada@example.com confirmed with 1234"
    assert rs.call(f"/Signup/{key}/peek").json() == "1234"


def test_errors_retries_and_terminal_errors(rs: RestateServer, dep: Deployment) -> None:
    name = unique_key()
    assert rs.call("/Greeter/flaky", name).json() == "ok after 2 attempts"  # an ErrorMessage: retried
    assert rs.call("/Greeter/run_retries", name).json() == "third time"  # ctx.run retried by new attempts
    assert dep.count(f"run_retries.{name}") == 3
    failed = rs.call("/Greeter/run_fails", "bad input")
    assert failed.status_code == 422 and failed.json()["message"] == "bad input"
    terminal = rs.call("/Greeter/fail", "nope")
    assert terminal.status_code == 418 and terminal.json()["message"] == "nope"


def test_calls_and_sends_between_services(rs: RestateServer) -> None:
    key = unique_key()
    assert rs.call("/Greeter/call_counter", key).json() == 11  # the send (10) ran first, then the call (1)
    assert rs.call(f"/Counter/{key}/get").json() == 11
    assert rs.call("/Greeter/fire_and_attach", key).json() == 12


def test_awakeable_and_named_signal(rs: RestateServer) -> None:
    waiting = rs.send(f"/Counter/{unique_key()}/wait_signal")
    wait_until(lambda: rs.status(waiting) == "suspended", timeout=30, what="the wait to suspend")
    assert rs.call("/Greeter/signal_other", waiting).json() == "sent"
    result = rs.output(waiting)
    assert result.status_code == 200 and result.json() == "signalled"


def test_idempotency_key(rs: RestateServer, dep: Deployment) -> None:
    name = unique_key()
    key = {"idempotency-key": f"once-{name}"}
    first = rs.call("/Greeter/count_once", name, headers=key)
    second = rs.call("/Greeter/count_once", name, headers=key)
    assert first.status_code == second.status_code == 200 and first.json() == second.json() == 1
    assert dep.count(f"once.{name}") == 1


def test_cancel_runs_the_compensation(rs: RestateServer, dep: Deployment) -> None:
    key = unique_key()
    invocation_id = rs.send(f"/Counter/{key}/book_trip", key)
    wait_until(lambda: rs.status(invocation_id) == "suspended", timeout=30, what="the booking to wait")
    assert rs.admin_request("PATCH", f"/invocations/{invocation_id}/cancel").status_code in (200, 202)
    result = rs.output(invocation_id)
    assert result.status_code == 409, result.text
    assert dep.count(f"book.{key}") == 1 and dep.count(f"undo.{key}") == 1


def test_lazy_state_is_read_through_the_server(rs: RestateServer) -> None:
    key = unique_key()
    assert rs.call(f"/Lazy/{key}/put", "a").json() == ["seen.None", "v"]
    assert rs.call(f"/Lazy/{key}/put", "b").json() == ["seen.None", "seen.a", "v"]
    assert rs.call(f"/Lazy/{key}/wipe").json() == []


def test_large_values_both_ways(rs: RestateServer) -> None:
    """4 MiB out (a SetState command) and back in (the next attempt's eager state): past HTTP/2's initial
    flow-control window in both directions."""
    key = unique_key()
    size = 4 * 1024 * 1024
    assert rs.call(f"/Counter/{key}/put_blob", size).json() == size
    assert rs.call(f"/Counter/{key}/blob_size").json() == size


@pytest.mark.crash
def test_the_deployment_killed_mid_sleep_then_the_call_completes_once(
    rs: RestateServer, dep: Deployment
) -> None:
    """The deployment is SIGKILLed while the invocation sleeps (suspended); the next attempt, on the
    restarted App, replays the journal: each side effect ran once."""
    ms = 3000
    invocation_id = rs.send("/Greeter/nap", ms)
    wait_until(lambda: rs.status(invocation_id) == "suspended", timeout=30, what="the nap to suspend")
    assert dep.count(f"nap.before.{ms}") == 1
    dep.crash_and_restart()
    result = rs.output(invocation_id)
    assert result.status_code == 200 and result.json() == f"slept {ms}", result.text
    assert dep.count(f"nap.before.{ms}") == 1 and dep.count(f"nap.after.{ms}") == 1
