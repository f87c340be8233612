"""The production processor: records applied on the event loop, committed on the writer thread.

Checked here: every record submitted is answered once, in submission order, whichever thread submitted it;
``stop`` applies and commits what was queued before it returns. Errors (crash-only, never drop and go on):
a record whose apply raises is never dropped; the batch rolls back and the processor recovers, and the same
violation again stops it (it used to drop the record alone and go on); a store error raised by a statement is
a failed store: the batch is applied again, nothing lost; a record the store keeps refusing is given up
with its caller answered, and control records do not wait behind it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.actions import Accepted, NotFound, Reply, StoreFailed, Unavailable
from unbroken.core.errors import InvariantViolation
from unbroken.core.ids import InvocationId
from unbroken.core.schema import HandlerSchema, Schemas, ServiceKind, ServiceSchema, Target
from unbroken.core.storage import PartitionLost
from unbroken.runtime.clock import ManualClock
from unbroken.runtime.processor import Processor, describe
from unbroken.storage.memory import MemoryStore

SCHEMAS = Schemas({"Svc": ServiceSchema("Svc", ServiceKind.SERVICE, {"h": HandlerSchema("h", None)})})
TARGET = Target("Svc", "h")


def _invoke(n: int) -> r.Invoke:
    inv = str(InvocationId.new(n, n.to_bytes(10, "big"), 0))
    return r.Invoke(inv, TARGET, b"1", request_id=n, reply=r.ReplyMode.ACCEPTED)


class _Harness:
    def __init__(self, store: Any) -> None:
        self.replies: list[Reply] = []
        self.store = store
        self.changed = asyncio.Event()
        self.processor = Processor(
            store, lambda: SCHEMAS, ManualClock(), asyncio.get_running_loop(), self.on_actions
        )

    def on_actions(self, actions: list[Any]) -> None:
        self.replies.extend(a for a in actions if isinstance(a, Reply))
        self.changed.set()

    async def replies_for(self, count: int) -> list[int]:
        async def wait() -> None:
            while len(self.replies) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), 10)
        return [x.request_id for x in self.replies]

    async def apply_invokes(self, *numbers: int) -> None:
        """Start the processor, submit an Invoke per number, wait (bounded) for every reply, stop it."""
        self.processor.start()
        try:
            for n in numbers:
                self.processor.submit(_invoke(n))
            await self.replies_for(len(numbers))
        finally:
            await asyncio.to_thread(self.processor.stop)


async def test_records_from_any_thread_are_answered_once_in_submission_order() -> None:
    h = _Harness(MemoryStore())
    h.processor.start()
    try:
        for n in range(1, 51):
            h.processor.submit(_invoke(n))
        other = threading.Thread(target=lambda: [h.processor.submit(_invoke(n)) for n in range(51, 101)])
        other.start()
        other.join(10)
        assert await h.replies_for(100) == list(range(1, 51)) + list(range(51, 101))
        assert {type(x.outcome) for x in h.replies} == {Accepted}
        assert h.processor.records == 100 and h.processor.batches < 100  # group commit: batches of several
    finally:
        await asyncio.to_thread(h.processor.stop)


async def test_stop_commits_what_was_queued() -> None:
    store = MemoryStore()
    h = _Harness(store)
    h.processor.start()
    for n in range(1, 21):
        h.processor.submit(_invoke(n))
    await asyncio.to_thread(h.processor.stop)
    assert len(store.invocations) == 20
    assert [x.request_id for x in h.replies] == list(range(1, 21))


class _Left:
    """How many failures are left; shared, not rolled back with the store (MemoryStore deep-copies its dict)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __deepcopy__(self, memo: Any) -> _Left:
        return self


class _PoisonStore(MemoryStore):
    """Applying the invocation with request id 2 raises inside the transaction (a bug in apply), ``times``
    times; ``fail`` (an exception factory) replaces the bug with another error."""

    def __init__(
        self, times: int = 1_000, fail: Any = lambda: RuntimeError("poison"), poison: int = 2
    ) -> None:
        super().__init__()
        self.left = _Left(times)
        self.fail = fail
        self.poison = str(_invoke(poison).invocation_id)

    def begin(self) -> Any:
        txn = super().begin()
        put = txn.put_invocation
        store = self

        def put_invocation(inv: Any) -> None:
            if inv.id == store.poison and store.left.count > 0:
                store.left.count -= 1
                raise store.fail()
            put(inv)

        txn.put_invocation = put_invocation  # type: ignore[method-assign]
        return txn


async def test_a_record_that_breaks_an_invariant_twice_stops_the_processor_loudly() -> None:
    """Before: the record was dropped alone (answered "error") and the processor went on."""
    store = _PoisonStore()
    h = _Harness(store)
    violations: list[str] = []
    h.processor.on_violation = violations.append
    await h.apply_invokes(1, 2, 3)
    # the batch rolled back and was applied again one record at a time: 1 commits, 2 breaks again
    assert [(x.request_id, type(x.outcome)) for x in h.replies] == [
        (1, Accepted),
        (2, Unavailable),
        (3, Unavailable),
    ]
    assert sorted(store.invocations) == [_invoke(1).invocation_id]
    assert h.processor.halted is not None and "poison" in h.processor.halted
    assert len(violations) == 2 and violations[1] == h.processor.halted
    h.processor.submit(_invoke(4))  # stopped: nothing more is applied
    assert _invoke(4).invocation_id not in store.invocations


