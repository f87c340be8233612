"""Crash tests: SIGKILL a real ``unbroken serve`` process and check durability after a restart on the same
data dir.

Every side effect (each execution of a ``ctx.run`` action) is counted in a ledger file outside the engine
(tests/apps/crashy.py), so "ran once" / "ran again" is checked from outside. Kills land at observed
moments: an action that blocks until the test says "go", a marker written by a later step, or state the
handler sets right after issuing the command whose durability is under test. Fault points make the
process die at exact places inside the engine (``UNBROKEN_FAULTS=name:crash`` → ``os._exit(137)``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import pg
from tests.harness import Server, wait_until

pytestmark = pytest.mark.crash

APP = "tests/apps/crashy.py"
CRASHED = 137  # exit status of a process stopped at an armed fault point


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the scenarios driven by SIGKILL, on each store; every test kills and restarts it."""
    env: dict[str, str] = {}
    schema = pg.schema_for(f"crash-{tmp_path_factory.getbasetemp()}")
    if request.param == "postgres":
        pg.require()
        pg.drop(schema)
        env = {"UNBROKEN_STORE__URL": pg.url_for(schema), "UNBROKEN_NODE_NAME": "crash-node"}
    server = Server(APP, tmp_path_factory.mktemp("crash") / "data", env=env).start()
    yield server
    server.kill()
    if request.param == "postgres":
        pg.drop(schema)


# --------------------------------------------------------------------------------------- helpers
def ledger(directory: Path, step: str | None = None, event: str = "done") -> list[dict[str, Any]]:
    """Executions of ``ctx.run`` actions, as recorded by the actions themselves."""
    path = directory / "ledger.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [row for row in rows if (step is None or row["step"] == step) and row["event"] == event]


def send(srv: Server, path: str, body: Any, key: str | None = None) -> str:
    """One-way invocation; returns the invocation id from the 202."""
    headers = {"idempotency-key": key} if key is not None else None
    resp = srv.call(path, body, headers=headers)
    assert resp.status_code == 202, resp.text
    invocation_id: str = resp.json()["invocationId"]
    assert resp.headers["x-restate-id"] == invocation_id
    return invocation_id


def attach(srv: Server, invocation_id: str, timeout: float = 20) -> Any:
    """Block until the invocation completes (bounded by ``timeout``); returns its JSON result."""
    resp = srv.get(f"/restate/invocation/{invocation_id}/attach", timeout=timeout)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-restate-id"] == invocation_id
    return resp.json()


def query(srv: Server, path: str) -> Any:
    """Call a shared handler; ``None`` (an empty body, as in Restate's JSON serde) before anything is set."""
    resp = srv.call(path)
    assert resp.status_code == 200, resp.text
    return resp.json() if resp.content else None


def sigkill(srv: Server) -> None:
    assert srv.proc is not None and srv.proc.poll() is None, "the server died before the test killed it"
    srv.kill()
    assert srv.proc.returncode == -9


def crashed_at_fault(srv: Server) -> None:
    assert srv.proc is not None
    assert srv.proc.wait(timeout=10) == CRASHED, srv.log()


# ------------------------------------------------------------------------------ SIGKILL scenarios
def test_kill_while_run_action_executes(srv: Server, tmp_path: Path) -> None:
    """(a) The action is running when the process dies: it runs again after the restart (at least once),
    and the caller sees the result that was journaled, i.e. the one of the execution that finished."""
    inv = send(srv, "/Steps/blocking/send", {"dir": str(tmp_path)})
    wait_until(lambda: (tmp_path / "block.running").exists(), 10, what="the action to start")
    first_pid = srv.proc.pid if srv.proc else None
    sigkill(srv)
    assert ledger(tmp_path, "block", "done") == []  # it was cut off mid-flight

    srv.start()
    # Nobody asked again: recovery re-runs the action that never reported a result.
    wait_until(lambda: len(ledger(tmp_path, "block", "start")) == 2, 10, what="the action to run again")
    (tmp_path / "go").touch()
    result = attach(srv, inv)

    starts, done = ledger(tmp_path, "block", "start"), ledger(tmp_path, "block", "done")
    assert [s["pid"] for s in starts] == [first_pid, srv.proc.pid if srv.proc else None]
    assert len(done) == 1
    assert result == {"block": done[0]["token"]}


