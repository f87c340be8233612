"""The seeded simulator: many seeds hold every invariant, a seed replays exactly, and every engine bug
the simulator found stays found (its seed fails with the old code patched back in, passes with the fix).

Reproduce any seed with ``python -m unbroken.testing.sim --seed N -v``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import unbroken as restate
from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.actions import Accepted, Reply, StoreFailed
from unbroken.core.invocation import Invocation, Status
from unbroken.core.journal import Failure
from unbroken.core.schema import RetryPolicy, ServiceKind, Target
from unbroken.core.state_machine import apply, control
from unbroken.protocol.transport import AttemptStart
from unbroken.runtime import processor as proc
from unbroken.runtime.clock import ManualClock
from unbroken.runtime.committer import Batch
from unbroken.sdk import invocation_context
from unbroken.sdk.attempt import Attempt
from unbroken.storage.memory import MemoryStore, MemoryTransaction
from unbroken.storage.sqlite import SqliteStore
from unbroken.testing.sim import SimConfig, SimResult, run_seed
from unbroken.testing.sim import leases as sim_leases
from unbroken.testing.sim.__main__ import main as sim_main
from unbroken.testing.sim.loop import OWNER, SimStuck, VirtualEventLoop

# The processor tests below need a schema only: their records are applied, no handler runs.
sleeper = restate.Service("Sleeper")


@sleeper.handler()
async def nap(ctx: restate.Context, ms: int) -> int:
    return ms


APP = restate.app([sleeper])

SEEDS = range(0, 500)  # ~15 s on one core
# The rarer combinations of faults (a storage error, then a graceful restart during the retry pause) need
# a higher rate: ``--intensity 3 --fault-phase 120``. Seeds marked so run with it.
HIGH_RATE = SimConfig(fault_phase_s=120.0, intensity=3.0)
HIGH_RATE_SEEDS = range(200_000, 200_200)  # ~10 s on one core


@pytest.fixture(scope="module")
def results() -> list[SimResult]:
    return [run_seed(seed) for seed in SEEDS]


def test_every_seed_holds_every_invariant(results: list[SimResult]) -> None:
    failed = [res.report() for res in results if not res.ok]
    assert not failed, f"{len(failed)} of {len(results)} seeds failed:\n\n" + "\n\n".join(failed[:5])


def test_seeds_hold_every_invariant_at_a_higher_fault_rate() -> None:
    results = [run_seed(seed, HIGH_RATE) for seed in HIGH_RATE_SEEDS]
    failed = [res.report() for res in results if not res.ok]
    assert not failed, f"{len(failed)} of {len(results)} seeds failed:\n\n" + "\n\n".join(failed[:5])
    total = {k: sum(res.stats[k] for res in results) for k in ("graceful_restarts", "storage_errors")}
    assert total["graceful_restarts"] > 100 and total["storage_errors"] > 2_000


TWO_NODES = SimConfig(nodes=2)  # two nodes over two views of the store, each leading half the partitions
TWO_NODES_SEEDS = range(300_000, 300_100)


def test_two_nodes_each_leading_half_the_partitions_hold_every_invariant() -> None:
    """Every call, send, completion, signal and cancel between them crosses through the partition inbox
    (a node writing a row of the other's partition breaks an invariant), under the same faults."""
    results = [run_seed(seed, TWO_NODES) for seed in TWO_NODES_SEEDS]
    failed = [res.report() for res in results if not res.ok]
    assert not failed, f"{len(failed)} of {len(results)} seeds failed:\n\n" + "\n\n".join(failed[:5])
    assert sum(res.stats["crashes"] for res in results) > 100
    again = run_seed(TWO_NODES_SEEDS[1], TWO_NODES)
    assert again.trace_hash == results[1].trace_hash


LEASED = SimConfig(nodes=2, leases=True)  # leadership moves: takeovers, renewal failures, handovers
LEASED_SEEDS = range(400_000, 400_100)


def test_leadership_moving_between_two_nodes_holds_every_invariant() -> None:
    """Partitions leased with epochs (every commit fenced) move between the nodes at seeded times: taken
    from a paused leader that learns late, lost for want of a renewal, handed over cleanly. The runtime's
    gain (recover) and loss (abort, fail waiters, drop timers) run as production drives them."""
    results = [run_seed(seed, LEASED) for seed in LEASED_SEEDS]
    failed = [res.report() for res in results if not res.ok]
    assert not failed, f"{len(failed)} of {len(results)} seeds failed:\n\n" + "\n\n".join(failed[:5])
    assert sum(res.stats["lease_moves"] for res in results) > 300
    assert sum(res.stats["crashes"] for res in results) > 100
    again = run_seed(LEASED_SEEDS[1], LEASED)
    assert again.trace_hash == results[1].trace_hash


def _old_partition_lost(self: proc.Processor, batch: list[Any], exc: Exception) -> None:
    """Before: a record refused alone for a lost partition was given up, even when that partition was only
    where its effects wrote (a call to a key there) and its own was still led: a hole in its journal."""
    if len(batch) != 1:
        self._queue.extendleft(reversed(batch))
        self._suspects = len(batch)
        self._schedule()
        return
    self._schedule()


def test_regression_a_record_refused_for_another_partition_is_applied_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--leases seed 62: a CallCommand to a key in a partition just taken by the other node was given up,
    though its invocation's partition was still led: the invocation waited for the call's result for ever."""
    assert run_seed(62, LEASED).ok
    monkeypatch.setattr(proc.Processor, "_partition_lost", _old_partition_lost)
    broken = run_seed(62, LEASED)
    assert not broken.ok and any("never got its answer" in v for v in broken.violations), broken.report()


def test_regression_a_deposed_leader_commits_no_decision_taken_on_a_row_it_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--leases seed 1342: node b, deposed of partition 0 without knowing it yet, applied a resolve of an
    awakeable of an invocation there: it read the row, judged the index never allocated (the attempt ran on
    node a) and committed the refusal: the fence covered the partitions written only, and nothing was
    written to 0. The resolve was lost, the waiter hung. Now a batch is fenced by the led partitions whose
    invocation rows it read as well (``PostgresTransaction.get_invocation``; the simulator's fence)."""
    assert run_seed(1342, LEASED).ok
    monkeypatch.setattr(sim_leases, "read_partitions", lambda txn: set())
    broken = run_seed(1342, LEASED)
    assert not broken.ok and any("never got its answer" in v for v in broken.violations), broken.report()


def test_records_in_transit_are_purged_with_their_partition() -> None:
    """--leases seed 331: the simulator's late records are queued ones in production; a partition let go
    must drop them too (``SimProcessor.purge``), or a caller's record applied after the move waited for
    ever on a node that no longer leads its invocation."""
    res = run_seed(331, LEASED)
    assert res.ok, res.report()


def test_the_faults_are_really_injected(results: list[SimResult]) -> None:
    """A simulator that stopped injecting faults would pass everything: check that it does not."""
    total = {k: sum(res.stats[k] for res in results) for k in results[0].stats}
    assert total["crashes"] > 1000
    assert total["graceful_restarts"] > 100
    assert total["storage_errors"] > 1000
    # and the engine went through what they are meant to provoke
    assert total["recovered"] > 1000 and total["suspensions"] > 1000 and total["failed_attempts"] > 1000
    assert sum(1 for res in results if res.stats["crashes"] == 0) > 10  # some seeds run without crashes too
    assert total["invocations"] > 5 * len(results)
    assert any(res.stats["ops"] > 40 for res in results)  # some heavy seeds


def test_a_seed_replays_exactly() -> None:
    """Between the two runs: another seed, and objects allocated, so that nothing may depend on addresses
    (this seed, a cancelled fan-out, diverged when coroutines were woken in set order)."""
    first, other = run_seed(1234), run_seed(1235)
    noise = [object() for _ in range(10_000)]
    again = run_seed(1234)
    del noise
    assert first.trace_hash == again.trace_hash
    assert first.stats["records"] == again.stats["records"]
    assert first.trace_hash != other.trace_hash


def test_a_seed_replays_exactly_in_another_process() -> None:
    """Nothing depends on hash randomization, object addresses or wall time."""
    seed = 77
    here = run_seed(seed).trace_hash
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-m", "unbroken.testing.sim", "--seed", str(seed)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"trace hash {here}" in out.stdout


def test_verbose_run_prints_the_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main(["--seed", "5", "-v"]) == 0
    out = capsys.readouterr().out
    assert "engine #1 started" in out and "batch @" in out and "seed 5: ok" in out


def test_many_seeds_print_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main(["--seeds", "4", "--start", "10", "-q"]) == 0
    out = capsys.readouterr().out
    assert "4 seeds (10..13)" in out and "seeds/s" in out and "all seeds passed" in out


# ------------------------------------------------------------------------------ the virtual loop
def test_virtual_time_jumps_instead_of_sleeping() -> None:
    loop = VirtualEventLoop()
    started = time.perf_counter()

    async def main() -> float:
        await asyncio.sleep(86_400)
        return loop.time()

    try:
        assert loop.run_until_complete(main()) == 86_400
    finally:
        loop.close()
    assert time.perf_counter() - started < 1


def test_executor_runs_inline_and_a_deadlock_is_reported() -> None:
    loop = VirtualEventLoop()

    async def uses_a_thread() -> int:
        return await asyncio.to_thread(lambda: 42)

    async def waits_forever() -> None:
        await loop.create_future()

    try:
        assert loop.run_until_complete(uses_a_thread()) == 42
        with pytest.raises(SimStuck, match="deadlock"):
            loop.run_until_complete(waits_forever())
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()


def test_a_crash_cancels_exactly_the_tasks_of_that_engine() -> None:
    loop = VirtualEventLoop()

    async def main() -> tuple[bool, bool]:
        OWNER.set(3)
        engine_task = asyncio.ensure_future(asyncio.sleep(10))
        OWNER.set(0)
        client_task = asyncio.ensure_future(asyncio.sleep(10))
        assert loop.cancel_owned_by(3) == 1
        await asyncio.sleep(0)
        await client_task
        return engine_task.cancelled(), client_task.cancelled()

    try:
        assert loop.run_until_complete(main()) == (True, False)
    finally:
        loop.close()


# ------------------------------------------------------------------------------ bugs the simulator found
# Each entry: the engine code as it was before the fix, and seeds that caught it. The test proves the seed
# still exercises the bug (it fails with the old code) and that the fix holds (it passes with the new).


def _old_commit_failed(self: proc.Processor, batch: Batch, exc: BaseException) -> None:
    """Before: a batch whose commit failed was applied again at once, one record per transaction, and a
    record whose transaction failed there was dropped, even when the store failed to commit (a transient I/O
    error), not the record. (Expressed against today's batch loop: the commit callback of its committer.)"""
    self._committing = False
    proc.log.error("batch of %d records failed; applying them one by one", len(batch.records), exc_info=exc)
    now, schemas, actions = self._clock.now_ms(), self._schemas(), []
    for record in batch.records:
        try:
            with self._store.transaction() as txn:
                produced = apply(txn, record, now, schemas)
            actions.extend(produced)
        except Exception as exc:
            proc.log.critical("record dropped, apply failed: %r", record, exc_info=True)
            if getattr(record, "request_id", 0):
                actions.append(Reply(record.request_id, StoreFailed(Failure(500, str(exc)))))
    self.committed(Batch(batch.transaction, batch.records, actions))


def _old_end(self: Attempt) -> None:
    """Before: ending an attempt cancelled the handler's task but not its ``ctx.run`` tasks."""
    if self.ended:
        return
    self.ended = True
    if self.inactivity is not None:
        self.inactivity.cancel()
        self.inactivity = None
    task = self.task
    if task is not None and task is not asyncio.current_task() and not task.done():
        task.cancel()
    self.sink.ended()


def _old_delay_ms(delta: timedelta, what: str) -> int:
    """Before: float seconds * 1000, truncated: 1001 ms became 1000."""
    return int(delta.total_seconds() * 1000)


def _old_cancel_children(self: Attempt, cancel_seq: int) -> None:
    """Before: "in flight" judged by what the attempt knows now (a replay knows the whole journal)."""
    for result_cid, id_cid in sorted(self.call_ids.items()):
        if ("c", result_cid) in self.results:
            continue
        got = self.results.get(("c", id_cid))
        if got is None or got[1].value is None:
            continue
        self.command(j.SendSignalCommand(got[1].value.decode(), j.CANCEL_SIGNAL, j.Result()))


def _old_store_failed(self: proc.Processor, batch: list[Any], exc: BaseException) -> None:
    """Before (the simulator's own model of the batch loop): during the pause after a failed commit, the
    batch was held only by the retry, not at the head of the queue, so records queued behind it — later
    commands of the same invocation — were applied first (there: by a graceful stop; here: by the loop,
    which this version does not pause) and a crash during the pause dropped it: a hole in the journal
    (every replay non-deterministic), or a state write lost under a completed invocation."""
    proc.log.error("storage failed; retrying %d records", len(batch), exc_info=exc)

    def retry() -> None:
        if self._running:
            self._queue.extendleft(reversed(batch))
            self._schedule()

    self._loop.call_later(self._retry_delay, retry)
    self._retry_delay = min(self._retry_delay * 2, limits.store_retry_delay_max_s)
    self._schedule()


def _old_awakeable_allocated(inv: Invocation, signal_idx: int, live: int = 0) -> bool:
    """Before: while an attempt ran, any awakeable index was accepted (a forged one was planted)."""
    if signal_idx < j.FIRST_AWAKEABLE_SIGNAL or inv.status in (Status.SCHEDULED, Status.PENDING):
        return False
    if inv.awakeables < 0 or inv.status is Status.RUNNING:
        return True
    return signal_idx < j.FIRST_AWAKEABLE_SIGNAL + inv.awakeables


def _stored_count_only(inv: Invocation, signal_idx: int, live: int = 0) -> bool:
    """The first fix tried: refused past the stored count, running or not, the live count ignored."""
    if signal_idx < j.FIRST_AWAKEABLE_SIGNAL or inv.status in (Status.SCHEDULED, Status.PENDING):
        return False
    return inv.awakeables < 0 or signal_idx < j.FIRST_AWAKEABLE_SIGNAL + inv.awakeables


BUGS: dict[str, tuple[object, str, Callable[..., Any], tuple[int, ...], str]] = {
    # a storage error at commit dropped records: lost run results (invocations suspended forever), lost
    # journal commands (replays fail as non-deterministic), lost state writes
    "storage-error-drops-records": (
        proc.Processor,
        "commit_failed",
        _old_commit_failed,
        (3, 47, 68),
        "Counter/",
    ),
    # a paused/failed attempt's ctx.run action kept running and performed its side effect after a newer
    # attempt had made the run's result durable
    "aborted-attempt-keeps-running-ctx-run": (Attempt, "end", _old_end, (14, 15, 20), "ran again after"),
    # ctx.sleep / delayed sends of e.g. 1001 ms were set 1 ms short
    "sleep-fires-1ms-early": (
        invocation_context,
        "_delay_ms",
        _old_delay_ms,
        (19, 276),
        "was set to wake at",
    ),
    # cancelling a fan-out: the replay issued different SendSignal commands -> non-determinism forever
    "cancel-propagation-not-replay-deterministic": (
        Attempt,
        "_cancel_children",
        _old_cancel_children,
        (9, 22, 31),
        "never got its answer",
    ),
    # the simulator's processor lost a batch awaiting its retry when a graceful stop came: 91063 replays
    # met "journal entry 9 is OneWayCall(...), but the code now issues Call(Worker/work)" forever; 102803
    # lost Counter.add's write of `order` while its write of `count` and its output were applied. The
    # simulator now drives the production batch loop: the same bug is a batch awaiting its retry that is
    # not held at the head of the queue
    "sim-stop-drops-batch-awaiting-retry": (
        proc.Processor,
        "_store_failed",
        _old_store_failed,
        (91063, 102803),
        "non-deterministic handler|appears 0 times in the order",
    ),
    # a record the store refused 8 times in a row was given up whatever the error: a transient I/O error
    # failed an approval's promise completion (94935: its workflow waited for ever) or a resume (98301)
    "transient-store-error-gives-records-up": (
        proc,
        "_may_never_fit",
        lambda exc: True,
        (94935, 98301),
        "given up",
    ),
    # the ingress accepted any awakeable index of a running invocation: the resolver's forged index 18
    "awakeable-forged-while-running": (
        control,
        "awakeable_allocated",
        _old_awakeable_allocated,
        (3, 4, 6),
        "never allocated awakeable index was not refused",
    ),
    # refusing past the stored count alone: an id a running ctx.run handed out before any record saying it
    # exists was refused, and never handed out again (the step was journaled): the waiter hung (102803 at
    # HIGH_RATE, through the same path)
    "awakeable-live-count-ignored": (
        control,
        "awakeable_allocated",
        _stored_count_only,
        (0, 1, 102803),
        "never got its answer",
    ),
}


HIGH_RATE_REGRESSIONS = {91063, 102803, 94935, 98301}  # found at HIGH_RATE


@pytest.mark.parametrize(
    ("bug", "seed"), [(bug, seed) for bug, spec in BUGS.items() for seed in spec[3]], ids=lambda x: str(x)
)
def test_regression_seed(bug: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    owner, attr, old, _, symptom = BUGS[bug]
    config = HIGH_RATE if seed in HIGH_RATE_REGRESSIONS else None
    fixed = run_seed(seed, config)
    assert fixed.ok, fixed.report()
    monkeypatch.setattr(owner, attr, old)
    broken = run_seed(seed, config)
    assert not broken.ok, f"seed {seed} no longer exercises {bug}: update its seeds"
    assert any(re.search(symptom, v) for v in broken.violations), broken.report()


# ----------------------------------------------------------------- the production side of the storage fix
def _flaky_store(
    failures: int, on_failure: Callable[[], object] = lambda: None
) -> tuple[MemoryStore, list[int]]:
    """A memory store whose first ``failures`` commits fail (rolled back), like a transient I/O error.
    The count lives outside the store: a failed transaction restores everything the store holds."""
    left = [failures]

    class FlakyStore(MemoryStore):
        def begin(self) -> MemoryTransaction:
            txn = super().begin()
            commit = txn.commit

            def failing_commit() -> None:
                if left[0]:
                    left[0] -= 1
                    txn.rollback()
                    on_failure()
                    raise OSError(5, "disk I/O error at commit")
                commit()

            txn.commit = failing_commit  # type: ignore[method-assign]
            return txn

    return FlakyStore(), left


async def test_the_writer_thread_retries_a_batch_whose_commit_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``Processor`` (the real writer thread): the records of a failed commit are applied again, once."""
    store, failures_left = _flaky_store(3)
    schemas = APP.schemas(RetryPolicy(), 60_000, 600_000, 86_400_000, 86_400_000, 86_400_000)
    replies: list[Reply] = []
    answered = asyncio.Event()

    def on_actions(actions: list[Any]) -> None:
        replies.extend(a for a in actions if isinstance(a, Reply))
        if replies:
            answered.set()

    processor = proc.Processor(store, lambda: schemas, ManualClock(), asyncio.get_running_loop(), on_actions)
    processor.start()
    try:
        target = Target("Sleeper", "nap")
        invoke = r.Invoke(
            "inv_1ddV6vyxW9Tt49SncfZbwJ3Wf4wqQvahCL", target, b"1", request_id=7, reply=r.ReplyMode.ACCEPTED
        )
        processor.submit(invoke)
        await asyncio.wait_for(answered.wait(), 10)
    finally:
        await asyncio.to_thread(processor.stop)
    assert [(x.request_id, type(x.outcome)) for x in replies] == [(7, Accepted)]
    assert failures_left == [0] and list(store.invocations) == [invoke.invocation_id]
    assert "storage failed; retrying 1 records" in caplog.text
    assert "record dropped" not in caplog.text


async def test_a_graceful_stop_during_the_retry_pause_commits_the_failed_batch_first() -> None:
    """The spec the simulator's processor was corrected to (seeds 91063, 102803): the records of a failed
    commit go back to the head of the queue, and ``stop`` waits out the pause and commits them before the
    records submitted after them; never the later ones alone (they may be the same invocation's next
    journal commands)."""
    loop = asyncio.get_running_loop()
    first, second, later = (
        r.Invoke(f"inv_1ddV6vyxW9Tt49SncfZbwJ3Wf4wqQvahC{c}", Target("Sleeper", "nap"), b"1") for c in "LMN"
    )
    failed = asyncio.Event()

    def submit_later() -> None:  # on the loop, before the processor learns that the commit failed
        processor.submit(later)
        failed.set()

    store, failures_left = _flaky_store(1, on_failure=lambda: loop.call_soon_threadsafe(submit_later))
    schemas = APP.schemas(RetryPolicy(), 60_000, 600_000, 86_400_000, 86_400_000, 86_400_000)
    processor = proc.Processor(store, lambda: schemas, ManualClock(), loop, lambda actions: None)
    processor.start()
    processor.submit(first)
    processor.submit(second)  # one batch of two: committed by the writer thread
    await asyncio.wait_for(failed.wait(), 10)
    await asyncio.to_thread(processor.stop)  # while the processor pauses before retrying
    assert failures_left == [0]
    assert list(store.invocations) == [first.invocation_id, second.invocation_id, later.invocation_id]


def test_sqlite_store_recovers_from_a_failed_commit(tmp_path: Path) -> None:
    """A COMMIT that fails (here a deferred constraint; on disk: busy, I/O error, full) must not leave the
    connection inside the transaction, or every later batch fails too."""
    store = SqliteStore(str(tmp_path))
    try:
        conn = store.conn
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("CREATE TEMP TABLE parent(id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TEMP TABLE child(pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
        )
        with pytest.raises(sqlite3.IntegrityError), store.transaction():
            conn.execute("INSERT INTO child VALUES (1)")  # only checked at COMMIT
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM child").fetchone() == (0,)
        with store.transaction() as txn:  # the next batch goes through
            txn.state_set("Counter", "k", "count", b"1")
        with store.transaction() as txn:
            assert txn.state_all("Counter", "k") == {"count": b"1"}
    finally:
        store.close()


# -------------------------------------------------------------------------- the wake order of an attempt
class _NullSink:
    def allocated(self, awakeables: int) -> None: ...
    def command(self, command: Any, awakeables: int | None = None) -> None: ...
    def propose_run(self, completion_id: int, result: Any, awakeables: int | None = None) -> None: ...
    def suspend(
        self, waiting_completions: Any, waiting_signals: Any, awakeables: int | None = None
    ) -> None: ...
    def fail(self, code: int, message: str, next_retry_delay_ms: int | None = None) -> None: ...
    def ended(self) -> None: ...


async def test_coroutines_waiting_in_an_attempt_resume_in_the_order_they_waited() -> None:
    """Wake-ups in set order (by object address) made concurrent branches resume, and so issue their
    commands, in an order that could differ between a run and its replay (found as a seed whose trace
    changed from one run to the next)."""
    start = AttemptStart(
        "inv_1000000000001000000000000000000016",
        1,
        Target("Svc", "h"),
        ServiceKind.SERVICE,
        None,
        (j.InputCommand([], b"1"),),
        None,
        42,
        0,
        0,
        60_000,
        None,
    )
    session = Attempt(start, _NullSink())
    resumed: list[int] = []

    async def branch(i: int) -> None:
        await session.wait(("c", 1))
        resumed.append(i)

    branches = [asyncio.ensure_future(branch(i)) for i in range(64)]
    await asyncio.sleep(0)
    session.notify(j.Notification("run", 1, 0, j.Result(value=b"1")))
    await asyncio.gather(*branches)
    session.end()
    assert resumed == list(range(64))
