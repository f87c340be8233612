"""The production processor: records applied on the event loop, committed on the writer thread.

Checked here: every record submitted is answered once, in submission order, whichever thread submitted it;
``stop`` applies and commits what was queued before it returns; a record whose apply raises is dropped alone.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from unbroken.core import records as r
from unbroken.core.actions import Reply
from unbroken.core.ids import InvocationId
from unbroken.core.model import HandlerSchema, Schemas, ServiceKind, ServiceSchema, Target
from unbroken.runtime.clock import ManualClock
from unbroken.runtime.processor import Processor
from unbroken.storage.memory import MemoryStore

SCHEMAS = Schemas({"Svc": ServiceSchema("Svc", ServiceKind.SERVICE, {"h": HandlerSchema("h", None)})})
TARGET = Target("Svc", "h")


def _invoke(n: int) -> r.Invoke:
    inv = str(InvocationId.new(n, n.to_bytes(10, "big"), 0))
    return r.Invoke(inv, TARGET, b"1", request_id=n, reply="accepted")


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
        assert {x.kind for x in h.replies} == {"accepted"}
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


class _PoisonStore(MemoryStore):
    """Applying the invocation with request id 2 raises inside the transaction (a bug in apply)."""

    def begin(self) -> Any:
        txn = super().begin()
        put = txn.put_invocation

        def put_invocation(inv: Any) -> None:
            if inv.id == str(_invoke(2).invocation_id):
                raise RuntimeError("poison")
            put(inv)

        txn.put_invocation = put_invocation  # type: ignore[method-assign]
        return txn


async def test_a_record_whose_apply_raises_is_dropped_alone() -> None:
    store = _PoisonStore()
    h = _Harness(store)
    h.processor.start()
    try:
        for n in (1, 2, 3):
            h.processor.submit(_invoke(n))
        await h.replies_for(3)
    finally:
        await asyncio.to_thread(h.processor.stop)
    assert [(x.request_id, x.kind) for x in h.replies] == [(1, "accepted"), (2, "error"), (3, "accepted")]
    assert sorted(store.invocations) == sorted([_invoke(1).invocation_id, _invoke(3).invocation_id])
