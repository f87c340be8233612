"""Strict mode on PostgreSQL (``[store] strict = true``): what distributed SQL offers, proven on the local one.

Batches run SERIALIZABLE and the fault point ``pg.commit`` makes the server fail a third of the COMMITs
with a serialization failure (SQLSTATE 40001), as CockroachDB or YugabyteDB fail them under contention.
Each refused batch is applied again from its records, quietly (an INFO line, never the store-failure path
and its 503s). The e2e basics — steps, an object's state through its inbox, a durable sleep, a workflow's
promise — run concurrently, and the outside ledger says every step ran exactly once and every invocation
completed once: a rolled-back batch never makes an action run again, since its records are kept.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from tests.harness import Server, wait_until

pytestmark = pytest.mark.crash

APP = "tests/apps/crashy.py"
CALLS = 12  # of each kind, sent at once so that batches hold several records


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[Server]:
    pg.require()
    schema = pg.schema_for(f"strict-{uuid.uuid4()}")
    env = {
        "UNBROKEN_STORE__URL": pg.url_for(schema),
        "UNBROKEN_STORE__STRICT": "true",
        "UNBROKEN_NODE_NAME": "strict-node",
        "UNBROKEN_FAULTS": "pg.commit:40001@0.33",
        "UNBROKEN_LOG_LEVEL": "info",
    }
    server = Server(APP, tmp_path / "data", env=env).start()
    yield server
    server.kill()
    pg.drop(schema)


def _ledger(directory: Path) -> list[dict[str, Any]]:
    path = directory / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ok(resp: Any) -> Any:
    assert resp.status_code == 200, resp.text
    return resp.json() if resp.content else None


def test_injected_serialization_failures_are_retried_and_every_invocation_completes_once(
    strict_server: Server, tmp_path: Path
) -> None:
    srv, d = strict_server, str(tmp_path)
    counter, flow = uuid.uuid4().hex, uuid.uuid4().hex
    with ThreadPoolExecutor(max_workers=2 * CALLS + 2) as pool:
        quick = [pool.submit(srv.call, "/Steps/quick", {"dir": d}) for _ in range(CALLS)]
        adds = [pool.submit(srv.call, f"/Counter/{counter}/add", {"dir": d, "n": n}) for n in range(CALLS)]
        nap = pool.submit(srv.call, f"/Sleeper/{uuid.uuid4().hex}/nap", {"dir": d, "seconds": 0.3})
        run = pool.submit(srv.call, f"/Approval/{flow}/run", {"dir": d})
        wait_until(
            lambda: _ok(srv.call(f"/Approval/{flow}/status")) == "awaiting", 20, what="the workflow to wait"
        )
        assert srv.call(f"/Approval/{flow}/approve", "yes").status_code == 200
        quick_results = [_ok(f.result(timeout=60)) for f in quick]
        totals = sorted(_ok(f.result(timeout=60)) for f in adds)
        napped, approved = _ok(nap.result(timeout=60)), _ok(run.result(timeout=60))

    rows = _ledger(tmp_path)
    for step in ("first", "second"):  # each step of each call ran once, and its journaled result is its own
        tokens = sorted(r["token"] for r in rows if r["step"] == step)
        assert tokens == sorted(q[step] for q in quick_results)
    assert totals == list(range(1, CALLS + 1))  # every increment applied once, one at a time
    assert sorted(r["n"] for r in rows if r["step"] == "add") == list(range(CALLS))
    assert _ok(srv.call(f"/Counter/{counter}/get")) == CALLS
    assert [r["step"] for r in rows if r["step"] in ("before", "after")].count("before") == 2  # nap + flow
    assert napped["after"] >= napped["before"] and approved["decision"] == "yes"

    log = srv.log_path.read_text(errors="replace")
    retried = re.findall(r"a transaction conflict, \d+ records applied again", log)
    assert len(retried) >= 3, log[-3000:]  # a third of ~100 commits: the retries did happen
    assert "SerializationFailure" in log and "storage failed" not in log and "ERROR" not in log
