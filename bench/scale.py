"""Scale figures of Unbroken: suspended workflows, W2 vs stored invocations, start-up with work in flight.

    python bench/scale.py [--only suspended,growth,startup,sleepers] [--workflows N] [--max-stored N]
                          [--sleepers N] [--sleepers-signal kill|term] [--json PATH]

Everything runs against a real ``unbroken serve bench/scale_services.py`` subprocess (fsync on, the default)
over real HTTP, driven by wrk (``-t1``); counts are read from the store read-only, as bench/run.py does.

1. suspended: start N ScaleWf workflows with one-way sends (``POST /ScaleWf/k<i>/run/send``), each waiting on
   the durable promise "go" (ScaleWf's inactivity timeout is 1 s, so a waiting run suspends 1 s after it
   starts), and wait until all N are suspended: start time, server RSS (VmRSS, VmHWM) and
   data dir size, total and per workflow. Then resolve every promise (``POST /ScaleWf/k<i>/release``) and
   time until every workflow has completed (resumes/s).
2. growth: W2 (``POST /Bench/steps``, 128 connections, closed loop, as bench/run.py) on a fresh store, then
   after filling the store with completed W1 invocations to 1/4, 1/2 and all of --max-stored (the fill is
   not measured; completed invocations stay stored for the retention period, one day). The cost must stay
   flat: the last level's inv/s is reported as a ratio of the first's.
3. startup: with the N workflows of (1) suspended, SIGKILL the server and start it on the same data dir:
   time to health, to the first successful call, RSS after start-up, in-flight count after the restart
   (must equal N), and a sample of workflows resolved to check that recovery really worked. When both run,
   (3) comes between the two halves of (1), and (1) then resolves the workflows the sample left.
4. sleepers (only with ``--only``; bench/scale_sleepers.py): --sleepers invocations (default 1,000,000)
   suspended on a 7-day ``ctx.sleep``, created with one-way sends; disk per sleeper; then SIGKILL (or
   SIGTERM) and start again: time to the first successful call, VmRSS once start-up has settled, and every
   sleeper and its timer still stored.

Prints a markdown table per figure and writes the JSON to bench/results/scale-<timestamp>.json (or --json).
Exit status: 0 every count right and every request 2xx; 1 aborted (server died, never reached a state);
2 a count is wrong or some requests failed; 3 wrk or unbroken missing or a bad argument.
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
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import BENCH_DIR, ROOT  # noqa: E402
from lib.measure import measure, wait_idle  # noqa: E402
from lib.procstats import CLK_TCK, cpu_ticks, machine_info  # noqa: E402
from lib.report import md_table  # noqa: E402
from lib.workloads import WORKLOADS  # noqa: E402
from lib.wrk import WRK_INSTALL_HINT, wrk_version  # noqa: E402
from scale_common import ScaleTarget, data_dir_bytes, send_range, wait_in_flight  # noqa: E402
from scale_sleepers import sleeper_failures, sleeper_figures, sleepers_table  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
FIGURES = ("suspended", "growth", "startup", "sleepers")
DEFAULT_FIGURES = ("suspended", "growth", "startup")  # sleepers (1M by default, ~15 min) only when asked
WF_START = "/ScaleWf/k{i}/run/send"
WF_RELEASE = "/ScaleWf/k{i}/release"
# The fill: W1 noop, request-response. A closed loop keeps no backlog of accepted-but-unrun invocations in
# the server (one-way sends can), so the store grows by exactly what was answered.
FILL = "/Bench/noop"
FILL_BODY = b'{"hello":"world"}'
FILL_CHUNK = 100_000  # wrk runs of at most this many requests, so a failed fill stops early


# ------------------------------------------------------------------------------------ 1 + 3: workflows
def start_workflows(target: ScaleTarget, args: argparse.Namespace, scripts: Path) -> dict[str, Any]:
    """Figure 1, first half: N workflows started with one-way sends, then all of them suspended."""
    n = args.workflows
    pid = target.pids()["server"]
    base_rss, base_disk, cpu0 = target.rss(), data_dir_bytes(target)["total"], cpu_ticks(pid)
    t0 = time.monotonic()
    res = send_range(target, scripts, WF_START, "null", 1, n, args)
    accepted_s = time.monotonic() - t0
    accepted = res["answered"] - res["non2xx"]
    counts, _ = wait_in_flight(
        target,
        lambda c: c.get("suspended", 0) >= accepted and len(c) == 1,
        f"all {accepted} accepted workflows are suspended",
        120 + n / 20,
    )
    suspended_s = time.monotonic() - t0
    cpu_s = (cpu_ticks(pid) - cpu0) / CLK_TCK
    rss, disk = target.rss(), data_dir_bytes(target)
    return {
        "workflows": n,
        "accepted": accepted,
        "errors": res["errors"],
        "first_error": res["first_bad"],
        "reached_suspended": counts.get("suspended", 0),
        "in_flight": counts,
        "accept_s": round(accepted_s, 3),
        "accepted_per_s": round(accepted / accepted_s, 1),
        "all_suspended_s": round(suspended_s, 3),
        "suspended_per_s": round(accepted / suspended_s, 1),
        "rss_before_mib": round(base_rss["rss_mib"], 1),
        "rss_mib": round(rss["rss_mib"], 1),
        "hwm_mib": round(rss["hwm_mib"], 1),
        "rss_bytes_per_workflow": round((rss["rss_mib"] - base_rss["rss_mib"]) * 2**20 / max(accepted, 1)),
        "data_dir_bytes": disk,
        "data_dir_bytes_per_workflow": round((disk["total"] - base_disk) / max(accepted, 1)),
        "cpu_ms_per_workflow": round(cpu_s * 1000 / max(accepted, 1), 3),
    }


def resume_workflows(
    target: ScaleTarget, args: argparse.Namespace, scripts: Path, first: int, last: int
) -> dict[str, Any]:
    """Figure 1, second half: resolve the promise of workflows first..last; time until none is in flight."""
    pid = target.pids()["server"]
    cpu0 = cpu_ticks(pid)
    t0 = time.monotonic()
    res = send_range(target, scripts, WF_RELEASE, '"go"', first, last, args)
    release_s = time.monotonic() - t0
    released = res["answered"] - res["non2xx"]
    counts, _ = wait_in_flight(target, lambda c: not c, "every workflow has completed", 120 + released / 20)
    done_s = time.monotonic() - t0
    cpu_s = (cpu_ticks(pid) - cpu0) / CLK_TCK
    return {
        "released": released,
        "errors": res["errors"],
        "first_error": res["first_bad"],
        "release_calls_s": round(release_s, 3),
        "all_completed_s": round(done_s, 3),
        "resumes_per_s": round(released / done_s, 1),
        "release_p50_ms": res["p50_us"] / 1000,
        "release_p99_ms": res["p99_us"] / 1000,
        "workflows_completed": target.workflows_completed(),
        "cpu_ms_per_resume": round(cpu_s * 1000 / max(released, 1), 3),
        **target.rss(),
    }


def restart(
    target: ScaleTarget, args: argparse.Namespace, scripts: Path, empty: dict[str, float]
) -> dict[str, Any]:
    """Figure 3: SIGKILL with the workflows in flight, start again, count them, resolve a sample."""
    before = target.in_flight() or {}
    target.kill()
    target.start()
    rss = target.rss()  # right after the first successful call: what start-up itself loaded
    after = target.in_flight() or {}
    in_flight = sum(after.values())
    sample = min(args.sample, in_flight)
    t0 = time.monotonic()
    res = send_range(target, scripts, WF_RELEASE, '"go"', 1, sample, args)
    wait_in_flight(
        target, lambda c: sum(c.values()) <= in_flight - sample, "the sample completed", 120 + sample / 20
    )
    return {
        "in_flight_before_kill": sum(before.values()),
        "in_flight_after_restart": in_flight,
        "statuses_after_restart": after,
        "empty_store": empty,
        **target.startup,
        "rss_after_start_mib": round(rss["rss_mib"], 1),
        "hwm_after_start_mib": round(rss["hwm_mib"], 1),
        "sample": sample,
        "sample_errors": res["errors"],
        "sample_completed": target.workflows_completed(),
        "sample_completed_s": round(time.monotonic() - t0, 3),
    }


def workflow_figures(args: argparse.Namespace, only: set[str], tmp: Path, out: dict[str, Any]) -> None:
    """Figures 1 and 3 on one server: start N, (3) kill + restart + sample, (1) resolve the rest.

    Results go into ``out`` as they come, so an aborted run still reports what it measured."""
    target = ScaleTarget(tmp / "workflows")
    try:
        target.start()
        empty = dict(target.startup)
        print(
            f"workflows: server up after {empty['first_call_s']:.3f} s; starting {args.workflows}", flush=True
        )
        started = start_workflows(target, args, tmp)
        if "suspended" in only:
            out["suspended"] = started
        print(
            f"  {started['reached_suspended']} suspended after {started['all_suspended_s']:.1f} s, RSS "
            f"{started['rss_mib']:.0f} MiB, data dir {started['data_dir_bytes']['total'] / 2**20:.1f} MiB",
            flush=True,
        )
        first = 1
        if "startup" in only:
            out["startup"] = up = restart(target, args, tmp, empty)
            first = up["sample"] + 1
            print(
                f"  restart: first call after {up['first_call_s']:.3f} s, "
                f"{up['in_flight_after_restart']} in flight",
                flush=True,
            )
        if "suspended" in only:
            started["resume"] = r = resume_workflows(target, args, tmp, first, args.workflows)
            print(f"  resumed {r['released']}: all completed after {r['all_completed_s']:.1f} s", flush=True)
    finally:
        target.stop()
        out["meta"]["server_log_problems"] += target.log_problems()


# ------------------------------------------------------------------------------------------- 2: growth
def fill(target: ScaleTarget, level: int, args: argparse.Namespace, scripts: Path) -> dict[str, Any]:
    """Grow the store to ``level`` invocations with W1 calls (not measured), then wait until idle."""
    t0 = time.monotonic()
    errors, first_error = 0, ""
    while not errors:
        need = level - (target.total_invocations() or 0)
        if need <= 0:
            break
        res = send_range(target, scripts, FILL, FILL_BODY.decode(), 1, min(need, FILL_CHUNK), args)
        errors, first_error = res["errors"], res["first_bad"]
    wait_idle(target, timeout=300)
    return {"fill_s": round(time.monotonic() - t0, 1), "fill_errors": errors, "fill_first_error": first_error}


def growth(args: argparse.Namespace, tmp: Path, out: dict[str, Any]) -> None:
    """Figure 2: W2 at 0, 1/4, 1/2 and all of --max-stored completed invocations in the store."""
    target = ScaleTarget(tmp / "growth")
    m = args.max_stored
    rows: list[dict[str, Any]] = []
    out["growth"] = {"workload": "W2 steps", "connections": args.connections, "levels": rows}
    try:
        target.start()
        for level in sorted({0, m // 4, m // 2, m}):
            filled = fill(target, level, args, tmp)
            stored = target.total_invocations()
            r = measure(
                target, WORKLOADS["steps"], args.connections, args.warmup, args.duration, tmp, args.timeout
            )
            rows.append(
                {
                    "level": level,
                    "stored": stored,
                    "inv_per_s": round(r.invocations_per_s, 1),
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "errors": r.errors + r.warmup_errors,
                    "cpu_ms_per_inv": round(sum(r.cpu_ms_per_inv.values()), 3),
                    "rss_mib": round(r.rss_mib, 1),
                    "data_dir_mib": round(r.data_dir_mib, 1),
                    **filled,
                }
            )
            print(
                f"growth: {stored} stored: W2 {r.invocations_per_s:.0f} inv/s, p50 {r.p50_ms:.1f} ms, "
                f"p99 {r.p99_ms:.1f} ms (fill {filled['fill_s']} s)",
                flush=True,
            )
    finally:
        target.stop()
        out["meta"]["server_log_problems"] += target.log_problems()
    first, last = rows[0], rows[-1]
    out["growth"]["last_over_first"] = {
        k: round(last[k] / first[k], 3) if first[k] else None for k in ("inv_per_s", "p50_ms", "p99_ms")
    }


def suspended_table(s: dict[str, Any]) -> str:
    disk, r = s["data_dir_bytes"], s.get("resume", {})
    rows = [
        ["workflows started (202 Accepted) / asked", f"{s['accepted']} / {s['workflows']}"],
        ["all accepted after, s (starts/s)", f"{s['accept_s']:.2f} ({s['accepted_per_s']:.0f}/s)"],
        ["all suspended after, s", f"{s['all_suspended_s']:.2f} ({s['reached_suspended']} suspended)"],
        [
            "server VmRSS before / after, MiB (VmHWM)",
            f"{s['rss_before_mib']:.0f} / {s['rss_mib']:.0f} ({s['hwm_mib']:.0f})",
        ],
        ["VmRSS growth per suspended workflow, bytes", str(s["rss_bytes_per_workflow"])],
        [
            "data dir, MiB (of which WAL)",
            f"{disk['total'] / 2**20:.1f} ({disk.get('unbroken.db-wal', 0) / 2**20:.1f})",
        ],
        ["data dir growth per suspended workflow, bytes", str(s["data_dir_bytes_per_workflow"])],
        ["server CPU per started workflow, ms", f"{s['cpu_ms_per_workflow']:.2f}"],
    ]
    if r:
        rows += [
            ["workflows released (release 2xx)", str(r["released"])],
            [
                "release calls done after, s (p50 / p99 ms)",
                f"{r['release_calls_s']:.2f} ({r['release_p50_ms']:.1f} / {r['release_p99_ms']:.1f})",
            ],
            [
                "all completed after, s (resumes/s)",
                f"{r['all_completed_s']:.2f} ({r['resumes_per_s']:.0f}/s)",
            ],
            ["server CPU per resume (release call + resumed run), ms", f"{r['cpu_ms_per_resume']:.2f}"],
            ["ScaleWf runs completed in the store", str(r["workflows_completed"])],
        ]
    rows.append(["errors (start / release)", f"{s['errors']} / {r.get('errors', '-')}"])
    return md_table(["1. suspended workflows", "value"], rows)


def startup_table(s: dict[str, Any]) -> str:
    e = s["empty_store"]
    rows = [
        [
            "in flight before SIGKILL / after restart",
            f"{s['in_flight_before_kill']} / {s['in_flight_after_restart']}",
            "-",
        ],
        ["health answered after start, s", f"{s['health_s']:.3f}", f"{e['health_s']:.3f}"],
        ["first successful call after start, s", f"{s['first_call_s']:.3f}", f"{e['first_call_s']:.3f}"],
        [
            "VmRSS / VmHWM after start-up, MiB",
            f"{s['rss_after_start_mib']:.0f} / {s['hwm_after_start_mib']:.0f}",
            "-",
        ],
        [
            "sample resolved after restart: completed / asked",
            f"{s['sample_completed']} / {s['sample']} in {s['sample_completed_s']:.2f} s",
            "-",
        ],
    ]
    return md_table(["3. start-up with in-flight workflows", "value", "empty store"], rows)


def growth_table(g: dict[str, Any]) -> str:
    rows = [
        [
            str(r["stored"]),
            f"{r['inv_per_s']:.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['cpu_ms_per_inv']:.2f}",
            f"{r['rss_mib']:.0f}",
            f"{r['data_dir_mib']:.0f}",
            f"{r['fill_s']:.0f}",
            str(r["errors"] + r["fill_errors"]),
        ]
        for r in g["levels"]
    ]
    if ratio := g.get("last_over_first"):
        cells = [f"{ratio[k]:.2f}" if ratio[k] else "-" for k in ("inv_per_s", "p50_ms", "p99_ms")]
        rows.append(["last / first", *cells, "", "", "", "", ""])
    head = [
        "2. stored invocations",
        f"W2 inv/s (c={g['connections']})",
        "p50 ms",
        "p99 ms",
        "CPU ms/inv",
        "RSS MiB",
        "data dir MiB",
        "fill s",
        "errors",
    ]
    return md_table(head, rows)


def git_rev() -> str:
    """The checked-out commit, read from .git: running git status could take the index lock mid-commit."""
    git = ROOT / ".git"
    try:
        if git.is_file():  # a worktree: .git names its own dir (HEAD); refs are in the common dir
            git = (ROOT / git.read_text().split(":", 1)[1].strip()).resolve()
        common = (
            (git / (git / "commondir").read_text().strip()).resolve()
            if (git / "commondir").is_file()
            else git
        )
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:7]
        if (common / head[5:]).is_file():
            return (common / head[5:]).read_text().strip()[:7]
        for line in (common / "packed-refs").read_text().splitlines():
            if line.endswith(" " + head[5:]):
                return line.split()[0][:7]
    except OSError:
        pass
    return "unknown"


def failures(out: dict[str, Any]) -> list[str]:
    """Every count that is not what it must be, and every request that failed."""
    bad = []
    if s := out.get("suspended"):
        r = s["resume"]
        if s["reached_suspended"] != s["workflows"] or r["workflows_completed"] != s["workflows"]:
            bad.append(
                f"suspended: {s['reached_suspended']} suspended, "
                f"{r['workflows_completed']} completed, "
                f"of {s['workflows']}"
            )
        if s["errors"] or r["errors"]:
            bad.append(f"suspended: {s['errors']} start and {r['errors']} release requests failed")
    if s := out.get("startup"):
        if not s["in_flight_before_kill"] == s["in_flight_after_restart"] == out["meta"]["workflows"]:
            bad.append(
                f"startup: {s['in_flight_before_kill']} in flight before the kill, "
                f"{s['in_flight_after_restart']} after, of {out['meta']['workflows']}"
            )
        if s["sample_completed"] != s["sample"] or s["sample_errors"]:
            bad.append(
                f"startup: {s['sample_completed']} of the {s['sample']} resolved completed, "
                f"{s['sample_errors']} requests failed"
            )
    if s := out.get("sleepers"):
        bad += sleeper_failures(s) if "accepted" in s else ["sleepers: never created"]
    for r in out.get("growth", {}).get("levels", []):
        if r["errors"] or r["fill_errors"]:
            bad.append(f"growth: {r['errors']} W2, {r['fill_errors']} fill requests failed at {r['stored']}")
    return bad


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add(
        "--only",
        default=",".join(DEFAULT_FIGURES),
        help=f"comma-separated subset of {','.join(FIGURES)} (default: {','.join(DEFAULT_FIGURES)})",
    )
    add("--workflows", type=int, default=100_000, help="workflows started (figures 1, 3; default 100000)")
    add("--max-stored", type=int, default=1_000_000, help="largest store of figure 2 (default 1000000)")
    add("--sleepers", type=int, default=1_000_000, help="sleeping invocations of figure 4 (default 1000000)")
    add(
        "--sleepers-signal",
        choices=("kill", "term"),
        default="kill",
        help="how figure 4 stops the server before the restart: SIGKILL (default) or SIGTERM",
    )
    add(
        "--restarts",
        type=int,
        default=5,
        help="figure 4: starts of the sleepers' server measured, alternating with an empty store's (default 5)",
    )
    add("--sample", type=int, default=100, help="workflows resolved right after the restart (default 100)")
    add("--connections", type=int, default=128, help="wrk connections, every phase (default 128)")
    add("--duration", type=int, default=15, help="W2 measured seconds per level (default 15)")
    add("--warmup", type=int, default=5, help="W2 warm-up seconds per level, discarded (default 5)")
    add("--timeout", type=int, default=60, help="wrk per-request timeout in seconds (default 60)")
    add("--json", metavar="PATH", help="where the JSON goes (default bench/results/scale-<timestamp>.json)")
    add("--keep-data", action="store_true", help="keep the temp dir (data dirs, server logs, Lua)")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> str | None:
    """Why the arguments or the machine cannot run this, or None."""
    if shutil.which("wrk") is None:
        return WRK_INSTALL_HINT
    if importlib.util.find_spec("unbroken") is None:
        return f"unbroken is not importable by {sys.executable}; run with the project's venv python"
    only = {f.strip() for f in args.only.split(",") if f.strip()}
    if not only or only - set(FIGURES):
        return f"--only takes a comma-separated subset of {', '.join(FIGURES)}"
    if args.sleepers < 1 or args.restarts < 1:
        return "--sleepers and --restarts must be >= 1"
    if args.workflows < 1 or args.max_stored < 0 or args.sample < 0 or args.connections < 1:
        return "--workflows and --connections must be >= 1, --max-stored and --sample >= 0"
    if args.duration < 1 or args.warmup < 0:
        return "--duration must be >= 1 and --warmup >= 0 (wrk takes whole seconds)"
    return None


def report(out: dict[str, Any]) -> None:
    m = out["meta"]
    print(
        f"\nUnbroken {m['git']} on {m['machine']['nproc']} CPU ({m['machine']['cpu_model']}), "
        f"{m['machine']['mem_gib']} GiB; {m['load_generator']}; {m['date']}; fsync ON"
    )
    tables = (
        ("suspended", suspended_table),
        ("growth", growth_table),
        ("startup", startup_table),
        ("sleepers", sleepers_table),
    )
    for key, render in tables:
        if key in out:
            print("\n" + render(out[key]))
    if m["server_log_problems"]:
        print(
            f"\nserver logs have {len(m['server_log_problems'])} warning/error line(s), "
            f"first: {m['server_log_problems'][0][:300]}"
        )


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` blocks that stop the servers


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(problem, file=sys.stderr)
        return 3
    only = {f.strip() for f in args.only.split(",") if f.strip()}
    started = dt.datetime.now(dt.UTC)
    out: dict[str, Any] = {
        "meta": {
            "date": started.isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]),
            "git": git_rev(),
            "machine": machine_info(),
            "load_generator": wrk_version(),
            "fsync": True,
            "figures": sorted(only),
            "workflows": args.workflows,
            "sleepers": args.sleepers,
            "max_stored": args.max_stored,
            "connections": args.connections,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "loadavg_at_start": os.getloadavg()[0],
            "scale_wf_inactivity_timeout_s": 1,
            "server_log_problems": [],
        }
    }
    tmp = Path(tempfile.mkdtemp(prefix="unbroken-scale-"))
    status = 0
    try:
        if only & {"suspended", "startup"}:
            workflow_figures(args, only, tmp, out)
        if "growth" in only:
            growth(args, tmp, out)
        if "sleepers" in only:
            sleeper_figures(args, tmp, out)
    except (RuntimeError, TimeoutError) as exc:
        print(f"scale benchmark aborted: {exc}", file=sys.stderr)
        out["meta"]["aborted"] = str(exc)[:2000]
        status = 1
    finally:
        if args.keep_data:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(out)
    bad = failures(out) if status == 0 else []
    out["meta"]["failures"] = bad
    for b in bad:
        print(f"WRONG: {b}")
    path = Path(args.json) if args.json else RESULTS_DIR / f"scale-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {path}")
    return status or (2 if bad else 0)


if __name__ == "__main__":
    sys.exit(main())
