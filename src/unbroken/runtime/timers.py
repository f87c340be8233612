"""Durable timers in memory: the store holds them, this fires them at their time.

A single ``loop.call_later`` handle covers the earliest timer; firing submits ``TimerFired`` records
(the state machine deletes the row and does the work, so a timer fired twice is harmless).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

from unbroken.core.records import Record, TimerFired
from unbroken.runtime import faults
from unbroken.runtime.clock import Clock


class TimerService:
    def __init__(self, clock: Clock, submit: Callable[[Record], None]) -> None:
        self._clock = clock
        self._submit = submit
        self._heap: list[tuple[int, int]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = 0
        self._loop = asyncio.get_running_loop()
        self._stopped = False

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, timer_id: int, fire_at_ms: int) -> None:
        heapq.heappush(self._heap, (fire_at_ms, timer_id))
        if self._handle is None or fire_at_ms < self._handle_at:
            self._schedule()

    def reset(self) -> None:
        """Forget every armed timer (the engine re-arms them from storage after an in-process recovery)."""
        self._heap.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()

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
            faults.point("timer.before_fire")  # due, but its TimerFired record is not submitted yet
            self._submit(TimerFired(timer_id))
        self._schedule()
