"""Figure 4 of bench/scale.py: N invocations sleeping on a long durable timer, then a restart.

``ScaleSleep.sleep`` (bench/scale_services.py) awaits ``ctx.sleep(7 days)`` and suspends a second after it
starts. The invocations are created through the real ingress with one-way sends (``POST
/ScaleSleep/sleep/send``, wrk at ``--connections``), so each one is the engine's own records: an invocation
row, its journal, one durable timer row. Then the server is stopped (``--sleepers-signal``: SIGKILL, as a
crash, or SIGTERM) and started again on the same data dir, and this measures what the restart costs with
them all stored: time to health and to the first successful call, VmRSS once start-up has settled, and that
every sleeper is still in the store, suspended, with its timer, and that a new 100 ms sleep (W4, request-
response) fires on time in front of the million stored timers.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from lib.procstats import CLK_TCK, cpu_ticks
from lib.report import md_table
from lib.targets import http_status
from scale_common import ScaleTarget, data_dir_bytes, send_range, wait_in_flight

SEND = "/ScaleSleep/sleep/send"
SETTLE_TICKS = 2  # start-up has settled when the server uses at most this many CPU ticks ...
SETTLE_WINDOW_S = 1.0  # ... in a window this long (CLK_TCK is 100/s: at most 2% of one core)
SETTLE_TIMEOUT_S = 120.0
RSS_TARGET_MIB = 250
FIRST_CALL_TARGET_S = 1.0


def settle(target: ScaleTarget, timeout: float = SETTLE_TIMEOUT_S) -> float:
    """Wait until the server is (nearly) idle on the CPU: what start-up reads has been read."""
    pid = target.pids()["server"]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        before = cpu_ticks(pid)
        time.sleep(SETTLE_WINDOW_S)  # measuring a window of another process's CPU: nothing to await
        if cpu_ticks(pid) - before <= SETTLE_TICKS:
            break
    return time.monotonic() - t0


def timer_rows(target: ScaleTarget) -> int:
    rows = target.rows("SELECT count(*) FROM timer")
    return int(rows[0][0]) if rows else -1


def stop_for_restart(target: ScaleTarget, how: str) -> float:
    """SIGKILL (a crash) or SIGTERM (a clean stop); seconds until the process has gone."""
    assert target.proc is not None
    t0 = time.monotonic()
    target.proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
    target.proc.wait(timeout=120)
    return time.monotonic() - t0


def w4_call_ms(target: ScaleTarget) -> tuple[int, float]:
    """One ``POST /Bench/sleep`` (a 100 ms durable timer): its status and latency."""
    t0 = time.monotonic()
    status = http_status(target.host, target.ingress_port, "POST", "/Bench/sleep", b"null", timeout=30)
    return status, (time.monotonic() - t0) * 1000


def create(target: ScaleTarget, args: argparse.Namespace, scripts: Path) -> dict[str, Any]:
    """Send N one-way sleeps and wait until every one is suspended; disk and memory with them stored."""
    n = args.sleepers
    pid = target.pids()["server"]
    base_disk, cpu0 = data_dir_bytes(target)["total"], cpu_ticks(pid)
    t0 = time.monotonic()
    res = send_range(target, scripts, SEND, "null", 1, n, args)
    accept_s = time.monotonic() - t0
    accepted = res["answered"] - res["non2xx"]
    counts, _ = wait_in_flight(
        target,
        lambda c: c.get("suspended", 0) >= accepted and len(c) == 1,
        f"all {accepted} accepted sleepers are suspended",
        300 + n / 20,
    )
    suspended_s = time.monotonic() - t0
    cpu_s = (cpu_ticks(pid) - cpu0) / CLK_TCK
    rss, disk = target.rss(), data_dir_bytes(target)
    return {
        "sleepers": n,
        "accepted": accepted,
        "errors": res["errors"],
        "first_error": res["first_bad"],
        "reached_suspended": counts.get("suspended", 0),
        "timer_rows": timer_rows(target),
        "accept_s": round(accept_s, 1),
        "accepted_per_s": round(accepted / accept_s, 1),
        "all_suspended_s": round(suspended_s, 1),
        "rss_mib": round(rss["rss_mib"], 1),
        "hwm_mib": round(rss["hwm_mib"], 1),
        "data_dir_bytes": disk,
        "data_dir_bytes_per_sleeper": round((disk["total"] - base_disk) / max(accepted, 1)),
        "cpu_ms_per_sleeper": round(cpu_s * 1000 / max(accepted, 1), 3),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def timed_start(target: ScaleTarget) -> dict[str, float]:
    """Start; seconds to health and to the first successful call, and the server's CPU seconds until then
    (the CPU figure hardly moves with the machine's other load, the wall-clock ones do)."""
    target.start(timeout=600)
    assert target.proc is not None
    return {**target.startup, "cpu_s": cpu_ticks(target.proc.pid) / CLK_TCK}


def repeat_starts(
    target: ScaleTarget, args: argparse.Namespace, tmp: Path, first: dict[str, float]
) -> dict[str, Any]:
    """``--restarts`` starts in all of the sleepers' server (``first`` is the one already taken) and as many of a
    server on an empty store, alternating, so both see the same machine: medians and ranges."""
    empty = ScaleTarget(tmp / "sleepers-empty")
    samples: dict[str, list[dict[str, float]]] = {"sleepers": [first], "empty": []}
    try:
        for i in range(args.restarts):
            pair = (
                [("empty", empty), ("sleepers", target)]
                if i % 2 == 0
                else [("sleepers", target), ("empty", empty)]
            )
            for name, t in pair:
                if name == "sleepers" and i == 0:
                    continue  # the first is ``first``
                if t.alive():
                    stop_for_restart(t, args.sleepers_signal)
                samples[name].append(timed_start(t))
    finally:
        empty.stop()
    return {
        name: {
            k: {
                "median": round(statistics.median(x[k] for x in xs), 3),
                "min": min(x[k] for x in xs),
                "max": max(x[k] for x in xs),
            }
            for k in ("health_s", "first_call_s", "cpu_s")
        }
        | {"n": len(xs)}
        for name, xs in samples.items()
    }


def restart(target: ScaleTarget, args: argparse.Namespace) -> dict[str, Any]:
    """Stop the server with them all suspended, start it again, measure the start and what it holds."""
    gone_s = stop_for_restart(target, args.sleepers_signal)
    first = timed_start(target)
    rss_first = target.rss()  # at the first successful call
    settle_s = settle(target)
    rss = target.rss()
    status, w4_ms = w4_call_ms(target)
    counts = target.in_flight() or {}
    return {
        "signal": args.sleepers_signal,
        "stopped_s": round(gone_s, 3),
        **first,
        "rss_at_first_call_mib": round(rss_first["rss_mib"], 1),
        "settled_after_s": round(settle_s, 1),
        "rss_settled_mib": round(rss["rss_mib"], 1),
        "hwm_settled_mib": round(rss["hwm_mib"], 1),
        "in_flight_after_restart": sum(counts.values()),
        "statuses_after_restart": counts,
        "timer_rows_after_restart": timer_rows(target),
        "w4_status": status,
        "w4_ms": round(w4_ms, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def sleeper_figures(args: argparse.Namespace, tmp: Path, out: dict[str, Any]) -> None:
    """Figure 4 on one server; results go into ``out`` as they come (an aborted run keeps them)."""
    target = ScaleTarget(tmp / "sleepers")
    try:
        target.start()
        out["sleepers"] = s = {"empty_store": dict(target.startup), "rss_empty_mib": target.rss()["rss_mib"]}
        print(f"sleepers: server up; sending {args.sleepers} one-way sleeps", flush=True)
        s.update(create(target, args, tmp))
        print(
            f"  {s['reached_suspended']} suspended after {s['all_suspended_s']:.0f} s, RSS "
            f"{s['rss_mib']:.0f} MiB, {s['data_dir_bytes_per_sleeper']} B each on disk",
            flush=True,
        )
        s["restart"] = up = restart(target, args)
        up["repeated"] = repeat_starts(
            target, args, tmp, {k: up[k] for k in ("health_s", "first_call_s", "cpu_s")}
        )
        print(
            f"  restart ({up['signal']}): first call after {up['first_call_s']:.3f} s, RSS settled "
            f"{up['rss_settled_mib']:.0f} MiB, {up['in_flight_after_restart']} in flight",
            flush=True,
        )
    finally:
        target.stop()
        out["meta"]["server_log_problems"] += target.log_problems()


def sleepers_table(s: dict[str, Any]) -> str:
    up, disk, e = s.get("restart", {}), s["data_dir_bytes"], s["empty_store"]
    rows = [
        ["sleepers sent (202 Accepted) / asked", f"{s['accepted']} / {s['sleepers']}", "-"],
        ["all accepted after, s (sends/s)", f"{s['accept_s']:.0f} ({s['accepted_per_s']:.0f}/s)", "-"],
        ["all suspended after, s", f"{s['all_suspended_s']:.0f} ({s['reached_suspended']} suspended)", "-"],
        ["timer rows in the store", str(s["timer_rows"]), "-"],
        [
            "data dir, MiB (of which WAL)",
            f"{disk['total'] / 2**20:.0f} ({disk.get('unbroken.db-wal', 0) / 2**20:.1f})",
            "-",
        ],
        ["data dir growth per sleeper, bytes", str(s["data_dir_bytes_per_sleeper"]), "-"],
        [
            "server VmRSS / VmHWM with them created, MiB",
            f"{s['rss_mib']:.0f} / {s['hwm_mib']:.0f}",
            f"{s['rss_empty_mib']:.0f}",
        ],
        ["server CPU per sleeper created, ms", f"{s['cpu_ms_per_sleeper']:.2f}", "-"],
    ]
    if up:
        rows += [
            [f"restart ({up['signal'].upper()}): process gone after, s", f"{up['stopped_s']:.2f}", "-"],
            ["health answered after start, s", f"{up['health_s']:.3f}", f"{e['health_s']:.3f}"],
            [
                f"first successful call after start, s (target <= {FIRST_CALL_TARGET_S:g})",
                f"{up['first_call_s']:.3f}",
                f"{e['first_call_s']:.3f}",
            ],
            ["server CPU until the first call, s", f"{up['cpu_s']:.2f}", "-"],
            ["VmRSS at the first call, MiB", f"{up['rss_at_first_call_mib']:.0f}", "-"],
            [
                f"VmRSS / VmHWM once settled ({up['settled_after_s']:.0f} s), MiB (target <= {RSS_TARGET_MIB})",
                f"{up['rss_settled_mib']:.0f} / {up['hwm_settled_mib']:.0f}",
                "-",
            ],
            [
                "in flight / timer rows after the restart",
                f"{up['in_flight_after_restart']} / {up['timer_rows_after_restart']}",
                "-",
            ],
            [
                "a new 100 ms sleep (W4) after the restart: status, ms",
                f"{up['w4_status']}, {up['w4_ms']:.0f}",
                "-",
            ],
            [
                "load average (1 min) at creation end / after restart",
                f"{s['loadavg_1m']} / {up['loadavg_1m']}",
                "-",
            ],
        ]
    if rep := up.get("repeated"):
        big, small = rep["sleepers"], rep["empty"]
        for label, k in (
            ("first successful call", "first_call_s"),
            ("server CPU until the first call", "cpu_s"),
        ):
            rows.append(
                [
                    f"{label}, s: median (min-max) of {big['n']} starts / {small['n']} on an empty store, alternating",
                    f"{big[k]['median']:.3f} ({big[k]['min']:.3f}-{big[k]['max']:.3f})",
                    f"{small[k]['median']:.3f} ({small[k]['min']:.3f}-{small[k]['max']:.3f})",
                ]
            )
    rows.append(["errors (send)", str(s["errors"]), "-"])
    return md_table(["4. sleeping invocations", "value", "empty store"], rows)


def sleeper_failures(s: dict[str, Any]) -> list[str]:
    """Counts that are not what they must be: every sleeper stored, suspended, with its timer, twice."""
    n, up, bad = s["sleepers"], s.get("restart"), []
    if s["errors"] or s["reached_suspended"] != n or s["timer_rows"] != n:
        bad.append(
            f"sleepers: {s['errors']} sends failed, {s['reached_suspended']} suspended, "
            f"{s['timer_rows']} timers, of {n}"
        )
    if up and (up["statuses_after_restart"] != {"suspended": n} or up["timer_rows_after_restart"] != n):
        bad.append(
            f"sleepers: after the restart {up['statuses_after_restart']} in flight, "
            f"{up['timer_rows_after_restart']} timers, of {n}"
        )
    if up and up["w4_status"] != 200:
        bad.append(f"sleepers: a 100 ms sleep after the restart answered {up['w4_status']}")
    return bad