async def test_an_invariant_violation_once_rolls_back_recovers_and_loses_nothing() -> None:
    store = _PoisonStore(times=1, fail=lambda: InvariantViolation("inv_x: suspended on nothing"))
    h = _Harness(store)
    violations: list[str] = []
    h.processor.on_violation = violations.append
    await h.apply_invokes(1, 2, 3)
    assert [(x.request_id, type(x.outcome)) for x in h.replies] == [
        (1, Accepted),
        (2, Accepted),
        (3, Accepted),
    ]
    assert len(store.invocations) == 3
    assert violations == ["InvariantViolation: inv_x: suspended on nothing"] and h.processor.halted is None


async def test_a_store_error_raised_by_a_statement_retries_the_batch_and_drops_nothing() -> None:
    """Before: SQLITE_FULL raised mid-statement was taken for a poison record: dropped, the rest committed."""
    store = _PoisonStore(times=2, fail=lambda: sqlite3.OperationalError("database or disk is full"))
    h = _Harness(store)
    await h.apply_invokes(1, 2, 3)
    assert [(x.request_id, type(x.outcome)) for x in h.replies] == [
        (1, Accepted),
        (2, Accepted),
        (3, Accepted),
    ]
    assert len(store.invocations) == 3 and h.processor.store_error is None


async def test_a_record_the_store_keeps_refusing_is_given_up_and_a_kill_does_not_wait_behind_it() -> None:
    store = _PoisonStore(fail=lambda: sqlite3.OperationalError("database or disk is full"), poison=1)
    h = _Harness(store)
    h.processor.start()
    try:
        h.processor.submit(_invoke(1))
        h.processor.submit(r.KillInvocation(_invoke(3).invocation_id, request_id=2))
        h.processor.submit(_invoke(3))
        await h.replies_for(3)
    finally:
        await asyncio.to_thread(h.processor.stop)
    kinds = [(x.request_id, type(x.outcome)) for x in h.replies]
    assert kinds == [(2, NotFound), (1, StoreFailed), (3, Accepted)], kinds
    refused = h.replies[1].outcome
    assert isinstance(refused, StoreFailed) and refused.failure.code == 507
    assert f"after {limits.record_store_attempts_max} attempts" in refused.failure.message
    assert "database or disk is full" in refused.failure.message
    assert sorted(store.invocations) == [_invoke(3).invocation_id]


def test_a_record_is_described_by_ids_and_sizes_never_by_its_value() -> None:
    big = r.Invoke("inv_1", TARGET, b"v" * 5_000_000, request_id=9)
    text = describe(big)
    assert text == "Invoke inv_1 request 9 5000000 bytes"


async def test_a_record_of_a_partition_led_elsewhere_now_is_answered_503_and_the_others_commit() -> None:
    """Several nodes (PostgreSQL): a batch wrote a partition handed over meanwhile. That does not pass: the
    record is given up alone (its caller retries where the partition is led), the rest of the batch commits,
    and the store is not taken for failing."""
    store = _PoisonStore(fail=lambda: PartitionLost("partition 5 is not led by node a"))
    h = _Harness(store)
    await h.apply_invokes(1, 2, 3)
    assert sorted((x.request_id, type(x.outcome)) for x in h.replies) == [
        (1, Accepted),
        (2, Unavailable),
        (3, Accepted),
    ]
    refused = next(x.outcome for x in h.replies if x.request_id == 2)
    assert isinstance(refused, Unavailable) and refused.failure.code == 503
    assert "not led by node a" in refused.failure.message
    assert len(store.invocations) == 2 and h.processor.store_error is None


async def test_a_record_refused_for_a_partition_only_its_effects_wrote_is_applied_again() -> None:
    """Its own partition is still led; the one lost (say 7) is where it wrote an effect (a call to a key
    there). The store knows 7 is lost, so applied again the effect goes through 7's inbox: given up, its
    attempt's journal would have a hole (the simulator's --leases seed 62)."""

    class _LostSeven(_PoisonStore):
        def leads(self, part: int) -> bool:
            return part != 7

    store = _LostSeven(times=1, fail=lambda: PartitionLost("partition 7 is led by node b now", (7,)))
    h = _Harness(store)
    await h.apply_invokes(1, 2, 3)
    assert sorted((x.request_id, type(x.outcome)) for x in h.replies) == [
        (1, Accepted),
        (2, Accepted),
        (3, Accepted),
    ]
    assert len(store.invocations) == 3 and store.left.count == 0


async def test_purged_records_are_never_applied_and_their_callers_are_answered_503() -> None:
    store = MemoryStore()
    h = _Harness(store)
    h.processor.start()
    try:
        for n in (1, 2, 3):
            h.processor.submit(_invoke(n))
        gone = _invoke(2).invocation_id
        h.processor.purge(lambda record: getattr(record, "invocation_id", "") == gone, "moved: retry")
        await h.replies_for(3)
    finally:
        await asyncio.to_thread(h.processor.stop)
    assert [(x.request_id, type(x.outcome)) for x in h.replies] == [
        (2, Unavailable),
        (1, Accepted),
        (3, Accepted),
    ]
    assert sorted(store.invocations) == sorted([_invoke(1).invocation_id, _invoke(3).invocation_id])
