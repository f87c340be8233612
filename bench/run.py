"""Benchmark Unbroken on the workloads of ../shared/bench/WORKLOADS.md, driven by wrk.

    python bench/run.py [--workloads noop,steps] [--connections 16,128] [--duration 15] [--warmup 5] [--quick]

Starts ``unbroken serve bench/services.py`` on free ports with a fresh data dir (defaults: fsync on), then
for every workload and connection count: a warm-up wrk run (discarded), a wait until the server is idle,
a measured wrk run (closed loop, ``wrk -t1 -c<conns>``), and another wait until every invocation the run
started has completed. Server CPU, disk and invocation counts are deltas between the two idle points, so
work still in flight when wrk stops is charged to the run that started it.

Prints a table and writes everything to ``bench/results/<timestamp>.json``. Exit status: 0 if every
request answered 2xx, 1 if the run was aborted (server died or never went idle), 2 if some requests did not
get a 2xx answer (counted as errors, never as throughput), 3 if wrk or unbroken is missing or an argument is
wrong (this script installs nothing).

The server side is a target object (start, stop, pids, data dirs, invocation counts); bench/compare.py adds
a Restate target next to ``UnbrokenTarget`` and imports the helpers here, so keep their names stable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import importlib.util
import json
import os
import platform
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK_INSTALL_HINT = (
    "wrk (the HTTP load generator) is not installed; bench/run.py installs nothing by itself.\n"
    "Install it with:  sudo apt-get update && sudo apt-get install -y wrk   (Debian/Ubuntu)\n"
    "              or:  brew install wrk                                   (macOS)"
)


# ------------------------------------------------------------------------------------------- workloads
@dataclass(frozen=True)
class Workload:
    name: str
    wid: str  # id in WORKLOADS.md
    path: str  # ingress path; "{key}" is replaced per request by one of `keys` random keys
    body: str | None  # JSON text, or None for handlers without input
    invocations_per_call: int = 1
    keys: int = 0
    description: str = ""


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("noop", "W1", "/Bench/noop", '{"hello":"world"}', description="echo"),
        Workload("steps", "W2", "/Bench/steps", "1", description="three ctx.run_typed steps"),
        Workload("counter", "W3a", "/Counter/{key}/add", "1", keys=1000, description="object add, 1000 keys"),
        Workload("hot", "W3b", "/Counter/hot/add", "1", description="object add, one key"),
        Workload("sleep", "W4", "/Bench/sleep", None, description="ctx.sleep(100 ms)"),
        Workload(
            "fanout", "W5", "/Bench/fanout", None, invocations_per_call=11, description="10 calls + gather"
        ),
    ]
}

# Restate 1.7.12 + restate-sdk 1.2.0, two runs each, copied from ../shared/bench/WORKLOADS.md (2 vCPU machine).
# (inv/s, p50 ms, p99 ms, server+service CPU ms/inv) per (workload, conns). NOT measured by this script.
ANCHOR: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {
    ("noop", 16): [(562, 27.9, 47.4, 1.78 + 1.26), (527, 29.2, 53.5, 1.92 + 1.30)],
    ("noop", 128): [(559, 223, 375, 1.72 + 1.31), (653, 189, 304, 1.53 + 1.09)],
    ("steps", 16): [(185, 85.7, 127, 5.34 + 4.16), (184, 82.9, 145, 5.47 + 4.05)],
    ("steps", 128): [(267, 463, 646, 3.41 + 2.91), (247, 495, 717, 3.67 + 3.10)],
    ("counter", 16): [(448, 34.9, 59.2, 2.23 + 1.53), (548, 29.0, 46.7, 1.80 + 1.24)],
    ("counter", 128): [(541, 221, 480, 1.84 + 1.32), (604, 197, 428, 1.65 + 1.14)],
    ("hot", 16): [(162, 97.9, 133, 4.98 + 2.37), (189, 84.2, 128, 4.29 + 1.91)],
    ("hot", 128): [(198, 572, 1712, 3.96 + 2.02), (183, 636, 1015, 4.36 + 2.16)],
    ("sleep", 16): [(142, 111, 130, 4.56 + 2.68), (144, 110, 133, 4.21 + 2.41)],
    ("sleep", 128): [(427, 279, 507, 2.53 + 1.57), (458, 275, 365, 2.30 + 1.51)],
    ("sleep", 512): [(584, 850, 1026, 1.55 + 1.27), (490, 1007, 1352, 1.79 + 1.51)],
    ("fanout", 16): [(541, 313, 542, 1.98 + 1.30), (513, 333, 553, 2.06 + 1.34)],
    ("fanout", 128): [(468, 2674, 4167, 1.94 + 1.65), (657, 2109, 2727, 1.31 + 1.18)],
}


_LUA_TAIL = r"""
non2xx = 0
first_bad = ""
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then
      first_bad = (status .. " " .. string.sub(body or "", 1, 300)):gsub('[^%w %p]', ' '):gsub('[\\"]', "'")
    end
  end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function done(summary, latency, requests)
  local bad, sample = 0, ""
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
    if sample == "" then sample = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"status":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"first_bad":"%s"}\n',
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, sample))
end
"""


def wrk_script(w: Workload, seed: int) -> str:
    """Lua for wrk: the request, a per-thread count of non-2xx answers, and a JSON summary line."""
    lines = ['wrk.method = "POST"']
    if w.body is not None:
        lines += [f"wrk.body = {_lua_str(w.body)}", 'wrk.headers["Content-Type"] = "application/json"']
    else:
        lines += ['wrk.body = ""']
    if w.keys:
        prefix, suffix = w.path.split("{key}")
        lines += [
            f"function init(args) math.randomseed({seed}) end",
            "function request()",
            f"  return wrk.format(nil, {_lua_str(prefix)} .. 'k' .. math.random(1, {w.keys}) .. {_lua_str(suffix)})",
            "end",
        ]
    else:
        lines += [f"wrk.path = {_lua_str(w.path)}"]
    return "\n".join(lines) + "\n" + _LUA_TAIL


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------------------------------ process stats
def cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])


def proc_status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def dir_bytes(path: Path) -> tuple[int, int]:
    """(apparent size, allocated size) of every file under ``path``."""
    apparent = allocated = 0
    for p in path.rglob("*"):
        try:
            st = p.stat()
        except FileNotFoundError:  # e.g. a -shm/-wal file removed mid-walk
            continue
        if p.is_file():
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


# ------------------------------------------------------------------------------------------------ target
class UnbrokenTarget:
    """``unbroken serve bench/services.py`` in a subprocess, with its own ports and a fresh data dir."""

    name = "unbroken"
    services = BENCH_DIR / "services.py"  # what ``unbroken serve`` runs

    def __init__(self, workdir: Path, fsync: bool = True) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "server.log"
        self.fsync = fsync
        self.host = "127.0.0.1"
        self.ingress_port = free_port()
        self.admin_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup: dict[str, float] = {}

    @property
    def ingress_url(self) -> str:
        return f"http://{self.host}:{self.ingress_port}"

    def start(self, timeout: float = 60.0) -> None:
        # Only the defaults count: drop any UNBROKEN_/RESTATE_ setting inherited from the environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UNBROKEN_", "RESTATE_"))}
        if not self.fsync:
            env["UNBROKEN_STORAGE__FSYNC"] = "false"
        cmd = [
            sys.executable, "-m", "unbroken.cli.main", "serve", str(self.services),
            "--data-dir", str(self.data_dir),
            "--ingress-bind", f"{self.host}:{self.ingress_port}",
            "--admin-bind", f"{self.host}:{self.admin_port}",
        ]  # fmt: skip
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
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


# ---------------------------------------------------------------------------------------------- measuring
@dataclass
class Snapshot:
    t: float
    cpu_ticks: dict[str, int]
    disk_apparent: int
    disk_allocated: int
    invocations: int | None
    host_busy_ticks: int
    children_cpu_s: float
    write_bytes: int  # bytes the target processes caused to be sent to storage (/proc/<pid>/io write_bytes)  # this script's waited-for children (wrk): user + system seconds


def host_busy_ticks() -> int:
    """Non-idle CPU time of the whole machine (all cores), in clock ticks, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal


