"""The harness itself: three nodes, the mixed load, every checker green when nothing fails."""

from __future__ import annotations

from pathlib import Path

from tests.cluster import checks
from tests.cluster.harness import cluster, shared_mode
from tests.cluster.load import Load


def test_three_nodes_under_mixed_load_lose_and_double_nothing(tmp_path: Path) -> None:
    with cluster(tmp_path, 3, mode=shared_mode()) as c:
        load = Load(c.serving, tmp_path / "ops.jsonl").start()
        try:
            load.wait_accepted(60, timeout_s=60)
        finally:
            load.stop()
        summary = checks.check_all(c, load.ops)
        print(f"mode={c.mode} {summary}")
        assert summary["steps_run_again"] == 0  # nothing failed: every action ran once
        if c.mode != "standby":  # every node took requests
            assert {op.node for op in load.ops} == {n.name for n in c.nodes}
