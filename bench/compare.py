"""Unbroken and the real Restate server, side by side on the same machine in one run: ``bench/compare``.

    bench/compare                          # W1-W6 at 16 and 128 connections (W4 also 512), 5 s + 15 s each
    bench/compare --quick                  # smoke test: 16 connections, 1 s warm-up + 2 s each
    bench/compare --only unbroken --quick  # Unbroken alone (no Restate install needed; what CI runs)
    bench/compare --workloads W1,W5 --connections 16 --duration 5 --warmup 2
    bench/compare --only unbroken --remote py,ts --workloads W1,W2  # protocol overhead: remote deployments

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

``--remote py,ts`` adds Unbroken serving the same workloads as a remote deployment (bench/lib/remote_side.py:
``unbroken serve`` with no APP, the services under restate-sdk in hypercorn or under the TypeScript SDK in
node, registered through ``POST /deployments``), each printed against the in-process side: the protocol's
overhead.

The pieces live in bench/lib/ (workloads, wrk, procstats, targets, restate_side, remote_side, cells,
report), shared with bench/run.py; this file is the command: arguments, the plan, the printout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anchor as anchor_mod  # noqa: E402
from lib import RESULTS_DIR  # noqa: E402
from lib.cells import measure, side_summary  # noqa: E402
from lib.procstats import git_rev, machine_info  # noqa: E402
from lib.remote_side import KINDS, RemoteSide, RemoteUnavailable  # noqa: E402
from lib.report import comparison_table, send_table, summary_table  # noqa: E402
from lib.restate_side import RestateSide  # noqa: E402
from lib.targets import Target, UnbrokenSide, fresh_schema  # noqa: E402
from lib.workloads import ALL_WORKLOADS, DEFAULT_CONNS, DEFAULT_ORDER, SEND, resolve_workloads  # noqa: E402
from lib.wrk import WRK_INSTALL_HINT, wrk_version  # noqa: E402

LEGEND = (
    "\ninv/s: completed 2xx invocations per second (W5 counts 11 per call; W6: one-way calls accepted per second)."
    "\np50/p99: wrk latency per call. CPU ms/inv: utime+stime per invocation completed in the window; Unbroken"
    "\nis one process (engine + handlers), shown as its server figure; Restate is restate-server + hypercorn"
    "\n(srv+svc), the ratio compares totals. RSS: peak resident memory sampled during the cell, all processes."
    "\ndisk B/inv: data dir growth (apparent size) per invocation. W6 completed/s: invocations completed from the"
    "\nstart of the window until the engine reported none unfinished. other load %: CPU used by anything else"
    "\nduring the cell (the idle other side included), % of all cores; errors: non-2xx + socket errors, U / R."
    "\nUnbroken runs with fsync ON (its default); Restate with its defaults (RocksDB WAL fsync on)."
)


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/compare",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--workloads",
        default=",".join(DEFAULT_ORDER),
        help="comma-separated names or ids (W1..W6, W3a, W3b): "
        + ", ".join(f"{ALL_WORKLOADS[n].wid}={n}" for n in DEFAULT_ORDER)
        + " (default: all)",
    )
    p.add_argument(
        "--connections",
        default=None,
        help="comma-separated connection counts for every workload (default: 16,128; W4 also 512)",
    )
    p.add_argument("--duration", type=int, default=15, help="measured seconds per run (default 15)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up seconds per run, discarded (default 5)")
    p.add_argument("--timeout", type=int, default=60, help="wrk per-request timeout in seconds (default 60)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 16 connections, 1 s warm-up + 2 s measured (overrides the above)",
    )
    p.add_argument("--only", choices=["unbroken", "restate"], help="run one side only (the other shows '-')")
    p.add_argument(
        "--remote",
        default="",
        metavar="KINDS",
        help="also Unbroken with the workloads as a remote deployment, comma-separated: py (restate-sdk in "
        "hypercorn), ts (the TypeScript SDK in node); each printed against the in-process side",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="also run Unbroken on PostgreSQL (postgresql://USER@HOST:PORT/DB?schema=NAME, a schema of its own "
        "that is dropped first), as a third side in its own table",
    )
    p.add_argument(
        "--with-fsync-off",
        action="store_true",
        help="also run Unbroken with fsync OFF, printed in a separate, labelled table (NOT durable)",
    )
    p.add_argument(
        "--anchor-dir",
        default=str(anchor_mod.ANCHOR_DIR),
        help="where the Restate anchor is (installed on first use; default bench/.anchor)",
    )
    p.add_argument("--no-install", action="store_true", help="fail instead of installing a missing anchor")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measured run wait up to SECONDS for the machine's other load to stop",
    )
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


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through main's `finally`, which stops both sides' processes


def make_plan(args: argparse.Namespace) -> list[tuple[str, int]] | str:
    """The (workload, conns) cells to run, or why the arguments or the machine cannot run them."""
    if shutil.which("wrk") is None:
        return WRK_INSTALL_HINT.replace("bench/run.py", "bench/compare")
    if args.only != "restate" and importlib.util.find_spec("unbroken") is None:
        return (
            f"unbroken is not importable by {sys.executable}; run with the project's python, e.g. "
            "PYTHON=.venv/bin/python bench/compare"
        )
    try:
        names = resolve_workloads(args.workloads)
    except ValueError as exc:
        return str(exc)
    fixed_conns = [int(c) for c in args.connections.split(",") if c.strip()] if args.connections else None
    if args.duration < 1 or args.warmup < 0 or any(c < 1 for c in fixed_conns or [1]):
        return "--duration must be >= 1, --warmup >= 0 and connection counts >= 1"
    unknown = set(remote_kinds(args)) - set(KINDS)
    if unknown or (args.remote and args.only == "restate"):
        return f"--remote takes {', '.join(KINDS)} (comma-separated), and not with --only restate"
    return [(n, c) for n in names for c in (fixed_conns or DEFAULT_CONNS[n])]


def remote_kinds(args: argparse.Namespace) -> list[str]:
    return [k.strip() for k in args.remote.split(",") if k.strip()]


def find_anchor(args: argparse.Namespace) -> anchor_mod.Anchor | None:
    """The Restate anchor (installed on first use), None with --only unbroken; AnchorError if unavailable."""
    if args.only == "unbroken":
        return None
    anchor = anchor_mod.find(Path(args.anchor_dir))
    if anchor is None:
        if args.no_install:
            raise anchor_mod.AnchorError(f"not installed in {args.anchor_dir} (--no-install given)")
        anchor = anchor_mod.install(Path(args.anchor_dir))
    return anchor


def header(
    args: argparse.Namespace,
    argv: list[str] | None,
    started: dt.datetime,
    anchor: anchor_mod.Anchor | None,
    cells: int,
) -> dict[str, Any]:
    """The run's metadata, printed as the first lines."""
    meta: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["bench/compare", *(argv or sys.argv[1:])]),
        "git": git_rev(),
        "machine": machine_info(),
        "load_generator": wrk_version(),
        "load_shape": "closed loop, wrk -t1 -c<conns>, server(s), handlers and wrk on this machine",
        "loadavg_at_start": os.getloadavg()[0],
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "quick": args.quick,
        "unbroken_fsync": True,
        "remote": remote_kinds(args),  # bench/lib/remote_side.py: the workloads as remote deployments
        "restate": anchor.describe() if anchor else None,
        "restate_config": "defaults (RocksDB WAL fsync on), own base dir, ports on 127.0.0.1, telemetry off; "
        "services in hypercorn "
        + (anchor.hypercorn_version if anchor else "?")
        + " (HTTP/2, one process; h2_max_concurrent_streams, keep_alive_max_requests and "
        "keep_alive_timeout raised)",
    }
    m = meta["machine"]
    print(
        f"bench/compare {meta['git']} on {m['nproc']} CPU ({m['cpu_model']}), {m['mem_gib']} GiB; "
        f"{meta['load_generator']}; load average {meta['loadavg_at_start']:.2f}"
    )
    if args.only != "restate":
        print(
            "Unbroken: `unbroken serve bench/services.py`, defaults: fsync ON (SQLite WAL synchronous=FULL, "
            "every commit fsynced before anything leaves the engine); one process = engine + handlers"
        )
    if anchor:
        print(
            f"Restate:  restate-server {anchor.server_version} + restate-sdk {anchor.sdk_version} in hypercorn "
            f"{anchor.hypercorn_version} (HTTP/2), defaults (RocksDB WAL fsync on); two processes"
        )
    if args.with_fsync_off:
        print("also: Unbroken with fsync OFF (NOT durable), reported only in its own labelled table")
    print(
        f"{cells} cell(s) x {'1 side' if args.only else 'both sides'}: {args.warmup} s warm-up + "
        f"{args.duration} s measured each, sides alternating\n",
        flush=True,
    )
    return meta