def proc_write_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:  # /proc/<pid>/io needs ptrace rights over the process; ours are our children
        pass
    return 0


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def snapshot(target: UnbrokenTarget) -> Snapshot:
    apparent = allocated = 0
    for d in target.data_dirs():
        a, b = dir_bytes(d)
        apparent += a
        allocated += b
    return Snapshot(
        time.monotonic(), {k: cpu_ticks(p) for k, p in target.pids().items()}, apparent, allocated,
        target.total_invocations(), host_busy_ticks(), children_cpu_s(),
        sum(proc_write_bytes(p) for p in target.pids().values()),
    )  # fmt: skip


def wait_idle(target: UnbrokenTarget, timeout: float = 120.0) -> float:
    """Wait until no invocation is running and the server used ~no CPU for 300 ms; returns seconds waited."""
    t0 = time.monotonic()
    quiet = 0
    last = sum(cpu_ticks(p) for p in target.pids().values())
    while quiet < 3:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"server still busy {timeout}s after the load stopped:\n{target.log_tail()}")
        if not target.alive():
            raise RuntimeError(f"server died:\n{target.log_tail()}")
        time.sleep(0.1)  # sampling another process's CPU counters: there is no event to wait on
        now = sum(cpu_ticks(p) for p in target.pids().values())
        active = target.active_invocations()
        busy = now - last > 1 or (active is not None and active > 0)
        quiet = 0 if busy else quiet + 1
        last = now
    return time.monotonic() - t0


