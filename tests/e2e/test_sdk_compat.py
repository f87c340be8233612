"""[sdk-compat]: restate-sdk code runs unchanged with ``import unbroken as restate`` (one test per point of
the issue), against real ``unbroken serve`` processes (and hypercorn for point 2)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, Server, free_port, unique_key, wait_until

APP = "tests/apps/compat_app.py"
ENV = {"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "500ms"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("compat") / "data", env=ENV).start()
    yield server
    server.kill()


def _status(srv: Server, inv: str) -> str | None:
    resp = srv.admin_request(
        "POST", "/query", {"query": f"SELECT status FROM sys_invocation WHERE id = '{inv}'"}
    )
    rows = resp.json()["rows"]
    return rows[0]["status"] if rows else None


# 1 ------------------------------------------------------------------------------------------------
def test_1_serve_a_file_inside_a_package_of_the_current_directory(tmp_path: Path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "names.py").write_text("GREETING = 'Hi'\n")
    (pkg / "app.py").write_text(
        "import unbroken as restate\nfrom mypkg.names import GREETING\nfrom . import names\n"
        "svc = restate.Service('Pkg')\n"
        "@svc.handler()\nasync def hi(ctx: restate.Context, name: str) -> str:\n"
        "    return f'{GREETING} {name} {names.GREETING}'\n"
        "app = restate.app([svc])\n"
    )
    ingress, admin = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "unbroken.cli.main",
        "serve",
        "mypkg/app.py",
        "--data-dir",
        str(tmp_path / "d"),
        "--ingress-bind",
        f"127.0.0.1:{ingress}",
        "--admin-bind",
        f"127.0.0.1:{admin}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{ingress}/restate/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, what="unbroken serve mypkg/app.py")
        resp = httpx.post(f"http://127.0.0.1:{ingress}/Pkg/hi", json="Ada", timeout=30)
        assert resp.status_code == 200 and resp.json() == "Hi Ada Hi", resp.text
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


# 2 ------------------------------------------------------------------------------------------------
def test_2_the_app_s_own_main_serves_it_with_hypercorn(tmp_path: Path) -> None:
    pytest.importorskip("hypercorn")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    log = tmp_path / "hypercorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / APP), f"127.0.0.1:{port}"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/restate/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, what="hypercorn serving the App")
        key = unique_key()
        assert (
            httpx.post(f"http://127.0.0.1:{port}/CBox/{key}/put", json={"a": 1}, timeout=30).status_code
            == 200
        )
        assert httpx.get(f"http://127.0.0.1:{port}/CBox/{key}/get", timeout=30).json() == {"a": 1}
        assert (tmp_path / ".unbroken").is_dir()  # the embedded engine, on the default data dir
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_2_uvicorn_runs_the_app_module_attribute(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    log = tmp_path / "uvicorn.log"
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "tests.apps.compat_app:app",
        "--port",
        str(port),
        "--log-level",
        "info",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/restate/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, what="uvicorn serving the App")
        resp = httpx.post(
            f"http://127.0.0.1:{port}/Raw/upper", content=b"ok", headers={"content-type": "text/plain"}
        )
        assert resp.status_code == 200 and resp.content == b"OK", resp.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    assert (tmp_path / ".unbroken").is_dir()  # the embedded engine ran, on the default data dir


# 3 ------------------------------------------------------------------------------------------------
def test_3_restate_sdk_client_names_work_against_the_ingress(srv: Server) -> None:
    import unbroken as restate
    from tests.apps.compat_app import get, put

    async def go() -> object:
        async with restate.create_client(srv.ingress) as client:
            key = unique_key()
            await client.object_call(put, key, arg=[1, 2])
            handle = await client.object_send(put, key, arg=[3])
            assert handle.invocation_id.startswith("inv_")
            wait_until(lambda: httpx.get(f"{srv.ingress}/CBox/{key}/get").json() == [3], what="send applied")
            try:
                await client.generic_call("Nope", "x", b"{}")
            except restate.HttpError as exc:
                assert exc.status_code == 404
            return await client.object_call(get, key, arg=None)

    assert asyncio.run(go()) == [3]


def test_3_get_logger_drops_lines_logged_during_replay(srv: Server) -> None:
    before = srv.log().count("before-step")
    resp = srv.call("/Compat/replay_logs", timeout=30)
    assert resp.status_code == 200 and resp.json() == "done", resp.text
    # the handler suspended on its sleep and ran again from the top: "before-step" once, not twice
    assert srv.log().count("before-step") - before == 1
    assert "after-step" in srv.log()


def test_3_invocation_context_managers_wrap_the_handler(srv: Server) -> None:
    resp = srv.call("/Compat/whose")
    assert resp.status_code == 200 and resp.json() == "acme", resp.text


def test_3_attempt_finished_event_is_set_when_the_attempt_ends(srv: Server, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    resp = srv.call("/Compat/finished_event", str(marker))
    assert resp.status_code == 200 and resp.json() is False, resp.text  # not set while the handler runs
    wait_until(marker.exists, what="attempt_finished_event to be set")


# 4 ------------------------------------------------------------------------------------------------
def test_4_cancel_invocation_on_a_call_future_and_a_send_handle(srv: Server) -> None:
    resp = srv.call("/Compat/cancel_child", timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json() == "child ended: 409 cancelled"
    resp = srv.call("/Compat/cancel_sent", timeout=30)
    assert resp.status_code == 200, resp.text
    child = resp.json()
    out = httpx.get(f"{srv.ingress}/restate/invocation/{child}/attach", timeout=30)
    assert out.status_code == 409, out.text


# 5 ------------------------------------------------------------------------------------------------
def test_5_named_signals_resolve_and_reject(srv: Server) -> None:
    key = unique_key()
    sent = srv.call("/Compat/wait_signal/send", key)
    assert sent.status_code == 202, sent.text
    inv = sent.json()["invocationId"]
    wait_until(lambda: httpx.get(f"{srv.ingress}/CBox/{key}/get").json() == inv, what="the waiter's id")
    # it waits long enough to suspend: the named signal must wake it (and its replay must find the value)
    wait_until(lambda: _status(srv, inv) == "suspended", what="the waiter to suspend")
    assert srv.call("/Compat/send_signals", inv).status_code == 200
    out = httpx.get(f"{srv.ingress}/restate/invocation/{inv}/attach", timeout=30)
    assert out.status_code == 200, out.text
    assert out.json() == "yes; second rejected: no way (403)"
    described = subprocess.run(
        [sys.executable, "-m", "unbroken.cli.main", "invocations", "describe", inv, "--admin-url", srv.admin],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "signal approved" in described.stdout and "signal second" in described.stdout, described.stdout


# 6 ------------------------------------------------------------------------------------------------
def test_6_handlers_declaring_other_content_types(srv: Server) -> None:
    resp = srv.call("/Raw/echo", raw=b"hello", headers={"content-type": "application/octet-stream"})
    assert resp.status_code == 200, resp.text
    assert resp.content == b"olleh" and resp.headers["content-type"] == "application/octet-stream"
    resp = srv.call("/Raw/upper", raw=b"abc", headers={"content-type": "text/plain; charset=utf-8"})
    assert resp.status_code == 200 and resp.content == b"ABC" and resp.headers["content-type"] == "text/plain"
    resp = srv.call("/Raw/echo", raw=b"hello", headers={"content-type": "text/plain"})
    assert resp.status_code == 400
    assert "does not match 'application/octet-stream'" in resp.json()["message"]


# 7 ------------------------------------------------------------------------------------------------
def test_7_system_exit_in_a_step_fails_the_attempt_not_the_server(srv: Server, tmp_path: Path) -> None:
    resp = srv.call("/Compat/exits_in_run", str(tmp_path / "marker"), timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json() == "second attempt"
    assert srv.proc is not None and srv.proc.poll() is None
    assert srv.get("/restate/health").status_code == 200


# 8 ------------------------------------------------------------------------------------------------
def test_8_scopes_fail_the_attempt_with_a_clear_message(srv: Server) -> None:
    sent = srv.call("/Compat/scoped/send")
    assert sent.status_code == 202
    inv = sent.json()["invocationId"]

    def failure() -> str:
        out = subprocess.run(
            [sys.executable, "-m", "unbroken.cli.main", "explain", inv, "--admin-url", srv.admin],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        return out.stdout if "not supported by Unbroken yet" in out.stdout else ""

    text = wait_until(failure, timeout=30, what="the scope failure in explain")
    assert "ctx.scope('tenant1').service_call" in text
    assert "not supported by Unbroken yet" in srv.log()


def test_8_scoped_requests_of_restate_sdk_s_own_client_get_a_clear_answer(srv: Server) -> None:
    restate_client = pytest.importorskip("restate.client")

    async def go() -> None:
        async with restate_client.create_client(srv.ingress) as client:
            await client.generic_call("Compat", "slow", b"null", scope="tenant1", limit_key="t1")

    with pytest.raises(Exception) as err:  # restate's HttpError, with the body our ingress answered
        asyncio.run(go())
    assert getattr(err.value, "status_code", None) == 501
    assert "not supported by Unbroken yet" in (getattr(err.value, "body", "") or "")


def test_8_unbroken_client_scopes_fail_without_sending() -> None:
    import unbroken as restate
    from tests.apps.compat_app import slow

    async def go() -> None:
        async with restate.create_client("http://127.0.0.1:9") as client:  # nothing listens: nothing is sent
            await client.scope("tenant1").service_call(slow, arg=None, limit_key="t1")

    with pytest.raises(restate.HttpError, match="not supported by Unbroken yet") as err:
        asyncio.run(go())
    assert err.value.status_code == 501
