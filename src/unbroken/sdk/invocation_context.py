"""The context implementation handlers receive: every method journals one command through its Attempt."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import random as _random
import traceback
import uuid as _uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final, TypeVar

from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core.ids import InvalidId, InvocationId, awakeable_id, parse_awakeable_id
from unbroken.core.schema import HandlerKind, ServiceKind
from unbroken.sdk import context as c
from unbroken.sdk.attempt import Attempt, check_journalable, failure, safe_repr, value_result
from unbroken.sdk.exceptions import AttemptEnded, TerminalError
from unbroken.sdk.futures import (
    CallFuture,
    DurableFuture,
    Handle,
    Ready,
    SleepFuture,
    raise_failure,
)
from unbroken.sdk.replay_logging import in_run_action
from unbroken.sdk.scoped import UnsupportedScope, fail_unsupported
from unbroken.sdk.serde import DefaultSerde, Serde
from unbroken.sdk.serde.select import pick_serde
from unbroken.sdk.service import HandlerDef, handler_of

T = TypeVar("T")

# Read through its class, an enum member costs ~170 ns on Python 3.11 (docs/architecture.md).
_SHARED: Final = HandlerKind.SHARED


class Promise(c.DurablePromise[T]):
    def __init__(self, ctx: InvocationContext, name: str, serde: Serde[T]) -> None:
        super().__init__(name, serde)
        self.ctx = ctx

    def value(self) -> c.RestateDurableFuture[T]:
        s = self.ctx.session
        cid = s.new_completion_id()
        s.command(j.GetPromiseCommand(self.name, cid))
        return DurableFuture(s, ("c", cid), self.ctx.decoder(self.serde))

    def peek(self) -> Awaitable[T | None]:
        s = self.ctx.session
        cid = s.new_completion_id()
        s.command(j.PeekPromiseCommand(self.name, cid))
        return DurableFuture(s, ("c", cid), self.ctx.decoder(self.serde))

    def _complete(self, result: j.Result) -> Awaitable[None]:
        s = self.ctx.session
        cid = s.new_completion_id()
        s.command(j.CompletePromiseCommand(self.name, result, cid))
        return DurableFuture(s, ("c", cid), raise_failure)

    def resolve(self, value: T) -> Awaitable[None]:
        return self._complete(j.Result(value=self.serde.serialize(value)))

    def reject(self, message: str, code: int = 500) -> Awaitable[None]:
        return self._complete(j.Result(failure=j.Failure(code, message)))


class AttemptFinished(c.AttemptFinishedEvent):
    """``ctx.request().attempt_finished_event``: set when this attempt ends, however it ends."""

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


class RunFailed(Exception):
    """A ``ctx.run`` action failed with retry budget left: the attempt ends and is retried."""

    def __init__(self, cause: BaseException, next_retry_delay_ms: int | None) -> None:
        super().__init__(f"ctx.run failed: {cause!r}")
        self.cause = cause
        self.next_retry_delay_ms = next_retry_delay_ms


def _retry_delay_ms(options: c.RunOptions[Any], attempt: int) -> int | None:
    if options.initial_retry_interval is None:
        return None
    factor = options.retry_interval_factor or 2.0
    delay = options.initial_retry_interval.total_seconds() * 1000 * factor ** max(0, attempt - 1)
    if options.max_retry_interval is not None:
        delay = min(delay, options.max_retry_interval.total_seconds() * 1000)
    return int(delay)


def unserializable_message(
    what: str,
    value: object,
    serde: Serde[Any],
    exc: BaseException,
    invocation_id: str,
    fix: str = "pass serde= to ctx.run",
) -> str:
    """Why a value the handler produced (``what``: a ``ctx.run`` step, the handler's output, a ``ctx.set``)
    cannot be journaled and what to change, for the log, describe and explain."""
    kind = type(value)
    where = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(exc, RecursionError):
        where += " (nested too deep to serialize)"
    return (
        f"{what} a value of type {where}, which its serde ({type(serde).__name__}) cannot serialize: use "
        "a value it can (for the default JSON serde: None, bool, int, float, str, list, dict, a dataclass, a "
        f"msgspec Struct or a pydantic model, not nested too deep) or {fix}. Paused, it does not run again by "
        f"itself: deploy the fix, then `unbroken invocations resume {invocation_id}` ({safe_repr(exc)})"
    )


def _delay_ms(delta: timedelta, what: str) -> int:
    # exact integer arithmetic, rounded up: float seconds * 1000 turns 1001 ms into 1000 (fires early)
    ms = -(-delta // timedelta(milliseconds=1))
    if ms > limits.delay_ms_max:
        raise TerminalError(
            f"{what} too long: {delta} is more than the limit of {limits.delay_ms_max} ms (10 years)", 400
        )
    return ms


def _failure_text(result: j.Result | None) -> str | None:
    failure = result.failure if result is not None else None
    return None if failure is None else f"[{failure.code}] {failure.message}"


def _headers(headers: dict[str, str] | None) -> list[j.Header]:
    return [j.Header(k, v) for k, v in headers.items()] if headers else []


class InvocationContext(c.WorkflowContext, c.WorkflowSharedContext):
    """Implements every context type; what a handler may call is checked against its kind."""

    def __init__(
        self,
        session: Attempt,
        hdef: HandlerDef,
        clock: Callable[[], int],
        fault_point: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.session = session
        self.hdef = hdef
        self.clock = clock  # the node's (milliseconds): virtual in the simulator
        self.fault_point = fault_point  # the node's fault points (runtime/faults.py), injected
        start = session.start
        self.state = dict(start.state) if start.state is not None else None
        # Lazy state (Restate's partial state): ``state`` holds only what this attempt wrote, ``absent`` what
        # it cleared; any other key is read through a command the engine answers (journaled: replay agrees).
        self.partial = start.lazy_state and self.state is not None
        self.absent: set[str] = set()
        self._random: _random.Random | None = None  # seeded on first use: most handlers never ask
        self.run_failure: RunFailed | None = None

    # ------------------------------------------------------------------------------- basics
    def decoder(self, serde: Serde[Any]) -> Callable[[j.Result], Any]:
        def decode(result: j.Result) -> Any:
            raise_failure(result)
            return None if result.value is None else serde.deserialize(result.value)

        return decode

    def request(self) -> c.Request:
        start = self.session.start
        first = start.journal[0]
        assert isinstance(first, j.InputCommand)
        headers = {h.key: h.value for h in first.headers}
        if self.session.finished is None:
            self.session.finished = asyncio.Event()
            if self.session.ended:
                self.session.finished.set()
        return c.Request(
            start.invocation_id,
            headers,
            headers,
            first.value,
            AttemptFinished(self.session.finished),
            idempotency_key=start.idempotency_key,
        )

    def scope(self, scope: str) -> c.ScopedContext:
        return UnsupportedScope(self.session, scope)

    def key(self) -> str:
        key = self.session.start.target.key
        if key is None:
            raise TerminalError("this handler belongs to a plain service: it has no key", 500)
        return key

    def random(self) -> _random.Random:
        if self._random is None:
            self._random = _random.Random(self.session.start.random_seed)
        return self._random

    def uuid(self) -> _uuid.UUID:
        return _uuid.UUID(int=self.random().getrandbits(128), version=4)

    def time(self) -> c.RestateDurableFuture[float]:
        return self.run("timestamp", lambda: self.clock() / 1000)  # the node's clock, injected

    # ------------------------------------------------------------------------------- state
    def _state_map(self, write: bool) -> dict[str, bytes]:
        if self.state is None:
            raise TerminalError("state is only available to virtual objects and workflows", 500)
        if write and self.hdef.kind is _SHARED:
            raise TerminalError("shared handlers cannot modify state", 500)
        return self.state

    def get(
        self,
        name: str,
        serde: Serde[T] = DefaultSerde(),
        type_hint: type[T] | None = None,
        entry_name: str | None = None,
    ) -> Any:
        state = self._state_map(write=False)
        if self._lazy_read(self.partial and name not in state and name not in self.absent):
            cid = self.session.new_completion_id()
            self.session.command(j.GetLazyStateCommand(name, cid))
            return DurableFuture(self.session, ("c", cid), self.decoder(pick_serde(serde, type_hint)))
        cmd = self.session.command(j.GetEagerStateCommand(name, state.get(name)))
        assert isinstance(cmd, j.GetEagerStateCommand)
        value = None if cmd.value is None else pick_serde(serde, type_hint).deserialize(cmd.value)
        return Ready(value)

    def state_keys(self, entry_name: str | None = None) -> Any:
        state = self._state_map(write=False)
        if self._lazy_read(self.partial):
            cid = self.session.new_completion_id()
            self.session.command(j.GetLazyStateKeysCommand(cid))
            return DurableFuture(self.session, ("c", cid), _state_keys)
        cmd = self.session.command(j.GetEagerStateKeysCommand(sorted(state)))
        assert isinstance(cmd, j.GetEagerStateKeysCommand)
        return Ready(list(cmd.keys))

    def _lazy_read(self, lazy_now: bool) -> bool:
        """Whether a state read goes through a lazy command. A replayed read follows its journal, so that an
        invocation started before ``enable_lazy_state`` changed replays as it ran (a lazy read takes a
        completion id, an eager one does not: every later id depends on it)."""
        journaled = self.session.next_replayed()
        if isinstance(journaled, j.GetLazyStateCommand | j.GetLazyStateKeysCommand):
            return True
        if isinstance(journaled, j.GetEagerStateCommand | j.GetEagerStateKeysCommand):
            return False
        return lazy_now

    def set(
        self, name: str, value: T, serde: Serde[T] = DefaultSerde(), entry_name: str | None = None
    ) -> None:
        state = self._state_map(write=True)
        data = self._state_bytes(name, value, pick_serde(serde, None))
        if len(data) > limits.state_value_bytes_max:
            raise TerminalError(
                f"state value too large: the value for key {name!r} is {len(data)} bytes, more than the limit "
                f"of {limits.state_value_bytes_max} bytes",
                400,
            )
        self.session.command(j.SetStateCommand(name, data))
        state[name] = data
        self.absent.discard(name)

    def _state_bytes(self, name: str, value: Any, serde: Serde[Any]) -> bytes:
        """``value`` serialized for ``ctx.set``. A value its serde cannot serialize (or nested too deep: a
        RecursionError) is a programming error no retry fixes: the invocation pauses at once rather than
        retrying for an hour with the object's key held; the attempt ends here."""
        try:
            return serde.serialize(value)
        except TerminalError:  # a custom serde's own verdict: the handler sees it
            raise
        except Exception as exc:
            what = f"ctx.set({name!r}) of {self.hdef.service}/{self.hdef.name} was given"
            fix = "pass serde= to ctx.set"
            self.session.pause(
                500, unserializable_message(what, value, serde, exc, self.session.start.invocation_id, fix)
            )
            raise AttemptEnded(f"paused: the value for state key {name!r} cannot be serialized") from None

    def clear(self, name: str, entry_name: str | None = None) -> None:
        state = self._state_map(write=True)
        self.session.command(j.ClearStateCommand(name))
        state.pop(name, None)
        self.absent.add(name)

    def clear_all(self, entry_name: str | None = None) -> None:
        state = self._state_map(write=True)
        self.session.command(j.ClearAllStateCommand())
        state.clear()
        self.partial = False  # the whole state is known now: empty
        self.absent.clear()

    # --------------------------------------------------------------------------- side effects
    def run(
        self,
        name: str,
        action: Any,
        serde: Serde[T] = DefaultSerde(),
        max_attempts: int | None = None,
        max_retry_duration: timedelta | None = None,
        type_hint: type[T] | None = None,
        args: tuple[Any, ...] | None = None,
    ) -> c.RestateDurableFuture[T]:
        options: c.RunOptions[T] = c.RunOptions(
            serde=serde, max_attempts=max_attempts, max_duration=max_retry_duration, type_hint=type_hint
        )
        return self.run_typed(name, action, options, *(args or ()))

    def run_typed(
        self, name: str, action: Any, options: c.RunOptions[T] = c.RunOptions(), /, *args: Any, **kwargs: Any
    ) -> c.RestateDurableFuture[T]:
        s = self.session
        cid = s.new_completion_id()
        s.command(j.RunCommand(cid, name))
        hint = options.type_hint
        if hint is None:
            try:  # eval_str like restate-sdk: string annotations (PEP 563) must give the real type
                hint = (
                    inspect.signature(action, eval_str=True).return_annotation if callable(action) else None
                )
            except Exception:  # builtins such as time.time have no signature; unresolvable names
                hint = None
            hint = None if hint is inspect.Signature.empty else hint
        serde = pick_serde(options.serde, hint)
        s.run_names[cid] = name
        if ("c", cid) not in s.results:
            # Issued before the handler saw a cancel (not a compensation): once cancelled, not retried.
            abandoned = not s.cancelled or bool(s.cancel_seq)

            def execute() -> None:
                if s.ended or s.dry_run:  # a replay check performs no side effect
                    return
                s.running_runs += 1
                task = s.loop.create_task(
                    self._execute(cid, name, action, args, kwargs, serde, options, abandoned)
                )
                task.add_done_callback(s.run_finished)
                s.run_tasks[task] = None
                task.add_done_callback(lambda t: s.run_tasks.pop(t, None))

            if s.cancel_seq:  # a cancel the handler has not seen yet: no new side effect before it does
                s.deferred_runs[("c", cid)] = execute
            else:
                execute()
        return DurableFuture(s, ("c", cid), self.decoder(serde))

    async def _execute(
        self,
        cid: int,
        name: str,
        action: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        serde: Serde[Any],
        options: c.RunOptions[Any],
        abandoned: bool,
    ) -> None:
        s = self.session
        in_run_action.set(True)  # this task's own context (see replay_logging)
        trace = s.trace
        span = None if trace is None else trace.child(f"run {name}", {"unbroken.run.name": name})
        if trace is not None and span is not None:
            trace.activate(span)  # this task's context: spans the action starts nest under the run's
        result: j.Result | None = None
        try:
            result = await self._perform(action, args, kwargs, cid, name, serde, options, abandoned)
        finally:
            if trace is not None and span is not None:
                trace.end_child(span, _failure_text(result))
        if result is not None and not s.ended:
            self.fault_point("sdk.run.before_propose")  # the action ran, its result is not durable yet
            s.sink.propose_run(cid, result, s.awakeables)

    async def _perform(
        self,
        action: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        cid: int,
        name: str,
        serde: Serde[Any],
        options: c.RunOptions[Any],
        abandoned: bool,
    ) -> j.Result | None:
        """Run a ``ctx.run`` action: its result to journal, or None if the attempt ends instead."""
        s = self.session
        try:
            if inspect.iscoroutinefunction(action):
                value = await action(*args, **kwargs)
            else:
                # in this task's context: the action's log lines name the invocation, its spans nest
                context = contextvars.copy_context()
                value = await s.loop.run_in_executor(None, lambda: context.run(action, *args, **kwargs))
                if inspect.isawaitable(value):
                    value = await value
        except TerminalError as exc:
            result: j.Result | None = j.Result(failure=failure(exc.status_code, exc.message, exc.metadata))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: B036 - retryable, unless the run's budget is spent or cancelled
            # BaseException too: a SystemExit/KeyboardInterrupt escaping this task would stop the event loop,
            # i.e. the whole engine; in-process it fails the step's attempt like any other error.
            result = self._run_failed(name, exc, options, abandoned)
        else:
            result = self._run_value(cid, name, value, serde)
        return result

    def _run_value(self, cid: int, name: str, value: Any, serde: Serde[Any]) -> j.Result | None:
        """The journaled result of a ``ctx.run`` that returned ``value``; None if the attempt ended instead.

        A value its serde cannot serialize is a programming error no retry fixes, and retrying would run
        the side effect again each time: the invocation is paused at once (resumed after a fixed deploy).
        """
        try:
            data = serde.serialize(value)
        except TerminalError as exc:  # a custom serde's own verdict: the step fails for good
            return j.Result(failure=failure(exc.status_code, exc.message, exc.metadata))
        except Exception as exc:
            what = f"ctx.run {name!r} returned"
            self.session.pause(
                500, unserializable_message(what, value, serde, exc, self.session.start.invocation_id)
            )
            return None
        try:
            result = value_result(data, f"the value ctx.run {name!r} returned")
            check_journalable(j.Notification("run", cid, 0, result))  # e.g. a custom serde returned a str
        except TerminalError as exc:
            return j.Result(failure=failure(exc.status_code, exc.message, exc.metadata))
        return result

    def _run_failed(
        self, name: str, exc: BaseException, options: c.RunOptions[Any], abandoned: bool
    ) -> j.Result | None:
        """A ``ctx.run`` action raised: end the attempt to retry it (None), or its terminal failure.

        A step the handler started before it saw a cancel is not retried once the invocation is cancelled
        (retrying would start its side effect again after the cancel, and replay the compensation); a
        compensation (issued after the handler saw the cancel) is retried as usual.
        """
        s = self.session
        if abandoned and s.cancelled:
            return j.Result(
                failure=failure(
                    409,
                    f"ctx.run {name!r} failed and was not retried, the invocation being cancelled: {safe_repr(exc)}",
                )
            )
        attempt = s.start.retries_since_progress + 1
        max_ms = options.max_duration or options.max_retry_duration
        spent = (options.max_attempts is not None and attempt >= options.max_attempts) or (
            max_ms is not None and s.start.ms_since_progress >= max_ms.total_seconds() * 1000
        )
        if spent:
            return j.Result(
                failure=failure(500, f"ctx.run {name!r} failed after {attempt} attempts: {safe_repr(exc)}")
            )
        delay = _retry_delay_ms(options, attempt)
        self.run_failure = RunFailed(exc, delay)
        trace = "".join(traceback.format_exception(exc, limit=-8))
        s.fail(500, f"ctx.run {name!r} failed: {safe_repr(exc)}\n{trace}", delay)
        return None

    def sleep(self, delta: timedelta, name: str | None = None) -> c.RestateDurableSleepFuture:
        s = self.session
        wake = self.clock() + _delay_ms(delta, "sleep")
        cid = s.new_completion_id()
        s.command(j.SleepCommand(wake, cid, name or ""))
        return SleepFuture(s, ("c", cid), lambda _r: None)

    # ---------------------------------------------------------------------------------- calls
    def _call(
        self,
        service: str,
        handler: str,
        key: str | None,
        parameter: bytes,
        idempotency_key: str | None,
        headers: dict[str, str] | None,
        decode: Callable[[j.Result], Any],
    ) -> CallFuture[Any]:
        s = self.session
        id_cid = s.new_completion_id()
        cid = s.new_completion_id()
        if s.trace is not None and not s.replaying:  # a live call: its span, and its callee's parent
            headers = s.trace.call_span(service, handler, key, headers, cid)
        s.command(
            j.CallCommand(service, handler, parameter, _headers(headers), key, idempotency_key, id_cid, cid)
        )
        s.call_ids[cid] = id_cid
        return CallFuture(s, ("c", cid), ("c", id_cid), decode)

    def _send(
        self,
        service: str,
        handler: str,
        key: str | None,
        parameter: bytes,
        delay: timedelta | None,
        idempotency_key: str | None,
        headers: dict[str, str] | None,
    ) -> Handle:
        s = self.session
        at = self.clock() + _delay_ms(delay, "send delay") if delay else 0
        id_cid = s.new_completion_id()
        if s.trace is not None and not s.replaying:
            headers = s.trace.send_span(service, handler, key, headers)
        s.command(
            j.OneWayCallCommand(
                service, handler, parameter, at, _headers(headers), key, idempotency_key, id_cid
            )
        )
        return Handle(s, ("c", id_cid))

    def _typed_call(self, tpe: Any, key: str | None, arg: Any, idem: str | None, headers: Any) -> Any:
        h = handler_of(tpe)
        return self._call(
            h.service, h.name, key, h.input_serde.serialize(arg), idem, headers, self.decoder(h.output_serde)
        )

    def _typed_send(
        self, tpe: Any, key: str | None, arg: Any, delay: Any, idem: str | None, headers: Any
    ) -> Handle:
        h = handler_of(tpe)
        return self._send(h.service, h.name, key, h.input_serde.serialize(arg), delay, idem, headers)

    def service_call(
        self, tpe: Any, arg: Any, idempotency_key: str | None = None, headers: Any = None
    ) -> Any:
        return self._typed_call(tpe, None, arg, idempotency_key, headers)

    def service_send(
        self,
        tpe: Any,
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: Any = None,
    ) -> Handle:
        return self._typed_send(tpe, None, arg, send_delay, idempotency_key, headers)

    def object_call(
        self, tpe: Any, key: str, arg: Any, idempotency_key: str | None = None, headers: Any = None
    ) -> Any:
        return self._typed_call(tpe, key, arg, idempotency_key, headers)

    def object_send(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: Any = None,
    ) -> Handle:
        return self._typed_send(tpe, key, arg, send_delay, idempotency_key, headers)

    def workflow_call(
        self, tpe: Any, key: str, arg: Any, idempotency_key: str | None = None, headers: Any = None
    ) -> Any:
        return self._typed_call(tpe, key, arg, idempotency_key, headers)

    def workflow_send(
        self,
        tpe: Any,
        key: str,
        arg: Any,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: Any = None,
    ) -> Handle:
        return self._typed_send(tpe, key, arg, send_delay, idempotency_key, headers)

    def generic_call(
        self,
        service: str,
        handler: str,
        arg: bytes,
        key: str | None = None,
        idempotency_key: str | None = None,
        headers: Any = None,
        scope: str | None = None,
        limit_key: str | None = None,
    ) -> Any:
        if scope is not None or limit_key is not None:
            fail_unsupported(self.session, f"ctx.generic_call({service}/{handler}, scope=, limit_key=)")
        return self._call(service, handler, key, arg, idempotency_key, headers, _raw)

    def generic_send(
        self,
        service: str,
        handler: str,
        arg: bytes,
        key: str | None = None,
        send_delay: timedelta | None = None,
        idempotency_key: str | None = None,
        headers: Any = None,
        scope: str | None = None,
        limit_key: str | None = None,
    ) -> Handle:
        if scope is not None or limit_key is not None:
            fail_unsupported(self.session, f"ctx.generic_send({service}/{handler}, scope=, limit_key=)")
        return self._send(service, handler, key, arg, send_delay, idempotency_key, headers)

    # ----------------------------------------------------------------------- awakeables & co
    def awakeable(self, serde: Serde[T] = DefaultSerde(), type_hint: type[T] | None = None) -> Any:
        s = self.session
        idx = s.new_signal_idx()
        aid = awakeable_id(InvocationId.parse(s.start.invocation_id), idx)
        return aid, DurableFuture(s, ("s", idx), self.decoder(pick_serde(serde, type_hint)))

    def resolve_awakeable(self, name: str, value: Any, serde: Serde[Any] = DefaultSerde()) -> None:
        self._check_awakeable(name)
        data = pick_serde(serde, None).serialize(value)
        self.session.command(j.CompleteAwakeableCommand(name, j.Result(value=data)))

    def reject_awakeable(self, name: str, failure_message: str, failure_code: int = 500) -> None:
        self._check_awakeable(name)
        failure = j.Failure(failure_code, failure_message)
        self.session.command(j.CompleteAwakeableCommand(name, j.Result(failure=failure)))

    @staticmethod
    def _check_awakeable(name: str) -> None:
        try:
            parse_awakeable_id(name)
        except InvalidId as exc:
            raise TerminalError(str(exc), 400) from None

    @staticmethod
    def _check_invocation_id(invocation_id: str) -> None:
        try:
            InvocationId.parse(invocation_id)
        except InvalidId as exc:
            raise TerminalError(str(exc), 400) from None

    def cancel_invocation(self, invocation_id: str) -> None:
        self._check_invocation_id(invocation_id)
        self.session.command(j.SendSignalCommand(invocation_id, j.CANCEL_SIGNAL, j.Result()))

    # ------------------------------------------------------------------------------ named signals
    def signal(self, name: str, serde: Serde[T] = DefaultSerde(), type_hint: type[T] | None = None) -> Any:
        """A signal of this invocation, by name: the first ``resolve_signal``/``reject_signal`` sent to it
        (before or after this call) completes it. Nothing is journaled until it arrives."""
        _check_signal_name(name)
        return DurableFuture(self.session, ("n", name), self.decoder(pick_serde(serde, type_hint)))

    def resolve_signal(
        self, invocation_id: str, name: str, value: Any, serde: Serde[Any] = DefaultSerde()
    ) -> None:
        self._check_invocation_id(invocation_id)
        _check_signal_name(name)
        data = pick_serde(serde, None).serialize(value)
        self.session.command(j.SendSignalCommand(invocation_id, 0, j.Result(value=data), signal_name=name))

    def reject_signal(
        self, invocation_id: str, name: str, failure_message: str, failure_code: int = 500
    ) -> None:
        self._check_invocation_id(invocation_id)
        _check_signal_name(name)
        result = j.Result(failure=failure(failure_code, failure_message))
        self.session.command(j.SendSignalCommand(invocation_id, 0, result, signal_name=name))

    def attach_invocation(
        self, invocation_id: str, serde: Serde[T] = DefaultSerde(), type_hint: type[T] | None = None
    ) -> Any:
        s = self.session
        cid = s.new_completion_id()
        s.command(j.AttachInvocationCommand(invocation_id, cid))
        return DurableFuture(s, ("c", cid), self.decoder(pick_serde(serde, type_hint)))

    def promise(
        self, name: str, serde: Serde[T] = DefaultSerde(), type_hint: type[T] | None = None
    ) -> Promise[T]:
        if self.hdef.service_kind is not ServiceKind.WORKFLOW:
            raise TerminalError("durable promises are only available to workflows", 500)
        return Promise(self, name, pick_serde(serde, type_hint))


def _state_keys(result: j.Result) -> list[str]:
    raise_failure(result)
    return j.decode_state_keys(result.value) if result.value is not None else []


def _check_signal_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise TerminalError(f"invalid signal name {name!r}: it must be a non-empty string", 400)


def _raw(result: j.Result) -> bytes:
    raise_failure(result)
    return result.value or b""
