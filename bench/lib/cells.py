"""One cell of bench/compare on one side: warm-up, idle, wrk (and W6's drain), idle, deltas; side summaries."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.measure import charged_invocations, wait_machine_quiet
from lib.procstats import (
    CLK_TCK,
    RssSampler,
    children_cpu_s,
    cpu_ticks,
    dir_bytes,
    host_busy_ticks,
    proc_status_kib,
    proc_write_bytes,
)
from lib.targets import Target
from lib.workloads import SEND, Workload
from lib.wrk import run_wrk, wrk_script

# Idle = at most QUIET_TICKS clock ticks of CPU (10% of a core) over QUIET_WINDOW samples of 0.1 s.
QUIET_WINDOW = 5
QUIET_TICKS = 5


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
        time.monotonic(),
        {k: cpu_ticks(p) for k, p in pids.items()},
        apparent,
        allocated,
        {k: proc_write_bytes(p) for k, p in pids.items()},
        invocations,
        host_busy_ticks(),
        children_cpu_s(),
    )
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
            raise TimeoutError(
                f"{target.label} still busy {timeout:.0f}s after the load stopped "
                f"(unfinished invocations: {target.active_invocations()}):\n{target.log_tail()}"
            )
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

    ok, secs, client_inv, server_inv, charged = charged_invocations(
        res, w, before.invocations, after.invocations
    )
    per = charged or None
    cpu = {k: (after.cpu[k] - before.cpu[k]) * 1000 / CLK_TCK / per for k in after.cpu} if per else {}
    target_s = sum(after.cpu[k] - before.cpu[k] for k in after.cpu) / CLK_TCK
    wrk_s = after.wrk_cpu_s - before.wrk_cpu_s
    window = (after.t - before.t) * (os.cpu_count() or 1)
    other_pct = max(0.0, (after.host_busy - before.host_busy) / CLK_TCK - target_s - wrk_s) * 100 / window
    out: dict[str, Any] = {
        "target": target.name,
        "workload": w.name,
        "wid": w.wid,
        "conns": conns,
        "duration_s": round(secs, 3),
        "calls_ok": ok,
        "calls_per_s": ok / secs if secs else 0.0,
        "invocations_per_s": client_inv / secs if secs else 0.0,
        "p50_ms": res["p50_us"] / 1000,
        "p90_ms": res["p90_us"] / 1000,
        "p99_ms": res["p99_us"] / 1000,
        "max_ms": res["max_us"] / 1000,
        "errors": res["non2xx"] + res["socket_errors"],
        "warmup_errors": warm_errors,
        "first_error": res.get("first_bad", ""),
        "invocations_server": server_inv,
        "invocations_charged": charged,
        "cpu_ms_per_inv": cpu,
        "cpu_ms_per_inv_total": sum(cpu.values()) if cpu else None,
        "peak_rss_mib": {k: v / 1024 for k, v in rss.peak_kib.items()},
        "peak_rss_mib_total": sum(rss.peak_kib.values()) / 1024,
        "disk_bytes_per_inv": (after.disk - before.disk) / per if per else None,
        "disk_allocated_bytes_per_inv": (after.disk_allocated - before.disk_allocated) / per if per else None,
        "written_bytes_per_inv": sum(after.written[k] - before.written[k] for k in after.written) / per
        if per
        else None,
        "data_dir_mib": after.disk / 2**20,
        "idle_wait_s": round(idle_s, 3),
        "other_cpu_pct": round(other_pct, 1),
        "wrk_cpu_ms_per_call": wrk_s * 1000 / max(res["requests"], 1),
        "wrk": res,
    }
    if w is SEND:
        # accepted/s is the throughput figure; completion is measured from the start of the window to the
        # moment the engine reported nothing left unfinished.
        out["backlog_at_end"] = backlog
        out["drain_s"] = round(drain_s or 0.0, 3)
        out["completed_per_s"] = charged / (secs + (drain_s or 0.0)) if secs else 0.0
    return out


def side_summary(target: Target) -> dict[str, Any]:
    pids = target.pids()
    hwm = {k: proc_status_kib(p, "VmHWM") / 1024 for k, p in pids.items()}
    rss = {k: proc_status_kib(p, "VmRSS") / 1024 for k, p in pids.items()}
    disk = sum(dir_bytes(d)[0] for d in target.data_dirs())
    total = target.total_invocations()
    return {
        **target.startup,
        "vmhwm_mib": hwm,
        "vmhwm_mib_total": sum(hwm.values()),
        "rss_end_mib": rss,
        "data_dir_mib": disk / 2**20,
        "invocations_total": total,
        "data_dir_bytes_per_inv": disk / total if total else None,
    }
