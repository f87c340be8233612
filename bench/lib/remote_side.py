"""Unbroken serving bench/services.py as a remote deployment, for ``bench/compare --remote py,ts``: the
protocol's overhead next to the in-process side, on the same machine in the same run.

``unbroken serve`` runs with no APP (the engine alone, as restate-server) and the workloads are served by
another process that ``POST /deployments`` registers: ``py`` is bench/services.py under restate-sdk 1.2.0 in
hypercorn (HTTP/2, bench/anchor_services.py, the restate-sdk of the running python: the project's test
extras), ``ts`` is bench/ts_services.cjs under Restate's TypeScript SDK in node (installed by
scripts/ts-sdk). Both speak the service protocol over h2c bidirectional streams, as with restate-server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lib import BENCH_DIR, ROOT
from lib.restate_side import HYPERCORN_TOML, RestateSide
from lib.targets import free_port

KINDS = ("py", "ts")


class RemoteUnavailable(RuntimeError):
    """The remote side's SDK is missing (restate-sdk not importable, node or the TS SDK not installable)."""


def ts_node_path() -> str:
    """The node_modules holding the TypeScript SDK (scripts/ts-sdk installs it once)."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "ts-sdk")], capture_output=True, text=True, timeout=360, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RemoteUnavailable(proc.stderr.strip())
    return proc.stdout.strip()


class RemoteSide(RestateSide):
    """``unbroken serve`` (no APP) + the workloads in a process of their own, registered as a deployment."""

    def __init__(self, workdir: Path, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown remote kind {kind!r}; choose from {', '.join(KINDS)}")
        self.kind = kind
        self.name = f"unbroken_remote_{kind}"
        self.label = f"Unbroken + remote {'restate-sdk (Python)' if kind == 'py' else 'TS SDK (node)'}"
        self.workdir = workdir
        self.base_dir = workdir / "data"
        self.server_log = workdir / "unbroken.log"
        self.service_log = workdir / ("hypercorn.log" if kind == "py" else "node.log")
        self.host = "127.0.0.1"
        self.ingress_port, self.admin_port, self.service_port = (free_port() for _ in range(3))
        self.server: subprocess.Popen[bytes] | None = None
        self.service: subprocess.Popen[bytes] | None = None
        self.startup: dict[str, float] = {}
        self.node_path = ts_node_path() if kind == "ts" else ""

    def _server_env(self) -> dict[str, str]:
        # Only the defaults count: drop any UNBROKEN_/RESTATE_ setting inherited from the environment.
        return {k: v for k, v in os.environ.items() if not k.startswith(("UNBROKEN_", "RESTATE_"))}

    def server_cmd(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "unbroken.cli.main",
            "serve",
            "--data-dir",
            str(self.base_dir),
            "--ingress-bind",
            f"{self.host}:{self.ingress_port}",
            "--admin-bind",
            f"{self.host}:{self.admin_port}",
        ]

    def service_cmd(self) -> tuple[list[str], dict[str, str]]:
        env = self._server_env()
        if self.kind == "ts":
            env["NODE_PATH"] = self.node_path
            return ["node", str(BENCH_DIR / "ts_services.cjs"), str(self.service_port)], env
        cfg = self.workdir / "hypercorn.toml"
        cfg.write_text(HYPERCORN_TOML.format(port=self.service_port))
        return [sys.executable, "-m", "hypercorn", "--config", str(cfg), "anchor_services:app"], env
