"""Durable timers: the store holds them all, memory holds a bounded window of the earliest, this fires them.

A single ``loop.call_later`` handle covers the earliest timer; firing submits ``TimerFired`` records
(the state machine deletes the row and does the work, so a timer fired twice is harmless).

Memory holds at most ``limits.timers_in_memory_max`` timers, the earliest by ``(fire_at_ms, timer_id)``
(as Restate's ``num-timers-in-memory-limit``), so a million sleeping invocations cost storage, not memory.
``_horizon`` is the key of the last timer the window covers when storage may hold later ones: a timer
armed past it is left in storage, and once the window has fired empty the next one is read by a range
scan from there. Timer ids only grow, so the key of every timer committed after a scan is past the keys
the scan returned, or it is armed into the window.

A scan that fails on the store (``StoreError``: it cannot be reached, a bounded wait ran out) when the
window is read again (``reload``) or has fired empty is tried again ``limits.store_retry_delay_max_s``
later, as the batch loop retries a batch: the timers fire late, none is lost.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable

from unbroken.core import limits
from unbroken.core.records import Record, TimerFired
from unbroken.core.storage import StoreError, Timer
from unbroken.runtime.clock import Clock
from unbroken.runtime.faults import FaultPoints

log = logging.getLogger("unbroken.engine")
TimerKey = tuple[int, int]  # (fire_at_ms, timer_id): the order timers fire in
# Reads up to ``limit`` stored timers whose key is past ``after`` (all from the start if None), in key order.
TimerScan = Callable[[TimerKey | None, int], list[Timer]]


class TimerService:
    def __init__(
        self,
        clock: Clock,
        submit: Callable[[Record], None],
        scan: TimerScan | None = None,
        window_max: int | None = None,
        faults: FaultPoints | None = None,
    ) -> None:
        self._clock = clock
        self._submit = submit
        self._scan = scan
        self._window_max = window_max or limits.timers_in_memory_max
        assert self._window_max >= 2, "the window keeps half of itself when it overflows"
        self._heap: list[TimerKey] = []
        self._horizon: TimerKey | None = None  # None: every stored timer is in the window
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = 0
        self._retry: asyncio.TimerHandle | None = None  # a failed scan's next try
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        self._faults = faults if faults is not None else FaultPoints()

    def __len__(self) -> int:
        return len(self._heap)

    def load(self) -> None:
        """Read the earliest stored timers into the window (at start, and when it has fired empty)."""
        assert self._scan is not None, "a TimerService without a scan only holds what is armed"
        after = self._horizon
        rows = self._scan(after, self._window_max)
        self._horizon = (rows[-1].fire_at_ms, rows[-1].timer_id) if len(rows) == self._window_max else None
        for row in rows:
            heapq.heappush(self._heap, (row.fire_at_ms, row.timer_id))
        self._schedule()

    def reload(self) -> None:
        """Forget the window and read it again (the partitions led here changed); retried if the store fails."""
        self.reset()
        self._load_or_retry()

    def _load_or_retry(self) -> None:
        self._retry = None
        if self._stopped:
            return
        try:
            self.load()
        except StoreError as exc:
            log.warning("cannot read the timers (%s): trying again", exc)
            self._retry = self._loop.call_later(limits.store_retry_delay_max_s, self._load_or_retry)

    def arm(self, timer_id: int, fire_at_ms: int) -> None:
        key = (fire_at_ms, timer_id)
        if self._horizon is not None and key > self._horizon:
            return  # stored, and read by a later scan
        heapq.heappush(self._heap, key)
        if len(self._heap) > self._window_max:
            self._shrink()
        if self._handle is None or fire_at_ms < self._handle_at:
            self._schedule()

    def reset(self) -> None:
        """Forget every armed timer (the engine re-arms them from storage after an in-process recovery)."""
        self._heap.clear()
        self._horizon = None  # the next load() scans from the earliest stored timer
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def next_due_ms(self) -> int | None:
        """When the earliest armed timer is due (None: the window holds none). Storage may hold later ones
        only: the window always holds the earliest."""
        return self._heap[0][0] if self._heap else None

    def clock_moved(self) -> None:
        """The clock jumped (virtual time in tests): the handle's delay was computed from the old time."""
        if not self._stopped:
            self._schedule()

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
        if self._retry is not None:
            self._retry.cancel()

    def _shrink(self) -> None:
        """Keep the earliest half: one sort per ``window_max / 2`` arms, instead of an eviction per arm."""
        assert self._scan is not None, f"more than {self._window_max} timers and no storage to leave them in"
        keep = sorted(self._heap)[: self._window_max // 2]
        self._heap = keep  # a sorted list is a heap
        self._horizon = keep[-1]

    def _schedule(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if not self._heap or self._stopped:
            return
        at = self._heap[0][0]
        delay = max(0, at - self._clock.now_ms()) / 1000
        self._handle_at = at
        self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        now = self._clock.now_ms()
        while self._heap and self._heap[0][0] <= now:
            _, timer_id = heapq.heappop(self._heap)
            self._faults.point("timer.before_fire")  # due, but its TimerFired record is not submitted yet
            self._submit(TimerFired(timer_id))
        if not self._heap and self._horizon is not None and not self._stopped:
            self._load_or_retry()  # schedules
            return
        self._schedule()
