"""A deterministic asyncio event loop on virtual time.

``VirtualEventLoop.time()`` returns virtual seconds (starting at 0). When no callback is ready, the loop
does not sleep: it jumps virtual time to the next scheduled callback ("autojump", like trio's
``MockClock(autojump_threshold=0)``). There is no I/O and no thread: ``run_in_executor`` (and so
``asyncio.to_thread`` and a plain-``def`` ``ctx.run`` action) runs the function inline, at once, so a run
is a pure function of its inputs.

Every task records the *owner* (a :data:`OWNER` context variable, inherited by the tasks and callbacks it
creates): the simulator tags an engine incarnation's tasks so that a crash can cancel exactly them, as a
process death would, while the simulated clients live on.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

OWNER: contextvars.ContextVar[int] = contextvars.ContextVar("unbroken_sim_owner", default=0)
"""Who created the current task: 0 = the simulator itself, n > 0 = engine incarnation n."""

START_MS = 1_700_000_000_000  # virtual time 0 is this wall-clock instant (engine clock)


class SimStuck(RuntimeError):
    """The loop cannot make progress: nothing ready and nothing scheduled, or no virtual time passes."""


class _VirtualSelector:
    """Stands in for a selector: never any I/O; a positive timeout means 'jump virtual time'."""

    def __init__(self, loop: VirtualEventLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        return self._loop._advance(timeout)

    def close(self) -> None:
        pass


class VirtualEventLoop(asyncio.BaseEventLoop):
    """Single-threaded, I/O-less event loop whose clock only moves when everything is waiting."""

    def __init__(self, stall_limit: int = 500_000) -> None:
        super().__init__()
        self._vtime = 0.0
        self._selector = _VirtualSelector(self)
        self.stall_limit = stall_limit  # loop iterations without virtual time passing = livelock
        self._stalled = 0
        self._task_seq = itertools.count(1)
        self._owned: dict[int, tuple[asyncio.Task[Any], int]] = {}
        self.set_task_factory(self._make_task)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------- time
    def time(self) -> float:
        return self._vtime

    def _advance(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise SimStuck("deadlock: no callback is ready and none is scheduled")
        if timeout > 0:
            scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
            when = scheduled[0].when() if scheduled else self._vtime + timeout
            self._vtime = max(self._vtime, min(when, self._vtime + timeout))
            self._stalled = 0
        else:
            self._stalled += 1
            if self._stalled > self.stall_limit:
                raise SimStuck(f"livelock: {self.stall_limit} loop iterations without virtual time passing")
        return []

    # -------------------------------------------------------------------------------- no I/O, no threads
    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        """Run ``func`` now, inline (deterministic); the future is already done."""
        fut = self.create_future()
        try:
            fut.set_result(func(*args))
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        return fut

    # ------------------------------------------------------------------------------------------ tasks
    def _make_task(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        owner = context.get(OWNER, 0) if context is not None else OWNER.get()
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, context=context)
        if owner:
            seq = next(self._task_seq)
            self._owned[seq] = (task, owner)
            task.add_done_callback(lambda _t: self._owned.pop(seq, None))
        return task

    def cancel_owned_by(self, owner: int) -> int:
        """Cancel every live task created by ``owner`` (in creation order); returns how many."""
        victims = [task for task, who in self._owned.values() if who == owner and not task.done()]
        for task in victims:
            task.cancel()
        return len(victims)


class LoopClock:
    """The engine's clock (``runtime.clock.Clock``) reading the loop's virtual time, in integer ms."""

    def __init__(self, loop: VirtualEventLoop, start_ms: int = START_MS) -> None:
        self._loop = loop
        self.start_ms = start_ms

    def now_ms(self) -> int:
        return self.start_ms + round(self._loop.time() * 1000)
