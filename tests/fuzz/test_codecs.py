"""Property tests of everything the engine decodes from bytes or text it did not produce itself.

* journal entries (``core.journal``): every entry type round-trips with arbitrary field values, and any
  byte string either decodes to an entry (which then round-trips) or raises a msgspec error: never
  another exception, never a crash;
* the invocation row and the promise row of ``storage/sqlite.py``, the same way;
* ids (``core.ids``) and durations (``core.durations``): arbitrary text parses or is rejected with the
  module's own error; whatever a client may send as ``?delay=`` within the limit can be formatted back.

Strategies are derived from the msgspec type information, so an entry type or field added later is
covered without touching this file.
"""

from __future__ import annotations

import base64
import typing
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.core.durations import (
    InvalidDuration,
    format_duration,
    format_rfc3339_ms,
    format_rfc3339_nanos,
    parse_delay_ms,
    parse_duration_ms,
)
from unbroken.core.errors import InvariantViolation
from unbroken.core.ids import InvalidId, InvocationId, awakeable_id, parse_awakeable_id
from unbroken.core.invocation import Invocation, Sink, check_invocation
from unbroken.core.txn import Promise
from unbroken.storage import codec as store

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # what msgpack can carry


def strategy_for(t: mi.Type) -> st.SearchStrategy[Any]:
    """Values of a msgspec type, over the whole range msgpack can encode."""
    match t:
        case mi.IntType():
            return st.integers(INT64_MIN if t.ge is None else t.ge, UINT64_MAX if t.le is None else t.le)
        case mi.FloatType():
            return st.floats(allow_nan=False)
        case mi.StrType():
            return st.text(max_size=24)
        case mi.BytesType():
            return st.binary(max_size=64)
        case mi.BoolType():
            return st.booleans()
        case mi.NoneType():
            return st.none()
        case mi.EnumType():
            return st.sampled_from(list(t.cls))
        case mi.ListType():
            return st.lists(strategy_for(t.item_type), max_size=4)
        case mi.DictType():
            return st.dictionaries(strategy_for(t.key_type), strategy_for(t.value_type), max_size=3)
        case mi.UnionType():
            return st.one_of(*(strategy_for(member) for member in t.types))
        case mi.StructType():
            fields = {f.name: strategy_for(f.type) for f in t.fields}
            return st.builds(t.cls, **fields)
    raise AssertionError(f"no strategy for {t!r}: extend strategy_for")


ENTRY_TYPES: list[type] = list(typing.get_args(j.Entry))
COMMAND_TYPES = [t for t in ENTRY_TYPES if t is not j.Notification]


def entries_of(cls: type) -> st.SearchStrategy[Any]:
    return strategy_for(mi.type_info(cls))


any_entry = st.one_of(*(entries_of(cls) for cls in ENTRY_TYPES))


def test_every_entry_type_is_in_the_union() -> None:
    """The codec decodes the ``Entry`` union: every struct of the journal module must be part of it."""
    structs = {
        obj
        for obj in vars(j).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and getattr(obj.__struct_config__, "tag", None)
    }
    assert structs == set(ENTRY_TYPES)


