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

The pieces live in bench/lib/ (workloads, wrk, procstats, targets, measure, report), shared with
bench/compare.py and bench/scale.py; this file is the command: arguments, the loop, the printout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import RESULTS_DIR  # noqa: E402
from lib.measure import Result, measure  # noqa: E402
from lib.procstats import git_rev, machine_info  # noqa: E402
from lib.report import table  # noqa: E402
from lib.targets import UnbrokenTarget, fresh_schema  # noqa: E402
from lib.workloads import WORKLOADS  # noqa: E402
from lib.wrk import WRK_INSTALL_HINT, wrk_version  # noqa: E402

LEGEND = (
    "\ninv/s: completed 2xx invocations per second (W5 counts 11 per call); p50/p99: wrk latency per call;\n"
    "CPU ms/inv: server process utime+stime (+children) per completed invocation; disk B/inv: data dir\n"
    "apparent-size growth per invocation; written KiB/inv: bytes the server sent to storage per invocation\n"
    "(/proc/<pid>/io write_bytes: WAL + checkpoints); other load %: CPU used by other processes during the\n"
    "run, % of all cores (noise on a shared machine)."
)


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--workloads",
        default="noop,steps,counter,hot,sleep,fanout",
        help=f"comma-separated, from: {', '.join(WORKLOADS)} (default: all)",
    )
    p.add_argument(
        "--connections", default="16,128", help="comma-separated connection counts (default 16,128)"
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="run the server on PostgreSQL (postgresql://USER@HOST:PORT/DB?schema=NAME; the schema is dropped "
        "first: give it one of its own)",
    )
    p.add_argument("--duration", type=int, default=15, help="measured seconds per run (default 15)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up seconds per run, discarded (default 5)")
    p.add_argument("--timeout", type=int, default=60, help="wrk per-request timeout in seconds (default 60)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: noop+steps, 4 connections, 1 s warm-up + 1 s each (overrides the above)",
    )
    p.add_argument(
        "--anchor",
        action="store_true",
        help="add the Restate anchor figures from WORKLOADS.md (NOT measured here) and the ratio",
    )
    p.add_argument("--no-fsync", action="store_true", help="run the server with fsync off (not the default)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to SECONDS for other processes to leave the CPU idle "
        "(shared machines; default 0 = don't wait)",
    )
    p.add_argument("--keep-data", action="store_true", help="keep the temp dir (data dir, server log, Lua)")
    p.add_argument(
        "--results-dir", default=str(RESULTS_DIR), help="where the JSON goes (default bench/results)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.workloads, args.connections, args.duration, args.warmup = "noop,steps", "4", 1, 1
    return args


def check_args(args: argparse.Namespace) -> tuple[list[str], list[int]] | str:
    """The workloads and connection counts to run, or why the arguments or the machine cannot run them."""
    if shutil.which("wrk") is None:
        return WRK_INSTALL_HINT
    if importlib.util.find_spec("unbroken") is None:
        return (
            f"unbroken is not importable by {sys.executable}; run with the project's venv python "
            "(e.g. /work/venv/bin/python bench/run.py)"
        )
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        return f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}"
    conns_list = [int(c) for c in args.connections.split(",") if c.strip()]
    if args.duration < 1 or args.warmup < 0 or any(c < 1 for c in conns_list):
        return "--duration must be >= 1, --warmup >= 0 and connection counts >= 1 (wrk takes whole seconds)"
    return names, conns_list


def header(args: argparse.Namespace, started: dt.datetime, cells: int, conn_counts: int) -> dict[str, Any]:
    """The run's metadata, printed as the first lines."""
    meta: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "target": "unbroken",
        "git": git_rev(),
        "machine": machine_info(),
        "load_generator": wrk_version(),
        "load_shape": "closed loop, wrk -t1 -c<conns>, everything on this machine",
        "loadavg_at_start": os.getloadavg()[0],
        "fsync": not args.no_fsync,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
    }
    m = meta["machine"]
    print(
        f"Unbroken {meta['git']} on {m['nproc']} CPU ({m['cpu_model']}), {m['mem_gib']} GiB; {meta['load_generator']}"
    )
    if args.no_fsync:
        print("fsync: OFF (--no-fsync): commits are NOT durable; figures not comparable with the anchor")
    else:
        print("fsync: ON (the default: SQLite WAL synchronous=FULL, every commit fsynced before a reply)")
    print(
        f"{cells} workload(s) x {conn_counts} connection count(s): {args.warmup} s warm-up + "
        f"{args.duration} s measured each\n",
        flush=True,
    )
    return meta


def run_all(
    target: UnbrokenTarget,
    args: argparse.Namespace,
    names: list[str],
    conns_list: list[int],
    tmp: Path,
    results: list[Result],
) -> None:
    """Start the server, then every (workload, conns) cell; results are appended as they come."""
    target.start()
    print(
        f"server up: health after {target.startup['health_s']:.3f} s, first successful call after "
        f"{target.startup['first_call_s']:.3f} s (from process start)",
        flush=True,
    )
    for name in names:
        for conns in conns_list:
            r = measure(
                target, WORKLOADS[name], conns, args.warmup, args.duration, tmp, args.timeout, args.wait_quiet
            )
            results.append(r)
            print(
                f"  {r.wid} {r.workload} c={conns}: {r.invocations_per_s:.0f} inv/s, p50 {r.p50_ms:.1f} ms, "
                f"p99 {r.p99_ms:.1f} ms, errors {r.errors}; other load on the machine {r.other_cpu_pct:.0f}%",
                flush=True,
            )


def print_report(results: list[Result], anchor: bool, problems: list[str]) -> int:
    """The table, its legend and every warning; returns the number of failed calls."""
    total_errors = sum(r.errors + r.warmup_errors for r in results)
    print()
    print(table(results, anchor))
    if anchor:
        print(
            "* anchor figures from ../shared/bench/WORKLOADS.md (Restate 1.7.12, mean of its two runs; CPU = "
            "server + service), NOT measured in this run"
        )
    print(LEGEND)
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
    return total_errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = check_args(args)
    if isinstance(plan, str):
        print(plan, file=sys.stderr)
        return 3
    names, conns_list = plan
    started = dt.datetime.now(dt.UTC)
    meta = header(args, started, len(names), len(conns_list))
    tmp = Path(tempfile.mkdtemp(prefix="unbroken-bench-"))
    store_url = fresh_schema(args.store) if args.store else None
    target = UnbrokenTarget(tmp, fsync=not args.no_fsync, store_url=store_url)
    results: list[Result] = []
    status = 0
    try:
        run_all(target, args, names, conns_list, tmp, results)
    except (RuntimeError, TimeoutError) as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        status = 1
    finally:
        if target.startup:
            meta["startup"] = target.startup
        target.stop()
        problems = target.log_problems()
        if args.keep_data:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total_errors = print_report(results, args.anchor, problems)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    meta["server_log_problems"] = problems[:50]
    out.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n")
    print(f"results: {out}")
    return 2 if status == 0 and total_errors else status


if __name__ == "__main__":
    sys.exit(main())
