"""Journal entries (``core/journal.py``) to and from Restate's command and notification messages (v5/v6).

The journal is already shaped like the protocol, so each command maps field for field. Where the two differ:

* state keys are bytes on the wire and ``str`` in the journal: a key that is not UTF-8 is refused;
* a call's ``key`` is an empty string on the wire for an unkeyed target, ``None`` in the journal;
* ``Notification.kind`` is ours: on the wire a completion's type is its command's type with bit 15 set, so
  encoding a notification needs the type of the command that allocated its completion id (``kinds``);
* attach and get-output by idempotency key or workflow target are refused (the journal holds ids only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from unbroken.core import journal as j
from unbroken.protocol import framing as f
from unbroken.protocol.pb import Fields, Writer, violation

# --------------------------------------------------------------------------------------------- nested


def write_failure(w: Writer, field: int, failure: j.Failure, version: int) -> None:
    inner = Writer()
    inner.uint(1, failure.code)
    inner.text_opt(2, failure.message)
    if version >= 6 and failure.metadata:
        for key, value in failure.metadata.items():
            meta = Writer()
            meta.text(1, key)
            meta.text(2, value)
            inner.message(3, meta)
    w.message(field, inner)


def read_failure(fields: Fields, field: int) -> j.Failure | None:
    inner = fields.message(field, "failure")
    if inner is None:
        return None
    metadata = {m.text(1): m.text(2) for m in inner.repeated_messages(3, "metadata")}
    return j.Failure(inner.uint(1), inner.text(2), metadata or None)


def write_value(w: Writer, field: int, value: bytes) -> None:
    inner = Writer()
    inner.blob_opt(1, value)
    w.message(field, inner)


def read_value(fields: Fields, field: int) -> bytes | None:
    inner = fields.message(field, "value")
    return None if inner is None else inner.blob(1)


def write_result(
    w: Writer, result: j.Result, void: int | None, value: int, failure: int, version: int
) -> None:
    """A ``oneof result`` at the given field numbers (``void`` None: the message has no void case)."""
    if result.failure is not None:
        write_failure(w, failure, result.failure, version)
    elif result.value is not None:
        write_value(w, value, result.value)
    elif void is not None:
        w.message(void, Writer())
    else:  # a value-or-failure oneof given void: send the empty value (what the SDK would read anyway)
        write_value(w, value, b"")


def read_result(
    fields: Fields, void: int | None, value: int, failure: int, raw_value: bool = False
) -> j.Result:
    """A ``oneof result``; ``raw_value``: the value case is plain ``bytes`` (ProposeRunCompletion), not a
    ``Value`` message."""
    present = [n for n in (void, value, failure) if n is not None and fields.has(n)]
    if len(present) > 1:
        raise violation(f"{fields.what}: more than one result case set (fields {present})")
    fail = read_failure(fields, failure)
    if fail is not None:
        return j.Result(failure=fail)
    data = (fields.blob(value) if fields.has(value) else None) if raw_value else read_value(fields, value)
    if data is not None:
        return j.Result(value=data)
    if void is None or not fields.has(void):
        raise violation(f"{fields.what}: no result")
    return j.VOID


def write_headers(w: Writer, field: int, headers: list[j.Header]) -> None:
    for header in headers:
        inner = Writer()
        inner.text(1, header.key)
        inner.text(2, header.value)
        w.message(field, inner)


def read_headers(fields: Fields, field: int) -> list[j.Header]:
    return [j.Header(h.text(1), h.text(2)) for h in fields.repeated_messages(field, "header")]


def write_state_keys(w: Writer, field: int, keys: list[str]) -> None:
    inner = Writer()
    for key in keys:
        inner.blob(1, key.encode())
    w.message(field, inner)


def read_state_keys(fields: Fields, field: int) -> list[str]:
    inner = fields.message(field, "state_keys")
    return [] if inner is None else _keys(inner.repeated_bytes(1), inner.what)


def _key(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise violation(f"{what}: a state key that is not UTF-8 (Unbroken's state keys are text)") from None


def _keys(raws: list[bytes], what: str) -> list[str]:
    return [_key(raw, what) for raw in raws]


def _target_id(fields: Fields) -> str:
    if fields.has(3) or fields.has(4):
        raise violation(
            f"{fields.what}: attaching by idempotency key or workflow target is not supported by Unbroken "
            "(attach by invocation id)"
        )
    if not fields.has(1):
        raise violation(f"{fields.what}: no target")
    return fields.text(1)


# ------------------------------------------------------------------------------------------- commands


def encode_command(cmd: j.Command, version: int) -> tuple[int, bytes]:
    """The message type and body of a journaled command (replayed to the SDK)."""
    w = Writer()
    msg_type, write = _WRITERS[type(cmd)]
    write(w, cmd, version)
    return msg_type, w.done()


def _w_input(w: Writer, c: j.InputCommand, v: int) -> None:
    write_headers(w, 1, c.headers)
    write_value(w, 14, c.value)


def _w_output(w: Writer, c: j.OutputCommand, v: int) -> None:
    write_result(w, c.result, None, 14, 15, v)


def _w_get_eager(w: Writer, c: j.GetEagerStateCommand, v: int) -> None:
    w.blob(1, c.key.encode())
    write_result(w, j.Result(value=c.value), 13, 14, 15, v)


def _w_get_eager_keys(w: Writer, c: j.GetEagerStateKeysCommand, v: int) -> None:
    write_state_keys(w, 14, c.keys)


def _w_get_lazy(w: Writer, c: j.GetLazyStateCommand, v: int) -> None:
    w.blob(1, c.key.encode())
    w.uint_opt(11, c.completion_id)
    w.text_opt(12, c.name)


def _w_completion_only(w: Writer, c: Any, v: int) -> None:
    w.uint_opt(11, c.completion_id)
    w.text_opt(12, getattr(c, "name", ""))


def _w_set_state(w: Writer, c: j.SetStateCommand, v: int) -> None:
    w.blob(1, c.key.encode())
    write_value(w, 3, c.value)


def _w_clear_state(w: Writer, c: j.ClearStateCommand, v: int) -> None:
    w.blob(1, c.key.encode())


def _w_nothing(w: Writer, c: Any, v: int) -> None:
    pass


def _w_sleep(w: Writer, c: j.SleepCommand, v: int) -> None:
    w.uint_opt(1, c.wake_up_time_ms)
    _w_completion_only(w, c, v)


def _w_call(w: Writer, c: j.CallCommand, v: int) -> None:
    w.text_opt(1, c.service)
    w.text_opt(2, c.handler)
    w.blob_opt(3, c.parameter)
    write_headers(w, 4, c.headers)
    w.text_opt(5, c.key or "")
    if c.idempotency_key is not None:
        w.text(6, c.idempotency_key)
    w.uint_opt(10, c.invocation_id_completion_id)
    _w_completion_only(w, c, v)


def _w_one_way(w: Writer, c: j.OneWayCallCommand, v: int) -> None:
    w.text_opt(1, c.service)
    w.text_opt(2, c.handler)
    w.blob_opt(3, c.parameter)
    w.uint_opt(4, c.invoke_time_ms)
    write_headers(w, 5, c.headers)
    w.text_opt(6, c.key or "")
    if c.idempotency_key is not None:
        w.text(7, c.idempotency_key)
    w.uint_opt(10, c.invocation_id_completion_id)
    w.text_opt(12, c.name)


def _w_keyed_promise(w: Writer, c: j.GetPromiseCommand | j.PeekPromiseCommand, v: int) -> None:
    w.text(1, c.key)
    w.uint_opt(11, c.completion_id)


def _w_complete_promise(w: Writer, c: j.CompletePromiseCommand, v: int) -> None:
    w.text(1, c.key)
    write_result(w, c.completion, None, 2, 3, v)
    w.uint_opt(11, c.completion_id)


def _w_send_signal(w: Writer, c: j.SendSignalCommand, v: int) -> None:
    w.text(1, c.target_invocation_id)
    if c.signal_name:
        w.text(3, c.signal_name)
    else:
        w.uint(2, c.idx)
    write_result(w, c.result, 4, 5, 6, v)
    w.text_opt(12, c.name)


def _w_complete_awakeable(w: Writer, c: j.CompleteAwakeableCommand, v: int) -> None:
    w.text(1, c.awakeable_id)
    write_result(w, c.result, None, 2, 3, v)
    w.text_opt(12, c.name)


def _w_by_id(w: Writer, c: j.AttachInvocationCommand | j.GetInvocationOutputCommand, v: int) -> None:
    w.text(1, c.invocation_id)
    _w_completion_only(w, c, v)


_WRITERS: dict[type, tuple[int, Callable[[Writer, Any, int], None]]] = {
    j.InputCommand: (f.INPUT, _w_input),
    j.OutputCommand: (f.OUTPUT, _w_output),
    j.GetLazyStateCommand: (f.GET_LAZY_STATE, _w_get_lazy),
    j.SetStateCommand: (f.SET_STATE, _w_set_state),
    j.ClearStateCommand: (f.CLEAR_STATE, _w_clear_state),
    j.ClearAllStateCommand: (f.CLEAR_ALL_STATE, _w_nothing),
    j.GetLazyStateKeysCommand: (f.GET_LAZY_STATE_KEYS, _w_completion_only),
    j.GetEagerStateCommand: (f.GET_EAGER_STATE, _w_get_eager),
    j.GetEagerStateKeysCommand: (f.GET_EAGER_STATE_KEYS, _w_get_eager_keys),
    j.GetPromiseCommand: (f.GET_PROMISE, _w_keyed_promise),
    j.PeekPromiseCommand: (f.PEEK_PROMISE, _w_keyed_promise),
    j.CompletePromiseCommand: (f.COMPLETE_PROMISE, _w_complete_promise),
    j.SleepCommand: (f.SLEEP, _w_sleep),
    j.CallCommand: (f.CALL, _w_call),
    j.OneWayCallCommand: (f.ONE_WAY_CALL, _w_one_way),
    j.SendSignalCommand: (f.SEND_SIGNAL, _w_send_signal),
    j.RunCommand: (f.RUN, _w_completion_only),
    j.AttachInvocationCommand: (f.ATTACH_INVOCATION, _w_by_id),
    j.GetInvocationOutputCommand: (f.GET_INVOCATION_OUTPUT, _w_by_id),
    j.CompleteAwakeableCommand: (f.COMPLETE_AWAKEABLE, _w_complete_awakeable),
}


def decode_command(msg_type: int, body: bytes) -> j.Command:
    """A command message into its journal entry; an unknown type or a malformed body is a violation."""
    reader = _READERS.get(msg_type)
    if reader is None:
        raise violation(f"unknown command message type 0x{msg_type:04x}")
    return reader(Fields(body, _NAMES.get(msg_type, f"0x{msg_type:04x}")))


def _opt_key(fields: Fields, field: int) -> str | None:
    key = fields.text(field)
    return key or None


def _idempotency_key(fields: Fields, field: int) -> str | None:
    key = fields.opt_text(field)
    if key == "":
        raise violation(f"{fields.what}: an idempotency key, when present, must not be empty")
    return key


def _r_call(x: Fields) -> j.CallCommand:
    return j.CallCommand(
        x.text(1),
        x.text(2),
        x.blob(3),
        read_headers(x, 4),
        _opt_key(x, 5),
        _idempotency_key(x, 6),
        x.uint(10),
        x.uint(11),
        x.text(12),
    )


def _r_one_way(x: Fields) -> j.OneWayCallCommand:
    return j.OneWayCallCommand(
        x.text(1),
        x.text(2),
        x.blob(3),
        x.uint(4, 64),
        read_headers(x, 5),
        _opt_key(x, 6),
        _idempotency_key(x, 7),
        x.uint(10),
        x.text(12),
    )


def _r_send_signal(x: Fields) -> j.SendSignalCommand:
    if x.has(3):
        return j.SendSignalCommand(x.text(1), 0, read_result(x, 4, 5, 6), x.text(12), x.text(3))
    if not x.has(2):
        raise violation(f"{x.what}: no signal id (idx or name)")
    return j.SendSignalCommand(x.text(1), x.uint(2), read_result(x, 4, 5, 6), x.text(12))


def _r_get_eager(x: Fields) -> j.GetEagerStateCommand:
    return j.GetEagerStateCommand(_key(x.blob(1), x.what), read_result(x, 13, 14, 15).value)


_READERS: dict[int, Callable[[Fields], j.Command]] = {
    f.INPUT: lambda x: j.InputCommand(read_headers(x, 1), read_value(x, 14) or b""),
    f.OUTPUT: lambda x: j.OutputCommand(read_result(x, None, 14, 15)),
    f.GET_LAZY_STATE: lambda x: j.GetLazyStateCommand(_key(x.blob(1), x.what), x.uint(11), x.text(12)),
    f.SET_STATE: lambda x: j.SetStateCommand(_key(x.blob(1), x.what), read_value(x, 3) or b""),
    f.CLEAR_STATE: lambda x: j.ClearStateCommand(_key(x.blob(1), x.what)),
    f.CLEAR_ALL_STATE: lambda x: j.ClearAllStateCommand(),
    f.GET_LAZY_STATE_KEYS: lambda x: j.GetLazyStateKeysCommand(x.uint(11), x.text(12)),
    f.GET_EAGER_STATE: _r_get_eager,
    f.GET_EAGER_STATE_KEYS: lambda x: j.GetEagerStateKeysCommand(read_state_keys(x, 14)),
    f.GET_PROMISE: lambda x: j.GetPromiseCommand(x.text(1), x.uint(11)),
    f.PEEK_PROMISE: lambda x: j.PeekPromiseCommand(x.text(1), x.uint(11)),
    f.COMPLETE_PROMISE: lambda x: j.CompletePromiseCommand(x.text(1), read_result(x, None, 2, 3), x.uint(11)),
    f.SLEEP: lambda x: j.SleepCommand(x.uint(1, 64), x.uint(11), x.text(12)),
    f.CALL: _r_call,
    f.ONE_WAY_CALL: _r_one_way,
    f.SEND_SIGNAL: _r_send_signal,
    f.RUN: lambda x: j.RunCommand(x.uint(11), x.text(12)),
    f.ATTACH_INVOCATION: lambda x: j.AttachInvocationCommand(_target_id(x), x.uint(11), x.text(12)),
    f.GET_INVOCATION_OUTPUT: lambda x: j.GetInvocationOutputCommand(_target_id(x), x.uint(11), x.text(12)),
    f.COMPLETE_AWAKEABLE: lambda x: j.CompleteAwakeableCommand(
        x.text(1), read_result(x, None, 2, 3), x.text(12)
    ),
}

_NAMES: dict[int, str] = {msg_type: cls.__name__ for cls, (msg_type, _) in _WRITERS.items()}


# -------------------------------------------------------------------------------------- notifications
# Notification kinds (``core/journal.Notification.kind``) and the message types answering them.
_KIND_TYPES: dict[str, int] = {
    "sleep": f.notification_type(f.SLEEP),
    "call": f.notification_type(f.CALL),
    "call_id": f.CALL_INVOCATION_ID,
    "run": f.notification_type(f.RUN),
    "promise": f.notification_type(f.GET_PROMISE),
    "attach": f.notification_type(f.ATTACH_INVOCATION),
    "output": f.notification_type(f.GET_INVOCATION_OUTPUT),
    "get_lazy_state": f.notification_type(f.GET_LAZY_STATE),
    "get_lazy_state_keys": f.notification_type(f.GET_LAZY_STATE_KEYS),
    "signal": f.SIGNAL,
}
_TYPE_KINDS: dict[int, str] = {t: k for k, t in _KIND_TYPES.items()}
_TYPE_KINDS[f.notification_type(f.PEEK_PROMISE)] = "promise"
_TYPE_KINDS[f.notification_type(f.COMPLETE_PROMISE)] = "promise"


def completion_type(cmd: j.Command) -> dict[int, int]:
    """The notification types ``cmd`` will be answered with, by completion id (empty: none)."""
    msg_type = _WRITERS[type(cmd)][0]
    out: dict[int, int] = {}
    completion_id = getattr(cmd, "completion_id", 0)
    if completion_id:
        out[completion_id] = f.notification_type(msg_type)
    id_completion = getattr(cmd, "invocation_id_completion_id", 0)
    if id_completion:
        out[id_completion] = f.CALL_INVOCATION_ID
    return out


def encode_notification(n: j.Notification, kinds: dict[int, int], version: int) -> tuple[int, bytes]:
    """A notification's message; ``kinds`` maps completion ids to types (see :func:`completion_type`)."""
    w = Writer()
    if n.completion_id:
        msg_type = kinds.get(n.completion_id) or _KIND_TYPES.get(n.kind, f.notification_type(f.RUN))
        w.uint(1, n.completion_id)
    else:
        msg_type = f.SIGNAL
        if n.signal_name:
            w.text(3, n.signal_name)
        else:
            w.uint(2, n.signal_idx)
    if msg_type == f.CALL_INVOCATION_ID and n.invocation_id is not None:
        w.text(16, n.invocation_id)
    elif msg_type == f.notification_type(f.GET_LAZY_STATE_KEYS) and n.result.value is not None:
        write_state_keys(w, 17, j.decode_state_keys(n.result.value))
    else:
        write_result(w, n.result, 4, 5, 6, version)
    return msg_type, w.done()


def decode_notification(msg_type: int, body: bytes) -> j.Notification:
    """A notification message (what the engine stored) into its journal entry."""
    kind = _TYPE_KINDS.get(msg_type)
    if kind is None:
        raise violation(f"unknown notification message type 0x{msg_type:04x}")
    x = Fields(body, f"notification 0x{msg_type:04x}")
    if x.has(16):
        inv = x.text(16)
        return j.Notification(kind, x.uint(1), 0, j.Result(value=inv.encode()), inv)
    if x.has(17):
        keys = read_state_keys(x, 17)
        return j.Notification(kind, x.uint(1), 0, j.Result(value=j.encode_state_keys(keys)))
    result = read_result(x, 4, 5, 6)
    if x.has(1):
        return j.Notification(kind, x.uint(1), 0, result)
    if x.has(3):
        return j.Notification(kind, 0, 0, result, None, x.text(3))
    if x.has(2):
        return j.Notification(kind, 0, x.uint(2), result)
    raise violation(f"{x.what}: no completion id or signal id")
