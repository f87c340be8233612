"""The invoker: runs attempts through the handler transport and turns what they say into records."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from unbroken.core import records as r
from unbroken.core.actions import Deliver, StartAttempt
from unbroken.core.durations import format_duration
from unbroken.core.invocation import Invocation
from unbroken.core.journal import CallCommand, Command, OneWayCallCommand, Result, command_name
from unbroken.core.schema import Schemas
from unbroken.protocol.transport import AttemptHandle, AttemptStart, HandlerTransport
from unbroken.runtime.clock import Clock
from unbroken.runtime.faults import FaultPoints
from unbroken.runtime.processor import Processor

log = logging.getLogger("unbroken.dev")

ABORT_TIMEOUT_MS_DEFAULT = 600_000  # for a target without a service schema (Restate's default: 10m)
ABORT_TIMEOUT_CODE = 500


@dataclass(slots=True)
class _Running:
    attempt: int
    handle: AttemptHandle | None
    active_at: float = 0.0  # loop time of the last message from the attempt or notification to it
    silence_s: float = 0.0  # inactivity timeout + abort timeout: silent this long, the attempt is aborted
    watchdog: asyncio.TimerHandle | None = None


class _Sink:
    """Records what one attempt says; the attempt number fences a stale attempt's records out."""

    __slots__ = ("_invoker", "_id", "_attempt")

    def __init__(self, invoker: Invoker, invocation_id: str, attempt: int) -> None:
        self._invoker = invoker
        self._id = invocation_id
        self._attempt = attempt

    def command(self, command: Command, awakeables: int | None = None) -> None:
        self._invoker.processor.submit(r.JournalCommand(self._id, self._attempt, command, awakeables))
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
        self._invoker.processor.submit(
            r.AttemptSuspended(self._id, self._attempt, waiting_completions, waiting_signals, awakeables)
        )

    def fail(
        self, code: int, message: str, next_retry_delay_ms: int | None = None, pause: bool = False
    ) -> None:
        self._invoker.processor.submit(
            r.AttemptFailed(self._id, self._attempt, code, message, next_retry_delay_ms, pause)
        )

    def ended(self) -> None:
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
    ) -> None:
        self.sink_class = _DevSink if dev else _Sink
        self.transport = transport
        self.processor = processor
        self.clock = clock
        self.inactivity_timeout_ms = inactivity_timeout_ms
        self.schemas = schemas
        self.faults = faults if faults is not None else FaultPoints()
        self.running: dict[str, _Running] = {}
        self._loop = asyncio.get_running_loop()

    def start(self, action: StartAttempt) -> None:
        inv = action.invocation
        previous = self.running.pop(inv.id, None)
        if previous is not None:
            _stop_watching(previous)
            if previous.handle is not None:
                previous.handle.abort()
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
            inactivity_timeout_ms=self._inactivity_timeout_ms(inv),
            idempotency_key=inv.idempotency_key,
            lazy_state=action.lazy_state,
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
        entry.handle = self.transport.start(start, self.sink_class(self, inv.id, inv.attempts))
        if self.running.get(inv.id) is entry:  # not ended already (e.g. no such handler)
            entry.active_at = self._loop.time()
            entry.silence_s = (start.inactivity_timeout_ms + self._abort_timeout_ms(inv)) / 1000
            entry.watchdog = self._loop.call_later(entry.silence_s, self._watch, inv.id, entry)

    def _inactivity_timeout_ms(self, inv: Invocation) -> int:
        """The handler's own timeout, else its service's (both changeable at runtime by the admin API)."""
        svc = self.schemas().service(inv.target.service) if self.schemas is not None else None
        if svc is None:
            return self.inactivity_timeout_ms
        handler = svc.handlers.get(inv.target.handler)
        if handler is not None and handler.inactivity_timeout_ms is not None:
            return handler.inactivity_timeout_ms
        return svc.inactivity_timeout_ms

    def _abort_timeout_ms(self, inv: Invocation) -> int:
        svc = self.schemas().service(inv.target.service) if self.schemas is not None else None
        if svc is None:
            return ABORT_TIMEOUT_MS_DEFAULT
        handler = svc.handlers.get(inv.target.handler)
        if handler is not None and handler.abort_timeout_ms is not None:
            return handler.abort_timeout_ms
        return svc.abort_timeout_ms

    def deliver(self, action: Deliver) -> None:
        entry = self.running.get(action.invocation_id)
        if entry is not None and entry.attempt == action.attempt and entry.handle is not None:
            entry.active_at = self._loop.time()
            entry.handle.notify(action.notification)

    def active(self, invocation_id: str, attempt: int) -> None:
        entry = self.running.get(invocation_id)
        if entry is not None and entry.attempt == attempt:
            entry.active_at = self._loop.time()

    def _watch(self, invocation_id: str, entry: _Running) -> None:
        """Restate's inactivity and abort timeouts. After the inactivity timeout without a message either
        way, an attempt waiting on the engine suspends (the session does so by itself: it was given the same
        timeout); one that cannot (stuck in a ``ctx.run``, deadlocked) and stays silent for the abort
        timeout more is aborted and counts as a failed attempt: the retry policy decides what follows."""
        entry.watchdog = None
        if self.running.get(invocation_id) is not entry:
            return
        silent_s = self._loop.time() - entry.active_at
        if silent_s < entry.silence_s:  # it spoke or heard since: wait for the rest of the silence
            entry.watchdog = self._loop.call_later(
                entry.silence_s - silent_s, self._watch, invocation_id, entry
            )
            return
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
            _stop_watching(entry)
            if entry.handle is not None:
                entry.handle.abort()

    def ended(self, invocation_id: str, attempt: int) -> None:
        entry = self.running.get(invocation_id)
        if entry is not None and entry.attempt == attempt:
            del self.running[invocation_id]
            _stop_watching(entry)

    def abort_all(self) -> None:
        for invocation_id in list(self.running):
            self.abort(invocation_id)


def _stop_watching(entry: _Running) -> None:
    if entry.watchdog is not None:
        entry.watchdog.cancel()
        entry.watchdog = None
