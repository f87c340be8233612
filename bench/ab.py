"""Unbroken A/B between two git revisions: is B slower than A? ``bench/ab.py A B``.

    python bench/ab.py main h-branch                      # W1, W2, W3a, W5 at 16 and 128 connections, 5 rounds
    python bench/ab.py HEAD~1 HEAD --rounds 3 --duration 10 --warmup 3
    python bench/ab.py main HEAD --rounds 1 --workloads W1 --connections 16 --duration 1 --warmup 0   # smoke

Each revision is checked out into its own git worktree (``git worktree add --detach`` under a temp dir,
removed at the end); the harness is this checkout's bench/compare.py (``--only unbroken``) for both, so
only the server differs: it is started with ``PYTHONPATH=<worktree>/src``, which this script checks comes
first (``unbroken.__file__`` must be under the worktree). The builds alternate round by round (A B, B A,
A B, ...) so slow drift of the machine hits both alike; every round is a fresh server and data dir.

Prints, per workload and connection count, the median over the rounds of inv/s and p50 for A and B, and
B/A; a throughput ratio under 0.95 is marked SLOWER (the "no slowdown within 5%" check). Run it on a quiet
machine: the medians are only as good as the noise allows (the "other load %" column says how much there
was). Writes the JSON (every round's figures) to bench/results/ab-<timestamp>.json or --json.
Exit status: 0 done, B within 5% of A everywhere; 1 a run failed; 2 some cell SLOWER; 3 bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import BENCH_DIR, RESULTS_DIR, ROOT  # noqa: E402
from lib.report import md_table  # noqa: E402

SLOWER = 0.95  # B/A throughput under this is a slowdown beyond the 5% the issue allows
FIGURES = (("inv/s", "invocations_per_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/ab.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("rev_a", metavar="A", help="the base revision (anything git rev-parse takes)")
    add("rev_b", metavar="B", help="the revision checked against A")
    add("--rounds", type=int, default=5, help="runs of each build, alternating (default 5)")
    add("--workloads", default="W1,W2,W3a,W5", help="as bench/compare --workloads (default W1,W2,W3a,W5)")
    add("--connections", default="16,128", help="as bench/compare --connections (default 16,128)")
    add("--duration", type=int, default=15, help="measured seconds per cell (default 15)")
    add("--warmup", type=int, default=5, help="warm-up seconds per cell (default 5)")
    add("--wait-quiet", type=float, default=0.0, metavar="SECONDS", help="passed on to bench/compare")
    add("--json", metavar="PATH", help="where the JSON goes (default bench/results/ab-<timestamp>.json)")
    return p.parse_args(argv)


def git(*args: str, cwd: Path = ROOT) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip()


def checkout(rev: str, where: Path) -> str:
    """A detached worktree of ``rev`` at ``where``; returns the commit's short hash."""
    commit = git("rev-parse", "--short", f"{rev}^{{commit}}")
    git("worktree", "add", "--detach", str(where), commit)
    return commit