def test_kill_after_run_completed_never_reruns_it(srv: Server, tmp_path: Path) -> None:
    """(b) Once the next step started, the first step's result is durable: it never runs again."""
    inv = send(srv, "/Steps/pipeline/send", {"dir": str(tmp_path)})
    wait_until(lambda: (tmp_path / "second.running").exists(), 10, what="the second step to start")
    assert len(ledger(tmp_path, "first")) == 1
    sigkill(srv)

    srv.start()
    wait_until(lambda: len(ledger(tmp_path, "second", "start")) == 2, 10, what="the second step to rerun")
    (tmp_path / "go").touch()
    result = attach(srv, inv)

    first, second = ledger(tmp_path, "first"), ledger(tmp_path, "second")
    assert len(first) == 1, f"a completed ctx.run ran again after the restart: {first}"
    assert len(second) == 1
    assert result == {"first": first[0]["token"], "second": second[0]["token"]}


def test_kill_during_sleep_wakes_at_deadline_after_restart(srv: Server, tmp_path: Path) -> None:
    """(c) Timers survive a restart: the invocation wakes no earlier than its deadline and does not hang;
    the step before the sleep does not run again."""
    key = "c-sleep"
    inv = send(srv, f"/Sleeper/{key}/nap/send", {"dir": str(tmp_path), "seconds": 2})
    wait_until(lambda: query(srv, f"/Sleeper/{key}/phase") == "sleeping", 10, what="the sleep to be stored")
    killed_at = time.time()
    sigkill(srv)
    (before,) = ledger(tmp_path, "before")
    assert killed_at < before["at"] + 2, "the kill was meant to land during the sleep"

    srv.start()
    restarted_at = time.time()
    result = attach(srv, inv, timeout=15)

    assert ledger(tmp_path, "before") == [before]  # did not re-run
    (after,) = ledger(tmp_path, "after")
    assert result == {"before": before["at"], "after": after["at"]}
    assert after["pid"] == (srv.proc.pid if srv.proc else None)
    # The wake-up time is taken (in whole ms) after "before" returned: waking earlier breaks the sleep.
    assert after["at"] - before["at"] >= 2 - 0.001, f"woke {after['at'] - before['at']:.3f}s after 'before'"
    # ... and once due (or once restarted, if that was later) the timer fires promptly.
    assert after["at"] < max(before["at"] + 2, restarted_at) + 2
    assert query(srv, f"/Sleeper/{key}/phase") == "done"


def test_kill_while_workflow_awaits_promise(srv: Server, tmp_path: Path) -> None:
    """(d) A workflow waiting on a durable promise across a crash: resolving it after the restart
    completes the workflow with that value; the step before the promise ran once."""
    key = "d-approval"
    inv = send(srv, f"/Approval/{key}/run/send", {"dir": str(tmp_path)})
    wait_until(lambda: query(srv, f"/Approval/{key}/status") == "awaiting", 10, what="the promise wait")
    sigkill(srv)

    srv.start()
    resp = srv.call(f"/Approval/{key}/approve", "approved-after-crash")
    assert resp.status_code == 200, resp.text
    wf = srv.get(f"/restate/workflow/Approval/{key}/attach", timeout=20)
    assert wf.status_code == 200, wf.text
    assert wf.headers["x-restate-id"] == inv

    before, after = ledger(tmp_path, "before"), ledger(tmp_path, "after")
    assert len(before) == 1, f"the step before the promise ran again: {before}"
    assert len(after) == 1
    assert wf.json() == {
        "before": before[0]["token"],
        "decision": "approved-after-crash",
        "after": after[0]["token"],
    }


