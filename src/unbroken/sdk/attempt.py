"""One attempt of a handler (:class:`Attempt`): drives its coroutine against its journal (the replay matcher).

Every ``ctx`` operation becomes a command. While the journal still holds commands from earlier attempts
(replay), each new command must match the recorded one at that position, and its result comes from the
journal; past the end, commands go to the engine and results come back as notifications. Completion ids
and signal indexes are allocated in program order, so a deterministic handler allocates the same ids on
every attempt. A mismatch is a :class:`NonDeterminismError` naming the entry.

Cancellation: the CANCEL signal is raised as ``TerminalError(409, "cancelled")`` at the first await whose
result was not journaled before the signal (decided by journal order, so replay raises it at the same
await as the live run did), and the in-flight calls are cancelled too. While a cancel is stored and the
handler has not seen it yet, no ``ctx.run`` action starts (a replayed one whose result is not journaled
included): its action is deferred until an await of its future after the cancel was seen. A ``ctx.run``
that fails once the invocation is cancelled is not retried (see ``InvocationContext._execute``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.protocol.transport import AttemptSink, AttemptStart
from unbroken.sdk.exceptions import AttemptEnded, NonDeterminismError, TerminalError

if TYPE_CHECKING:
    from unbroken.sdk.tracing import AttemptTrace

log = logging.getLogger("unbroken.sdk")

PENDING: Any = object()
Key = tuple[str, Any]  # ("c", completion_id) or ("s", signal_idx); ("n", name) for a named signal


def _identity(cmd: j.Entry) -> tuple[Any, ...]:
    """What must match between a journaled command and a replayed one (not values or times)."""
    match cmd:
        case j.GetEagerStateCommand() | j.GetLazyStateCommand() | j.SetStateCommand() | j.ClearStateCommand():
            return (type(cmd), cmd.key)
        case j.CallCommand() | j.OneWayCallCommand():
            return (type(cmd), cmd.service, cmd.handler, cmd.key)
        case j.RunCommand():
            return (type(cmd), cmd.name)
        case j.GetPromiseCommand() | j.PeekPromiseCommand() | j.CompletePromiseCommand():
            return (type(cmd), cmd.key)
        case j.SendSignalCommand():
            return (type(cmd), cmd.target_invocation_id, cmd.idx, cmd.signal_name)
        case j.AttachInvocationCommand() | j.GetInvocationOutputCommand():
            return (type(cmd), cmd.invocation_id)
        case _:
            return (type(cmd),)


class Attempt:
    """One attempt: the journal cursor, the results seen so far, the waiting coroutines."""

    def __init__(
        self,
        start: AttemptStart,
        sink: AttemptSink,
        loop: asyncio.AbstractEventLoop | None = None,
        dry_run: bool = False,
    ) -> None:
        self.start = start
        # A replay check (``unbroken replay-check``): the journal is replayed, no ctx.run action ever runs.
        self.dry_run = dry_run
        self.divergence: NonDeterminismError | None = None  # the first mismatch, as it was raised
        # Records that can carry it get the awakeable count (the engine refuses to complete an index past
        # it). No wrapper sink holding the session: that would be a reference cycle per attempt, left to the
        # garbage collector (it was ~2% of a short call's instructions).
        self.sink: AttemptSink = sink
        # Given by the transport: get_running_loop() makes a getpid() system call each time.
        self.loop = loop or asyncio.get_running_loop()
        self.replay: list[tuple[int, j.Entry]] = []
        self.replay_pos = 0
        self.results: dict[Key, tuple[int, j.Result]] = {}
        self.seq = 0
        self.cancel_seq = 0  # journal order of an unconsumed CANCEL signal, 0 = none
        self.cancelled = False  # a CANCEL signal was recorded (seen by the handler or not)
        # ctx.run actions not started because a cancel was pending: started when their future is awaited
        self.deferred_runs: dict[Key, Callable[[], None]] = {}
        self.run_names: dict[int, str] = {}  # completion id -> name of every ctx.run issued in this attempt
        self.awaited: set[Key] = (
            set()
        )  # keys some coroutine awaited (a ctx.run never awaited is warned about)
        self.next_completion_id = 1
        self.next_signal_idx = j.FIRST_AWAKEABLE_SIGNAL
        self.call_ids: dict[int, int] = {}  # result completion id -> invocation-id completion id
        self.wakers: dict[asyncio.Future[None], None] = {}  # ordered: coroutines resume in await order
        self.awaiting: dict[Key, int] = {}
        self.running_runs = 0
        self.run_tasks: dict[asyncio.Task[None], None] = {}  # ctx.run actions in flight (ordered)
        self.inactivity: asyncio.TimerHandle | None = None
        self.ended = False
        self.task: asyncio.Task[None] | None = None
        self.trace: AttemptTrace | None = None  # its spans, when tracing is on (``sdk/tracing.py``)
        self.journal_length = len(start.journal)  # grows with every live command and notification
        self.finished: asyncio.Event | None = (
            None  # made by ctx.request() (attempt_finished_event), set by end()
        )
        for index, entry in enumerate(start.journal):
            if type(entry) is j.Notification:
                self._record(entry)
            elif index > 0:
                self.replay.append((index, entry))
        sink.allocated(0)  # this SDK reports its awakeables: the engine checks resolves while it runs

    # ------------------------------------------------------------------------------- commands
    @property
    def replaying(self) -> bool:
        return self.replay_pos < len(self.replay)

    def command(self, cmd: j.Command) -> j.Command:
        """Issue a command; during replay, check it against the journal and return the journaled one."""
        if self.ended:
            raise AttemptEnded()
        if self.replay_pos < len(self.replay):
            index, expected = self.replay[self.replay_pos]
            self.replay_pos += 1
            if _identity(expected) != _identity(cmd):
                error = NonDeterminismError(index, _describe(expected), _describe(cmd))
                if self.divergence is None:
                    self.divergence = error
                raise error
            return expected  # type: ignore[return-value]
        too_long = self.journal_length >= limits.journal_entries_max
        # type() is, not isinstance(): a miss through msgspec's metaclass costs ~1k instructions per command
        is_output = type(cmd) is j.OutputCommand
        if too_long and not is_output:  # the output (the error saying so) still goes
            raise TerminalError(f"journal too long: more than {limits.journal_entries_max} entries", 500)
        check_journalable(cmd)
        if is_output:  # the handler returned: its attempt ends here
            self._warn_unawaited_runs()
        self.sink.command(cmd, self.awakeables)
        self.journal_length += 1
        self._reset_inactivity()
        return cmd

    def next_replayed(self) -> j.Entry | None:
        """The journaled command the next ``command`` call will be matched against (None: live)."""
        return self.replay[self.replay_pos][1] if self.replay_pos < len(self.replay) else None

    def new_completion_id(self) -> int:
        cid = self.next_completion_id
        self.next_completion_id += 1
        return cid

    @property
    def awakeables(self) -> int:
        """How many awakeables the handler allocated so far (replays allocate the same ones again)."""
        return self.next_signal_idx - j.FIRST_AWAKEABLE_SIGNAL

    def new_signal_idx(self) -> int:
        """A new awakeable's signal index, reported to the engine before its id can leave the attempt."""
        idx = self.next_signal_idx
        self.next_signal_idx += 1
        self.sink.allocated(self.next_signal_idx - j.FIRST_AWAKEABLE_SIGNAL)
        return idx

    # --------------------------------------------------------------------------- notifications
    def _record(self, n: j.Notification) -> None:
        self.seq += 1
        if n.signal_idx == j.CANCEL_SIGNAL:
            if not self.cancelled:
                self.cancel_seq = self.seq
                self.cancelled = True
            return
        key: Key = ("c", n.completion_id) if n.completion_id else ("s", n.signal_idx)
        if n.signal_name:
            key = ("n", n.signal_name)  # a named signal (ctx.signal)
        self.results.setdefault(key, (self.seq, n.result))

    def notify(self, n: j.Notification) -> None:
        """A notification stored after this attempt started (engine side, in journal order)."""
        if self.ended:
            return
        if self.trace is not None:
            self.trace.notified(n)  # the call span waiting on it ends
        self._record(n)
        self.journal_length += 1
        self._reset_inactivity()
        wakers, self.wakers = self.wakers, {}
        for w in wakers:
            if not w.done():
                w.set_result(None)

    def peek(self, key: Key) -> Any:
        """The result if it is known and not preempted by a cancel, PENDING if it must be waited for."""
        got = self.results.get(key)
        if got is not None and (not self.cancel_seq or got[0] < self.cancel_seq):
            return got[1]
        if self.cancel_seq and key != ("s", j.CANCEL_SIGNAL):
            cancel_seq, self.cancel_seq = self.cancel_seq, 0
            self._cancel_children(cancel_seq)
            raise TerminalError("cancelled", 409)
        return PENDING

    async def wait(self, key: Key) -> j.Result:
        self.awaited.add(key)
        while True:
            result = self.peek(key)
            if result is not PENDING:
                return result  # type: ignore[no-any-return]
            deferred = self.deferred_runs.pop(key, None)
            if deferred is not None:  # the cancel was seen (peek raised it earlier): the action may run now
                deferred()
            waker: asyncio.Future[None] = self.loop.create_future()
            self.wakers[waker] = None
            self.awaiting[key] = self.awaiting.get(key, 0) + 1
            self._arm_inactivity()
            try:
                await waker
            finally:
                left = self.awaiting[key] - 1
                if left:
                    self.awaiting[key] = left
                else:
                    del self.awaiting[key]

    def _cancel_children(self, cancel_seq: int) -> None:
        """Propagate a cancel to the calls still in flight (as Restate's SDKs do).

        "In flight" is decided by journal order — the call's id known and its result not, before the
        CANCEL signal — never by what this attempt happens to know: a replay knows the whole journal,
        and must issue the very same signals as the run it replays.
        """
        for result_cid, id_cid in sorted(self.call_ids.items()):
            done = self.results.get(("c", result_cid))
            if done is not None and done[0] < cancel_seq:
                continue
            got = self.results.get(("c", id_cid))
            if got is None or got[0] > cancel_seq or got[1].value is None:
                continue
            child = got[1].value.decode()
            self.command(j.SendSignalCommand(child, j.CANCEL_SIGNAL, j.Result()))

    # ----------------------------------------------------------------------------- suspension
    def _arm_inactivity(self) -> None:
        if self.inactivity is None and not self.ended:
            delay = self.start.inactivity_timeout_ms / 1000
            self.inactivity = self.loop.call_later(delay, self._inactive)

    def _reset_inactivity(self) -> None:
        if self.inactivity is not None:
            self.inactivity.cancel()
            self.inactivity = None
            if self.awaiting:
                self._arm_inactivity()

    def input_closed(self) -> None:
        """The engine will deliver nothing more (a Restate server ended its request stream, or sent a
        request/response body): suspend as soon as the handler only waits, no ``ctx.run`` action running."""
        if self.ended:
            return
        self.start = msgspec.structs.replace(self.start, inactivity_timeout_ms=0)
        if self.inactivity is not None:
            self.inactivity.cancel()
            self.inactivity = None
        if self.awaiting:
            self._arm_inactivity()

    def run_finished(self, _task: object = None) -> None:
        """A ``ctx.run`` action's task is done (its result proposed, or the attempt ended)."""
        self.running_runs -= 1
        if not self.running_runs and not self.start.inactivity_timeout_ms and self.awaiting:
            self._arm_inactivity()  # input closed: the wait the action held off can suspend now

    def _inactive(self) -> None:
        self.inactivity = None
        if self.ended or not self.awaiting or self.running_runs:
            # input closed (no timeout): the next wait or the last run's end arms it again, no polling
            if not self.ended and self.start.inactivity_timeout_ms:
                self._arm_inactivity()
            return
        completions = tuple(sorted(k[1] for k in self.awaiting if k[0] == "c"))
        signals = tuple(sorted({j.CANCEL_SIGNAL, *(k[1] for k in self.awaiting if k[0] == "s")}))
        self.sink.suspend(completions, signals, self.awakeables)
        self.end()

    # -------------------------------------------------------------------------------- ending
    def end(self) -> None:
        """Stop the attempt: nothing it does from now on reaches the engine."""
        if self.ended:
            return
        self.ended = True
        if self.inactivity is not None:
            self.inactivity.cancel()
            self.inactivity = None
        task = self.task
        current = asyncio.current_task(self.loop)
        if task is not None and task is not current and not task.done():
            task.cancel()
        for run in list(self.run_tasks):  # an ended attempt performs no more side effects
            if run is not current and not run.done():
                run.cancel()
        self.sink.ended()
        if self.finished is not None:
            self.finished.set()

    def abort(self) -> None:
        self.end()

    def _warn_unawaited_runs(self) -> None:
        """A ``ctx.run`` whose future nobody awaited may not have run at all when the handler returns (its
        action is a task the ending attempt cancels, or was deferred by a cancel): say so, naming the step."""
        for cid, name in self.run_names.items():
            key: Key = ("c", cid)
            if key in self.awaited or key in self.results:
                continue
            log.warning(
                "%s attempt %d: ctx.run %r was never awaited, so its action may not have run; await its "
                "future (`await ctx.run(...)`)",
                self.start.invocation_id,
                self.start.attempt,
                name,
            )

    def fail(self, code: int, message: str, next_retry_delay_ms: int | None = None) -> None:
        """End the attempt with a retryable error (the engine applies the retry policy)."""
        if self.ended:
            return
        status = code if type(code) is int and 0 <= code < 65536 else 500
        self.sink.fail(status, cap_message(message), next_retry_delay_ms)
        self.end()

    def pause(self, code: int, message: str) -> None:
        """End the attempt and pause the invocation: a programming error no retry can fix (an operator
        resumes it once the fix is deployed)."""
        if self.ended:
            return
        self.sink.fail(code, cap_message(message), None, pause=True)
        self.end()


