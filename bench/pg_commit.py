"""What a batch's COMMIT costs on PostgreSQL, the two ways the store sends one: ``bench/pg_commit.py``.

The store (``storage/postgres.py``) sends a batch that read nothing mid-batch as one simple query (BEGIN, its
writes with their values as literals, the fence, COMMIT), and a batch that had to read first in pipeline
mode (the BEGIN queued with its first read; at the COMMIT its writes as statements over arrays, the fence and
the COMMIT). This runs W2-shaped batches (per record: the invocation row upserted, one journal entry
appended) through the real ``PostgresStore`` both ways and prints, per batch: wall time, the client's CPU
(this process) and the server's (the writer's backend, from /proc: PostgreSQL on this machine).

    .venv/bin/python bench/pg_commit.py [--url URL] [--batches 2000] [--records 1,4,16] [--rounds 3]

The best of ``--rounds`` interleaved runs per cell; every run on its own schema, dropped at the end. Both ways
are measured at every size (the store itself sends a batch of more than ``limits.pg_text_batch_rows_max``
rows in pipeline mode: where the two ways cross is how that bound was chosen).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from unbroken.core import journal as j  # noqa: E402
from unbroken.core import limits  # noqa: E402
from unbroken.core.ids import InvocationId  # noqa: E402
from unbroken.core.invocation import Invocation, Status  # noqa: E402
from unbroken.core.schema import ServiceKind, Target  # noqa: E402
from unbroken.storage.postgres import PostgresStore  # noqa: E402

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
TEXT_ROWS_MAX = limits.pg_text_batch_rows_max


def _server_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime + stime


def _invocation(i: int) -> Invocation:
    inv_id = str(
        InvocationId.new(int.from_bytes(os.urandom(8), "big"), os.urandom(16), 1_700_000_000_000 + i)
    )
    return Invocation(inv_id, Target("Bench", "steps"), ServiceKind.SERVICE, None, Status.RUNNING, i, i, i)


def run(url: str, batches: int, records: int, pipeline: bool) -> tuple[float, float, float]:
    """(wall, client CPU, server CPU) in µs per batch."""
    limits.pg_text_batch_rows_max = TEXT_ROWS_MAX if pipeline else 1 << 30  # the text way at every size
    schema = f"ub_pg_commit_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    store = PostgresStore(f"{url}{'&' if '?' in url else '?'}schema={schema}", partitions=64, node="bench")
    try:
        invocations = [_invocation(i) for i in range(records)]
        entry = j.OutputCommand(j.Result(b"x" * 60))
        server = store.conn.info.backend_pid
        wall, cpu, srv = time.perf_counter(), time.process_time(), _server_cpu_s(server)
        for b in range(batches):
            txn = store.begin()
            if pipeline:
                txn.enter()  # what a read mid-batch does
            for inv in invocations:
                txn.put_invocation(inv)
                txn.append_journal(inv.id, b, entry, b)
            txn.commit()
        assert store.conn.info.backend_pid == server, (
            "the writer reconnected: the server CPU is not one backend's"
        )
        return (
            (time.perf_counter() - wall) / batches * 1e6,
            (time.process_time() - cpu) / batches * 1e6,
            (_server_cpu_s(server) - srv) / batches * 1e6,
        )
    finally:
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("UNBROKEN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--records", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("records/batch | way | wall µs | client CPU µs | server CPU µs  (per batch, best of rounds)")
    for records in (int(r) for r in args.records.split(",")):
        best: dict[str, tuple[float, float, float]] = {}
        for _ in range(args.rounds):
            for way, pipeline in (("one simple query", False), ("pipeline mode", True)):
                got = run(args.url, args.batches, records, pipeline)
                best[way] = min(best.get(way, got), got, key=lambda r: r[1] + r[2])
        for way, (wall, cpu, srv) in best.items():
            print(f"{records:>13} | {way:16} | {wall:7.0f} | {cpu:13.0f} | {srv:13.0f}")


if __name__ == "__main__":
    main()
