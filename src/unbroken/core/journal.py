"""Journal entries: the commands a handler issues and the notifications the engine answers with.

The shapes follow Restate's service protocol v5/v6 (``protocol.proto``): commands and notifications share
one index space per invocation, a command that needs an answer names a ``completion_id`` (allocated by the
SDK, starting at 1) and the engine answers with a :class:`Notification` carrying the same id. Signals
(cancel = 1, awakeables from 17) are notifications addressed by signal index instead.

Keeping the journal protocol-shaped is deliberate: in-process handlers and, later, remote deployments
speaking Restate's wire protocol journal the very same entries, so the state machine has one input format.

Entries are ``msgspec.Struct`` s with a tag so that storage encodes them compactly (msgpack) and fast.
"""

from __future__ import annotations

import msgspec


class Failure(msgspec.Struct, frozen=True, array_like=True):
    """A terminal failure: an HTTP-like ``code`` and a human ``message``."""

    code: int
    message: str
    metadata: dict[str, str] | None = None


class Header(msgspec.Struct, frozen=True, array_like=True):
    key: str
    value: str


# A result is one of: void (both None), a value, or a failure.
class Result(msgspec.Struct, frozen=True, array_like=True):
    value: bytes | None = None
    failure: Failure | None = None


VOID = Result()


# ---------------------------------------------------------------------------------------------- commands
class InputCommand(msgspec.Struct, frozen=True, tag="in", array_like=True):
    headers: list[Header]
    value: bytes


class OutputCommand(msgspec.Struct, frozen=True, tag="out", array_like=True):
    result: Result


class GetEagerStateCommand(msgspec.Struct, frozen=True, tag="gs", array_like=True):
    """State read served from the eager state map; the result is part of the command."""

    key: str
    value: bytes | None


class GetEagerStateKeysCommand(msgspec.Struct, frozen=True, tag="gk", array_like=True):
    keys: list[str]


class GetLazyStateCommand(msgspec.Struct, frozen=True, tag="gls", array_like=True):
    """State read of a lazy-state handler (its attempt started without the state): the engine answers with
    a ``get_lazy_state`` notification holding the value at the time it applied the command (void: unset)."""

    key: str
    completion_id: int
    name: str = ""


class GetLazyStateKeysCommand(msgspec.Struct, frozen=True, tag="glk", array_like=True):
    """The state's keys, for a lazy-state handler: answered by a ``get_lazy_state_keys`` notification whose
    value is the sorted keys (see :func:`encode_state_keys`)."""

    completion_id: int
    name: str = ""


class SetStateCommand(msgspec.Struct, frozen=True, tag="ss", array_like=True):
    key: str
    value: bytes


class ClearStateCommand(msgspec.Struct, frozen=True, tag="cs", array_like=True):
    key: str


class ClearAllStateCommand(msgspec.Struct, frozen=True, tag="ca", array_like=True):
    pass


class SleepCommand(msgspec.Struct, frozen=True, tag="sl", array_like=True):
    wake_up_time_ms: int
    completion_id: int
    name: str = ""


class CallCommand(msgspec.Struct, frozen=True, tag="ca1", array_like=True):
    service: str
    handler: str
    parameter: bytes
    headers: list[Header]
    key: str | None
    idempotency_key: str | None
    invocation_id_completion_id: int
    completion_id: int
    name: str = ""


class OneWayCallCommand(msgspec.Struct, frozen=True, tag="ow", array_like=True):
    service: str
    handler: str
    parameter: bytes
    invoke_time_ms: int  # 0 = now
    headers: list[Header]
    key: str | None
    idempotency_key: str | None
    invocation_id_completion_id: int
    name: str = ""


class RunCommand(msgspec.Struct, frozen=True, tag="run", array_like=True):
    completion_id: int
    name: str = ""


class GetPromiseCommand(msgspec.Struct, frozen=True, tag="gp", array_like=True):
    key: str
    completion_id: int


class PeekPromiseCommand(msgspec.Struct, frozen=True, tag="pp", array_like=True):
    key: str
    completion_id: int


class CompletePromiseCommand(msgspec.Struct, frozen=True, tag="cp", array_like=True):
    key: str
    completion: Result
    completion_id: int


class SendSignalCommand(msgspec.Struct, frozen=True, tag="sig", array_like=True):
    """Signal another invocation: ``idx`` 1 is CANCEL; awakeables are signals >= 17; a named signal
    (``ctx.resolve_signal``) has ``idx`` 0 and its ``signal_name``, as in the protocol's ``signal_id`` oneof."""

    target_invocation_id: str
    idx: int
    result: Result
    name: str = ""
    signal_name: str = ""  # last: entries journaled before it existed still decode


