"""One measured window on one target (bench/run.py, bench/scale.py): warm-up, idle, wrk, idle, deltas."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lib.procstats import (
    CLK_TCK,
    children_cpu_s,
    cpu_ticks,
    dir_bytes,
    host_busy_ticks,
    proc_status_kib,
    proc_write_bytes,
)
from lib.targets import UnbrokenTarget
from lib.workloads import Workload
from lib.wrk import run_wrk, wrk_script


class HasPids(Protocol):
    def pids(self) -> dict[str, int]: ...


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


def snapshot(target: UnbrokenTarget) -> Snapshot:
    apparent = allocated = 0
    for d in target.data_dirs():
        a, b = dir_bytes(d)
        apparent += a
        allocated += b
    return Snapshot(
        time.monotonic(),
        {k: cpu_ticks(p) for k, p in target.pids().items()},
        apparent,
        allocated,
        target.total_invocations(),
        host_busy_ticks(),
        children_cpu_s(),
        sum(proc_write_bytes(p) for p in target.pids().values()),
    )


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


def wait_machine_quiet(target: HasPids, limit_s: float, max_other_pct: float = 5.0) -> float:
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
    target: UnbrokenTarget,
    w: Workload,
    conns: int,
    warmup: int,
    duration: int,
    scripts: Path,
    timeout_s: int,
    wait_quiet_s: float = 0.0,
) -> Result:
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

    ok, secs, client_inv, server_inv, charged = charged_invocations(
        res, w, before.invocations, after.invocations
    )
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
        workload=w.name,
        wid=w.wid,
        conns=conns,
        duration_s=round(secs, 3),
        calls_ok=ok,
        calls_per_s=ok / secs if secs else 0.0,
        invocations_per_s=client_inv / secs if secs else 0.0,
        p50_ms=res["p50_us"] / 1000,
        p90_ms=res["p90_us"] / 1000,
        p99_ms=res["p99_us"] / 1000,
        max_ms=res["max_us"] / 1000,
        errors=res["non2xx"] + res["socket_errors"],
        warmup_errors=warm_errors,
        first_error=res.get("first_bad", ""),
        invocations_server=server_inv,
        invocations_charged=charged,
        cpu_ms_per_inv=cpu,
        rss_mib=proc_status_kib(pid, "VmRSS") / 1024,
        peak_rss_mib=proc_status_kib(pid, "VmHWM") / 1024,
        disk_bytes_per_inv=(after.disk_apparent - before.disk_apparent) / per if per else None,
        written_bytes_per_inv=(after.write_bytes - before.write_bytes) / per if per else None,
        disk_allocated_bytes_per_inv=(after.disk_allocated - before.disk_allocated) / per if per else None,
        other_cpu_pct=round(other_pct, 1),
        wrk_cpu_ms_per_call=wrk_s * 1000 / max(res["requests"], 1),
        data_dir_mib=after.disk_apparent / 2**20,
        drain_s=round(drain, 3),
        wrk=res,
    )
