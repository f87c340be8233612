"""The processor's cost per record, without HTTP, handlers or a second thread: ``python bench/apply_cost.py``.

Applies W1-shaped batches (30 new invocations + the outputs of the previous 30, 60 records) to a real SQLite
store with fsync on, as the processor thread would, and prints the apply time per record and the commit time
per batch. ``--calls``: W2-shaped batches instead (15 chains of a new invocation, its ``Call`` to another
service, the callee's output, the caller's output: 60 records). ``--profile`` prints the cProfile top instead. A figure for comparing two builds of the engine
(``PYTHONPATH=<other tree>/src python bench/apply_cost.py``), not one to compare with Restate.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time

from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.actions import StartAttempt
from unbroken.core.ids import InvocationId
from unbroken.core.schema import HandlerSchema, Schemas, ServiceKind, ServiceSchema, Target
from unbroken.core.state_machine import apply
from unbroken.storage.sqlite import SqliteStore

SCHEMAS = Schemas(
    {"Bench": ServiceSchema("Bench", ServiceKind.SERVICE, {"noop": HandlerSchema("noop", None)})}
)
TARGET = Target("Bench", "noop")
BODY = b'{"hello":"world"}'
HEADERS = (j.Header("host", "127.0.0.1:8080"), j.Header("content-type", "application/json"))
NOW_MS = 1_800_000_000_000
NEW_PER_BATCH = 30


class Workload:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.pending: list[str] = []
        self.ids = [str(InvocationId.new(n, os.urandom(10), NOW_MS)) for n in range(1, 200_001)]
        self.n = 0

    def batch(self) -> tuple[float, float, int]:
        """One transaction: (apply seconds, commit seconds, records)."""
        out = j.OutputCommand(j.Result(value=BODY))
        records: list[r.Record] = [r.JournalCommand(i, 1, out) for i in self.pending]
        self.pending = self.ids[self.n : self.n + NEW_PER_BATCH]
        self.n += NEW_PER_BATCH
        records += [
            r.Invoke(i, TARGET, BODY, HEADERS, None, 0, k + 1, "result", 7)
            for k, i in enumerate(self.pending)
        ]
        t0 = time.perf_counter()
        with self.store.transaction() as txn:
            for rec in records:
                apply(txn, rec, NOW_MS, SCHEMAS)
            t1 = time.perf_counter()
        return t1 - t0, time.perf_counter() - t1, len(records)


class CallWorkload(Workload):
    """W2-shaped: each chain touches two rows several times in one record (the ``Call`` and the outputs)."""

    def batch(self) -> tuple[float, float, int]:
        out = j.OutputCommand(j.Result(value=BODY))
        callers = self.ids[self.n : self.n + NEW_PER_BATCH // 2]
        self.n += NEW_PER_BATCH // 2
        call = j.CallCommand("Bench", "noop", BODY, [], None, None, 1, 2)
        t0 = time.perf_counter()
        with self.store.transaction() as txn:
            for k, caller in enumerate(callers):
                apply(
                    txn, r.Invoke(caller, TARGET, BODY, HEADERS, None, 0, k + 1, "result", 7), NOW_MS, SCHEMAS
                )
                actions = apply(txn, r.JournalCommand(caller, 1, call), NOW_MS, SCHEMAS)
                (child,) = [a.invocation.id for a in actions if isinstance(a, StartAttempt)]
                apply(txn, r.JournalCommand(child, 1, out), NOW_MS, SCHEMAS)
                apply(txn, r.JournalCommand(caller, 1, out), NOW_MS, SCHEMAS)
            t1 = time.perf_counter()
        return t1 - t0, time.perf_counter() - t1, 4 * len(callers)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=1000)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--calls", action="store_true", help="W2-shaped batches (calls) instead of W1-shaped")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = (CallWorkload if args.calls else Workload)(SqliteStore(tmp, fsync=True))
        for _ in range(50):  # warm the caches and the statement cache
            work.batch()
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        apply_s = commit_s = records = 0.0
        for _ in range(args.batches):
            a, c, k = work.batch()
            apply_s, commit_s, records = apply_s + a, commit_s + c, records + k
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    print(
        f"apply {apply_s / records * 1e6:.1f} us/record, commit {commit_s / args.batches * 1e3:.3f} ms "
        f"per batch of {records / args.batches:.0f} records ({args.batches} batches, fsync on)"
    )


if __name__ == "__main__":
    main()