class CompleteAwakeableCommand(msgspec.Struct, frozen=True, tag="aw", array_like=True):
    awakeable_id: str
    result: Result
    name: str = ""


class AttachInvocationCommand(msgspec.Struct, frozen=True, tag="at", array_like=True):
    invocation_id: str
    completion_id: int
    name: str = ""


class GetInvocationOutputCommand(msgspec.Struct, frozen=True, tag="go", array_like=True):
    invocation_id: str
    completion_id: int
    name: str = ""


# ----------------------------------------------------------------------------------------- notifications
class Notification(msgspec.Struct, frozen=True, tag="n", array_like=True):
    """The engine's answer to a command (``completion_id`` > 0) or a signal (``signal_idx`` > 0).

    ``kind`` names what it completes (``sleep``, ``call``, ``call_id``, ``run``, ``promise``, ``signal``,
    ``attach``, ``output``, ``get_lazy_state``, ``get_lazy_state_keys``) for introspection only; matching
    is by id (or ``signal_name`` for named signals). ``invocation_id`` is set on ``call_id`` notifications.
    """

    kind: str
    completion_id: int
    signal_idx: int
    result: Result
    invocation_id: str | None = None
    signal_name: str = ""  # a named signal (signal_idx 0); last, so older entries still decode


Command = (
    InputCommand
    | OutputCommand
    | GetEagerStateCommand
    | GetEagerStateKeysCommand
    | GetLazyStateCommand
    | GetLazyStateKeysCommand
    | SetStateCommand
    | ClearStateCommand
    | ClearAllStateCommand
    | SleepCommand
    | CallCommand
    | OneWayCallCommand
    | RunCommand
    | GetPromiseCommand
    | PeekPromiseCommand
    | CompletePromiseCommand
    | SendSignalCommand
    | CompleteAwakeableCommand
    | AttachInvocationCommand
    | GetInvocationOutputCommand
)
Entry = Command | Notification

CANCEL_SIGNAL = 1
FIRST_AWAKEABLE_SIGNAL = 17

_ENTRY_NAMES: dict[type, str] = {
    InputCommand: "Input",
    OutputCommand: "Output",
    GetEagerStateCommand: "GetEagerState",
    GetEagerStateKeysCommand: "GetEagerStateKeys",
    GetLazyStateCommand: "GetLazyState",
    GetLazyStateKeysCommand: "GetLazyStateKeys",
    SetStateCommand: "SetState",
    ClearStateCommand: "ClearState",
    ClearAllStateCommand: "ClearAllState",
    SleepCommand: "Sleep",
    CallCommand: "Call",
    OneWayCallCommand: "OneWayCall",
    RunCommand: "Run",
    GetPromiseCommand: "GetPromise",
    PeekPromiseCommand: "PeekPromise",
    CompletePromiseCommand: "CompletePromise",
    SendSignalCommand: "SendSignal",
    CompleteAwakeableCommand: "CompleteAwakeable",
    AttachInvocationCommand: "AttachInvocation",
    GetInvocationOutputCommand: "GetInvocationOutput",
}


def entry_type_name(entry: Entry) -> str:
    """Restate's ``sys_journal.entry_type`` spelling, e.g. ``Command: Run`` or ``Notification: Sleep``."""
    if isinstance(entry, Notification):
        return f"Notification: {entry.kind.title().replace('_', '')}"
    return f"Command: {_ENTRY_NAMES[type(entry)]}"


def command_name(entry: Entry) -> str:
    """The short command name used in non-determinism messages."""
    if isinstance(entry, Notification):
        return f"Notification({entry.kind})"
    return _ENTRY_NAMES[type(entry)]


_encoder = msgspec.msgpack.Encoder()
_keys_decoder: msgspec.msgpack.Decoder[list[str]] = msgspec.msgpack.Decoder(list[str])


def encode_state_keys(keys: list[str]) -> bytes:
    """The value of a ``get_lazy_state_keys`` notification (the protocol's ``StateKeys``, as msgpack)."""
    return _encoder.encode(sorted(keys))


def decode_state_keys(data: bytes) -> list[str]:
    return _keys_decoder.decode(data)


_decoder: msgspec.msgpack.Decoder[Entry] = msgspec.msgpack.Decoder(Entry)


def encode_entry(entry: Entry) -> bytes:
    return _encoder.encode(entry)


def decode_entry(data: bytes) -> Entry:
    """Decode one stored entry; anything that is not a valid entry raises ``msgspec.DecodeError``."""
    try:
        return _decoder.decode(data)
    except UnicodeDecodeError as exc:  # msgspec reports invalid UTF-8 in a string this way
        raise msgspec.DecodeError(f"invalid UTF-8 in a string: {exc}") from None
