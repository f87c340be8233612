"""Drive a real ``unbroken serve`` process over loopback HTTP (used by e2e and crash tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests import pg
from unbroken.testing.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0


class Server:
    """One server process on its own ports and data dir; can be SIGKILLed and restarted on the same data."""

    def __init__(
        self,
        app: str | None,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        dev: bool = False,
        args: Sequence[str] = (),
    ) -> None:
        # None: ``unbroken serve`` without an APP (the engine alone, serving registered deployments)
        self.app = app if app is None or os.path.isabs(app) or ":" in app else str(ROOT / app)
        self.data_dir = data_dir
        self.env = dict(env or {})
        self.dev = dev
        self.args = list(args)  # more command-line options of ``serve``
        if os.environ.get("UNBROKEN_TEST_STORE") == "postgres" and "--store" not in self.args:
            # the whole e2e suite on PostgreSQL: a schema per data dir (dropped when the session ends)
            self.env.setdefault("UNBROKEN_STORE__URL", pg.url_for(pg.schema_for(str(data_dir))))
        self.ingress_port = free_port()
        self.admin_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.ingress = f"http://127.0.0.1:{self.ingress_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def start(self, extra_env: Mapping[str, str] | None = None, wait: bool = True) -> Server:
        """Start the process; ``wait``: until both health endpoints answer (else ``wait_ready`` later)."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        if "UNBROKEN_FAULTS" not in {**self.env, **(extra_env or {})}:
            env.pop("UNBROKEN_FAULTS", None)
        cmd = [
            sys.executable,
            "-m",
            "unbroken.cli.main",
            "dev" if self.dev else "serve",
            *([self.app] if self.app is not None else []),
            "--data-dir",
            str(self.data_dir),
            "--ingress-bind",
            f"127.0.0.1:{self.ingress_port}",
            "--admin-bind",
            f"127.0.0.1:{self.admin_port}",
            *self.args,
        ]
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if wait:
            self.wait_ready()
        return self

    def _wait_ready(self) -> None:  # the name older tests call
        self.wait_ready()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                a = httpx.get(f"{self.admin}/health", timeout=1)
                i = httpx.get(f"{self.ingress}/restate/health", timeout=1)
                if a.status_code == 200 and i.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a health endpoint: there is no event to await across processes
        raise TimeoutError(f"server not ready after {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def restart(self) -> Server:
        self.kill()
        return self.start()

    # --- HTTP helpers -----------------------------------------------------------------------------------
    def call(
        self,
        path: str,
        body: Any = None,
        *,
        timeout: float = 30,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
        method: str = "POST",
    ) -> httpx.Response:
        h = {"content-type": "application/json", **(headers or {})}
        content = raw if raw is not None else (b"" if body is None else httpx_json(body))
        return httpx.request(method, f"{self.ingress}{path}", content=content, headers=h, timeout=timeout)

    def get(self, path: str, timeout: float = 30) -> httpx.Response:
        return httpx.get(f"{self.ingress}{path}", timeout=timeout)

    def admin_request(self, method: str, path: str, json: Any = None, timeout: float = 30) -> httpx.Response:
        # /query answers Arrow unless asked for JSON (as Restate's does); the tests read its JSON
        headers = {"accept": "application/json"}
        return httpx.request(method, f"{self.admin}{path}", json=json, timeout=timeout, headers=headers)


def httpx_json(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` (an observable of another process) until truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def unique_key() -> str:
    """A fresh object/workflow key, so tests sharing one server never see each other's state."""
    import uuid

    return uuid.uuid4().hex


def read_box(srv: Server, key: str) -> Any:
    """What a handler of tests/apps/semantics.py published to ``Box/{key}``, once it is there."""

    def published() -> Any:
        resp = srv.call(f"/Box/{key}/get")
        assert resp.status_code == 200, resp.text
        return resp.json() if resp.content else None

    return wait_until(published, timeout=10, what=f"Box/{key} to be filled")


def run_session(cmd: list[str], timeout: float, what: str, **popen: Any) -> tuple[int, str, str]:
    """Run ``cmd`` in a session of its own: (exit status, stdout, stderr). Past ``timeout`` the whole session
    (the command and any server it started) is SIGKILLed and the test fails, saying what was running."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=30)
        raise AssertionError(f"{what} did not finish in {timeout} s:\n{stdout}\n{stderr}") from None
    return proc.returncode, stdout, stderr
