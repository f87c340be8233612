"""CI smoke test of ``bench/scale.py`` at tiny sizes: all three figures end to end, every count right."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.harness import run_session

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = 200
SAMPLE = 20
MAX_STORED = 20_000  # W2 at 16 connections adds a few thousand per level: the last level needs a real fill


@pytest.mark.timeout(150)
@pytest.mark.skipif(
    shutil.which("wrk") is None,
    reason="wrk (load generator) not installed: apt-get install -y wrk -- bench/scale.py installs nothing",
)
def test_scale_tiny(tmp_path: Path) -> None:
    out_json = tmp_path / "scale.json"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "scale.py"),
        "--workflows",
        str(WORKFLOWS),
        "--sample",
        str(SAMPLE),
        "--max-stored",
        str(MAX_STORED),
        "--connections",
        "16",
        "--warmup",
        "1",
        "--duration",
        "1",
        "--json",
        str(out_json),
    ]
    status, stdout, stderr = run_session(cmd, 120, "bench/scale.py", cwd=ROOT)
    out = stdout + stderr
    assert status == 0, out
    for title in ("1. suspended workflows", "2. stored invocations", "3. start-up with in-flight workflows"):
        assert re.search(rf"^\| {re.escape(title)} +\|", stdout, re.M), (title, out)

    data = json.loads(out_json.read_text())
    assert data["meta"]["fsync"] is True and data["meta"]["failures"] == [], data["meta"]
    assert data["meta"]["server_log_problems"] == [], data["meta"]["server_log_problems"]

    # 1: every workflow accepted, suspended, and (sample after the restart + the rest) completed.
    s = data["suspended"]
    assert (s["workflows"], s["accepted"], s["reached_suspended"], s["errors"]) == (WORKFLOWS,) * 3 + (0,), s
    assert s["in_flight"] == {"suspended": WORKFLOWS}, s
    assert s["rss_mib"] > 0 and s["data_dir_bytes_per_workflow"] > 0 and s["all_suspended_s"] > 0, s
    r = s["resume"]
    assert (r["released"], r["errors"]) == (WORKFLOWS - SAMPLE, 0), r
    assert r["workflows_completed"] == WORKFLOWS and r["resumes_per_s"] > 0, r

    # 3: SIGKILL lost nothing: the same workflows in flight, still suspended; resolving some completes them.
    up = data["startup"]
    assert up["in_flight_before_kill"] == up["in_flight_after_restart"] == WORKFLOWS, up
    assert up["statuses_after_restart"] == {"suspended": WORKFLOWS}, up
    assert (up["sample"], up["sample_completed"], up["sample_errors"]) == (SAMPLE, SAMPLE, 0), up
    assert 0 < up["health_s"] <= up["first_call_s"] and up["rss_after_start_mib"] > 0, up

    # 2: W2 measured at each level, the store filled exactly to the last one.
    g = data["growth"]
    levels = g["levels"]
    assert [lv["level"] for lv in levels] == [0, MAX_STORED // 4, MAX_STORED // 2, MAX_STORED], levels
    for lv in levels:
        assert lv["stored"] >= lv["level"] and lv["inv_per_s"] > 0 and lv["p99_ms"] >= lv["p50_ms"] > 0, lv
        assert lv["errors"] == 0 and lv["fill_errors"] == 0, lv
    assert levels[-1]["stored"] == MAX_STORED, levels
    assert g["last_over_first"]["inv_per_s"] > 0, g


SLEEPERS = 300


@pytest.mark.timeout(150)
@pytest.mark.skipif(
    shutil.which("wrk") is None,
    reason="wrk (load generator) not installed: apt-get install -y wrk -- bench/scale.py installs nothing",
)
def test_scale_sleepers_tiny(tmp_path: Path) -> None:
    """Figure 4 at a tiny size: every sleeper stored with its timer, suspended, and all still there after
    SIGKILL + restart, and a new 100 ms sleep fires in front of them."""
    out_json = tmp_path / "scale.json"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "scale.py"),
        "--only",
        "sleepers",
        "--sleepers",
        str(SLEEPERS),
        "--restarts",
        "2",
        "--connections",
        "16",
        "--json",
        str(out_json),
    ]
    status, stdout, stderr = run_session(cmd, 120, "bench/scale.py --only sleepers", cwd=ROOT)
    out = stdout + stderr
    assert status == 0, out
    assert re.search(r"^\| 4\. sleeping invocations +\|", stdout, re.M), out
    data = json.loads(out_json.read_text())
    assert data["meta"]["failures"] == [] and data["meta"]["server_log_problems"] == [], data["meta"]
    s = data["sleepers"]
    assert (s["accepted"], s["reached_suspended"], s["timer_rows"], s["errors"]) == (SLEEPERS,) * 3 + (0,), s
    assert s["data_dir_bytes_per_sleeper"] > 0, s
    up = s["restart"]
    assert up["signal"] == "kill" and up["statuses_after_restart"] == {"suspended": SLEEPERS}, up
    assert up["timer_rows_after_restart"] == SLEEPERS and up["w4_status"] == 200 and up["w4_ms"] >= 100, up
    assert 0 < up["health_s"] <= up["first_call_s"] and up["rss_settled_mib"] > 0 and up["cpu_s"] > 0, up
    rep = up["repeated"]
    assert rep["sleepers"]["n"] == rep["empty"]["n"] == 2, rep
    assert all(0 < rep[k]["first_call_s"]["median"] for k in ("sleepers", "empty")), rep
