"""Unbroken and the real Restate server, side by side on the same machine in one run: ``bench/compare``.

    bench/compare                          # W1-W6 at 16 and 128 connections (W4 also 512), 5 s + 15 s each
    bench/compare --quick                  # smoke test: 16 connections, 1 s warm-up + 2 s each
    bench/compare --only unbroken --quick  # Unbroken alone (no Restate install needed; what CI runs)
    bench/compare --workloads W1,W5 --connections 16 --duration 5 --warmup 2

Both systems run the same handlers (bench/services.py, written with the restate-sdk API) under the same load
(../shared/bench/WORKLOADS.md: closed loop, ``wrk -t1 -c<conns>``, warm-up then measured window). Restate is
restate-server 1.7.12 with restate-sdk 1.2.0 served by hypercorn (HTTP/2), installed by bench/anchor.py into
bench/.anchor/ on first use; Unbroken is ``unbroken serve bench/services.py``. Both run with their defaults,
durability on: Unbroken fsyncs every commit, Restate's RocksDB WAL fsync is on.

Both servers stay up for the whole run and the workload cells alternate between them (Unbroken first in
even cells, Restate first in odd ones), so slow drift of the machine hits both alike. For every cell and
side: a warm-up wrk run (discarded), a wait until the side is idle (its CPU quiet and no invocation left
unfinished), then the measured wrk run, then the wait again; CPU, disk and invocation counts are deltas
between the two idle points, so work still in flight when wrk stops is charged to the run that caused it.

Prints one table (Unbroken, Restate and Unbroken/Restate for each figure) and writes the JSON into
bench/results/compare-<timestamp>.json. Exit status: 0 all calls answered 2xx; 1 aborted; 2 some calls
failed (counted as errors, never as throughput); 3 prerequisites missing (wrk, unbroken); 4 the Restate
anchor could not be installed or started (the reason is printed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anchor as anchor_mod  # noqa: E402
from run import (  # noqa: E402
    BENCH_DIR,
    CLK_TCK,
    WORKLOADS,
    WRK_INSTALL_HINT,
    UnbrokenTarget,
    Workload,
    charged_invocations,
    children_cpu_s,
    cpu_ticks,
    dir_bytes,
    free_port,
    git_rev,
    host_busy_ticks,
    http_status,
    machine_info,
    proc_status_kib,
    proc_write_bytes,
    run_wrk,
    wait_machine_quiet,
    wrk_script,
    wrk_version,
)

RESULTS_DIR = BENCH_DIR / "results"

SEND = Workload(
    "send", "W6", "/Bench/noop/send", '{"hello":"world"}', description="one-way noop: accepted/s, then drain"
)
ALL_WORKLOADS: dict[str, Workload] = {**WORKLOADS, SEND.name: SEND}
DEFAULT_ORDER = ["noop", "steps", "counter", "hot", "sleep", "fanout", "send"]
DEFAULT_CONNS: dict[str, list[int]] = {name: [16, 128] for name in DEFAULT_ORDER} | {"sleep": [16, 128, 512]}

ACTIVE_SQL = "SELECT count(*) AS n FROM sys_invocation WHERE status != 'completed'"
TOTAL_SQL = "SELECT count(*) AS n FROM sys_invocation"
# Idle = at most QUIET_TICKS clock ticks of CPU (10% of a core) over QUIET_WINDOW samples of 0.1 s.
QUIET_WINDOW = 5
QUIET_TICKS = 5


# ------------------------------------------------------------------------------------------------ targets
def sql_count(host: str, port: int, sql: str, timeout: float = 30) -> int | None:
    """``SELECT count(*) AS n ...`` through the admin API's ``POST /query`` (same on Unbroken and Restate)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/query", body=json.dumps({"query": sql}),
                     headers={"content-type": "application/json", "accept": "application/json"})  # fmt: skip
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

    def __init__(self, workdir: Path, fsync: bool = True) -> None:
        super().__init__(workdir, fsync=fsync)
        self.name = "unbroken" if fsync else "unbroken_nofsync"
        self.label = "Unbroken" if fsync else "Unbroken fsync OFF"

    def total_invocations(self) -> int | None:
        return sql_count(self.host, self.admin_port, TOTAL_SQL)

    def active_invocations(self) -> int | None:
        return sql_count(self.host, self.admin_port, ACTIVE_SQL)


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
        env.update({
            "RESTATE_INGRESS__BIND_ADDRESS": f"{self.host}:{self.ingress_port}",
            "RESTATE_ADMIN__BIND_ADDRESS": f"{self.host}:{self.admin_port}",
            "RESTATE_BIND_ADDRESS": f"{self.host}:{self.node_port}",
            "RESTATE_ADVERTISED_ADDRESS": f"http://{self.host}:{self.node_port}/",
            "RESTATE_LISTEN_MODE": "tcp",  # no unix sockets next to the data
            "RESTATE_NODE_NAME": "bench",
            "RESTATE_DISABLE_TELEMETRY": "true",  # no outside network here anyway
            "RESTATE_LOG_DISABLE_ANSI_CODES": "true",
        })  # fmt: skip
        return env

    def start(self, timeout: float = 60.0) -> None:
        cfg = self.workdir / "hypercorn.toml"
        cfg.write_text(HYPERCORN_TOML.format(port=self.service_port))
        svc_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("UNBROKEN_", "RESTATE_", "PYTHON"))
        }
        t0 = time.monotonic()
        with open(self.server_log, "ab") as log:
            self.server = subprocess.Popen(
                [str(self.anchor.server_bin), "--base-dir", str(self.base_dir), "--no-logo"],
                env=self._server_env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            )  # fmt: skip
        with open(self.service_log, "ab") as log:
            self.service = subprocess.Popen(
                [str(self.anchor.hypercorn), "--config", str(cfg), "anchor_services:app"],
                env=svc_env, stdout=log, stderr=subprocess.STDOUT, cwd=BENCH_DIR,
            )  # fmt: skip
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
        self.startup = {"health_s": round(health, 3), "registered_s": round(registered, 3),
                        "first_call_s": round(first_call, 3)}  # fmt: skip

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


