"""The invoker: runs attempts through the handler transport and turns what they say into records."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from unbroken.core import records as r
from unbroken.core.actions import Deliver, StartAttempt
from unbroken.core.durations import format_duration
from unbroken.core.ids import InvalidId, parse_awakeable_id
from unbroken.core.invocation import Invocation
from unbroken.core.journal import (
    FIRST_AWAKEABLE_SIGNAL,
    CallCommand,
    Command,
    CompleteAwakeableCommand,
    OneWayCallCommand,
    OutputCommand,
    Result,
    SendSignalCommand,
    command_name,
)
from unbroken.core.schema import Schemas
from unbroken.protocol.transport import AttemptHandle, AttemptStart, HandlerTransport
from unbroken.runtime.clock import Clock
from unbroken.runtime.faults import FaultPoints
from unbroken.runtime.processor import Processor
from unbroken.runtime.stats import ABORTED, COMPLETED, FAILED, SUSPENDED, EngineStats, TargetStats

log = logging.getLogger("unbroken.dev")

ABORT_TIMEOUT_MS_DEFAULT = 600_000  # for a target without a service schema (Restate's default: 10m)
ABORT_TIMEOUT_CODE = 500


@dataclass(slots=True)
class _Running:
    attempt: int
    handle: AttemptHandle | None
    active_at: float = 0.0  # loop time of the last message from the attempt or notification to it
    silence_s: float = 0.0  # inactivity timeout + abort timeout: silent this long, the attempt is aborted
    # how many awakeables the attempt allocated so far, as its SDK reports them (AttemptSink.allocated);
    # -1 until it reports (a remote SDK never does): resolves of its awakeables are then not checked
    awakeables: int = -1


class _Sink:
    """Records what one attempt says; the attempt number fences a stale attempt's records out.

    It also counts how the attempt ended (``runtime/stats.py``): a few attribute writes per attempt."""

    __slots__ = ("_invoker", "_id", "_attempt", "_stats", "_started_s", "_created_ms", "_outcome")

    def __init__(
        self,
        invoker: Invoker,
        invocation_id: str,
        attempt: int,
        stats: TargetStats,
        created_ms: int,
    ) -> None:
        self._invoker = invoker
        self._id = invocation_id
        self._attempt = attempt
        self._stats = stats
        self._started_s = time.perf_counter()
        self._created_ms = created_ms
        self._outcome = ABORTED  # until the attempt says otherwise

    def allocated(self, awakeables: int) -> None:
        # Looked up, not held: the entry holds the attempt, which holds this sink (a cycle per attempt
        # would be left to the garbage collector: ~8% of a short call's instructions).
        entry = self._invoker.running.get(self._id)
        if entry is not None and entry.attempt == self._attempt:
            entry.awakeables = awakeables

    def command(self, command: Command, awakeables: int | None = None) -> None:
        # type() is, not isinstance(): a miss through msgspec's metaclass costs ~1k instructions a class, on
        # every command (commands are final structs: nothing subclasses them)
        if type(command) is CompleteAwakeableCommand or type(command) is SendSignalCommand:
            # the target's live count goes with it (records.JournalCommand)
            live = self._invoker.target_live_awakeables(command)
            record = r.JournalCommand(self._id, self._attempt, command, awakeables, live)
        else:
            if type(command) is OutputCommand:
                self._outcome = COMPLETED
            record = r.JournalCommand(self._id, self._attempt, command, awakeables)
        self._invoker.processor.submit(record)
        self._invoker.active(self._id, self._attempt)

    def propose_run(self, completion_id: int, result: Result, awakeables: int | None = None) -> None:
        self._invoker.processor.submit(
            r.ProposeRunCompletion(self._id, self._attempt, completion_id, result, awakeables)
        )
        self._invoker.active(self._id, self._attempt)

    def suspend(
        self,
        waiting_completions: tuple[int, ...],
        waiting_signals: tuple[int, ...],
        awakeables: int | None = None,
    ) -> None:
        self._outcome = SUSPENDED
        self._invoker.processor.submit(
            r.AttemptSuspended(self._id, self._attempt, waiting_completions, waiting_signals, awakeables)
        )

    def fail(
        self, code: int, message: str, next_retry_delay_ms: int | None = None, pause: bool = False
    ) -> None:
        self._outcome = FAILED
        self._invoker.processor.submit(
            r.AttemptFailed(self._id, self._attempt, code, message, next_retry_delay_ms, pause)
        )

    def ended(self) -> None:
        stats, outcome = self._stats, self._outcome
        stats.attempts[outcome] = stats.attempts.get(outcome, 0) + 1
        stats.attempt_s.observe(time.perf_counter() - self._started_s)
        if outcome is SUSPENDED:
            stats.suspensions += 1
        elif outcome is COMPLETED:
            stats.invocation_s.observe(max(0, self._invoker.clock.now_ms() - self._created_ms) / 1000)
        self._invoker.ended(self._id, self._attempt)


class _DevSink(_Sink):
    """Dev mode: every step an attempt takes is logged as it happens (``unbroken dev``). A failed attempt
    is not logged here: the engine logs each one once (WARNING, with the retry decision), in serve too."""

    __slots__ = ()

    def command(self, command: Command, awakeables: int | None = None) -> None:
        log.info("%s  %s", self._id, _describe(command))
        super().command(command, awakeables)

    def propose_run(self, completion_id: int, result: Result, awakeables: int | None = None) -> None:
        outcome = "ok" if result.failure is None else f"failed: {result.failure.message}"
        log.info("%s  run #%d %s", self._id, completion_id, outcome)
        super().propose_run(completion_id, result, awakeables)

    def suspend(
        self,
        waiting_completions: tuple[int, ...],
        waiting_signals: tuple[int, ...],
        awakeables: int | None = None,
    ) -> None:
        log.info(
            "%s  suspending (waiting on completions %s, signals %s)",
            self._id,
            waiting_completions,
            waiting_signals,
        )
        super().suspend(waiting_completions, waiting_signals, awakeables)


def _describe(command: Command) -> str:
    name = command_name(command)
    detail = getattr(command, "name", "") or getattr(command, "key", "") or ""
    if isinstance(command, CallCommand | OneWayCallCommand):
        detail = f"{command.service}/{command.key + '/' if command.key else ''}{command.handler}"
    return f"{name} {detail}".rstrip()


class Invoker:
    def __init__(
        self,
        transport: HandlerTransport,
        processor: Processor,
        clock: Clock,
        inactivity_timeout_ms: int,
        dev: bool = False,
        schemas: Callable[[], Schemas] | None = None,
        faults: FaultPoints | None = None,
        stats: EngineStats | None = None,
    ) -> None:
        self.sink_class = _DevSink if dev else _Sink
        self.stats = stats if stats is not None else EngineStats()
        self.transport = transport
        self.processor = processor
        self.clock = clock
        self.inactivity_timeout_ms = inactivity_timeout_ms
        self.schemas = schemas
        self.faults = faults if faults is not None else FaultPoints()
        self.running: dict[str, _Running] = {}
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None  # one timer for every running attempt
        # the live awakeable count of any invocation's running attempt: this invoker's own, unless the node
        # leads several partitions (then the one running it, see ``Node``)
        self.live_awakeables_of: Callable[[str], int] = self.live_awakeables

    def start(self, action: StartAttempt) -> None:
        inv = action.invocation
        previous = self.running.pop(inv.id, None)
        if previous is not None:
            if previous.handle is not None:
                previous.handle.abort()
        inactivity_ms, abort_ms = self._timeouts_ms(inv)
        start = AttemptStart(
            invocation_id=inv.id,
            attempt=inv.attempts,
            target=inv.target,
            service_kind=inv.service_kind,
            handler_kind=inv.handler_kind,
            journal=action.journal,
            state=action.state,
            random_seed=inv.random_seed,
            retries_since_progress=inv.retries_since_progress,
            ms_since_progress=max(0, self.clock.now_ms() - inv.last_progress_at_ms),
            inactivity_timeout_ms=inactivity_ms,
            idempotency_key=inv.idempotency_key,
            lazy_state=action.lazy_state,
            created_at_ms=inv.created_at_ms,
            deployment_id=inv.deployment_id,
        )
        self.faults.point("invoker.before_start")  # the attempt is committed as running, nothing runs it yet
        entry = _Running(inv.attempts, None)
        self.running[inv.id] = entry
        if self.sink_class is _DevSink:
            log.info(
                "%s  attempt %d of %s (%d journal entries)",
                inv.id,
                inv.attempts,
                inv.target,
                len(action.journal),
            )
        target = self.stats.target(inv.target.service, inv.target.handler)
        if inv.retries_since_progress:  # reset by every journaled command: the last attempt failed
            target.retries += 1
        sink = self.sink_class(self, inv.id, inv.attempts, target, inv.created_at_ms)
        entry.handle = self.transport.start(start, sink)
        if self.running.get(inv.id) is entry:  # not ended already (e.g. no such handler)
            entry.active_at = self._loop.time()
            entry.silence_s = (start.inactivity_timeout_ms + abort_ms) / 1000
            self._watch_until(entry.active_at + entry.silence_s)

    def _timeouts_ms(self, inv: Invocation) -> tuple[int, int]:
        """The handler's inactivity and abort timeouts, else its service's (both changeable at runtime by
        the admin API); a target without a schema gets the engine's inactivity timeout and Restate's abort
        default."""
        svc = self.schemas().service(inv.target.service) if self.schemas is not None else None
        if svc is None:
            return self.inactivity_timeout_ms, ABORT_TIMEOUT_MS_DEFAULT
        inactivity, abort = svc.inactivity_timeout_ms, svc.abort_timeout_ms
        handler = svc.handlers.get(inv.target.handler)
        if handler is not None:
            if handler.inactivity_timeout_ms is not None:
                inactivity = handler.inactivity_timeout_ms
            if handler.abort_timeout_ms is not None:
                abort = handler.abort_timeout_ms
        return inactivity, abort

    def deliver(self, action: Deliver) -> None:
        entry = self.running.get(action.invocation_id)
        if entry is not None and entry.attempt == action.attempt and entry.handle is not None:
            entry.active_at = self._loop.time()
            entry.handle.notify(action.notification)

    def live_awakeables(self, invocation_id: str) -> int:
        """How many awakeables the running attempt of ``invocation_id`` allocated so far (reported by its SDK
        in memory, before any id left it): 0 when none runs here, -1 when it does not report."""
        entry = self.running.get(invocation_id)
        return 0 if entry is None else entry.awakeables

    def target_live_awakeables(self, command: CompleteAwakeableCommand | SendSignalCommand) -> int:
        """The live awakeable count of the invocation a signalling command completes (0 for what is not an
        awakeable: a cancel, a named signal, an id the state machine refuses anyway)."""
        if isinstance(command, CompleteAwakeableCommand):
            try:
                target, _ = parse_awakeable_id(command.awakeable_id)
            except InvalidId:
                return 0
            return self.live_awakeables_of(str(target))
        if command.signal_name or command.idx < FIRST_AWAKEABLE_SIGNAL:
            return 0
        return self.live_awakeables_of(command.target_invocation_id)

    def active(self, invocation_id: str, attempt: int) -> None:
        entry = self.running.get(invocation_id)
        if entry is not None and entry.attempt == attempt:
            entry.active_at = self._loop.time()

    def _watch_until(self, deadline: float) -> None:
        """Make sure the watchdog looks at the attempts by ``deadline`` (loop time). One timer serves them
        all, armed for the earliest deadline: an attempt started after another has a later one, so starting
        an attempt arms nothing (a timer per attempt cost ~1% of a short call's instructions)."""
        if self._watchdog is not None:
            if self._watchdog.when() <= deadline:
                return
            self._watchdog.cancel()
        self._watchdog = self._loop.call_at(deadline, self._watch)

    def _watch(self) -> None:
        """Restate's inactivity and abort timeouts. After the inactivity timeout without a message either
        way, an attempt waiting on the engine suspends (the session does so by itself: it was given the same
        timeout); one that cannot (stuck in a ``ctx.run``, deadlocked) and stays silent for the abort
        timeout more is aborted and counts as a failed attempt: the retry policy decides what follows."""
        self._watchdog = None
        now = self._loop.time()
        silent = [(i, e) for i, e in self.running.items() if now - e.active_at >= e.silence_s]
        for invocation_id, entry in silent:
            self._abort_silent(invocation_id, entry)
        if self.running:
            self._watch_until(min(e.active_at + e.silence_s for e in self.running.values()))

    def _abort_silent(self, invocation_id: str, entry: _Running) -> None:
        del self.running[invocation_id]
        message = (
            f"[RT0001] attempt aborted: nothing to or from it for its inactivity timeout and then its abort "
            f"timeout ({format_duration(round(entry.silence_s * 1000))} in all), and it did not suspend "
            f"(stuck in a ctx.run?)"
        )
        self.processor.submit(
            r.AttemptFailed(invocation_id, entry.attempt, ABORT_TIMEOUT_CODE, message, None)
        )
        if entry.handle is not None:
            entry.handle.abort()  # its ctx.run tasks are cancelled: no side effect after this

    def abort(self, invocation_id: str) -> None:
        entry = self.running.pop(invocation_id, None)
        if entry is not None:
            if entry.handle is not None:
                entry.handle.abort()

    def ended(self, invocation_id: str, attempt: int) -> None:
        entry = self.running.get(invocation_id)
        if entry is not None and entry.attempt == attempt:
            del self.running[invocation_id]

    def abort_all(self) -> None:
        for invocation_id in list(self.running):
            self.abort(invocation_id)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
