"""What bench/scale.py's figures share: the restartable target, store reads, count-limited wrk runs."""

from __future__ import annotations

import argparse
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lib import BENCH_DIR
from lib.procstats import dir_bytes, proc_status_kib
from lib.targets import UnbrokenTarget
from lib.wrk import run_wrk

SERVICES = BENCH_DIR / "scale_services.py"
ACTIVE = "status != 'completed'"  # the condition of the partial index invocation_active: cheap to count


# ------------------------------------------------------------------------------------------------ target
class ScaleTarget(UnbrokenTarget):
    """``unbroken serve bench/scale_services.py``: restartable on its data dir, killable with SIGKILL."""

    name = "unbroken-scale"

    services = SERVICES

    def start(self, timeout: float = 600.0) -> None:
        """Start (or restart on the same data dir); recovering 100,000 invocations may take a while."""
        super().start(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, the store is left as a crash leaves it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def rows(self, sql: str) -> list[tuple[Any, ...]] | None:
        try:
            conn = sqlite3.connect(f"file:{self.data_dir / 'unbroken.db'}?mode=ro", uri=True, timeout=5)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return None

    def in_flight(self) -> dict[str, int] | None:
        """Unfinished invocations by status."""
        rows = self.rows(f"SELECT status, count(*) FROM invocation WHERE {ACTIVE} GROUP BY status")
        return None if rows is None else {str(s): int(n) for s, n in rows}

    def workflows_completed(self) -> int:
        rows = self.rows(
            "SELECT count(*) FROM invocation WHERE service = 'ScaleWf' AND handler = 'run' "
            "AND status = 'completed'"
        )
        return int(rows[0][0]) if rows else -1

    def rss(self) -> dict[str, float]:
        pid = self.pids()["server"]
        return {
            "rss_mib": proc_status_kib(pid, "VmRSS") / 1024,
            "hwm_mib": proc_status_kib(pid, "VmHWM") / 1024,
        }


def wait_in_flight(
    target: ScaleTarget, done: Callable[[dict[str, int]], bool], what: str, timeout: float
) -> tuple[dict[str, int], float]:
    """Poll the store until ``done(in-flight counts by status)``; returns the counts, seconds waited."""
    t0 = time.monotonic()
    while True:
        counts = target.in_flight()
        if counts is not None and done(counts):
            return counts, time.monotonic() - t0
        if not target.alive():
            raise RuntimeError(f"server died while waiting until {what}:\n{target.log_tail()}")
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"not {what} after {timeout:.0f} s (in flight {counts}):\n{target.log_tail()}")
        time.sleep(0.1)  # polling another process's store: there is no event to wait on


def data_dir_bytes(target: ScaleTarget) -> dict[str, int]:
    """Apparent bytes of the data dir, total and per file (the WAL may hold much of it)."""
    files = {p.name: p.stat().st_size for p in target.data_dir.glob("*") if p.is_file()}
    return {"total": dir_bytes(target.data_dir)[0], **files}


# ------------------------------------------------------------------------------------ count-limited wrk
def keyed_script(path: str, body: str, first: int, last: int) -> str:
    """Lua for wrk: one POST per i in first..last (``{i}`` in ``path``), and wrk ends at the last answer.

    Connections with nothing left to send poll /restate/health slowly (its answers are not counted) until
    the last real request is answered; then the thread stops and SIGINTs wrk, whose main thread otherwise
    sleeps for the whole -d duration. The SIGINT is repeated every 0.1 s while wrk lives (at most 10 s): a
    short run can end before the main thread has reached its sleep, and a signal handled then is lost.
    io.popen, unlike os.execute, leaves wrk's SIGINT handler in place while the shell runs.
    """
    prefix, _, suffix = path.partition("{i}")
    path_expr = f"{_lua(prefix)} .. nxt .. {_lua(suffix)}" if "{i}" in path else _lua(path)
    return f"""
local first, last = {first}, {last}
local nxt, primed = first, false
local total = last - first + 1
local hdrs = {{["Content-Type"] = "application/json"}}
-- globals: done() runs in wrk's main Lua state and reads them from the thread's with thread:get()
answered = 0
non2xx = 0
first_bad = ""
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function delay()
  if nxt <= last then return 0 end
  return 50
end
function request()
  -- wrk calls request() once before the run to check the script: that call must not use up a key
  if primed and nxt <= last then
    local req = wrk.format("POST", {path_expr}, hdrs, {_lua(body)})
    nxt = nxt + 1
    return req
  end
  primed = true
  return wrk.format("GET", "/restate/health")
end
function response(status, headers, body)
  if body and string.find(body, '"services"', 1, true) then return end
  answered = answered + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then
      first_bad = (status .. " " .. string.sub(body or "", 1, 300)):gsub('[^%w %p]', ' '):gsub('[\\\\"]', "'")
    end
  end
  if answered == total then
    wrk.thread:stop()
    io.popen("(i=0; while [ $i -lt 100 ] && kill -INT $PPID; do i=$((i+1)); sleep 0.1; done)" ..
             " >/dev/null 2>&1 &"):close()
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  local answered, non2xx, first_bad = 0, 0, ""
  for _, t in ipairs(threads) do
    answered = answered + t:get("answered")
    non2xx = non2xx + t:get("non2xx")
    if first_bad == "" then first_bad = t:get("first_bad") end
  end
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"status":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"answered":%d,"total":%d,"first_bad":"%s"}}\\n',
    summary.requests, summary.duration, non2xx, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    answered, total, first_bad))
end
"""


def _lua(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def send_range(
    target: ScaleTarget, scripts: Path, path: str, body: str, first: int, last: int, args: argparse.Namespace
) -> dict[str, Any]:
    """POST ``path`` once for each i in first..last at ``args.connections``; wrk's summary + errors."""
    if last < first:  # nothing to send (e.g. the restart's sample took every workflow)
        zero = ("requests", "duration_us", "non2xx", "socket_errors", "p50_us", "p99_us", "answered", "total")
        return {**dict.fromkeys(zero, 0), "errors": 0, "first_bad": ""}
    script = scripts / f"keyed-{path.strip('/').replace('/', '_')}-{first}-{last}.lua"
    script.write_text(keyed_script(path, body, first, last))
    bound = 60 + (last - first + 1) // 20  # wrk's -d: only reached if some request never got an answer
    res = run_wrk(target, script, args.connections, bound, args.timeout)
    res["errors"] = res["non2xx"] + res["socket_errors"] + (res["total"] - res["answered"])
    return res
