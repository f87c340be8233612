"""``python -m unbroken.testing.sim``: run many seeds (a summary) or one seed (with its trace).

python -m unbroken.testing.sim --seeds 10000 [--start N] [--workers 2]
python -m unbroken.testing.sim --seed 1234 -v
python -m unbroken.testing.sim --seeds 200 --nodes 2   # two nodes, each leading half the partitions
python -m unbroken.testing.sim --seeds 500 --leases    # two nodes, leadership moving between them
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterator

from unbroken.testing.sim.runner import SimResult, run_seed, worker_init, worker_run
from unbroken.testing.sim.world import SimConfig


def _config(args: argparse.Namespace, verbose: bool = False) -> SimConfig:
    return SimConfig(
        fault_phase_s=args.fault_phase,
        intensity=args.intensity,
        verbose=verbose,
        nodes=2 if args.leases else args.nodes,
        leases=args.leases,
    )


def _results(
    args: argparse.Namespace, seeds: range
) -> Iterator[tuple[int, bool, str, str, dict[str, float]]]:
    config = _config(args)
    if args.workers <= 1:
        worker_init(config)
        yield from map(worker_run, seeds)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers, initializer=worker_init, initargs=(config,)) as pool:
        yield from pool.imap_unordered(worker_run, seeds, chunksize=16)


def run_many(args: argparse.Namespace) -> int:
    seeds = range(args.start, args.start + args.seeds)
    started = time.perf_counter()
    failures: list[tuple[int, str]] = []
    totals: dict[str, float] = {}
    done = 0
    for seed, ok, report, _hash, stats in _results(args, seeds):
        done += 1
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + v
        if not ok:
            failures.append((seed, report))
            print(report, flush=True)
        if done % max(1, args.seeds // 10) == 0 and not args.quiet:
            rate = done / (time.perf_counter() - started)
            print(f"  {done}/{args.seeds} seeds, {len(failures)} failed, {rate:.1f} seeds/s", flush=True)
    elapsed = time.perf_counter() - started
    n = max(1, done)
    print(
        f"\n{done} seeds ({args.start}..{args.start + done - 1}) in {elapsed:.1f} s: {done / elapsed:.1f} seeds/s "
        f"with {args.workers} worker(s)"
    )
    print(
        "per seed (mean): "
        + ", ".join(
            f"{k}={totals.get(k, 0) / n:.1f}"
            for k in ("ops", "invocations", "crashes", "storage_errors", "batches", "records", "virtual_s")
        )
    )
    print(
        "in total: "
        + ", ".join(
            f"{k}={int(totals.get(k, 0))}"
            for k in (
                "invocations",
                "records",
                "crashes",
                "graceful_restarts",
                "storage_errors",
                "recovered",
                "lease_moves",
                "zombie_runs",
                "suspensions",
                "failed_attempts",
                "timers_fired",
                "awakeables_refused",
                "republished",
            )
        )
    )
    if failures:
        print(f"FAILED: {len(failures)} seed(s): {' '.join(str(s) for s, _ in sorted(failures))}")
        print(f"reproduce one with: python -m unbroken.testing.sim --seed {min(s for s, _ in failures)} -v")
        return 1
    print("all seeds passed")
    return 0


def run_one(args: argparse.Namespace) -> int:
    res: SimResult = run_seed(args.seed, _config(args, verbose=args.verbose))
    if args.verbose:
        for line in res.trace:
            print(line)
        print()
    print(res.report())
    print(f"  trace hash {res.trace_hash}")
    return 0 if res.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unbroken.testing.sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the trace of --seed")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument(
        "--fault-phase",
        type=float,
        default=SimConfig.fault_phase_s,
        help="virtual seconds with faults on (default %(default)s)",
    )
    parser.add_argument("--intensity", type=float, default=1.0, help="scale fault rates (0 = no faults)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--nodes",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: two nodes each leading half the partitions, through the partition inbox (default 1)",
    )
    parser.add_argument(
        "--leases",
        action="store_true",
        help="two nodes (implies --nodes 2) whose partitions move: takeovers, renewal failures, handovers",
    )
    args = parser.parse_args(argv)
    if args.seed is not None:
        return run_one(args)
    return run_many(args)


if __name__ == "__main__":
    sys.exit(main())
