"""What every invocation of a test engine waits on, for virtual time: the clock may jump to the next timer
only when nothing can make progress without time passing.

:class:`TrackingTransport` wraps the in-process transport and watches each attempt: which completion ids
its commands took (a sleep's is a timer, a call's is another invocation, a promise's or an awakeable's is
the outside world), what its session awaits, and how it ended (suspended on what, failed, returned). An
invocation blocks the jump while it computes, runs a ``ctx.run`` action, or waits on something only the
test can give (an awakeable, a promise, a named signal): jumping then would fire a timeout the test meant
to race. A call waits on its callee, which is judged on its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from unbroken.core import journal as j
from unbroken.protocol.transport import AttemptSink, AttemptStart
from unbroken.sdk.attempt import Attempt
from unbroken.sdk.local import LocalTransport

# Commands whose completion comes from inside the engine: a timer, or another invocation.
_TIMER = "timer"
_INTERNAL = "internal"
_OUTSIDE = "outside"


def _kind(command: j.Entry) -> str:
    if isinstance(command, j.SleepCommand):
        return _TIMER
    if isinstance(
        command,
        j.CallCommand
        | j.OneWayCallCommand
        | j.AttachInvocationCommand
        | j.GetInvocationOutputCommand
        | j.GetLazyStateCommand
        | j.GetLazyStateKeysCommand
        | j.RunCommand,
    ):
        return _INTERNAL  # a run's result is the engine's once proposed; while it runs the attempt is busy
    return _OUTSIDE


def _completion_ids(command: j.Entry) -> list[int]:
    ids = []
    for name in ("completion_id", "result_completion_id", "invocation_id_completion_id"):
        value = getattr(command, name, None)
        if isinstance(value, int) and value:
            ids.append(value)
    return ids


@dataclass
class _Attempt:
    session: Attempt | None = None
    kinds: dict[int, str] = field(default_factory=dict)  # completion id -> _TIMER / _INTERNAL / _OUTSIDE
    suspended_on: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    ended: bool = False

    def learn(self, command: j.Entry) -> None:
        kind = _kind(command)
        for cid in _completion_ids(command):
            self.kinds[cid] = kind

    def waits_only_on_engine(self, cids: tuple[int, ...], signals: tuple[int, ...]) -> bool:
        if any(idx != j.CANCEL_SIGNAL for idx in signals):
            return False  # an awakeable or a named signal: the outside world completes it
        return all(self.kinds.get(cid, _OUTSIDE) != _OUTSIDE for cid in cids)


class _WatchingSink:
    """The attempt's sink, passing everything on, noting commands and how the attempt ended."""

    __slots__ = ("inner", "attempt")

    def __init__(self, inner: AttemptSink, attempt: _Attempt) -> None:
        self.inner = inner
        self.attempt = attempt

    def allocated(self, awakeables: int) -> None:
        self.inner.allocated(awakeables)

    def command(self, command: j.Command, awakeables: int | None = None) -> None:
        self.attempt.learn(command)
        self.inner.command(command, awakeables)

    def propose_run(self, completion_id: int, result: j.Result, awakeables: int | None = None) -> None:
        self.inner.propose_run(completion_id, result, awakeables)

    def suspend(
        self,
        waiting_completions: tuple[int, ...],
        waiting_signals: tuple[int, ...],
        awakeables: int | None = None,
    ) -> None:
        self.attempt.suspended_on = (waiting_completions, waiting_signals)
        self.inner.suspend(waiting_completions, waiting_signals, awakeables)

    def fail(
        self, code: int, message: str, next_retry_delay_ms: int | None = None, pause: bool = False
    ) -> None:
        self.inner.fail(code, message, next_retry_delay_ms, pause)

    def ended(self) -> None:
        self.attempt.ended = True
        self.inner.ended()


class _ReplayEveryStep:
    """``always_replay``: each result the engine delivers ends the attempt instead (it suspends on that very
    result, which the engine holds already, so it restarts at once): every step after the first runs as a
    replay of the journal, which is what flushes out a handler that does not replay the same way."""

    __slots__ = ("session",)

    def __init__(self, session: Attempt) -> None:
        self.session = session

    def notify(self, notification: j.Notification) -> None:
        session = self.session
        if session.ended or notification.signal_name or notification.signal_idx == j.CANCEL_SIGNAL:
            session.notify(notification)  # a named signal or a cancellation: delivered as usual
            return
        cid, idx = notification.completion_id, notification.signal_idx
        session.sink.suspend((cid,) if cid else (), (idx,) if idx else ())
        session.end()

    def abort(self) -> None:
        self.session.abort()


class TrackingTransport:
    """The in-process transport of a test engine, remembering the latest attempt of every invocation."""

    def __init__(self, inner: LocalTransport, always_replay: bool = False) -> None:
        self.inner = inner
        self.always_replay = always_replay
        self.attempts: dict[str, _Attempt] = {}

    def start(self, start: AttemptStart, sink: AttemptSink) -> Attempt | _ReplayEveryStep:
        attempt = _Attempt()
        for entry in start.journal:
            attempt.learn(entry)
        self.attempts[start.invocation_id] = attempt
        session = self.inner.start(start, _WatchingSink(sink, attempt))
        attempt.session = session
        return _ReplayEveryStep(session) if self.always_replay else session

    def forget(self) -> None:
        """After a crash: the attempts died with the node (recovery starts new ones)."""
        self.attempts.clear()

    def blocker(self, outside_ok: bool = False) -> str | None:
        """Why virtual time may not jump now (None: every invocation waits on a timer or on another one).
        ``outside_ok``: an invocation waiting on the outside world (an awakeable, a promise) is idle too."""
        done = [i for i, a in self.attempts.items() if a.ended and a.suspended_on is None]
        for invocation_id in done:  # returned or failed: nothing to wait on (a retry starts a new attempt)
            del self.attempts[invocation_id]
        for invocation_id, attempt in self.attempts.items():
            why = _blocker(attempt)
            if why is not None and not (outside_ok and why == _WAITS_OUTSIDE):
                return f"{invocation_id} {why}"
        return None


_WAITS_OUTSIDE = "waits on the outside world"


def _blocker(attempt: _Attempt) -> str | None:
    session = attempt.session
    if attempt.ended or (session is not None and session.ended):
        if attempt.suspended_on is None:
            return None  # returned or failed: a retry is a timer, a pause waits for an operator
        waits = attempt.suspended_on
        return None if attempt.waits_only_on_engine(*waits) else _WAITS_OUTSIDE
    if session is None:
        return "is starting"
    if session.running_runs or session.run_tasks:
        return "runs a ctx.run action"
    if session.task is not None and session.task.done():
        return None
    awaited = list(session.awaiting)
    if not awaited:
        return "is computing"
    cids: list[int] = []
    signals: list[int] = []
    for kind, value in awaited:
        if kind == "c":
            if ("c", value) in session.results:
                return "is about to resume"
            cids.append(value)
        elif kind == "s":
            if ("s", value) in session.results:
                return "is about to resume"
            signals.append(value)
        else:
            return _WAITS_OUTSIDE  # a named signal
    if session.cancel_seq:
        return "is about to see a cancellation"
    if not attempt.waits_only_on_engine(tuple(cids), tuple(signals)):
        return _WAITS_OUTSIDE
    return None


async def settle(rounds: int = 3) -> None:
    """Let the callbacks ready now run (and the ones they schedule), a few rounds deep."""
    for _ in range(rounds):
        await asyncio.sleep(0)
