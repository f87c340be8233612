"""Control messages: the ``StartMessage`` the engine opens an attempt with, and what an SDK may send
(commands, run proposals, suspension, error, end), decoded into typed values.

:func:`decode_sdk_frame` is the one entry point for an SDK's frames: whatever the bytes are, it returns a
message or raises :class:`~unbroken.core.errors.ProtocolViolation` (code 571) saying what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from unbroken.core import journal as j
from unbroken.core.ids import InvocationId
from unbroken.protocol import framing as f
from unbroken.protocol.entries import decode_command, read_result, write_failure
from unbroken.protocol.pb import Fields, Writer, violation
from unbroken.protocol.transport import AttemptStart


def encode_start(start: AttemptStart, version: int) -> bytes:
    """The ``StartMessage`` of an attempt that replays ``start.journal`` (``known_entries`` of them)."""
    w = Writer()
    w.blob(1, InvocationId.parse(start.invocation_id).to_bytes())
    w.text(2, start.invocation_id)
    w.uint(3, len(start.journal))
    if start.state is not None and not start.lazy_state:
        for key in sorted(start.state):
            entry = Writer()
            entry.blob(1, key.encode())
            entry.blob(2, start.state[key])
            w.message(4, entry)
    else:  # a plain service (no state) or a lazy-state handler: reads become commands the engine answers
        w.uint(5, 1)
    w.text_opt(6, start.target.key or "")
    w.uint_opt(7, start.retries_since_progress)
    w.uint_opt(8, start.ms_since_progress)
    if version >= 6:
        w.uint_opt(9, start.random_seed & ((1 << 64) - 1))
    return w.done()


@dataclass(frozen=True, slots=True)
class StartInfo:
    """A decoded ``StartMessage`` (tests, and an SDK-side reader)."""

    id: bytes
    debug_id: str
    known_entries: int
    state: dict[str, bytes]
    partial_state: bool
    key: str
    retry_count: int
    ms_since_progress: int
    random_seed: int


def decode_start(body: bytes) -> StartInfo:
    x = Fields(body, "StartMessage")
    state = {e.text(1): e.blob(2) for e in x.repeated_messages(4, "state_map")}
    return StartInfo(
        x.blob(1),
        x.text(2),
        x.uint(3),
        state,
        x.boolean(5),
        x.text(6),
        x.uint(7),
        x.uint(8, 64),
        x.uint(9, 64),
    )


# ---------------------------------------------------------------------------------- from the SDK
@dataclass(frozen=True, slots=True)
class NewCommand:
    command: j.Command


@dataclass(frozen=True, slots=True)
class ProposeRun:
    completion_id: int
    result: j.Result


@dataclass(frozen=True, slots=True)
class Suspend:
    completions: tuple[int, ...]
    signals: tuple[int, ...]
    named_signals: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str
    stacktrace: str
    next_retry_delay_ms: int | None
    related: str  # where it happened, as the SDK named it ("" if it did not)


@dataclass(frozen=True, slots=True)
class End:
    pass


SdkMessage = NewCommand | ProposeRun | Suspend | Error | End


def decode_sdk_frame(frame: f.Frame) -> SdkMessage:
    t = frame.type
    if f.FIRST_COMMAND <= t < f.FIRST_NOTIFICATION:
        if t == f.INPUT:
            raise violation("the SDK sent an InputCommand: only the engine writes it")
        return NewCommand(decode_command(t, frame.body))
    if t == f.PROPOSE_RUN_COMPLETION:
        x = Fields(frame.body, "ProposeRunCompletionMessage")
        if not x.uint(1):
            raise violation("ProposeRunCompletionMessage without a result_completion_id")
        return ProposeRun(x.uint(1), read_result(x, None, 14, 15, raw_value=True))
    if t == f.SUSPENSION:
        return _suspension(frame.body)
    if t == f.ERROR:
        return _error(frame.body)
    if t == f.END:
        return End()
    if t in (f.START, f.COMMAND_ACK) or f.FIRST_NOTIFICATION <= t < f.FIRST_CUSTOM:
        raise violation(f"the SDK sent message type 0x{t:04x}, which only the engine sends")
    raise violation(f"unknown message type 0x{t:04x}")


def _suspension(body: bytes) -> Suspend:
    x = Fields(body, "SuspensionMessage")
    if x.has(4):
        raise violation("SuspensionMessage with a future tree (protocol v7): this attempt speaks v5/v6")
    out = Suspend(tuple(x.repeated_uint32(1)), tuple(x.repeated_uint32(2)), tuple(x.repeated_text(3)))
    if not (out.completions or out.signals or out.named_signals):
        raise violation("SuspensionMessage waiting on nothing (it would never resume)")
    return out


def _error(body: bytes) -> Error:
    x = Fields(body, "ErrorMessage")
    related = ""
    if x.has(4) or x.has(5):
        name = x.text(5)
        related = f"command #{x.uint(4)}" + (f" ({name})" if name else "")
    delay = x.uint(8, 64) if x.has(8) else None
    return Error(x.uint(1), x.text(2), x.text(3), delay, related)


def encode_error(error: Error) -> bytes:
    """An ``ErrorMessage`` (tests; the engine never sends one)."""
    w = Writer()
    w.uint(1, error.code)
    w.text_opt(2, error.message)
    w.text_opt(3, error.stacktrace)
    if error.next_retry_delay_ms is not None:
        w.uint(8, error.next_retry_delay_ms)
    return w.done()


def encode_propose_run(p: ProposeRun, version: int) -> bytes:
    """A ``ProposeRunCompletionMessage`` (tests; an SDK sends it)."""
    w = Writer()
    w.uint(1, p.completion_id)
    if p.result.failure is not None:
        write_failure(w, 15, p.result.failure, version)
    else:
        w.blob(14, p.result.value or b"")
    return w.done()


def encode_suspension(s: Suspend) -> bytes:
    w = Writer()
    w.packed(1, s.completions)
    w.packed(2, s.signals)
    for name in s.named_signals:
        w.text(3, name)
    return w.done()