def _text(value: object) -> str:
    """Any object as storable text: ``str()`` (``repr`` if that fails), lone surrogates escaped."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        text = object.__repr__(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def cap_message(message: object) -> str:
    """Error messages are stored and shown: valid UTF-8, cut past ``limits.failure_message_chars_max``."""
    text = _text(message)
    n = limits.failure_message_chars_max
    if len(text) <= n:
        return text
    return f"{text[:n]}... [cut: the message had {len(text)} characters]"


def safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return object.__repr__(value)


def failure(code: object, message: object, metadata: object = None) -> j.Failure:
    """A failure that can always be journaled: an int code (500 unless the one given is an int in
    0-65535), a capped UTF-8 message, string metadata (bounded by ``limits.failure_metadata_*``)."""
    status = code if type(code) is int and 0 <= code < 65536 else 500
    meta = None
    if isinstance(metadata, dict) and metadata:
        kept = list(metadata.items())[: limits.failure_metadata_entries_max]
        meta = {_text(k)[: limits.failure_metadata_key_chars_max]: cap_message(v) for k, v in kept}
    return j.Failure(status, cap_message(message), meta)


def check_journalable(entry: j.Entry) -> None:
    """Raise ``TerminalError(400)`` unless ``entry`` can be stored and read back within the entry limit.

    The store encodes entries inside the processor's transaction: one that cannot be encoded (a lone
    surrogate in a string, an int past 64 bits, a value of the wrong type from a custom serde) would be
    dropped there and leave its invocation waiting forever. Checking here fails the handler instead,
    at the line that produced it.
    """
    try:
        data = j.encode_entry(entry)
        j.decode_entry(data)
    except (msgspec.MsgspecError, ValueError, OverflowError, TypeError) as exc:
        raise TerminalError(f"cannot journal {_describe(entry)}: {exc}", 400) from None
    if len(data) > limits.journal_entry_bytes_max:
        raise TerminalError(
            f"journal entry too large: {_describe(entry)} is {len(data)} bytes, more than the limit of "
            f"{limits.journal_entry_bytes_max} bytes",
            400,
        )


def value_result(data: bytes, what: str) -> j.Result:
    """A serialized handler output or ``ctx.run`` value as a result; ``TerminalError`` (500) if it is over the
    journal entry limit (the user's code made it: retrying would make it again)."""
    if len(data) > limits.journal_entry_bytes_max:
        raise TerminalError(
            f"{what} is {len(data)} bytes, more than the journal entry limit of "
            f"{limits.journal_entry_bytes_max} bytes",
            500,
        )
    return j.Result(value=data)


def describe_entry(entry: j.Entry) -> str:
    """How an entry is named in a ``NonDeterminismError`` (``Run('charge')``, ``SetState('count')``)."""
    return _describe(entry)


def _describe(entry: j.Entry) -> str:
    name = j.command_name(entry)
    detail = {
        j.GetEagerStateCommand: "key",
        j.GetLazyStateCommand: "key",
        j.SetStateCommand: "key",
        j.ClearStateCommand: "key",
        j.RunCommand: "name",
        j.GetPromiseCommand: "key",
        j.PeekPromiseCommand: "key",
        j.CompletePromiseCommand: "key",
    }.get(type(entry))
    if detail is not None:
        return f"{name}({getattr(entry, detail)!r})"
    if isinstance(entry, j.CallCommand | j.OneWayCallCommand):
        target = (
            f"{entry.service}/{entry.key}/{entry.handler}"
            if entry.key
            else f"{entry.service}/{entry.handler}"
        )
        return f"{name}({target})"
    return name
