"""CI smoke test of ``bench/compare``: the Unbroken side of ``--quick --only unbroken`` runs W1-W6 end to end.

The Restate side needs the anchor (npm restate-server + restate-sdk in bench/.anchor/), which CI does not
install; this checks the harness itself: the command, its table, its W6 drain measurement and its JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.harness import run_session

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ["W1 noop", "W2 steps", "W3a counter", "W3b hot", "W4 sleep", "W5 fanout", "W6 send (accepted/s)"]


@pytest.mark.timeout(400)
@pytest.mark.skipif(
    shutil.which("wrk") is None,
    reason="wrk (load generator) not installed: apt-get install -y wrk -- bench/compare installs no wrk",
)
def test_compare_quick_unbroken_side(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    cmd = [str(ROOT / "bench" / "compare"), "--quick", "--only", "unbroken", "--results-dir", str(tmp_path)]
    status, stdout, stderr = run_session(cmd, 360, "bench/compare --quick", cwd=ROOT, env=env)
    out = stdout + stderr
    assert status == 0, out
    assert "fsync ON" in stdout, out
    assert "Restate:" not in stdout, out  # --only unbroken: no anchor needed, none started

    # The comparison table: one row per workload at 16 connections, Unbroken figures filled in, Restate's
    # and the ratios empty, no errors.
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 20 and cells[0] in WORKLOADS:
            rows[cells[0]] = cells
    assert list(rows) == WORKLOADS, out
    for name, cells in rows.items():
        conns, inv_u, inv_r, inv_ratio = cells[1:5]
        assert conns == "16", (name, out)
        assert float(inv_u) > 0, (name, out)
        assert (inv_r, inv_ratio) == ("-", "-"), (name, out)
        assert float(cells[5]) > 0 and float(cells[8]) >= float(cells[5]), (name, "p99 >= p50 > 0", out)
        assert float(cells[11]) > 0, (name, "CPU ms/inv", out)
        assert cells[-2] == "0 / -", (name, "errors", out)
    assert re.search(r"^\| W6 send +\| +16 \| +\d+ \| +- \|", stdout, re.M), out
    assert re.search(r"^\| first successful call after start, s +\| +[\d.]+ \| +- \|", stdout, re.M), out
    assert re.search(r"^errors: 0 ", stdout, re.M), out

    # The JSON: every cell measured on Unbroken only, every call answered, the engine's count covering the
    # client's (W5: 11 invocations per call), W6 drained to zero.
    (result_file,) = tmp_path.glob("compare-*.json")
    data = json.loads(result_file.read_text())
    assert data["meta"]["unbroken_fsync"] is True and data["meta"]["restate"] is None
    assert data["sides"]["unbroken"]["first_call_s"] > 0
    assert data["sides"]["unbroken"]["invocations_total"] > 0
    assert [(c["wid"], c["conns"]) for c in data["cells"]] == [
        ("W1", 16),
        ("W2", 16),
        ("W3a", 16),
        ("W3b", 16),
        ("W4", 16),
        ("W5", 16),
        ("W6", 16),
    ]
    for c in data["cells"]:
        assert list(c["results"]) == ["unbroken"], c
        r = c["results"]["unbroken"]
        per_call = 11 if c["wid"] == "W5" else 1
        assert r["calls_ok"] > 0 and r["errors"] == 0 and r["warmup_errors"] == 0, r
        assert r["invocations_server"] >= r["calls_ok"] * per_call, r
        assert set(r["cpu_ms_per_inv"]) == {"server"} and r["cpu_ms_per_inv"]["server"] > 0, r
        assert r["peak_rss_mib"]["server"] > 0, r
        if c["wid"] == "W4":
            assert r["p50_ms"] >= 100, r  # a durable 100 ms timer is never early
        if c["wid"] == "W6":
            assert r["drain_s"] >= 0 and r["completed_per_s"] > 0, r
    assert data["meta"]["log_problems"]["unbroken"] == [], data["meta"]["log_problems"]


@pytest.mark.timeout(400)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk (load generator) not installed")
def test_compare_quick_remote_deployment(tmp_path: Path) -> None:
    """``--remote py``: the workloads under restate-sdk in hypercorn, registered with ``unbroken serve``, measured
    next to the in-process side and printed against it (the protocol's overhead)."""
    env = {**os.environ, "PYTHON": sys.executable}
    cmd = [
        str(ROOT / "bench" / "compare"),
        *("--quick", "--only", "unbroken", "--remote", "py", "--workloads", "W1,W2"),
        *("--results-dir", str(tmp_path)),
    ]
    status, stdout, stderr = run_session(cmd, 360, "bench/compare --remote py", cwd=ROOT, env=env)
    out = stdout + stderr
    assert status == 0, out
    table = stdout.split("Protocol overhead: Unbroken in-process (U) vs Unbroken + remote restate-sdk")[1]
    for name in ("W1 noop", "W2 steps"):
        row = re.search(rf"^\| {name} +\| +16 \| +([\d.]+) \| +([\d.]+) \| +([\d.]+) \|", table, re.M)
        assert row is not None and float(row[1]) > 0 and float(row[2]) > 0, (name, out)
    (result_file,) = tmp_path.glob("compare-*.json")
    data = json.loads(result_file.read_text())
    assert data["meta"]["remote"] == ["py"]
    for c in data["cells"]:
        assert set(c["results"]) == {"unbroken", "unbroken_remote_py"}, c
        r = c["results"]["unbroken_remote_py"]
        assert r["calls_ok"] > 0 and r["errors"] == 0, r
        assert set(r["cpu_ms_per_inv"]) == {"server", "service"}, r
