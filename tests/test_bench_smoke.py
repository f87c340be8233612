"""CI smoke test of the benchmark: ``bench/run.py --quick`` runs end to end, every call answered 2xx."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    shutil.which("wrk") is None,
    reason="wrk (load generator) not installed: sudo apt-get install -y wrk -- bench/run.py installs nothing",
)
def test_bench_quick(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "fsync: ON" in proc.stdout, out

    # The printed table has one row per (workload, conns), each with invocations and zero errors.
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (W\d\w? \w+) +\| (.*)\|$", proc.stdout, re.M)}
    assert set(rows) == {"W1 noop", "W2 steps"}, out
    for name, cells in rows.items():
        conns, inv_s, *_rest, errors = (c.strip() for c in cells.split("|"))
        assert conns == "4", (name, out)
        assert float(inv_s) > 0, (name, out)
        assert errors == "0", (name, out)
    assert re.search(r"^errors: 0 ", proc.stdout, re.M), out

    # The JSON agrees: invocations counted, none failed, and the server-side count covers the client's.
    (result_file,) = tmp_path.glob("*.json")
    data = json.loads(result_file.read_text())
    assert data["meta"]["fsync"] is True
    assert data["meta"]["startup"]["first_call_s"] > 0
    assert [r["workload"] for r in data["results"]] == ["noop", "steps"]
    for r in data["results"]:
        assert r["calls_ok"] > 0 and r["errors"] == 0 and r["warmup_errors"] == 0, r
        assert r["invocations_charged"] >= r["calls_ok"], r
        assert r["cpu_ms_per_inv"]["server"] > 0, r
        assert r["peak_rss_mib"] > 0, r
    assert data["meta"]["server_log_problems"] == [], data["meta"]["server_log_problems"]


def test_apply_cost_runs_and_reports_per_record_cost() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "apply_cost.py"), "--batches", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"apply ([\d.]+) us/record, commit ([\d.]+) ms per batch of 60 records", proc.stdout)
    assert match and float(match[1]) > 0 and float(match[2]) > 0, proc.stdout
