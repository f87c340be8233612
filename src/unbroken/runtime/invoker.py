"""The invoker: runs attempts through the handler transport and turns what they say into records."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from unbroken.core import records as r
from unbroken.core.actions import Deliver, StartAttempt
from unbroken.core.journal import CallCommand, Command, OneWayCallCommand, Result, command_name
from unbroken.core.model import Invocation, Schemas
from unbroken.protocol.transport import AttemptHandle, AttemptStart, HandlerTransport
from unbroken.runtime import faults
from unbroken.runtime.clock import Clock
from unbroken.runtime.processor import Processor

log = logging.getLogger("unbroken.dev")


@dataclass(slots=True)
class _Running:
    attempt: int
    handle: AttemptHandle | None


class _Sink:
    """Records what one attempt says; the attempt number fences a stale attempt's records out."""

    __slots__ = ("_invoker", "_id", "_attempt")

    def __init__(self, invoker: Invoker, invocation_id: str, attempt: int) -> None:
        self._invoker = invoker
        self._id = invocation_id
        self._attempt = attempt

    def command(self, command: Command) -> None:
        self._invoker.processor.submit(r.JournalCommand(self._id, self._attempt, command))

    def propose_run(self, completion_id: int, result: Result) -> None:
        self._invoker.processor.submit(r.ProposeRunCompletion(self._id, self._attempt, completion_id, result))

    def suspend(self, waiting_completions: tuple[int, ...], waiting_signals: tuple[int, ...]) -> None:
        self._invoker.processor.submit(
            r.AttemptSuspended(self._id, self._attempt, waiting_completions, waiting_signals)
        )

    def fail(self, code: int, message: str, next_retry_delay_ms: int | None = None, pause: bool = False) -> None:
        self._invoker.processor.submit(
            r.AttemptFailed(self._id, self._attempt, code, message, next_retry_delay_ms, pause)
        )

    def ended(self) -> None:
        self._invoker.ended(self._id, self._attempt)


class _DevSink(_Sink):
    """Dev mode: every step an attempt takes is logged as it happens (``unbroken dev``). A failed attempt
    is not logged here: the engine logs each one once (WARNING, with the retry decision), in serve too."""

    __slots__ = ()

    def command(self, command: Command) -> None:
        log.info("%s  %s", self._id, _describe(command))
        super().command(command)

    def propose_run(self, completion_id: int, result: Result) -> None:
        outcome = "ok" if result.failure is None else f"failed: {result.failure.message}"
        log.info("%s  run #%d %s", self._id, completion_id, outcome)
        super().propose_run(completion_id, result)

    def suspend(self, waiting_completions: tuple[int, ...], waiting_signals: tuple[int, ...]) -> None:
        log.info("%s  suspending (waiting on completions %s, signals %s)", self._id, waiting_completions, waiting_signals)
        super().suspend(waiting_completions, waiting_signals)


def _describe(command: Command) -> str:
    name = command_name(command)
    detail = getattr(command, "name", "") or getattr(command, "key", "") or ""
    if isinstance(command, CallCommand | OneWayCallCommand):
        detail = f"{command.service}/{command.key + '/' if command.key else ''}{command.handler}"
    return f"{name} {detail}".rstrip()


class Invoker:
    def __init__(
        self, transport: HandlerTransport, processor: Processor, clock: Clock, inactivity_timeout_ms: int,
        dev: bool = False, schemas: Callable[[], Schemas] | None = None,
    ) -> None:
        self.sink_class = _DevSink if dev else _Sink
        self.transport = transport
        self.processor = processor
        self.clock = clock
        self.inactivity_timeout_ms = inactivity_timeout_ms
        self.schemas = schemas
        self.running: dict[str, _Running] = {}

    def start(self, action: StartAttempt) -> None:
        inv = action.invocation
        previous = self.running.pop(inv.id, None)
        if previous is not None and previous.handle is not None:
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
        )
        faults.point("invoker.before_start")  # the attempt is committed as running, nothing runs it yet
        entry = _Running(inv.attempts, None)
        self.running[inv.id] = entry
        if self.sink_class is _DevSink:
            log.info("%s  attempt %d of %s (%d journal entries)", inv.id, inv.attempts, inv.target, len(action.journal))
        entry.handle = self.transport.start(start, self.sink_class(self, inv.id, inv.attempts))

    def _inactivity_timeout_ms(self, inv: Invocation) -> int:
        """The handler's own timeout, else its service's (both changeable at runtime by the admin API)."""
        svc = self.schemas().service(inv.target.service) if self.schemas is not None else None
        if svc is None:
            return self.inactivity_timeout_ms
        handler = svc.handlers.get(inv.target.handler)
        if handler is not None and handler.inactivity_timeout_ms is not None:
            return handler.inactivity_timeout_ms
        return svc.inactivity_timeout_ms

    def deliver(self, action: Deliver) -> None:
        entry = self.running.get(action.invocation_id)
        if entry is not None and entry.attempt == action.attempt and entry.handle is not None:
            entry.handle.notify(action.notification)

    def abort(self, invocation_id: str) -> None:
        entry = self.running.pop(invocation_id, None)
        if entry is not None and entry.handle is not None:
            entry.handle.abort()

    def ended(self, invocation_id: str, attempt: int) -> None:
        entry = self.running.get(invocation_id)
        if entry is not None and entry.attempt == attempt:
            del self.running[invocation_id]

    def abort_all(self) -> None:
        for invocation_id in list(self.running):
            self.abort(invocation_id)
