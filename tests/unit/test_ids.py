"""Unit tests for unbroken.core.ids (Restate-compatible id formats)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken.core.ids import (
    InvalidId,
    InvocationId,
    awakeable_id,
    child_invocation_id,
    deployment_id,
    idempotent_invocation_id,
    invocation_id_for,
    parse_awakeable_id,
    partition_key_for_key,
    workflow_invocation_id,
)
from unbroken.core.schema import HandlerKind, Target

KNOWN_RAW = bytes.fromhex("79ea013544e0f16a68f47dfb8bfc8f717eb0d9556fe9c93f")
KNOWN_STR = "inv_19bgpVZDtDhn1WmN0YmdifiMxnJIozvDW8"

B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

u64s = st.integers(min_value=0, max_value=2**64 - 1)
uuids = st.binary(min_size=16, max_size=16)
invocation_ids = st.builds(InvocationId, u64s, uuids)
u32s = st.integers(min_value=0, max_value=2**32 - 1)


def _b62(value: int, width: int) -> str:
    out = ""
    while value:
        value, rem = divmod(value, 62)
        out = B62[rem] + out
    return out.rjust(width, "0")


# -- known vector & layout ------------------------------------------------------


def test_known_vector_bytes_to_string() -> None:
    inv = InvocationId.from_bytes(KNOWN_RAW)
    assert inv.partition_key == int.from_bytes(KNOWN_RAW[:8], "big")
    assert inv.uuid == KNOWN_RAW[8:]
    assert str(inv) == KNOWN_STR


def test_known_vector_string_to_bytes() -> None:
    inv = InvocationId.parse(KNOWN_STR)
    assert inv.to_bytes() == KNOWN_RAW
    assert inv == InvocationId.from_bytes(KNOWN_RAW)


def test_to_bytes_layout_is_big_endian_pk_then_uuid() -> None:
    inv = InvocationId(0x0102030405060708, bytes(range(16)))
    assert inv.to_bytes() == bytes([1, 2, 3, 4, 5, 6, 7, 8]) + bytes(range(16))
    assert len(inv.to_bytes()) == 24


def test_string_encodes_little_endian_reinterpretation() -> None:
    # pk=1 is bytes 00..01 big-endian, i.e. 2**56 when read little-endian.
    inv = InvocationId(1, b"\x01" + bytes(15))
    assert str(inv) == "inv_1" + _b62(2**56, 11) + _b62(1, 22)


def test_zero_and_max_ids() -> None:
    zero = InvocationId(0, bytes(16))
    assert str(zero) == "inv_1" + "0" * 33
    top = InvocationId(2**64 - 1, b"\xff" * 16)
    assert str(top) == "inv_1" + _b62(2**64 - 1, 11) + _b62(2**128 - 1, 22)
    assert len(str(top)) == 38
    assert InvocationId.parse(str(top)) == top
    assert InvocationId.parse(str(zero)) == zero


def test_hashable_frozen_and_equal_by_value() -> None:
    a = InvocationId.parse(KNOWN_STR)
    b = InvocationId.from_bytes(KNOWN_RAW)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.partition_key = 3  # type: ignore[misc, unused-ignore]


def test_constructor_validates_ranges() -> None:
    with pytest.raises(InvalidId):
        InvocationId(-1, bytes(16))
    with pytest.raises(InvalidId):
        InvocationId(2**64, bytes(16))
    with pytest.raises(InvalidId):
        InvocationId(0, bytes(15))


@pytest.mark.parametrize("n", [0, 23, 25])
def test_from_bytes_rejects_wrong_length(n: int) -> None:
    with pytest.raises(InvalidId, match="expected 24 bytes"):
        InvocationId.from_bytes(bytes(n))


# -- parse errors ---------------------------------------------------------------


def test_parse_bad_length_message() -> None:
    with pytest.raises(InvalidId) as exc:
        InvocationId.parse("inv_1bogus")
    assert str(exc.value) == "bad invocation id 'inv_1bogus': bad length"
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("text", [KNOWN_STR + "0", KNOWN_STR[:-1], "inv_"])
def test_parse_rejects_wrong_lengths(text: str) -> None:
    with pytest.raises(InvalidId, match=r": bad length$"):
        InvocationId.parse(text)


@pytest.mark.parametrize(
    "text",
    ["", "foo", "prom_19bgpVZDtDhn1WmN0YmdifiMxnJIozvDW8", "INV_19bgpVZDtDhn1WmN0YmdifiMxnJIozvDW8", "inv1"],
)
def test_parse_rejects_unknown_prefix(text: str) -> None:
    with pytest.raises(InvalidId) as exc:
        InvocationId.parse(text)
    assert str(exc.value) == f"bad invocation id '{text}': unknown prefix"


def test_parse_rejects_unknown_version() -> None:
    text = "inv_2" + KNOWN_STR[5:]
    with pytest.raises(InvalidId) as exc:
        InvocationId.parse(text)
    assert str(exc.value) == f"bad invocation id '{text}': unrecognized codec version"


@pytest.mark.parametrize("bad", ["-", "_", "!", "é", " ", "+", "\u0660"])
@pytest.mark.parametrize("pos", [5, 15, 16, 37])
def test_parse_rejects_non_base62(bad: str, pos: int) -> None:
    text = KNOWN_STR[:pos] + bad + KNOWN_STR[pos + 1 :]
    assert len(text) == 38
    with pytest.raises(InvalidId) as exc:
        InvocationId.parse(text)
    assert str(exc.value) == f"bad invocation id '{text}': bad format"


def test_parse_rejects_pk_overflow() -> None:
    text = "inv_1" + _b62(2**64, 11) + "0" * 22
    with pytest.raises(InvalidId, match=r": bad format$"):
        InvocationId.parse(text)
    text = "inv_1" + "Z" * 11 + "0" * 22
    with pytest.raises(InvalidId, match=r": bad format$"):
        InvocationId.parse(text)


def test_parse_rejects_uuid_overflow() -> None:
    text = "inv_1" + "0" * 11 + _b62(2**128, 22)
    with pytest.raises(InvalidId, match=r": bad format$"):
        InvocationId.parse(text)


# -- deterministic constructors -------------------------------------------------


def test_partition_key_for_key_is_blake2b_64_big_endian() -> None:
    expected = int.from_bytes(hashlib.blake2b(b"my-key", digest_size=8).digest(), "big")
    assert partition_key_for_key("my-key") == expected
    assert partition_key_for_key("my-key") == partition_key_for_key("my-key")
    assert partition_key_for_key("a") != partition_key_for_key("b")
    assert 0 <= partition_key_for_key("ünïcode") < 2**64


def test_for_workflow() -> None:
    inv = InvocationId.for_workflow("Signup", "user-1")
    assert inv.uuid == hashlib.sha256(b"wf,Signup,user-1").digest()[:16]
    assert inv.partition_key == partition_key_for_key("user-1")
    assert inv == InvocationId.for_workflow("Signup", "user-1")
    assert inv != InvocationId.for_workflow("Signup", "user-2")
    assert inv != InvocationId.for_workflow("Signup2", "user-1")


def test_for_workflow_utf8() -> None:
    inv = InvocationId.for_workflow("Sérvice", "kéy")
    assert inv.uuid == hashlib.sha256("wf,Sérvice,kéy".encode()).digest()[:16]


def test_for_idempotent_keyed() -> None:
    inv = InvocationId.for_idempotent("Cart", "alice", "add", "idem-1")
    assert inv.uuid == hashlib.sha256(b"ik,Cart,alice,add,idem-1").digest()[:16]
    assert inv.partition_key == partition_key_for_key("alice")


def test_for_idempotent_unkeyed() -> None:
    inv = InvocationId.for_idempotent("Greeter", None, "greet", "idem-1")
    digest = hashlib.sha256(b"ik,Greeter,greet,idem-1").digest()
    assert inv.uuid == digest[:16]
    assert inv.partition_key == int.from_bytes(digest[:8], "big")


def test_for_idempotent_distinguishes_empty_key_from_none() -> None:
    with_empty = InvocationId.for_idempotent("S", "", "h", "k")
    assert with_empty.uuid == hashlib.sha256(b"ik,S,,h,k").digest()[:16]
    assert with_empty != InvocationId.for_idempotent("S", None, "h", "k")


def test_new_is_ulid_style() -> None:
    rnd = bytes(range(100, 110))
    inv = InvocationId.new(42, rnd, 0x0123456789AB)
    assert inv.partition_key == 42
    assert inv.uuid == bytes.fromhex("0123456789ab") + rnd


def test_new_uses_first_ten_random_bytes_and_sorts_by_time() -> None:
    rnd = bytes(range(16))
    assert InvocationId.new(1, rnd, 5).uuid == (5).to_bytes(6, "big") + rnd[:10]
    earlier = InvocationId.new(1, b"\xff" * 10, 1000)
    later = InvocationId.new(1, b"\x00" * 10, 1001)
    assert earlier.uuid < later.uuid


def test_new_validates_inputs() -> None:
    with pytest.raises(InvalidId, match="at least 10 random bytes"):
        InvocationId.new(1, bytes(9), 0)
    with pytest.raises(InvalidId, match="48-bit"):
        InvocationId.new(1, bytes(10), 2**48)
    with pytest.raises(InvalidId, match="48-bit"):
        InvocationId.new(1, bytes(10), -1)
    with pytest.raises(InvalidId):
        InvocationId.new(2**64, bytes(10), 0)


# -- awakeable ids --------------------------------------------------------------


def test_awakeable_id_layout() -> None:
    inv = InvocationId.from_bytes(KNOWN_RAW)
    aid = awakeable_id(inv, 7)
    assert aid.startswith("sign_1")
    assert len(aid) == len("sign_1") + 38
    assert "=" not in aid
    payload = aid[len("sign_1") :]
    assert base64.urlsafe_b64decode(payload + "==") == KNOWN_RAW + (7).to_bytes(4, "big")
    assert parse_awakeable_id(aid) == (inv, 7)


def test_awakeable_max_index_round_trip() -> None:
    inv = InvocationId(2**64 - 1, b"\xff" * 16)
    assert parse_awakeable_id(awakeable_id(inv, 2**32 - 1)) == (inv, 2**32 - 1)


@pytest.mark.parametrize("index", [-1, 2**32])
def test_awakeable_id_rejects_out_of_range_index(index: int) -> None:
    with pytest.raises(InvalidId):
        awakeable_id(InvocationId(0, bytes(16)), index)


def test_legacy_prom_prefix_accepted() -> None:
    inv = InvocationId.from_bytes(KNOWN_RAW)
    raw = KNOWN_RAW + (3).to_bytes(4, "big")
    legacy = "prom_1" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert parse_awakeable_id(legacy) == (inv, 3)


def _valid_payload() -> str:
    aid: str = awakeable_id(InvocationId.from_bytes(KNOWN_RAW), 1)
    return aid[len("sign_1") :]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sign_1",
        "sign_2" + _valid_payload(),
        "sign_" + _valid_payload(),
        "prom_2" + _valid_payload(),
        "SIGN_1" + _valid_payload(),
        "sign_1" + _valid_payload()[:-1],  # too short
        "sign_1" + _valid_payload() + "A",  # too long
        "sign_1" + _valid_payload() + "==",  # padded
        "sign_1" + _valid_payload()[:-1] + "!",  # not base64
        "sign_1" + _valid_payload()[:-1] + "/",  # standard, not url-safe alphabet
        "sign_1" + _valid_payload()[:-1] + "é",  # non-ascii
        "sign_1" + _valid_payload()[:-1] + "x",  # non-zero trailing bits (non-canonical)
        KNOWN_STR,
    ],
)
def test_parse_awakeable_id_rejects(text: str) -> None:
    with pytest.raises(InvalidId) as exc:
        parse_awakeable_id(text)
    assert str(exc.value) == f"bad awakeable id '{text}': id doesn't match the expected type"


# -- deployment ids -------------------------------------------------------------


def test_deployment_id_format() -> None:
    raw = bytes(range(16))
    dp = deployment_id(raw)
    assert dp == "dp_1" + _b62(int.from_bytes(raw, "little"), 22)
    assert len(dp) == 26
    assert deployment_id(bytes(16)) == "dp_1" + "0" * 22


def test_deployment_id_rejects_wrong_length() -> None:
    with pytest.raises(InvalidId):
        deployment_id(bytes(15))


# -- properties -----------------------------------------------------------------


@given(invocation_ids)
def test_prop_string_round_trip(inv: InvocationId) -> None:
    text = str(inv)
    assert len(text) == 38
    assert text.startswith("inv_1")
    assert all(c in B62 for c in text[5:])
    assert InvocationId.parse(text) == inv


@given(invocation_ids)
def test_prop_bytes_round_trip(inv: InvocationId) -> None:
    assert InvocationId.from_bytes(inv.to_bytes()) == inv


@given(invocation_ids, u32s)
def test_prop_awakeable_round_trip(inv: InvocationId, index: int) -> None:
    aid = awakeable_id(inv, index)
    assert aid.startswith("sign_1") and len(aid) == 44
    assert parse_awakeable_id(aid) == (inv, index)
    assert parse_awakeable_id("prom_1" + aid[6:]) == (inv, index)


@given(st.text(alphabet=B62 + "_-!é", min_size=33, max_size=33))
def test_prop_parse_is_exact_inverse_or_rejects(body: str) -> None:
    text = "inv_1" + body
    try:
        inv = InvocationId.parse(text)
    except InvalidId:
        return
    assert str(inv) == text


@given(st.text(max_size=60))
def test_prop_parse_awakeable_never_crashes(text: str) -> None:
    try:
        inv, index = parse_awakeable_id("sign_1" + text)
    except InvalidId:
        return
    assert awakeable_id(inv, index) == "sign_1" + text


# -- which id an invocation gets (one rule each, shared by the ingress and the state machine) -----------


FRESH = bytes(range(1, 19))


def test_a_workflow_run_has_one_id_from_the_ingress_and_from_a_handler() -> None:
    target = Target("Signup", "run", "user-1")
    from_ingress = invocation_id_for(target, HandlerKind.WORKFLOW, None, FRESH, 5)
    from_handler = child_invocation_id(str(InvocationId(1, bytes(16))), target, HandlerKind.WORKFLOW, None, 3)
    assert from_ingress == from_handler == workflow_invocation_id("Signup", "user-1")
    assert from_ingress == str(InvocationId.for_workflow("Signup", "user-1"))
    # the workflow key decides, not the idempotency key, nor the bytes or the time
    assert invocation_id_for(target, HandlerKind.WORKFLOW, "idem", b"\xff" * 18, 9) == from_ingress


def test_a_workflow_target_without_key_is_refused() -> None:
    with pytest.raises(InvalidId, match="without a key"):
        invocation_id_for(Target("Signup", "run"), HandlerKind.WORKFLOW, None, FRESH, 5)


def test_an_idempotent_request_has_a_stable_id_whoever_sends_it() -> None:
    target = Target("Cart", "add", "alice")
    first = invocation_id_for(target, HandlerKind.EXCLUSIVE, "k-1", FRESH, 5)
    again = invocation_id_for(target, HandlerKind.EXCLUSIVE, "k-1", b"\xff" * 18, 99)
    from_handler = child_invocation_id(
        str(InvocationId(1, bytes(16))), target, HandlerKind.EXCLUSIVE, "k-1", 7
    )
    assert first == again == from_handler == idempotent_invocation_id(target, "k-1")
    assert first == str(InvocationId.for_idempotent("Cart", "alice", "add", "k-1"))
    assert invocation_id_for(target, HandlerKind.EXCLUSIVE, "k-2", FRESH, 5) != first


def test_a_fresh_id_embeds_its_targets_partition_key_and_time() -> None:
    keyed = InvocationId.parse(
        invocation_id_for(Target("Cart", "add", "alice"), HandlerKind.EXCLUSIVE, None, FRESH, 5)
    )
    assert keyed.partition_key == partition_key_for_key("alice")
    assert keyed.uuid == (5).to_bytes(6, "big") + FRESH[:10]
    unkeyed = InvocationId.parse(invocation_id_for(Target("Greeter", "greet"), None, None, FRESH, 5))
    assert unkeyed.partition_key == int.from_bytes(FRESH[10:18], "big")
    with pytest.raises(InvalidId, match="fresh bytes"):
        invocation_id_for(Target("Greeter", "greet"), None, None, bytes(17), 5)


def test_a_child_id_is_derived_from_its_caller_and_slot() -> None:
    caller = str(InvocationId(1, bytes(16)))
    target = Target("Obj", "ex", "k")
    child = child_invocation_id(caller, target, HandlerKind.EXCLUSIVE, None, 1)
    digest = hashlib.sha256(f"call,{caller},1".encode()).digest()
    assert child == str(InvocationId(partition_key_for_key("k"), digest[:16]))
    assert child == child_invocation_id(caller, target, HandlerKind.EXCLUSIVE, None, 1)  # a replay
    assert child != child_invocation_id(caller, target, HandlerKind.EXCLUSIVE, None, 2)
    unkeyed = InvocationId.parse(child_invocation_id(caller, Target("Svc", "h"), None, None, 1))
    assert unkeyed.partition_key == int.from_bytes(digest[16:24], "big")


def test_the_partition_key_of_an_id_string_is_read_without_the_rest_and_refuses_what_parse_refuses() -> None:
    from unbroken.core.ids import InvalidId, InvocationId, partition_key_of

    for n in range(200):
        inv = InvocationId.new((n * 0x9E3779B97F4A7C15) % (1 << 64), n.to_bytes(10, "big"), 1)
        assert partition_key_of(str(inv)) == inv.partition_key
    good = str(InvocationId.new(7, bytes(10), 1))
    for bad in ("x" + good[1:], good[:-1], good[:4] + "2" + good[5:], good[:5] + "!" + good[6:]):
        with pytest.raises(InvalidId):
            partition_key_of(bad)
