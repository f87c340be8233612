"""CI smoke test of ``bench/cluster.py``: two nodes on PostgreSQL next to SQLite, W2 for a few seconds each,
two rounds (the sides' order alternating, medians summarized), then one failover measured. Restate's side needs the anchor, which CI does not install (``--no-restate``)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests import pg
from tests.harness import run_session

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(400)
@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk (load generator) not installed: apt-get install -y wrk"
)
def test_cluster_bench_quick(tmp_path: Path) -> None:
    pg.require()
    cmd = [sys.executable, str(ROOT / "bench" / "cluster.py"), "--quick", "--no-restate", "--nodes", "2"]
    cmd += ["--workloads", "W2", "--rounds", "2", "--results-dir", str(tmp_path)]
    status, stdout, stderr = run_session(cmd, 360, "bench/cluster.py --quick", cwd=ROOT)
    out = stdout + stderr
    assert status == 0, out
    (result_file,) = tmp_path.glob("cluster-*.json")
    data = json.loads(result_file.read_text())
    assert [(c["wid"], c["round"]) for c in data["cells"]] == [("W2", 0), ("W2", 1)], out
    for cell in data["cells"]:
        assert sorted(cell["results"]) == ["pg2", "sqlite"], out  # both sides, in either order
        for r in cell["results"].values():
            assert r["calls_ok"] > 0 and r["errors"] == 0, r
        assert len(cell["results"]["pg2"]["cpu_ms_per_inv"]) == 2  # both nodes' processes are charged
    assert "| W2 | 16 | 2 |" in stdout, out  # the summary over the rounds
    (kill,) = data["meta"]["failover"]
    assert 0 < kill["served_again_s"] < 60, kill