# ------------------------------------------------------------------------------------------- journal
@pytest.mark.parametrize("cls", ENTRY_TYPES, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_entry_round_trips(cls: type, data: st.DataObject) -> None:
    entry = data.draw(entries_of(cls))
    encoded = j.encode_entry(entry)
    decoded = j.decode_entry(encoded)
    assert type(decoded) is cls
    assert decoded == entry
    assert j.encode_entry(decoded) == encoded  # one canonical encoding
    j.entry_type_name(decoded)  # introspection helpers accept every entry
    j.command_name(decoded)


def _decodes_or_rejects(data: bytes) -> None:
    try:
        entry = j.decode_entry(data)
    except msgspec.DecodeError:  # ValidationError is a DecodeError
        return
    assert type(entry) in ENTRY_TYPES
    assert j.decode_entry(j.encode_entry(entry)) == entry


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_to_an_entry_or_a_msgspec_error(data: bytes) -> None:
    _decodes_or_rejects(data)


@FAST
@given(any_entry, st.data())
def test_corrupted_entries_decode_or_fail_cleanly(entry: Any, data: st.DataObject) -> None:
    """Bit flips, truncation and insertions in a valid encoding: the decoder's error paths."""
    encoded = bytearray(j.encode_entry(entry))
    how = data.draw(st.sampled_from(["flip", "truncate", "insert", "replace"]))
    pos = data.draw(st.integers(0, len(encoded) - 1))
    if how == "flip":
        encoded[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        del encoded[pos:]
    elif how == "insert":
        encoded[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        encoded[pos] = data.draw(st.integers(0, 255))
    _decodes_or_rejects(bytes(encoded))


def test_tags_are_unique() -> None:
    tags = [cls.__struct_config__.tag for cls in ENTRY_TYPES]  # type: ignore[attr-defined]
    assert len(tags) == len(set(tags))


# ------------------------------------------------------------------------------------ storage rows
invocations = strategy_for(mi.type_info(Invocation))


@FAST
@given(invocations)
def test_invocation_row_round_trips(inv: Invocation) -> None:
    encoded = store._inv_encoder.encode(inv)
    assert store._inv_decoder.decode(encoded) == inv
    try:
        check_invocation(inv)
    except InvariantViolation:
        return  # arbitrary fields break the stored invariants: the store refuses such rows on read
    assert store.decode_invocation(encoded, inv.id) == inv
    assert store.decode_invocation(store.encode_invocation(inv), inv.id) == inv


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_as_an_invocation_row(data: bytes) -> None:
    try:
        inv = store.decode_invocation(data, "inv_from_the_column")
    except msgspec.DecodeError:
        return
    except InvariantViolation:
        return  # decoded, but violates an invariant: ``check_invocation`` refused it
    assert store._inv_decoder.decode(store._inv_encoder.encode(inv)) == inv


promises = st.builds(
    Promise,
    strategy_for(mi.type_info(j.Result | None)),
    st.lists(strategy_for(mi.type_info(Sink)), max_size=3).map(tuple),
)


@FAST
@given(promises)
def test_promise_row_round_trips(promise: Promise) -> None:
    assert store.decode_promise(store.encode_promise(promise)) == promise


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=128))
def test_arbitrary_bytes_as_a_promise_row(data: bytes) -> None:
    try:
        promise = store.decode_promise(data)
    except msgspec.DecodeError:
        return
    assert store.decode_promise(store.encode_promise(promise)) == promise


# --------------------------------------------------------------------------------------------- ids
id_like = st.one_of(
    st.text(max_size=50),
    st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", max_size=40).map(
        lambda s: "inv_1" + s
    ),
    st.binary(min_size=28, max_size=28).map(
        lambda b: "sign_1" + base64.urlsafe_b64encode(b).decode().rstrip("=")
    ),
)


@settings(max_examples=400, deadline=None)
@given(id_like)
def test_invocation_id_parse_accepts_exactly_its_own_output(text: str) -> None:
    try:
        inv = InvocationId.parse(text)
    except InvalidId:
        return
    assert str(inv) == text


@settings(max_examples=400, deadline=None)
@given(id_like)
def test_awakeable_id_parse_accepts_exactly_its_own_output(text: str) -> None:
    try:
        inv, idx = parse_awakeable_id(text)
    except InvalidId:
        return
    assert awakeable_id(inv, idx) == text or awakeable_id(inv, idx) == "sign_1" + text[6:]


@FAST
@given(
    st.text(max_size=40),
    st.one_of(st.none(), st.text(max_size=40)),
    st.text(max_size=20),
    st.text(max_size=40),
)
def test_derived_ids_are_valid_for_any_names(service: str, key: str | None, handler: str, idem: str) -> None:
    """Idempotent and workflow ids are derived from client-chosen text: always a valid, parseable id."""
    for inv in (
        InvocationId.for_idempotent(service, key, handler, idem),
        InvocationId.for_workflow(service, key or ""),
    ):
        assert InvocationId.parse(str(inv)) == inv


# --------------------------------------------------------------------------------------- durations
duration_like = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"\A\s*[+-]?[0-9]{0,20}(\.[0-9]{0,12})?\s*(ms|s|m|h|d|w|us|ns|days|hours)?\s*\Z"),
    st.from_regex(
        r"\A[pP]([0-9]{1,12}W)?([0-9]{1,12}D)?(T([0-9]{1,12}H)?([0-9]{1,12}M)?([0-9]{1,12}(\.[0-9]{1,9})?S)?)?\Z"
    ),
    st.lists(st.from_regex(r"\A[0-9]{1,8}(ms|s|m|h|d)\Z"), max_size=4).map(" ".join),
)


@settings(max_examples=500, deadline=None)
@given(duration_like)
def test_durations_parse_or_are_rejected_with_invalid_duration(text: str) -> None:
    for parse in (parse_duration_ms, parse_delay_ms):
        try:
            ms = parse(text)
        except InvalidDuration:
            continue
        assert 0 <= ms < 2**63
        assert parse_duration_ms(format_duration(ms)) == ms


@FAST
@given(st.integers(0, limits.delay_ms_max), st.integers(1_600_000_000_000, 4_000_000_000_000))
def test_any_accepted_delay_can_be_answered(delay_ms: int, now_ms: int) -> None:
    """The ingress answers a delayed send with its execution time: every delay it accepts must format
    (a delay of 10**16 ms used to crash the answer with OverflowError, a 500)."""
    format_rfc3339_nanos(now_ms + delay_ms)
    format_rfc3339_ms(now_ms + delay_ms)
