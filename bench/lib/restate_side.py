"""The Restate side of bench/compare: restate-server + bench/services.py under restate-sdk in hypercorn."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import anchor as anchor_mod  # bench/anchor.py (bench/ is on sys.path)

from lib import BENCH_DIR
from lib.targets import ACTIVE_SQL, TOTAL_SQL, free_port, http_status, sql_count

HYPERCORN_TOML = """\
bind = ["127.0.0.1:{port}"]
workers = 0                           # serve in this process (no supervisor + worker pair)
h2_max_concurrent_streams = 100000    # restate-server multiplexes up to 128 invocations per connection
keep_alive_max_requests = 1000000000  # never recycle the server's HTTP/2 connections
keep_alive_timeout = 3600
backlog = 4096
"""


class RestateSide:
    """restate-server 1.7.12 (own base dir and ports) + bench/services.py under restate-sdk 1.2.0 in hypercorn."""

    name = "restate"
    label = "Restate"
    # what hypercorn serves from bench/ (bench/deployment_cost.py swaps it)
    service_app = "anchor_services:app"

    def __init__(self, workdir: Path, anchor: anchor_mod.Anchor) -> None:
        self.workdir = workdir
        self.anchor = anchor
        self.base_dir = workdir / "restate-base"
        self.server_log = workdir / "restate-server.log"
        self.service_log = workdir / "hypercorn.log"
        self.host = "127.0.0.1"
        self.ingress_port, self.admin_port, self.node_port, self.service_port = (
            free_port() for _ in range(4)
        )
        self.server: subprocess.Popen[bytes] | None = None
        self.service: subprocess.Popen[bytes] | None = None
        self.startup: dict[str, float] = {}

    @property
    def ingress_url(self) -> str:
        return f"http://{self.host}:{self.ingress_port}"

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UNBROKEN_", "RESTATE_"))}
        env.update(
            {
                "RESTATE_INGRESS__BIND_ADDRESS": f"{self.host}:{self.ingress_port}",
                "RESTATE_ADMIN__BIND_ADDRESS": f"{self.host}:{self.admin_port}",
                "RESTATE_BIND_ADDRESS": f"{self.host}:{self.node_port}",
                "RESTATE_ADVERTISED_ADDRESS": f"http://{self.host}:{self.node_port}/",
                "RESTATE_LISTEN_MODE": "tcp",  # no unix sockets next to the data
                "RESTATE_NODE_NAME": "bench",
                "RESTATE_DISABLE_TELEMETRY": "true",  # no outside network here anyway
                "RESTATE_LOG_DISABLE_ANSI_CODES": "true",
            }
        )
        return env

    def server_cmd(self) -> list[str]:
        return [str(self.anchor.server_bin), "--base-dir", str(self.base_dir), "--no-logo"]

    def service_cmd(self) -> tuple[list[str], dict[str, str]]:
        """The services' process (bench/services.py under restate-sdk in hypercorn) and its environment."""
        cfg = self.workdir / "hypercorn.toml"
        cfg.write_text(HYPERCORN_TOML.format(port=self.service_port))
        svc_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("UNBROKEN_", "RESTATE_", "PYTHON"))
        }
        return [str(self.anchor.hypercorn), "--config", str(cfg), self.service_app], svc_env

    def start(self, timeout: float = 60.0) -> None:
        svc_cmd, svc_env = self.service_cmd()
        t0 = time.monotonic()
        with open(self.server_log, "ab") as log:
            self.server = subprocess.Popen(
                self.server_cmd(),
                env=self._server_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        with open(self.service_log, "ab") as log:
            self.service = subprocess.Popen(
                svc_cmd, env=svc_env, stdout=log, stderr=subprocess.STDOUT, cwd=BENCH_DIR
            )
        deadline = t0 + timeout
        health = registered = first_call = None
        last_err = ""
        while first_call is None:
            for proc, what in ((self.server, "restate-server"), (self.service, "hypercorn")):
                if proc.poll() is not None:
                    raise RuntimeError(f"{what} exited with {proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Restate side not answering after {timeout}s ({last_err}):\n{self.log_tail()}"
                )
            try:
                if (
                    health is None
                    and http_status(self.host, self.ingress_port, "GET", "/restate/health") == 200
                ):
                    health = time.monotonic() - t0
                if health is not None and registered is None and self._service_listening():
                    status, text = self._register()
                    if status in (200, 201):
                        registered = time.monotonic() - t0
                    else:
                        last_err = f"registration answered {status}: {text[:300]}"
                if registered is not None:
                    body = b'{"hello":"world"}'
                    if http_status(self.host, self.ingress_port, "POST", "/Bench/noop", body) == 200:
                        first_call = time.monotonic() - t0
            except OSError as exc:
                last_err = str(exc)
            if first_call is None:
                time.sleep(0.01)  # polling other processes' sockets: there is no event to wait on
        assert health is not None and registered is not None
        self.startup = {
            "health_s": round(health, 3),
            "registered_s": round(registered, 3),
            "first_call_s": round(first_call, 3),
        }

    def _service_listening(self) -> bool:
        try:
            with socket.create_connection((self.host, self.service_port), timeout=1):
                return True
        except OSError:
            return False

    def _register(self) -> tuple[int, str]:
        """``POST :admin/deployments {"uri": <hypercorn>, "force": true}`` (fails until hypercorn listens)."""
        conn = http.client.HTTPConnection(self.host, self.admin_port, timeout=10)
        try:
            body = json.dumps({"uri": f"http://{self.host}:{self.service_port}", "force": True})
            conn.request("POST", "/deployments", body=body, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def stop(self) -> None:
        # hypercorn shuts down on SIGINT; restate-server on SIGTERM. Escalate to SIGKILL if either hangs.
        for proc, sig in ((self.service, signal.SIGINT), (self.server, signal.SIGTERM)):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def alive(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self.server, self.service))

    def pids(self) -> dict[str, int]:
        assert self.server is not None and self.service is not None
        return {"server": self.server.pid, "service": self.service.pid}

    def data_dirs(self) -> list[Path]:
        return [self.base_dir]

    def total_invocations(self) -> int | None:
        return sql_count(self.host, self.admin_port, TOTAL_SQL)

    def active_invocations(self) -> int | None:
        return sql_count(self.host, self.admin_port, ACTIVE_SQL)

    def log_tail(self, chars: int = 4000) -> str:
        out = []
        for path in (self.server_log, self.service_log):
            try:
                out.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-chars // 2 :])
            except OSError:
                pass
        return "\n".join(out)

    def log_problems(self) -> list[str]:
        problems = []
        for path in (self.server_log, self.service_log):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for ln in lines:
                if "Lifespan" in ln:  # restate-sdk's ASGI app has no lifespan support: harmless
                    continue
                if "octocrab" in ln:  # restate-server's release check (GitHub API): no outside network here
                    continue
                if " ERROR " in ln or " WARN " in ln or "[ERROR]" in ln or ln.startswith("Traceback"):
                    problems.append(f"{path.name}: {ln.strip()}")
        return problems
