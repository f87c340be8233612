"""Row codecs shared by every backend: the bytes a row holds are the same in memory, SQLite and later
PostgreSQL, so a backend differs only in where it puts them.

Decoding reports every malformed row as ``msgspec.DecodeError`` (msgspec raises ``UnicodeDecodeError`` for
invalid UTF-8), so callers handle one error type for a bad row.
"""

from __future__ import annotations

import hashlib

import msgspec

from unbroken.core import records
from unbroken.core.invocation import Invocation, Sink, check_invocation
from unbroken.core.journal import Entry, Notification, Result, decode_entry, encode_entry
from unbroken.core.records import Record
from unbroken.core.schema import ServiceOverride
from unbroken.core.storage import Promise

__all__ = [
    "decode_entry",
    "decode_invocation",
    "decode_override",
    "decode_message",
    "decode_promise",
    "encode_entry",
    "encode_invocation",
    "encode_message",
    "message_seq",
    "encode_override",
    "encode_promise",
    "signal_index",
]

_inv_encoder = msgspec.msgpack.Encoder()
_inv_decoder = msgspec.msgpack.Decoder(Invocation)


# The id, 38 of a blob's ~190 bytes, is the row's key already: the blob leaves it out and
# ``decode_invocation`` puts it back (a blob that has it is read as is). The target and timestamps stay
# in the blob: reading them back from SQLite columns cost ~1 us per record for 28 bytes.
def encode_invocation(inv: Invocation) -> bytes:
    invocation_id, inv.id = inv.id, ""  # blanked and restored in place: a copy costs ~1 us
    try:
        return _inv_encoder.encode(inv)
    finally:
        inv.id = invocation_id


def decode_invocation(data: bytes, invocation_id: str, *, check: bool = True) -> Invocation:
    """An invocation from its row's blob and id, its invariants checked unless ``check`` is False (reads
    that only look, such as the simulator's)."""
    try:
        inv = _inv_decoder.decode(data)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8 in a string: {exc}") from None
    if not inv.id:
        inv.id = invocation_id
    if check:
        check_invocation(inv)
    return inv


class _PromiseRow(msgspec.Struct, array_like=True):
    result: Result | None
    waiters: list[Sink]


_promise_encoder = msgspec.msgpack.Encoder()
_promise_row_decoder = msgspec.msgpack.Decoder(_PromiseRow)


def encode_promise(promise: Promise) -> bytes:
    return _promise_encoder.encode(_PromiseRow(promise.result, list(promise.waiters)))


def decode_promise(data: bytes) -> Promise:
    try:
        row = _promise_row_decoder.decode(data)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8 in a string: {exc}") from None
    return Promise(row.result, tuple(row.waiters))


def signal_index(entry: Entry) -> int:
    """The signal index a journal entry records (0: none), for the backends' signal index."""
    return entry.signal_idx if isinstance(entry, Notification) else 0


# Service overrides are JSON, fields by name: readable in the SQLite file, and a field added later decodes
# from rows written before it.
_override_decoder = msgspec.json.Decoder(ServiceOverride)


def encode_override(override: ServiceOverride) -> bytes:
    return msgspec.json.encode(override)


def decode_override(data: bytes) -> ServiceOverride:
    return _override_decoder.decode(data)


# ------------------------------------------------------------------------------------ partition inbox
# A record sent to another partition's inbox (``Transaction.send``): ``[type name, record]``. Only the
# records the state machine sends are accepted, so a row cannot make the receiver apply anything else.
_SENDABLE: dict[str, type[Record]] = {
    t.__name__: t
    for t in (
        records.InvokeCallee,
        records.Notify,
        records.AddSink,
        records.SendOutput,
        records.CancelInvocation,
        records.KillInvocation,
        records.ResolveSignal,
    )
}
_message_decoders = {name: msgspec.msgpack.Decoder(t) for name, t in _SENDABLE.items()}
_envelope = msgspec.msgpack.Decoder(tuple[str, msgspec.Raw])


def encode_message(record: Record) -> bytes:
    name = type(record).__name__
    if name not in _SENDABLE:
        raise TypeError(f"{name} is not a record one partition sends another")
    return _inv_encoder.encode((name, record))


def decode_message(data: bytes) -> Record:
    """The record of an inbox row; ``msgspec.DecodeError`` for anything else."""
    name, raw = _envelope.decode(data)
    decoder = _message_decoders.get(name)
    if decoder is None:
        raise msgspec.DecodeError(f"an inbox row holds a {name!r}, not a record partitions send")
    record: Record = decoder.decode(raw)
    return record


def message_seq(data: bytes) -> int:
    """The inbox row's ``source_seq``: a 63-bit digest of the message, so the same message sent again by the
    same partition (a batch applied again) is one row; distinct messages pending at once never are the same
    (each names its completion, signal or target)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 1