def wait_machine_quiet(target: UnbrokenTarget, limit_s: float, max_other_pct: float = 5.0) -> float:
    """Wait (at most ``limit_s``) for 2 s in which other processes use < ``max_other_pct``% of the machine.

    For shared machines: figures taken while something else burns CPU are not worth comparing. Returns the
    seconds waited; the load seen during the measured run is reported either way (``other_cpu_pct``).
    """
    t0 = time.monotonic()
    ncpu = os.cpu_count() or 1
    while True:
        h0, s0, c0 = host_busy_ticks(), sum(cpu_ticks(p) for p in target.pids().values()), children_cpu_s()
        time.sleep(2.0)  # sampling machine-wide CPU counters over a window: there is no event to wait on
        h1, s1, c1 = host_busy_ticks(), sum(cpu_ticks(p) for p in target.pids().values()), children_cpu_s()
        other = ((h1 - h0) - (s1 - s0)) / CLK_TCK - (c1 - c0)
        if other * 100 / (2.0 * ncpu) < max_other_pct or time.monotonic() - t0 >= limit_s:
            return time.monotonic() - t0


def run_wrk(target: UnbrokenTarget, script: Path, conns: int, seconds: int, timeout_s: int) -> dict[str, Any]:
    cmd = [
        "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", f"--timeout={timeout_s}s", "-s", str(script),
        target.ingress_url,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_b, err_b = proc.communicate(timeout=seconds + timeout_s + 60)
    out, err = out_b.decode(errors="replace"), err_b.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{out}\n{err}")
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            data: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            data["socket_errors"] = data["connect"] + data["read"] + data["write"] + data["timeout"]
            return data
    raise RuntimeError(f"wrk printed no summary: {' '.join(cmd)}\n{out}\n{err}")


@dataclass
class Result:
    workload: str
    wid: str
    conns: int
    duration_s: float
    calls_ok: int
    calls_per_s: float
    invocations_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # non-2xx answers + socket errors/timeouts, measured run
    warmup_errors: int
    first_error: str
    invocations_server: int | None  # completed in the window, counted in the store
    invocations_charged: int  # what the per-invocation figures below divide by
    # CPU per process ("server"; a Restate target adds "service"); {} if nothing completed
    cpu_ms_per_inv: dict[str, float]
    rss_mib: float
    peak_rss_mib: float
    other_cpu_pct: float  # CPU used by neither the server nor wrk during the window, % of all cores (noise)
    wrk_cpu_ms_per_call: float
    disk_bytes_per_inv: float | None
    written_bytes_per_inv: float | None  # storage writes (WAL, checkpoints): write amplification vs the above
    disk_allocated_bytes_per_inv: float | None
    data_dir_mib: float
    drain_s: float
    wrk: dict[str, Any] = field(default_factory=dict)


def charged_invocations(
    res: dict[str, Any], w: Workload, before: int | None, after: int | None
) -> tuple[int, float, int, int | None, int]:
    """From a wrk run and the engine's invocation counts around it: (2xx calls, seconds, invocations the
    client saw, invocations the engine counted, invocations the window's costs are charged to)."""
    ok = res["requests"] - res["non2xx"]
    secs = res["duration_us"] / 1e6
    client_inv = ok * w.invocations_per_call
    server_inv = None if before is None or after is None else after - before
    # The engine counts every invocation the window started (wrk's in-flight calls at its end included); the
    # client count misses those. Trust the engine unless it is implausible (e.g. invocations no longer kept).
    charged = server_inv if server_inv is not None and server_inv >= client_inv else client_inv
    return ok, secs, client_inv, server_inv, charged


def measure(
    target: UnbrokenTarget, w: Workload, conns: int, warmup: int, duration: int, scripts: Path, timeout_s: int,
    wait_quiet_s: float = 0.0,
) -> Result:  # fmt: skip
    script = scripts / f"{w.name}.lua"
    script.write_text(wrk_script(w, seed=conns))
    if wait_quiet_s > 0:
        wait_machine_quiet(target, wait_quiet_s)
    warm_errors = 0
    if warmup > 0:
        warm = run_wrk(target, script, conns, warmup, timeout_s)
        warm_errors = warm["non2xx"] + warm["socket_errors"]
    wait_idle(target)
    before = snapshot(target)
    res = run_wrk(target, script, conns, duration, timeout_s)
    drain = wait_idle(target)
    after = snapshot(target)

    ok, secs, client_inv, server_inv, charged = charged_invocations(res, w, before.invocations, after.invocations)
    per = charged or None  # nothing completed: no per-invocation figures (the table shows "-")
    cpu = (
        {k: (after.cpu_ticks[k] - before.cpu_ticks[k]) * 1000 / CLK_TCK / per for k in after.cpu_ticks}
        if per
        else {}
    )
    pid = target.pids()["server"]
    wrk_s = after.children_cpu_s - before.children_cpu_s
    target_s = sum(after.cpu_ticks[k] - before.cpu_ticks[k] for k in after.cpu_ticks) / CLK_TCK
    host_s = (after.host_busy_ticks - before.host_busy_ticks) / CLK_TCK
    window = (after.t - before.t) * (os.cpu_count() or 1)
    other_pct = max(0.0, host_s - target_s - wrk_s) * 100 / window if window else 0.0
    return Result(
        workload=w.name, wid=w.wid, conns=conns, duration_s=round(secs, 3), calls_ok=ok,
        calls_per_s=ok / secs if secs else 0.0, invocations_per_s=client_inv / secs if secs else 0.0,
        p50_ms=res["p50_us"] / 1000, p90_ms=res["p90_us"] / 1000, p99_ms=res["p99_us"] / 1000,
        max_ms=res["max_us"] / 1000, errors=res["non2xx"] + res["socket_errors"], warmup_errors=warm_errors,
        first_error=res.get("first_bad", ""), invocations_server=server_inv, invocations_charged=charged,
        cpu_ms_per_inv=cpu, rss_mib=proc_status_kib(pid, "VmRSS") / 1024,
        peak_rss_mib=proc_status_kib(pid, "VmHWM") / 1024,
        disk_bytes_per_inv=(after.disk_apparent - before.disk_apparent) / per if per else None,
        written_bytes_per_inv=(after.write_bytes - before.write_bytes) / per if per else None,
        disk_allocated_bytes_per_inv=(after.disk_allocated - before.disk_allocated) / per if per else None,
        other_cpu_pct=round(other_pct, 1), wrk_cpu_ms_per_call=wrk_s * 1000 / max(res["requests"], 1),
        data_dir_mib=after.disk_apparent / 2**20, drain_s=round(drain, 3), wrk=res,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ output
def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
    }  # fmt: skip


def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)  # fmt: skip
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return (out.stdout + out.stderr).splitlines()[0].strip() if (out.stdout + out.stderr) else "wrk"