# ---------------------------------------------------------------------------------------------- measuring
class RssSampler:
    """Peak VmRSS of each process of a target, polled every 50 ms while a cell runs (VmHWM is whole-life)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak_kib = {k: 0 for k in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        for k, pid in self.pids.items():
            try:
                self.peak_kib[k] = max(self.peak_kib[k], proc_status_kib(pid, "VmRSS"))
            except OSError:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()


@dataclass
class Snap:
    t: float
    cpu: dict[str, int]
    disk: int
    disk_allocated: int
    written: dict[str, int]
    invocations: int | None
    host_busy: int
    wrk_cpu_s: float


def snap(target: Target, opening: bool) -> Snap:
    """Counters of one side. The engine's invocation count is a query the engine spends CPU on: it is asked
    before the CPU is read when opening a window and after when closing it, so no count is charged to it."""
    invocations = target.total_invocations() if opening else None
    apparent = allocated = 0
    for d in target.data_dirs():
        a, b = dir_bytes(d)
        apparent, allocated = apparent + a, allocated + b
    pids = target.pids()
    s = Snap(
        time.monotonic(), {k: cpu_ticks(p) for k, p in pids.items()}, apparent, allocated,
        {k: proc_write_bytes(p) for k, p in pids.items()}, invocations, host_busy_ticks(), children_cpu_s(),
    )  # fmt: skip
    if not opening:
        s.invocations = target.total_invocations()
    return s


def wait_idle(target: Target, timeout: float = 180.0) -> float:
    """Wait until the target's processes are quiet for 0.5 s and it reports no unfinished invocation.

    The invocation count is asked only once the CPU is quiet (on Restate a query is a DataFusion scan: asking
    every 100 ms under load would be load of its own). Returns the seconds waited.
    """
    t0 = time.monotonic()
    window: list[int] = []
    last = sum(cpu_ticks(p) for p in target.pids().values())
    while True:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{target.label} still busy {timeout:.0f}s after the load stopped "
                               f"(unfinished invocations: {target.active_invocations()}):\n{target.log_tail()}")  # fmt: skip
        if not target.alive():
            raise RuntimeError(f"{target.label} died:\n{target.log_tail()}")
        time.sleep(0.1)  # sampling other processes' CPU counters: there is no event to wait on
        now = sum(cpu_ticks(p) for p in target.pids().values())
        window = [*window[-(QUIET_WINDOW - 1) :], now - last]
        last = now
        if len(window) == QUIET_WINDOW and sum(window) <= QUIET_TICKS:
            if target.active_invocations() == 0:
                return time.monotonic() - t0
            window = []
            last = sum(cpu_ticks(p) for p in target.pids().values())


def wait_drained(target: Target, timeout: float = 300.0) -> tuple[int | None, float]:
    """W6: unfinished invocations right after the load stopped, and the seconds until none are left."""
    t0 = time.monotonic()
    backlog = active = target.active_invocations()
    while active != 0:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(
                f"{target.label}: {active} one-way invocations still unfinished after {timeout}s"
            )
        if not target.alive():
            raise RuntimeError(f"{target.label} died:\n{target.log_tail()}")
        time.sleep(0.1)  # polling the engine's own count: there is no event to wait on
        active = target.active_invocations()
    return backlog, time.monotonic() - t0


def measure(
    target: Target, w: Workload, conns: int, args: argparse.Namespace, scripts: Path
) -> dict[str, Any]:
    script = scripts / f"{target.name}-{w.name}-{conns}.lua"
    script.write_text(wrk_script(w, seed=conns))
    if args.wait_quiet > 0:
        wait_machine_quiet(target, args.wait_quiet)
    warm_errors = 0
    if args.warmup > 0:
        warm = run_wrk(target, script, conns, args.warmup, args.timeout)
        warm_errors = warm["non2xx"] + warm["socket_errors"]
    wait_idle(target)
    with RssSampler(target.pids()) as rss:
        before = snap(target, opening=True)
        res = run_wrk(target, script, conns, args.duration, args.timeout)
        backlog = drain_s = None
        if w is SEND:
            backlog, drain_s = wait_drained(target)
        idle_s = wait_idle(target)
        after = snap(target, opening=False)

    ok, secs, client_inv, server_inv, charged = charged_invocations(res, w, before.invocations, after.invocations)
    per = charged or None
    cpu = {k: (after.cpu[k] - before.cpu[k]) * 1000 / CLK_TCK / per for k in after.cpu} if per else {}
    target_s = sum(after.cpu[k] - before.cpu[k] for k in after.cpu) / CLK_TCK
    wrk_s = after.wrk_cpu_s - before.wrk_cpu_s
    window = (after.t - before.t) * (os.cpu_count() or 1)
    other_pct = max(0.0, (after.host_busy - before.host_busy) / CLK_TCK - target_s - wrk_s) * 100 / window
    out: dict[str, Any] = {
        "target": target.name, "workload": w.name, "wid": w.wid, "conns": conns, "duration_s": round(secs, 3),
        "calls_ok": ok, "calls_per_s": ok / secs if secs else 0.0,
        "invocations_per_s": client_inv / secs if secs else 0.0,
        "p50_ms": res["p50_us"] / 1000, "p90_ms": res["p90_us"] / 1000, "p99_ms": res["p99_us"] / 1000,
        "max_ms": res["max_us"] / 1000, "errors": res["non2xx"] + res["socket_errors"],
        "warmup_errors": warm_errors, "first_error": res.get("first_bad", ""),
        "invocations_server": server_inv, "invocations_charged": charged,
        "cpu_ms_per_inv": cpu, "cpu_ms_per_inv_total": sum(cpu.values()) if cpu else None,
        "peak_rss_mib": {k: v / 1024 for k, v in rss.peak_kib.items()},
        "peak_rss_mib_total": sum(rss.peak_kib.values()) / 1024,
        "disk_bytes_per_inv": (after.disk - before.disk) / per if per else None,
        "disk_allocated_bytes_per_inv": (after.disk_allocated - before.disk_allocated) / per if per else None,
        "written_bytes_per_inv": sum(after.written[k] - before.written[k] for k in after.written) / per
        if per else None,
        "data_dir_mib": after.disk / 2**20, "idle_wait_s": round(idle_s, 3),
        "other_cpu_pct": round(other_pct, 1), "wrk_cpu_ms_per_call": wrk_s * 1000 / max(res["requests"], 1),
        "wrk": res,
    }  # fmt: skip
    if w is SEND:
        # accepted/s is the throughput figure; completion is measured from the start of the window to the
        # moment the engine reported nothing left unfinished.
        out["backlog_at_end"] = backlog
        out["drain_s"] = round(drain_s or 0.0, 3)
        out["completed_per_s"] = charged / (secs + (drain_s or 0.0)) if secs else 0.0
    return out


# ------------------------------------------------------------------------------------------------ output
def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _ratio(u: float | None, r: float | None) -> str:
    if u is None or r is None or r == 0:
        return "-"
    return f"{u / r:.2f}"


def render(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = [i >= 1 for i in range(len(widths))]
    lines = [
        "| " + " | ".join(c.rjust(wd) if r and n else c.ljust(wd)
                          for c, wd, r in zip(row, widths, right, strict=True)) + " |"
        for n, row in enumerate(rows)
    ]  # fmt: skip
    lines.insert(
        1,
        "|"
        + "|".join("-" * (wd + 1) + (":" if r else "-") for wd, r in zip(widths, right, strict=True))
        + "|",
    )
    return "\n".join(lines)


def _cpu_cell(r: dict[str, Any] | None) -> str:
    if r is None or not r["cpu_ms_per_inv"]:
        return "-"
    parts = r["cpu_ms_per_inv"]
    if len(parts) == 1:
        return _fmt(parts["server"])
    return f"{_fmt(parts['server'])}+{_fmt(parts['service'])}"


def _get(r: dict[str, Any] | None, key: str) -> float | None:
    return None if r is None else r.get(key)


def comparison_table(cells: list[dict[str, Any]], a: str, b: str, a_tag: str, b_tag: str) -> str:
    """One row per (workload, conns): each figure for ``a``, ``b`` and a/b."""
    figures = [("inv/s", "invocations_per_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms")]
    head = ["workload", "conns"]
    for label, _ in figures:
        head += [f"{label} {a_tag}", b_tag, f"{a_tag}/{b_tag}"]
    head += [f"CPU ms/inv {a_tag}", f"{b_tag} srv+svc", f"{a_tag}/{b_tag}", f"RSS MiB {a_tag}", b_tag,
             f"{a_tag}/{b_tag}", f"disk B/inv {a_tag}", b_tag, f"{a_tag}/{b_tag}", "errors", "other load %"]  # fmt: skip
    rows = [head]
    for c in cells:
        ra, rb = c["results"].get(a), c["results"].get(b)
        name = f"{c['wid']} {c['workload']}" + (" (accepted/s)" if c["workload"] == SEND.name else "")
        row = [name, str(c["conns"])]
        for _, key in figures:
            row += [_fmt(_get(ra, key)), _fmt(_get(rb, key)), _ratio(_get(ra, key), _get(rb, key))]
        row += [
            _cpu_cell(ra),
            _cpu_cell(rb),
            _ratio(_get(ra, "cpu_ms_per_inv_total"), _get(rb, "cpu_ms_per_inv_total")),
        ]
        for key in ("peak_rss_mib_total", "disk_bytes_per_inv"):
            row += [_fmt(_get(ra, key)), _fmt(_get(rb, key)), _ratio(_get(ra, key), _get(rb, key))]
        row += [
            " / ".join("-" if r is None else str(r["errors"] + r["warmup_errors"]) for r in (ra, rb)),
            " / ".join("-" if r is None else f"{r['other_cpu_pct']:.0f}" for r in (ra, rb)),
        ]
        rows.append(row)
    return render(rows)


def send_table(cells: list[dict[str, Any]], a: str, b: str, a_tag: str, b_tag: str) -> str | None:
    sends = [c for c in cells if c["workload"] == SEND.name]
    if not sends:
        return None
    rows = [["W6 send", "conns", f"accepted/s {a_tag}", b_tag, f"{a_tag}/{b_tag}", f"backlog {a_tag}", b_tag,
             f"drain s {a_tag}", b_tag, f"completed/s {a_tag}", b_tag, f"{a_tag}/{b_tag}"]]  # fmt: skip
    for c in sends:
        ra, rb = c["results"].get(a), c["results"].get(b)
        rows.append([
            "W6 send", str(c["conns"]),
            _fmt(_get(ra, "calls_per_s")), _fmt(_get(rb, "calls_per_s")),
            _ratio(_get(ra, "calls_per_s"), _get(rb, "calls_per_s")),
            str(_get(ra, "backlog_at_end") if ra else "-"), str(_get(rb, "backlog_at_end") if rb else "-"),
            _fmt(_get(ra, "drain_s")), _fmt(_get(rb, "drain_s")),
            _fmt(_get(ra, "completed_per_s")), _fmt(_get(rb, "completed_per_s")),
            _ratio(_get(ra, "completed_per_s"), _get(rb, "completed_per_s")),
        ])  # fmt: skip
    return render(rows)


def summary_table(sides: dict[str, dict[str, Any]], a: str, b: str, a_tag: str, b_tag: str) -> str:
    sa, sb = sides.get(a), sides.get(b)
    rows = [["whole run", a_tag, b_tag, f"{a_tag}/{b_tag}"]]
    for label, key in [
        ("health answered after start, s", "health_s"),
        ("first successful call after start, s", "first_call_s"),
        ("peak RSS (VmHWM, all processes), MiB", "vmhwm_mib_total"),
        ("data dir at end, MiB", "data_dir_mib"),
        ("data dir per invocation, bytes", "data_dir_bytes_per_inv"),
    ]:
        va, vb = _get(sa, key), _get(sb, key)
        rows.append([label, _fmt(va), _fmt(vb), _ratio(va, vb)])
    return render(rows)


def side_summary(target: Target) -> dict[str, Any]:
    pids = target.pids()
    hwm = {k: proc_status_kib(p, "VmHWM") / 1024 for k, p in pids.items()}
    rss = {k: proc_status_kib(p, "VmRSS") / 1024 for k, p in pids.items()}
    disk = sum(dir_bytes(d)[0] for d in target.data_dirs())
    total = target.total_invocations()
    return {
        **target.startup, "vmhwm_mib": hwm, "vmhwm_mib_total": sum(hwm.values()), "rss_end_mib": rss,
        "data_dir_mib": disk / 2**20, "invocations_total": total,
        "data_dir_bytes_per_inv": disk / total if total else None,
    }  # fmt: skip


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/compare", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--workloads", default=",".join(DEFAULT_ORDER),
                   help="comma-separated names or ids (W1..W6, W3a, W3b): " + ", ".join(
                       f"{ALL_WORKLOADS[n].wid}={n}" for n in DEFAULT_ORDER) + " (default: all)")  # fmt: skip
    p.add_argument("--connections", default=None,
                   help="comma-separated connection counts for every workload (default: 16,128; W4 also 512)")  # fmt: skip
    p.add_argument("--duration", type=int, default=15, help="measured seconds per run (default 15)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up seconds per run, discarded (default 5)")
    p.add_argument("--timeout", type=int, default=60, help="wrk per-request timeout in seconds (default 60)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 16 connections, 1 s warm-up + 2 s measured (overrides the above)")  # fmt: skip
    p.add_argument("--only", choices=["unbroken", "restate"], help="run one side only (the other shows '-')")
    p.add_argument("--with-fsync-off", action="store_true",
                   help="also run Unbroken with fsync OFF, printed in a separate, labelled table (NOT durable)")  # fmt: skip
    p.add_argument("--anchor-dir", default=str(anchor_mod.ANCHOR_DIR),
                   help="where the Restate anchor is (installed on first use; default bench/.anchor)")  # fmt: skip
    p.add_argument("--no-install", action="store_true", help="fail instead of installing a missing anchor")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each measured run wait up to SECONDS for the machine's other load to stop")  # fmt: skip
    p.add_argument(
        "--keep-data", action="store_true", help="keep the temp dir (data dirs, logs, Lua scripts)"
    )
    p.add_argument(
        "--results-dir", default=str(RESULTS_DIR), help="where the JSON goes (default bench/results)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.connections, args.duration, args.warmup = "16", 2, 1
    return args


def resolve_workloads(spec: str) -> list[str]:
    by_id = {w.wid.lower(): n for n, w in ALL_WORKLOADS.items()}
    by_id |= {"w3": "counter"}
    names = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name = item if item in ALL_WORKLOADS else by_id.get(item.lower())
        if name is None:
            raise ValueError(f"unknown workload {item!r}; choose from " +
                             ", ".join(f"{ALL_WORKLOADS[n].wid}/{n}" for n in DEFAULT_ORDER))  # fmt: skip
        names.append(name)
    return names


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through main's `finally`, which stops both sides' processes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if shutil.which("wrk") is None:
        print(WRK_INSTALL_HINT.replace("bench/run.py", "bench/compare"), file=sys.stderr)
        return 3
    if args.only != "restate" and importlib.util.find_spec("unbroken") is None:
        print(f"unbroken is not importable by {sys.executable}; run with the project's python, e.g. "
              "PYTHON=.venv/bin/python bench/compare", file=sys.stderr)  # fmt: skip
        return 3
    try:
        names = resolve_workloads(args.workloads)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 3
    fixed_conns = [int(c) for c in args.connections.split(",") if c.strip()] if args.connections else None
    if args.duration < 1 or args.warmup < 0 or any(c < 1 for c in fixed_conns or [1]):
        print("--duration must be >= 1, --warmup >= 0 and connection counts >= 1", file=sys.stderr)
        return 3
    plan = [(n, c) for n in names for c in (fixed_conns or DEFAULT_CONNS[n])]

    anchor = None
    if args.only != "unbroken":
        try:
            anchor = anchor_mod.find(Path(args.anchor_dir))
            if anchor is None:
                if args.no_install:
                    raise anchor_mod.AnchorError(f"not installed in {args.anchor_dir} (--no-install given)")
                anchor = anchor_mod.install(Path(args.anchor_dir))
        except anchor_mod.AnchorError as exc:
            print(f"Restate anchor unavailable: {exc}\n(run `bench/compare --only unbroken` to measure Unbroken "
                  "alone)", file=sys.stderr)  # fmt: skip
            return 4

    started = dt.datetime.now(dt.UTC)
    meta: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"), "command": " ".join(["bench/compare", *(argv or sys.argv[1:])]),
        "git": git_rev(), "machine": machine_info(), "load_generator": wrk_version(),
        "load_shape": "closed loop, wrk -t1 -c<conns>, server(s), handlers and wrk on this machine",
        "loadavg_at_start": os.getloadavg()[0], "warmup_s": args.warmup, "duration_s": args.duration,
        "quick": args.quick, "unbroken_fsync": True,
        "restate": anchor.describe() if anchor else None,
        "restate_config": "defaults (RocksDB WAL fsync on), own base dir, ports on 127.0.0.1, telemetry off; "
                          "services in hypercorn " + (anchor.hypercorn_version if anchor else "?") +
                          " (HTTP/2, one process; h2_max_concurrent_streams, keep_alive_max_requests and "
                          "keep_alive_timeout raised)",
    }  # fmt: skip
    m = meta["machine"]
    print(f"bench/compare {meta['git']} on {m['nproc']} CPU ({m['cpu_model']}), {m['mem_gib']} GiB; "
          f"{meta['load_generator']}; load average {meta['loadavg_at_start']:.2f}")  # fmt: skip
    if args.only != "restate":
        print("Unbroken: `unbroken serve bench/services.py`, defaults: fsync ON (SQLite WAL synchronous=FULL, "
              "every commit fsynced before anything leaves the engine); one process = engine + handlers")  # fmt: skip
    if anchor:
        print(f"Restate:  restate-server {anchor.server_version} + restate-sdk {anchor.sdk_version} in hypercorn "
              f"{anchor.hypercorn_version} (HTTP/2), defaults (RocksDB WAL fsync on); two processes")  # fmt: skip
    if args.with_fsync_off:
        print("also: Unbroken with fsync OFF (NOT durable), reported only in its own labelled table")
    print(f"{len(plan)} cell(s) x {'1 side' if args.only else 'both sides'}: {args.warmup} s warm-up + "
          f"{args.duration} s measured each, sides alternating\n", flush=True)  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    targets: list[Target] = []
    if args.only != "restate":
        (tmp / "unbroken").mkdir()
        targets.append(UnbrokenSide(tmp / "unbroken"))
    if anchor:
        (tmp / "restate").mkdir()
        targets.append(RestateSide(tmp / "restate", anchor))
    if args.with_fsync_off and args.only != "restate":
        (tmp / "unbroken_nofsync").mkdir()
        targets.append(UnbrokenSide(tmp / "unbroken_nofsync", fsync=False))

    cells: list[dict[str, Any]] = []
    sides: dict[str, dict[str, Any]] = {}
    problems: dict[str, list[str]] = {}
    status = 0
    try:
        for t in targets:  # one at a time, so each start-up time is taken with nothing else starting
            try:
                t.start()
            except (RuntimeError, TimeoutError, OSError):
                if isinstance(t, RestateSide):
                    status = 4  # the anchor is installed but does not run here: the reason is printed below
                raise
            print(f"{t.label} up: health after {t.startup['health_s']:.3f} s, first successful call after "
                  f"{t.startup['first_call_s']:.3f} s (from process start"
                  f"{', hypercorn started alongside and the deployment registered' if isinstance(t, RestateSide) else ''})",
                  flush=True)  # fmt: skip
        for i, (name, conns) in enumerate(plan):
            w = ALL_WORKLOADS[name]
            cell: dict[str, Any] = {"workload": name, "wid": w.wid, "conns": conns, "results": {}}
            order = targets if i % 2 == 0 else list(reversed(targets))
            for t in order:
                r = measure(t, w, conns, args, tmp)
                cell["results"][t.name] = r
                extra = f", drain {r['drain_s']:.2f} s" if "drain_s" in r else ""
                print(f"  {w.wid} {name} c={conns} {t.label}: {r['invocations_per_s']:.0f} "
                      f"{'accepted' if w is SEND else 'inv'}/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                      f"errors {r['errors']}{extra}; other load {r['other_cpu_pct']:.0f}%", flush=True)  # fmt: skip
            cells.append(cell)
        for t in targets:
            sides[t.name] = side_summary(t)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        status = status or 1
    finally:
        for t in targets:
            t.stop()
            problems[t.name] = t.log_problems()
        if args.keep_data:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        "Unbroken (U) vs Restate (R); U/R = Unbroken / Restate (above 1 is better for inv/s, below 1 for the rest)"
    )
    print(comparison_table(cells, "unbroken", "restate", "U", "R"))
    w6 = send_table(cells, "unbroken", "restate", "U", "R")
    if w6:
        print()
        print(w6)
    print()
    print(summary_table(sides, "unbroken", "restate", "U", "R"))
    print(
        "\ninv/s: completed 2xx invocations per second (W5 counts 11 per call; W6: one-way calls accepted per second)."
        "\np50/p99: wrk latency per call. CPU ms/inv: utime+stime per invocation completed in the window; Unbroken"
        "\nis one process (engine + handlers), shown as its server figure; Restate is restate-server + hypercorn"
        "\n(srv+svc), the ratio compares totals. RSS: peak resident memory sampled during the cell, all processes."
        "\ndisk B/inv: data dir growth (apparent size) per invocation. W6 completed/s: invocations completed from the"
        "\nstart of the window until the engine reported none unfinished. other load %: CPU used by anything else"
        "\nduring the cell (the idle other side included), % of all cores; errors: non-2xx + socket errors, U / R."
        "\nUnbroken runs with fsync ON (its default); Restate with its defaults (RocksDB WAL fsync on)."
    )
    if any(t.name == "unbroken_nofsync" for t in targets):
        print("\nNOT DURABLE: Unbroken with fsync OFF (U-nofsync) vs Restate with fsync on. Not a comparable figure;"
              " for reference only.")  # fmt: skip
        print(comparison_table(cells, "unbroken_nofsync", "restate", "U-nofsync", "R"))
    if args.quick:
        print("\n(--quick: a few seconds per cell: a smoke test of the harness, not figures to quote)")
    noisy = [f"{c['workload']} c={c['conns']} {k} ({r['other_cpu_pct']:.0f}%)"
             for c in cells for k, r in c["results"].items() if r["other_cpu_pct"] > 10]  # fmt: skip
    if noisy:
        print(
            f"WARNING: other processes used >10% of the machine's CPU during: {', '.join(noisy)}; figures are noisy"
        )
    for name, lines in problems.items():
        if lines:
            print(f"{name} logs have {len(lines)} warning/error line(s), first: {lines[0][:300]}")
    for c in cells:
        for k, r in c["results"].items():
            if r["first_error"]:
                print(f"first non-2xx answer in {c['workload']} c={c['conns']} on {k}: {r['first_error']}")
    total_errors = sum(r["errors"] + r["warmup_errors"] for c in cells for r in c["results"].values())
    print(f"errors: {total_errors} (non-2xx answers and socket errors/timeouts, all sides)")

    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"compare-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    meta["log_problems"] = {k: v[:50] for k, v in problems.items()}
    meta["status"] = status
    out.write_text(json.dumps({"meta": meta, "sides": sides, "cells": cells}, indent=2) + "\n")
    print(f"results: {out}")
    if status == 0 and total_errors:
        status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