def make_targets(args: argparse.Namespace, anchor: anchor_mod.Anchor | None, tmp: Path) -> list[Target]:
    targets: list[Target] = []
    if args.only != "restate":
        (tmp / "unbroken").mkdir()
        targets.append(UnbrokenSide(tmp / "unbroken"))
    if anchor:
        (tmp / "restate").mkdir()
        targets.append(RestateSide(tmp / "restate", anchor))
    if args.store and args.only != "restate":
        (tmp / "unbroken_pg").mkdir()
        targets.append(UnbrokenSide(tmp / "unbroken_pg", store_url=fresh_schema(args.store)))
    if args.with_fsync_off and args.only != "restate":
        (tmp / "unbroken_nofsync").mkdir()
        targets.append(UnbrokenSide(tmp / "unbroken_nofsync", fsync=False))
    for kind in remote_kinds(args):
        (tmp / f"remote_{kind}").mkdir()
        targets.append(RemoteSide(tmp / f"remote_{kind}", kind))
    return targets


class AnchorDown(RuntimeError):
    """The Restate anchor is installed but does not run here (exit status 4)."""


def start_targets(targets: list[Target]) -> None:
    """One at a time, so each start-up time is taken with nothing else starting."""
    for t in targets:
        try:
            t.start()
        except (RuntimeError, TimeoutError, OSError) as exc:
            if isinstance(t, RestateSide) and not isinstance(t, RemoteSide):
                raise AnchorDown(str(exc)) from exc
            raise
        print(
            f"{t.label} up: health after {t.startup['health_s']:.3f} s, first successful call after "
            f"{t.startup['first_call_s']:.3f} s (from process start"
            f"{', hypercorn started alongside and the deployment registered' if isinstance(t, RestateSide) else ''})",
            flush=True,
        )