def table(results: list[Result], anchor: bool) -> str:
    head = [
        "workload",
        "conns",
        "inv/s",
        "p50 ms",
        "p99 ms",
        "CPU ms/inv",
        "peak RSS MiB",
        "disk B/inv",
        "written KiB/inv",
        "other load %",
        "errors",
    ]
    if anchor:
        head += ["anchor inv/s*", "ratio", "anchor p50*", "anchor CPU ms/inv*"]
    rows = [head]
    for r in results:
        errs = str(r.errors) + (f" (+{r.warmup_errors} warm-up)" if r.warmup_errors else "")
        row = [
            f"{r.wid} {r.workload}", str(r.conns), f"{r.invocations_per_s:.0f}", _num(r.p50_ms), _num(r.p99_ms),
            f"{sum(r.cpu_ms_per_inv.values()):.2f}" if r.cpu_ms_per_inv else "-", f"{r.peak_rss_mib:.0f}",
            "-" if r.disk_bytes_per_inv is None else f"{r.disk_bytes_per_inv:.0f}",
            "-" if r.written_bytes_per_inv is None else f"{r.written_bytes_per_inv / 1024:.1f}",
            f"{r.other_cpu_pct:.0f}", errs,
        ]  # fmt: skip
        if anchor:
            a = ANCHOR.get((r.workload, r.conns))
            if a:
                inv = sum(x[0] for x in a) / len(a)
                row += [f"{inv:.0f}", f"{r.invocations_per_s / inv:.2f}x",
                        _num(sum(x[1] for x in a) / len(a)), f"{sum(x[3] for x in a) / len(a):.2f}"]  # fmt: skip
            else:
                row += ["-", "-", "-", "-"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(wd) for c, wd in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workloads", default="noop,steps,counter,hot,sleep,fanout",
                   help=f"comma-separated, from: {', '.join(WORKLOADS)} (default: all)")  # fmt: skip
    p.add_argument(
        "--connections", default="16,128", help="comma-separated connection counts (default 16,128)"
    )
    p.add_argument("--duration", type=int, default=15, help="measured seconds per run (default 15)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up seconds per run, discarded (default 5)")
    p.add_argument("--timeout", type=int, default=60, help="wrk per-request timeout in seconds (default 60)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: noop+steps, 4 connections, 1 s warm-up + 1 s each (overrides the above)")  # fmt: skip
    p.add_argument("--anchor", action="store_true",
                   help="add the Restate anchor figures from WORKLOADS.md (NOT measured here) and the ratio")  # fmt: skip
    p.add_argument("--no-fsync", action="store_true", help="run the server with fsync off (not the default)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each run, wait up to SECONDS for other processes to leave the CPU idle "
                   "(shared machines; default 0 = don't wait)")  # fmt: skip
    p.add_argument("--keep-data", action="store_true", help="keep the temp dir (data dir, server log, Lua)")
    p.add_argument(
        "--results-dir", default=str(RESULTS_DIR), help="where the JSON goes (default bench/results)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.workloads, args.connections, args.duration, args.warmup = "noop,steps", "4", 1, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(WRK_INSTALL_HINT, file=sys.stderr)
        return 3
    if importlib.util.find_spec("unbroken") is None:
        print(f"unbroken is not importable by {sys.executable}; run with the project's venv python "
              "(e.g. /work/venv/bin/python bench/run.py)", file=sys.stderr)  # fmt: skip
        return 3
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        print(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}", file=sys.stderr)
        return 3
    conns_list = [int(c) for c in args.connections.split(",") if c.strip()]
    if args.duration < 1 or args.warmup < 0 or any(c < 1 for c in conns_list):
        print("--duration must be >= 1, --warmup >= 0 and connection counts >= 1 (wrk takes whole seconds)",
              file=sys.stderr)  # fmt: skip
        return 3

    started = dt.datetime.now(dt.UTC)
    meta: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"), "command": " ".join(["python", *sys.argv]),
        "target": "unbroken", "git": git_rev(), "machine": machine_info(), "load_generator": wrk_version(),
        "load_shape": "closed loop, wrk -t1 -c<conns>, everything on this machine",
        "loadavg_at_start": os.getloadavg()[0], "fsync": not args.no_fsync, "warmup_s": args.warmup, "duration_s": args.duration,
    }  # fmt: skip
    m = meta["machine"]
    print(
        f"Unbroken {meta['git']} on {m['nproc']} CPU ({m['cpu_model']}), {m['mem_gib']} GiB; {meta['load_generator']}"
    )
    if args.no_fsync:
        print("fsync: OFF (--no-fsync): commits are NOT durable; figures not comparable with the anchor")
    else:
        print("fsync: ON (the default: SQLite WAL synchronous=FULL, every commit fsynced before a reply)")
    print(f"{len(names)} workload(s) x {len(conns_list)} connection count(s): {args.warmup} s warm-up + "
          f"{args.duration} s measured each\n", flush=True)  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="unbroken-bench-"))
    target = UnbrokenTarget(tmp, fsync=not args.no_fsync)
    results: list[Result] = []
    status = 0
    try:
        target.start()
        meta["startup"] = target.startup
        print(f"server up: health after {target.startup['health_s']:.3f} s, first successful call after "
              f"{target.startup['first_call_s']:.3f} s (from process start)", flush=True)  # fmt: skip
        for name in names:
            for conns in conns_list:
                r = measure(
                    target,
                    WORKLOADS[name],
                    conns,
                    args.warmup,
                    args.duration,
                    tmp,
                    args.timeout,
                    args.wait_quiet,
                )
                results.append(r)
                print(f"  {r.wid} {r.workload} c={conns}: {r.invocations_per_s:.0f} inv/s, p50 {r.p50_ms:.1f} ms, "
                      f"p99 {r.p99_ms:.1f} ms, errors {r.errors}; other load on the machine {r.other_cpu_pct:.0f}%",
                      flush=True)  # fmt: skip
    except (RuntimeError, TimeoutError) as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        status = 1
    finally:
        target.stop()
        problems = target.log_problems()
        if args.keep_data:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    total_errors = sum(r.errors + r.warmup_errors for r in results)
    print()
    print(table(results, args.anchor))
    if args.anchor:
        print("* anchor figures from ../shared/bench/WORKLOADS.md (Restate 1.7.12, mean of its two runs; CPU = "
              "server + service), NOT measured in this run")  # fmt: skip
    print("\ninv/s: completed 2xx invocations per second (W5 counts 11 per call); p50/p99: wrk latency per call;\n"
          "CPU ms/inv: server process utime+stime (+children) per completed invocation; disk B/inv: data dir\n"
          "apparent-size growth per invocation; written KiB/inv: bytes the server sent to storage per invocation\n"
          "(/proc/<pid>/io write_bytes: WAL + checkpoints); other load %: CPU used by other processes during the\n"
          "run, % of all cores (noise on a shared machine).")  # fmt: skip
    print(f"errors: {total_errors} (non-2xx answers and socket errors/timeouts)")
    noisy = [f"{r.workload} c={r.conns} ({r.other_cpu_pct:.0f}%)" for r in results if r.other_cpu_pct > 5]
    if noisy:
        print(
            f"WARNING: other processes used >5% of the machine's CPU during: {', '.join(noisy)}; figures are noisy"
        )
    if problems:
        print(f"server log has {len(problems)} warning/error line(s), first: {problems[0][:300]}")
    for r in results:
        if r.first_error:
            print(f"first non-2xx answer in {r.workload} c={r.conns}: {r.first_error}")

    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    meta["server_log_problems"] = problems[:50]
    out.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n")
    print(f"results: {out}")
    if status == 0 and total_errors:
        status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
