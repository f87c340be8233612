"""The systems under test: ``unbroken serve`` in a subprocess, and the ``Target`` protocol both sides follow."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from lib import BENCH_DIR, ROOT

# Listening ports from below the kernel's ephemeral range, as unbroken/testing/ports.py explains (bind(0)
# ports were taken by outgoing connections and aborted a run). Not imported from there: the harness runs
# against other revisions too (bench/ab.py), which may not have that module.
_PORTS_LOW, _PORTS_HIGH = 20_000, 32_000
_next_port = _PORTS_LOW + (os.getpid() * 7919) % (_PORTS_HIGH - _PORTS_LOW)


def free_port() -> int:
    global _next_port
    for _ in range(_PORTS_HIGH - _PORTS_LOW):
        port, _next_port = _next_port, _PORTS_LOW + (_next_port + 1 - _PORTS_LOW) % (_PORTS_HIGH - _PORTS_LOW)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in [{_PORTS_LOW}, {_PORTS_HIGH})")


ACTIVE_SQL = "SELECT count(*) AS n FROM sys_invocation WHERE status != 'completed'"
TOTAL_SQL = "SELECT count(*) AS n FROM sys_invocation"


def http_status(
    host: str, port: int, method: str, path: str, body: bytes | None = None, timeout: float = 2
) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


class UnbrokenTarget:
    """``unbroken serve bench/services.py`` in a subprocess, with its own ports and a fresh data dir."""

    name = "unbroken"
    services = BENCH_DIR / "services.py"  # what ``unbroken serve`` runs

    def __init__(
        self,
        workdir: Path,
        fsync: bool = True,
        store_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.env = dict(env or {})  # settings of this process (bench/cluster.py: node name, lease wait)
        self.data_dir = workdir / "data"
        self.log_path = workdir / "server.log"
        self.fsync = fsync
        self.store_url = store_url  # PostgreSQL instead of SQLite (disk figures then say nothing)
        self.host = "127.0.0.1"
        self.ingress_port = free_port()
        self.admin_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup: dict[str, float] = {}

    @property
    def ingress_url(self) -> str:
        return f"http://{self.host}:{self.ingress_port}"

    def start(self, timeout: float = 60.0, wait: bool = True) -> None:
        """Start the process; ``wait``: until a first call succeeds (a standby answers nothing until then)."""
        # Only the defaults count: drop any UNBROKEN_/RESTATE_ setting inherited from the environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UNBROKEN_", "RESTATE_"))}
        env.update(self.env)
        if not self.fsync:
            env["UNBROKEN_STORAGE__FSYNC"] = "false"
        if self.store_url is not None:
            env["UNBROKEN_STORE__URL"] = self.store_url
        cmd = [
            sys.executable,
            "-m",
            "unbroken.cli.main",
            "serve",
            str(self.services),
            "--data-dir",
            str(self.data_dir),
            "--ingress-bind",
            f"{self.host}:{self.ingress_port}",
            "--admin-bind",
            f"{self.host}:{self.admin_port}",
        ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if not wait:
            return
        deadline = t0 + timeout
        health = first_call = None
        while first_call is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not answering after {timeout}s:\n{self.log_tail()}")
            try:
                if (
                    health is None
                    and http_status(self.host, self.ingress_port, "GET", "/restate/health") == 200
                ):
                    health = time.monotonic() - t0
                if health is not None and (
                    http_status(self.host, self.ingress_port, "POST", "/Bench/noop", b'{"hello":"world"}')
                    == 200
                ):
                    first_call = time.monotonic() - t0
            except OSError:
                pass
            if first_call is None:
                time.sleep(0.01)  # polling another process's socket: there is no event to wait on
        assert health is not None
        self.startup = {"health_s": round(health, 3), "first_call_s": round(first_call, 3)}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> dict[str, int]:
        """Processes whose CPU is charged to the system under test (Restate would have server + service)."""
        assert self.proc is not None
        return {"server": self.proc.pid}

    def data_dirs(self) -> list[Path]:
        return [self.data_dir]

    def _query(self, sql: str) -> int | None:
        db = self.data_dir / "unbroken.db"
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return int(conn.execute(sql).fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error:
            return None

    def total_invocations(self) -> int | None:
        """Invocations ever created (completed ones are kept for the retention period), read-only from the store."""
        return self._query("SELECT count(*) FROM invocation")

    def active_invocations(self) -> int | None:
        """Invocations not completed yet (None if the store cannot be read)."""
        return self._query("SELECT count(*) FROM invocation WHERE status != 'completed'")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_problems(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [
            ln
            for ln in text.splitlines()
            if " ERROR " in ln or " WARNING " in ln or ln.startswith("Traceback")
        ]


def sql_count(host: str, port: int, sql: str, timeout: float = 30) -> int | None:
    """``SELECT count(*) AS n ...`` through the admin API's ``POST /query`` (same on Unbroken and Restate)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/query",
            body=json.dumps({"query": sql}),
            headers={"content-type": "application/json", "accept": "application/json"},
        )
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return None
        rows = json.loads(body)["rows"]
        return int(next(iter(rows[0].values()))) if rows else 0
    except (OSError, ValueError, KeyError, IndexError, StopIteration, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Target(Protocol):
    name: str
    label: str
    startup: dict[str, float]

    @property
    def ingress_url(self) -> str: ...
    def start(self, timeout: float = 60.0) -> None: ...
    def stop(self) -> None: ...
    def alive(self) -> bool: ...
    def pids(self) -> dict[str, int]: ...
    def data_dirs(self) -> list[Path]: ...
    def total_invocations(self) -> int | None: ...
    def active_invocations(self) -> int | None: ...
    def log_tail(self, chars: int = 4000) -> str: ...
    def log_problems(self) -> list[str]: ...


class UnbrokenSide(UnbrokenTarget):
    """bench/run.py's Unbroken target, counting invocations through the admin ``/query`` like Restate's side."""

    def __init__(self, workdir: Path, fsync: bool = True, store_url: str | None = None) -> None:
        super().__init__(workdir, fsync=fsync, store_url=store_url)
        self.name = "unbroken" if fsync else "unbroken_nofsync"
        self.label = "Unbroken" if fsync else "Unbroken fsync OFF"
        if store_url is not None:
            self.name, self.label = "unbroken_pg", "Unbroken on PostgreSQL"

    def total_invocations(self) -> int | None:
        if self.store_url is not None:
            return pg_count(self.store_url, "SELECT count(*) FROM invocation")
        return sql_count(self.host, self.admin_port, TOTAL_SQL)

    def active_invocations(self) -> int | None:
        if self.store_url is not None:
            return pg_count(self.store_url, "SELECT count(*) FROM invocation WHERE status <> 'completed'")
        return sql_count(self.host, self.admin_port, ACTIVE_SQL)


def fresh_schema(store_url: str) -> str:
    """``store_url`` after its schema was dropped: every run starts on empty tables (the schema is the one in
    ``?schema=``, default ``unbroken``: give the benchmark one of its own)."""
    import psycopg
    from psycopg import sql

    from unbroken.storage.postgres_schema import parse_url

    location = parse_url(store_url)
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(location.schema)))
    return store_url


def pg_count(store_url: str, query: str) -> int | None:
    """A count read from the store's tables directly: ``/query`` on PostgreSQL copies every row into SQLite
    first, which a benchmark's hundred thousand rows would turn into the thing measured."""
    import psycopg

    from unbroken.storage.postgres_schema import connect, parse_url

    try:
        with connect(parse_url(store_url)) as conn:
            row = conn.execute(query.encode()).fetchone()
    except psycopg.Error:
        return None
    return None if row is None else int(row[0])