def check_import(src: Path) -> None:
    """The server must import unbroken from ``src``, not from whatever the venv has installed."""
    out = subprocess.run(
        [sys.executable, "-c", "import unbroken; print(unbroken.__file__)"],
        env=_env(src),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0 or not Path(out.stdout.strip()).resolve().is_relative_to(src.resolve()):
        raise RuntimeError(
            f"with PYTHONPATH={src}, unbroken comes from {out.stdout.strip() or out.stderr.strip()}"
        )


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def one_run(src: Path, args: argparse.Namespace, out_dir: Path) -> list[dict[str, Any]]:
    """bench/compare --only unbroken against the build in ``src``; its cells (Unbroken results)."""
    out_dir.mkdir(parents=True)
    cmd = [
        sys.executable,
        str(BENCH_DIR / "compare.py"),
        "--only",
        "unbroken",
        "--workloads",
        args.workloads,
        "--connections",
        args.connections,
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--wait-quiet",
        str(args.wait_quiet),
        "--results-dir",
        str(out_dir),
    ]
    bound = 120 + 40 * (args.duration + args.warmup + 10) * len(args.workloads.split(","))
    proc = subprocess.run(cmd, env=_env(src), capture_output=True, text=True, timeout=bound)
    if proc.returncode != 0:
        raise RuntimeError(
            f"bench/compare failed ({proc.returncode}) on {src}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    (result,) = out_dir.glob("compare-*.json")
    cells: list[dict[str, Any]] = json.loads(result.read_text())["cells"]
    return cells


def run_rounds(
    builds: dict[str, Path], args: argparse.Namespace, tmp: Path, runs: dict[str, list[list[dict[str, Any]]]]
) -> None:
    """Round i runs A then B when i is even, B then A when odd; each run's cells go into ``runs``."""
    for i in range(args.rounds):
        order = ["A", "B"] if i % 2 == 0 else ["B", "A"]
        for side in order:
            cells = one_run(builds[side], args, tmp / f"{side}-{i}")
            runs[side].append(cells)
            brief = ", ".join(
                f"{c['wid']}@{c['conns']} {c['results']['unbroken']['invocations_per_s']:.0f}" for c in cells
            )
            print(f"  round {i + 1}/{args.rounds} {side}: {brief} inv/s", flush=True)


def medians(runs: list[list[dict[str, Any]]]) -> dict[tuple[str, int], dict[str, float]]:
    """Per (workload id, conns): the median over the runs of every figure, and the largest other load."""
    by_cell: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for cells in runs:
        for c in cells:
            by_cell.setdefault((c["wid"], c["conns"]), []).append(c["results"]["unbroken"])
    return {
        cell: {key: statistics.median(r[key] for r in rs) for _, key in FIGURES}
        | {"other_cpu_pct_max": max(r["other_cpu_pct"] for r in rs), "errors": sum(r["errors"] for r in rs)}
        for cell, rs in by_cell.items()
    }


def ab_table(ma: dict[tuple[str, int], dict[str, float]], mb: dict[tuple[str, int], dict[str, float]]) -> str:
    head = ["workload", "conns"]
    for label, _ in FIGURES:
        head += [f"{label} A", "B", "B/A"]
    head += ["other load % (max A / B)", "errors", "verdict"]
    rows = []
    for cell in ma:
        a, b = ma[cell], mb.get(cell)
        if b is None:
            continue
        row = [cell[0], str(cell[1])]
        for _, key in FIGURES:
            row += [f"{a[key]:.1f}", f"{b[key]:.1f}", f"{b[key] / a[key]:.3f}" if a[key] else "-"]
        ratio = b["invocations_per_s"] / a["invocations_per_s"] if a["invocations_per_s"] else 0.0
        row += [
            f"{a['other_cpu_pct_max']:.0f} / {b['other_cpu_pct_max']:.0f}",
            f"{a['errors']:.0f} / {b['errors']:.0f}",
            "SLOWER" if ratio < SLOWER else "ok",
        ]
        rows.append(row)
    return md_table(head, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        print("--rounds and --duration must be >= 1, --warmup >= 0", file=sys.stderr)
        return 3
    started = dt.datetime.now(dt.UTC)
    tmp = Path(tempfile.mkdtemp(prefix="unbroken-ab-"))
    builds: dict[str, Path] = {}
    commits: dict[str, str] = {}
    runs: dict[str, list[list[dict[str, Any]]]] = {"A": [], "B": []}
    status = 0
    try:
        for side, rev in (("A", args.rev_a), ("B", args.rev_b)):
            commits[side] = checkout(rev, tmp / f"wt-{side}")
            builds[side] = tmp / f"wt-{side}" / "src"
            check_import(builds[side])
        print(
            f"A = {args.rev_a} ({commits['A']}), B = {args.rev_b} ({commits['B']}); {args.rounds} round(s) of "
            f"{args.workloads} at {args.connections} connections, {args.warmup} s + {args.duration} s",
            flush=True,
        )
        run_rounds(builds, args, tmp, runs)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"A/B aborted: {exc}", file=sys.stderr)
        status = 1
    finally:
        for side in builds:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tmp / f"wt-{side}")],
                cwd=ROOT,
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(tmp, ignore_errors=True)
    ma, mb = medians(runs["A"]), medians(runs["B"])
    slower = []
    if ma and mb:
        print(
            f"\nmedians over {min(len(runs['A']), len(runs['B']))} round(s); B/A above 1 is better for inv/s\n"
        )
        table = ab_table(ma, mb)
        print(table)
        slower = [line for line in table.splitlines() if line.rstrip(" |").endswith("SLOWER")]
    out = {
        "meta": {
            "date": started.isoformat(timespec="seconds"),
            "a": args.rev_a,
            "b": args.rev_b,
            "commits": commits,
            "args": vars(args),
            "status": status,
        },
        "runs": runs,
    }
    path = Path(args.json) if args.json else RESULTS_DIR / f"ab-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {path}")
    return status or (2 if slower else 0)


if __name__ == "__main__":
    sys.exit(main())