def run_cells(
    targets: list[Target],
    plan: list[tuple[str, int]],
    args: argparse.Namespace,
    tmp: Path,
    cells: list[dict[str, Any]],
) -> None:
    """Every cell on every side, the sides' order alternating; cells are appended as they come."""
    for i, (name, conns) in enumerate(plan):
        w = ALL_WORKLOADS[name]
        cell: dict[str, Any] = {"workload": name, "wid": w.wid, "conns": conns, "results": {}}
        order = targets if i % 2 == 0 else list(reversed(targets))
        for t in order:
            r = measure(t, w, conns, args, tmp)
            cell["results"][t.name] = r
            extra = f", drain {r['drain_s']:.2f} s" if "drain_s" in r else ""
            print(
                f"  {w.wid} {name} c={conns} {t.label}: {r['invocations_per_s']:.0f} "
                f"{'accepted' if w is SEND else 'inv'}/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                f"errors {r['errors']}{extra}; other load {r['other_cpu_pct']:.0f}%",
                flush=True,
            )
        cells.append(cell)


def print_tables(
    cells: list[dict[str, Any]], sides: dict[str, dict[str, Any]], targets: list[Target], quick: bool
) -> None:
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
    print(LEGEND)
    if any(t.name == "unbroken_pg" for t in targets):
        print("\nUnbroken on PostgreSQL (U-pg: one node, the database on the same machine) vs Restate")
        print(comparison_table(cells, "unbroken_pg", "restate", "U-pg", "R"))
    if any(t.name == "unbroken_nofsync" for t in targets):
        print(
            "\nNOT DURABLE: Unbroken with fsync OFF (U-nofsync) vs Restate with fsync on. Not a comparable figure;"
            " for reference only."
        )
        print(comparison_table(cells, "unbroken_nofsync", "restate", "U-nofsync", "R"))
    for t in targets:
        if isinstance(t, RemoteSide):
            tag = f"U-{t.kind}"
            print(
                f"\nProtocol overhead: Unbroken in-process (U) vs {t.label} ({tag}), one deployment over h2c"
            )
            print(comparison_table(cells, "unbroken", t.name, "U", tag))
    if quick:
        print("\n(--quick: a few seconds per cell: a smoke test of the harness, not figures to quote)")


def print_warnings(cells: list[dict[str, Any]], problems: dict[str, list[str]]) -> int:
    """Noise, log problems and failed calls; returns the number of failed calls."""
    noisy = [
        f"{c['workload']} c={c['conns']} {k} ({r['other_cpu_pct']:.0f}%)"
        for c in cells
        for k, r in c["results"].items()
        if r["other_cpu_pct"] > 10
    ]
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
    total_errors = int(sum(r["errors"] + r["warmup_errors"] for c in cells for r in c["results"].values()))
    print(f"errors: {total_errors} (non-2xx answers and socket errors/timeouts, all sides)")
    return total_errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    plan = make_plan(args)
    if isinstance(plan, str):
        print(plan, file=sys.stderr)
        return 3
    try:
        anchor = find_anchor(args)
    except anchor_mod.AnchorError as exc:
        print(
            f"Restate anchor unavailable: {exc}\n(run `bench/compare --only unbroken` to measure Unbroken "
            "alone)",
            file=sys.stderr,
        )
        return 4
    started = dt.datetime.now(dt.UTC)
    meta = header(args, argv, started, anchor, len(plan))
    tmp = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        targets = make_targets(args, anchor, tmp)
    except RemoteUnavailable as exc:
        print(f"remote deployment unavailable: {exc}", file=sys.stderr)
        return 3
    cells: list[dict[str, Any]] = []
    sides: dict[str, dict[str, Any]] = {}
    problems: dict[str, list[str]] = {}
    status = 0
    try:
        start_targets(targets)
        run_cells(targets, plan, args, tmp, cells)
        sides.update({t.name: side_summary(t) for t in targets})
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        status = 4 if isinstance(exc, AnchorDown) else 1
    finally:
        for t in targets:
            t.stop()
            problems[t.name] = t.log_problems()
        if args.keep_data:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_tables(cells, sides, targets, args.quick)
    total_errors = print_warnings(cells, problems)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"compare-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    meta["log_problems"] = {k: v[:50] for k, v in problems.items()}
    meta["status"] = status
    out.write_text(json.dumps({"meta": meta, "sides": sides, "cells": cells}, indent=2) + "\n")
    print(f"results: {out}")
    return 2 if status == 0 and total_errors else status


if __name__ == "__main__":
    sys.exit(main())
