"""Crash tests at the named fault points added for the reliability work (see ``runtime/faults.py``).

Each test arms one point in a real server (``UNBROKEN_FAULTS=name:crash``: the process calls
``os._exit(137)`` exactly there), checks that it died there, restarts it on the same data dir with the
point disarmed, and checks from outside the engine (the ledger of tests/apps/crashy.py, written by the
``ctx.run`` actions themselves) that every invocation the engine accepted completed exactly once.
The older points (``processor.after_commit``, ``sdk.run.before_propose``) are covered in test_crash.py.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Server, wait_until

pytestmark = pytest.mark.crash

APP = "tests/apps/crashy.py"
CRASHED = 137  # exit status of a process stopped at an armed fault point


def ledger(directory: Path, step: str | None = None, event: str = "done") -> list[dict[str, Any]]:
    path = directory / "ledger.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [row for row in rows if (step is None or row["step"] == step) and row["event"] == event]


def armed(server_factory: Any, name: str, point: str) -> Server:
    srv: Server = server_factory(APP, name=name)
    return srv.start(extra_env={"UNBROKEN_FAULTS": f"{point}:crash"})


def crashed_at_fault(srv: Server, timeout: float = 20) -> None:
    assert srv.proc is not None
    assert srv.proc.wait(timeout=timeout) == CRASHED, srv.log()


def attach(srv: Server, invocation_id: str) -> Any:
    resp = srv.get(f"/restate/invocation/{invocation_id}/attach", timeout=20)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_crash_when_a_timer_is_due_before_it_fires(server_factory: Any, tmp_path: Path) -> None:
    """``timer.before_fire``: the sleep's timer is due, the process dies before the TimerFired record.
    The stored timer fires after the restart: the step after the sleep runs once, the one before never
    runs again, and the invocation completes once."""
    srv = armed(server_factory, "timer", "timer.before_fire")
    resp = srv.call(
        "/Sleeper/t1/nap/send", {"dir": str(tmp_path), "seconds": 0.3}, headers={"idempotency-key": "nap-1"}
    )
    assert resp.status_code == 202, resp.text
    invocation_id = resp.json()["invocationId"]
    crashed_at_fault(srv)
    (before,) = ledger(tmp_path, "before")
    assert ledger(tmp_path, "after") == []

    srv.start()  # disarmed
    result = attach(srv, invocation_id)
    (after,) = ledger(tmp_path, "after")
    assert ledger(tmp_path, "before") == [before]
    assert result == {"before": before["at"], "after": after["at"]}
    assert after["at"] - before["at"] >= 0.3 - 0.001
    again = srv.call(
        "/Sleeper/t1/nap/send", {"dir": str(tmp_path), "seconds": 0.3}, headers={"idempotency-key": "nap-1"}
    )
    assert again.json() == {"invocationId": invocation_id, "status": "PreviouslyAccepted"}


def test_crash_after_commit_before_the_http_reply(server_factory: Any, tmp_path: Path) -> None:
    """``ingress.before_reply``: the invocation completed and its result is committed, the caller never
    got the answer. Its retry (same idempotency key) gets that same result; nothing runs again."""
    srv = armed(server_factory, "reply", "ingress.before_reply")
    body, headers = {"dir": str(tmp_path)}, {"idempotency-key": "reply-1"}
    with pytest.raises(httpx.TransportError):
        srv.call("/Steps/quick", body, headers=headers, timeout=10)
    crashed_at_fault(srv)
    first, second = ledger(tmp_path, "first"), ledger(tmp_path, "second")
    assert len(first) == 1 and len(second) == 1  # it had completed: the reply was the only thing left

    srv.start()  # disarmed
    resp = srv.call("/Steps/quick", body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"first": first[0]["token"], "second": second[0]["token"]}
    assert ledger(tmp_path, "first") == first and ledger(tmp_path, "second") == second


def test_crash_in_the_middle_of_a_batch(server_factory: Any, tmp_path: Path) -> None:
    """``processor.mid_batch``: one record of a batch applied, the others not, nothing committed. 20
    clients send idempotent increments concurrently (retrying on connection errors, as real clients do);
    the first batch of several records kills the process. After the restart every increment is accepted
    once and applied once: the counter ends at exactly 20."""
    total, key = 20, "mid-batch"
    srv = armed(server_factory, "mid-batch", "processor.mid_batch")
    client = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=total))

    def send(n: int) -> str:
        deadline = time.monotonic() + 60
        while True:
            try:
                resp = client.post(
                    f"{srv.ingress}/Counter/{key}/add/send",
                    json={"dir": str(tmp_path), "n": n},
                    headers={"idempotency-key": f"inc-{n}"},
                )
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # client back-off: the server is down until the test restarts it
                continue
            assert resp.status_code == 202, resp.text
            return str(resp.json()["invocationId"])

    with client, ThreadPoolExecutor(max_workers=total) as pool:
        futures = [pool.submit(send, n) for n in range(total)]
        crashed_at_fault(srv)
        srv.start()  # disarmed; the clients' retries now go through
        ids = [f.result(timeout=60) for f in futures]
        results = list(
            pool.map(lambda i: client.get(f"{srv.ingress}/restate/invocation/{i}/attach", timeout=30), ids)
        )
    assert [r.status_code for r in results] == [200] * total, [r.text for r in results]
    assert sorted(r.json() for r in results) == list(range(1, total + 1))  # each saw a distinct count
    count = srv.call(f"/Counter/{key}/get")
    assert count.json() == total
    applied = [row["n"] for row in ledger(tmp_path, "add")]
    assert set(applied) == set(range(total))
    assert len(applied) - total <= 1, sorted(applied)  # only a run cut off by the crash may run again


def test_crash_before_an_attempt_starts(server_factory: Any, tmp_path: Path) -> None:
    """``invoker.before_start``: the invocation is committed as running but its handler never started.
    Recovery starts it after the restart, without anybody asking; the caller's retry gets its result."""
    srv = armed(server_factory, "start", "invoker.before_start")
    body, headers = {"dir": str(tmp_path)}, {"idempotency-key": "start-1"}
    with pytest.raises(httpx.TransportError):
        srv.call("/Steps/quick", body, headers=headers, timeout=10)
    crashed_at_fault(srv)
    assert ledger(tmp_path) == []

    srv.start()  # disarmed
    wait_until(lambda: len(ledger(tmp_path, "second")) == 1, 10, what="the recovered invocation to complete")
    resp = srv.call("/Steps/quick", body, headers=headers)
    assert resp.status_code == 200, resp.text
    first, second = ledger(tmp_path, "first"), ledger(tmp_path, "second")
    assert len(first) == 1 and len(second) == 1
    assert resp.json() == {"first": first[0]["token"], "second": second[0]["token"]}
