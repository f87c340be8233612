"""What bench/run.py, bench/compare.py and bench/scale.py share, one module per concept.

- workloads: the workloads (W1-W6) and the Restate anchor figures of WORKLOADS.md;
- wrk: the load generator: Lua scripts, one run, its version;
- procstats: what /proc says about a process and the machine (CPU, memory, writes, disk), machine and git;
- targets: the systems under test (``unbroken serve`` and the ``Target`` protocol; Restate in restate_side);
- measure: one measured window on one target (bench/run.py); cells: one cell on each side (bench/compare);
- report: the tables.

The entry points put bench/ on sys.path and import ``lib.<module>``.
"""

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