def test_kill_while_idempotent_increments_are_in_flight(srv: Server, tmp_path: Path) -> None:
    """(e) 50 one-way increments with idempotency keys, SIGKILL while they are being sent and processed.
    Clients retry on connection errors and everybody re-sends once more: the counter ends at exactly 50."""
    key, total = "e-counter", 50
    client = httpx.Client(base_url=srv.ingress, timeout=10, limits=httpx.Limits(max_connections=total))

    def count() -> int:
        return int(client.post(f"/Counter/{key}/get").json())

    def add(n: int) -> httpx.Response:
        body = {"dir": str(tmp_path), "n": n}
        return client.post(f"/Counter/{key}/add/send", json=body, headers={"idempotency-key": f"inc-{n}"})

    def send_until_accepted(n: int) -> str:
        """A real client: retry on connection errors (the server is down or died mid-request)."""
        deadline = time.monotonic() + 40
        while True:
            try:
                resp = add(n)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # client back-off before retrying
                continue
            assert resp.status_code == 202, resp.text
            return str(resp.json()["invocationId"])

    with client, ThreadPoolExecutor(max_workers=total) as pool:
        futures: list[Future[str]] = [pool.submit(send_until_accepted, n) for n in range(total // 2)]
        wait_until(lambda: count() >= 10, 20, what="the first increments to complete")
        futures += [pool.submit(send_until_accepted, n) for n in range(total // 2, total)]
        sigkill(srv)  # the second half is being sent, the queue of the first half is being processed
        applied_before_kill = {row["n"] for row in ledger(tmp_path, "add")}
        assert 10 <= len(applied_before_kill) < total, (
            "the kill was meant to land while increments were queued"
        )
        srv.start()
        ids = [f.result(timeout=60) for f in futures]

        # Everything was accepted once; sending all of them again is deduplicated by the idempotency key.
        for n in range(total):
            resp = add(n)
            assert resp.status_code == 202, resp.text
            assert resp.json() == {"invocationId": ids[n], "status": "PreviouslyAccepted"}

        # Wait for every invocation: each saw a distinct count, so each increment applied exactly once.
        attached = list(
            pool.map(lambda inv: client.get(f"/restate/invocation/{inv}/attach", timeout=30), ids)
        )
        assert [r.status_code for r in attached] == [200] * total, [
            r.text for r in attached if r.status_code != 200
        ]
        assert sorted(r.json() for r in attached) == list(range(1, total + 1))
        assert count() == total

    applied = [row["n"] for row in ledger(tmp_path, "add")]
    assert set(applied) == set(range(total))
    # Only the increment holding the object's lock at the kill may have had its ctx.run cut off and re-run.
    assert len(applied) - total <= 1, sorted(applied)


# ------------------------------------------------------------------------------------ fault points
def test_crash_right_after_commit_before_any_reply(server_factory: Any, tmp_path: Path) -> None:
    """``processor.after_commit``: the process dies after the first commit (the call's invocation was
    stored) and before any action runs, so no reply leaves. After the restart the invocation runs on its
    own, exactly once, and the client's retry with the same idempotency key gets its result."""
    srv: Server = server_factory(APP, name="after-commit")
    srv.start(extra_env={"UNBROKEN_FAULTS": "processor.after_commit:crash"})
    body, headers = {"dir": str(tmp_path)}, {"idempotency-key": "after-commit-1"}
    with pytest.raises(httpx.TransportError):
        srv.call("/Steps/quick", body, headers=headers, timeout=10)
    crashed_at_fault(srv)
    assert ledger(tmp_path) == []  # committed, but the attempt never started

    srv.start()  # fault disarmed
    wait_until(lambda: len(ledger(tmp_path, "second")) == 1, 10, what="the stored invocation to complete")
    resp = srv.call("/Steps/quick", body, headers=headers)
    assert resp.status_code == 200, resp.text
    first, second = ledger(tmp_path, "first"), ledger(tmp_path, "second")
    assert len(first) == 1 and len(second) == 1
    assert resp.json() == {"first": first[0]["token"], "second": second[0]["token"]}


def test_crash_after_run_action_before_its_result_is_durable(server_factory: Any, tmp_path: Path) -> None:
    """``sdk.run.before_propose``: the action ran but its result never reached the journal. After the
    restart it runs again, and every later read (the caller) sees the second execution's result."""
    srv: Server = server_factory(APP, name="before-propose")
    srv.start(extra_env={"UNBROKEN_FAULTS": "sdk.run.before_propose:crash"})
    body, key = {"dir": str(tmp_path)}, "before-propose-1"
    try:
        srv.call("/Steps/quick/send", body, headers={"idempotency-key": key}, timeout=10)
    except httpx.TransportError:
        pass  # the 202 may or may not leave before the crash: a real client would retry (below)
    crashed_at_fault(srv)
    (lost,) = ledger(tmp_path, "first")

    srv.start()  # fault disarmed
    resp = srv.call("/Steps/quick/send", body, headers={"idempotency-key": key})
    assert resp.status_code == 202 and resp.json()["status"] == "PreviouslyAccepted", resp.text
    result = attach(srv, resp.json()["invocationId"])

    first, second = ledger(tmp_path, "first"), ledger(tmp_path, "second")
    assert first[0] == lost and len(first) == 2
    assert len(second) == 1
    assert result == {"first": first[1]["token"], "second": second[0]["token"]}
    assert result["first"] != lost["token"]
