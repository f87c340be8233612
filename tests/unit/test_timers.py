"""The timer window: memory holds at most ``window_max`` timers, the others wait in storage and are read
by range scans, and every timer still fires, in order ([hardening]: a million sleeping invocations cost
storage, not memory; ``Engine.start`` loaded every timer row)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import BACKENDS, Opener, opener
from unbroken.core import limits
from unbroken.core.records import Record, TimerFired
from unbroken.core.storage import StoreError, Timer, TimerKind
from unbroken.runtime.clock import ManualClock
from unbroken.runtime.timers import TimerService

NOW = 1_700_000_000_000


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    yield from opener(request, tmp_path)


async def test_a_bounded_window_fires_every_stored_and_armed_timer_in_order(stores: Opener) -> None:
    store = stores()
    clock = ManualClock(NOW)
    with store.transaction() as txn:
        stored = [
            (NOW - 100 + n, txn.add_timer(NOW - 100 + n, TimerKind.SLEEP, "inv_a", n)) for n in range(25)
        ]
    fired: list[int] = []
    sizes: list[int] = []
    done = asyncio.Event()
    service: TimerService

    def submit(record: Record) -> None:
        assert isinstance(record, TimerFired)
        fired.append(record.timer_id)
        sizes.append(len(service))
        if len(fired) == len(stored) + len(armed):
            done.set()

    service = TimerService(clock, submit, store.timers_after, window_max=4)
    service.load()
    assert len(service) == 4  # not 25
    armed = []
    with store.transaction() as txn:  # armed while the window is full: one early, one late
        for at in (NOW - 200, NOW - 1):
            timer_id = txn.add_timer(at, TimerKind.SLEEP, "inv_b", 0)
            armed.append((at, timer_id))
    for at, timer_id in armed:
        service.arm(timer_id, at)
        assert len(service) <= 4
    await asyncio.wait_for(done.wait(), 10)
    service.stop()
    assert max(sizes) <= 4
    assert fired == [timer_id for _, timer_id in sorted(stored + armed)]  # each once, in fire order


async def test_a_window_the_store_fails_to_read_again_is_tried_again_and_its_timers_fire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A takeover reads the window again on the loop; a store that fails then (a bounded wait ran out) must
    not leave the window empty for good."""
    monkeypatch.setattr(limits, "store_retry_delay_max_s", 0.01)
    failures = [StoreError("PostgreSQL: LockNotAvailable"), StoreError("PostgreSQL: QueryCanceled")]
    stored = [Timer(1, NOW - 10, TimerKind.SLEEP, "inv_a"), Timer(2, NOW - 5, TimerKind.SLEEP, "inv_b")]

    def scan(after: tuple[int, int] | None, limit: int) -> list[Timer]:
        if failures:
            raise failures.pop(0)
        return stored[:limit]

    fired: list[int] = []
    done = asyncio.Event()

    def submit(record: Record) -> None:
        assert isinstance(record, TimerFired)
        fired.append(record.timer_id)
        if len(fired) == len(stored):
            done.set()

    service = TimerService(ManualClock(NOW), submit, scan)
    service.reload()  # fails twice, then reads
    await asyncio.wait_for(done.wait(), 10)
    service.stop()
    assert fired == [1, 2] and not failures
