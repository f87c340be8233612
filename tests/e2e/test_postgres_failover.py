"""Two nodes on one PostgreSQL database, the second joining while the first runs an invocation (it takes
half the partitions, maybe the invocation's: then it recovers it at once).

* SIGKILL the first: the second takes its partitions over once the leases expire (TTL 3 s) and recovers
  the invocation that was running; its result is journaled once.
* SIGSTOP the first past its lease, let the second take over, SIGCONT it: everything the old leader then
  tries to commit is refused by the epoch (its step's result never becomes the invocation's), and the
  invocation completes once, on the new leader.

Side effects inside a ``ctx.run`` cut off by the failover run again (at least once); the ledger of
tests/apps/crashy.py counts them from outside.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from tests.e2e.test_crash import APP, ledger, send
from tests.harness import Server, wait_until

pytestmark = pytest.mark.crash

FAILOVER_BOUND_S = (
    10.0  # the target is 5 s (TTL 3 s + 1 s poll + start-up); the bound allows a loaded machine
)


@pytest.fixture
def url() -> Iterator[str]:
    pg.require()
    schema = pg.schema_for(f"failover-{uuid.uuid4()}")
    yield pg.url_for(schema)
    pg.drop(schema)


def _node(tmp_path: Path, url: str, name: str) -> Server:
    env = {"UNBROKEN_STORE__URL": url, "UNBROKEN_NODE_NAME": name}
    return Server(APP, tmp_path / f"data-{name}", env=env)


def _attach_anywhere(nodes: list[Server], inv: str, timeout_s: float = 20) -> Any:
    """The invocation's result from the node leading its partition now: once the old leader rejoins, the
    partitions are shared again and the others answer 503 for it (until forwarding is built)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for srv in nodes:
            resp = srv.get(f"/restate/invocation/{inv}/attach", timeout=timeout_s)
            if resp.status_code != 503:
                assert resp.status_code == 200, resp.text
                return resp.json()
        assert time.monotonic() < deadline, f"no node answered for {inv} within {timeout_s}s"
        time.sleep(0.1)  # its partition is changing hands: polling two processes, no event to await


def _pid(srv: Server) -> int:
    assert srv.proc is not None
    return srv.proc.pid


def test_a_standby_takes_over_a_killed_leader_within_the_lease_time(tmp_path: Path, url: str) -> None:
    leader = _node(tmp_path, url, "a").start()
    inv = send(leader, "/Steps/blocking/send", {"dir": str(tmp_path)})
    wait_until(lambda: (tmp_path / "block.running").exists(), 10, what="the action to start")
    standby = _node(tmp_path, url, "b").start(wait=False)
    try:
        killed = time.monotonic()
        leader.kill()
        standby.wait_ready(FAILOVER_BOUND_S)
        failover_s = time.monotonic() - killed
        print(f"failover: {failover_s:.2f}s from SIGKILL to the standby serving")
        assert failover_s < FAILOVER_BOUND_S
        wait_until(lambda: len(ledger(tmp_path, "block", "start")) == 2, 10, what="recovery to run the step")
        (tmp_path / "go").touch()
        result = _attach_anywhere([standby], inv)
        starts, done = ledger(tmp_path, "block", "start"), ledger(tmp_path, "block", "done")
        assert [s["pid"] for s in starts] == [_pid(leader), _pid(standby)]
        assert len(done) == 1 and result == {"block": done[0]["token"]}
    finally:
        leader.kill()
        standby.kill()


def test_a_paused_leader_is_fenced_by_the_epoch_when_it_wakes(tmp_path: Path, url: str) -> None:
    leader = _node(tmp_path, url, "a").start()
    inv = send(leader, "/Steps/blocking/send", {"dir": str(tmp_path)})
    wait_until(lambda: (tmp_path / "block.running").exists(), 10, what="the action to start")
    standby = _node(tmp_path, url, "b").start(wait=False)
    try:
        standby.wait_ready(FAILOVER_BOUND_S)
        leader.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        standby.wait_ready(FAILOVER_BOUND_S)
        wait_until(
            lambda: len(ledger(tmp_path, "block", "start")) == 2, 10, what="the standby to run the step"
        )
        leader.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        # Woken, the old leader learns its leases were taken: nothing it commits for them lands.
        wait_until(
            lambda: "no longer led by node a" in leader.log(), 10, what="the old leader to learn it lost"
        )
        (tmp_path / "go").touch()  # both executions may finish: the old leader's too
        result = _attach_anywhere([standby, leader], inv)
        (done_b,) = [d for d in ledger(tmp_path, "block", "done") if d["pid"] == _pid(standby)]
        assert result == {"block": done_b["token"]}  # the old leader's result never landed
        assert _attach_anywhere([standby, leader], inv) == result  # completed once
    finally:
        leader.kill()
        standby.kill()
