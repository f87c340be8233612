"""Crash torture, short: about 30 crashes (SIGKILLs at seeded random moments and armed fault points) of a
real server under the mixed workload of tests/torture/app.py; every check of tests/torture/driver.py
must hold (exactly-once completion, counters equal the model, no durable ``ctx.run`` re-executed, the
order of exclusive handlers, timers, nothing stuck). Long runs: ``python -m tests.torture.driver``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import pg
from tests.harness import ROOT

pytestmark = pytest.mark.crash


@pytest.mark.parametrize("seed", [20240601])
def test_thirty_crashes_break_nothing(tmp_path: Path, seed: int) -> None:
    cmd = [
        sys.executable,
        "-m",
        "tests.torture.driver",
        "--kills",
        "30",
        "--seed",
        str(seed),
        "--data-dir",
        str(tmp_path / "torture"),
        "--fault-points",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110)
    report = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert "violations=0" in proc.stdout, report
    kills = re.search(r"kills=(\d+)", proc.stdout)
    assert kills is not None and int(kills.group(1)) >= 30, report


@pytest.mark.timeout(200)
def test_three_nodes_on_postgresql_killed_paused_and_crashed_at_leadership_points(tmp_path: Path) -> None:
    """The torture on PostgreSQL, short: a few SIGKILLs, pauses past the lease and crashes at fault points
    (leadership ones among them) of three nodes sharing one schema; every check of tests/cluster/checks.py
    must hold. Long runs: ``python -m tests.torture.driver --store postgres``."""
    pg.require()
    cmd = [
        sys.executable,
        "-m",
        "tests.torture.driver",
        "--store",
        "postgres",
        "--nodes",
        "3",
        "--kills",
        "8",
        "--seed",
        "20261207",
        "--data-dir",
        str(tmp_path / "torture"),
        "--fault-points",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    report = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert "violations=0" in proc.stdout, report
    kills = re.search(r"kills=(\d+)", proc.stdout)
    assert kills is not None and int(kills.group(1)) >= 8, report
