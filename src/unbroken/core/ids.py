"""Restate-compatible identifier formats: invocation, awakeable and deployment ids.

Pure module: no I/O, no clock reads, no global mutable state.  Everything that
would need randomness or time (``InvocationId.new``) takes it as an argument.

String forms (byte-compatible with Restate's server):

* invocation id: ``inv_1`` + base62(pk, 11) + base62(uuid, 22)  (38 chars)
* awakeable id:  ``sign_1`` + base64url_nopad(24 id bytes + u32 BE signal index)
  (legacy ``prom_1`` + the same layout with an entry index is accepted on parse)
* deployment id: ``dp_1`` + base62(raw16, 22)

Restate quirk reproduced here: the integers that get base62-encoded are the raw
big-endian bytes re-read in *little-endian* order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Final

import msgspec

from unbroken.core.schema import HandlerKind, Target

__all__ = [
    "FRESH_ID_BYTES",
    "InvalidId",
    "InvocationId",
    "awakeable_id",
    "child_invocation_id",
    "idempotent_invocation_id",
    "invocation_id_for",
    "deployment_id",
    "parse_awakeable_id",
    "partition_key_for_key",
    "partition_key_of",
    "partition_key_of_any",
    "workflow_invocation_id",
]

_B62_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Code point -> digit value, -1 for characters outside the alphabet (ASCII only).
_B62_INDEX: Final[tuple[int, ...]] = tuple(_B62_ALPHABET.find(chr(c)) for c in range(128))
# Two-digit value (0..3843) -> its two characters, most significant first.
_B62_PAIRS: Final[tuple[str, ...]] = tuple(hi + lo for hi in _B62_ALPHABET for lo in _B62_ALPHABET)

_U64_LIMIT: Final = 1 << 64
_U128_LIMIT: Final = 1 << 128
_U32_LIMIT: Final = 1 << 32
_U48_LIMIT: Final = 1 << 48

_INV_PREFIX: Final = "inv_"
_INV_VERSION: Final = "1"
_PK_WIDTH: Final = 11  # 62**11 > 2**64
_UUID_WIDTH: Final = 22  # 62**22 > 2**128
_INV_STR_LEN: Final = len(_INV_PREFIX) + len(_INV_VERSION) + _PK_WIDTH + _UUID_WIDTH  # 38

_AWAKEABLE_PREFIX: Final = "sign_1"
_LEGACY_AWAKEABLE_PREFIX: Final = "prom_1"
_AWAKEABLE_RAW_LEN: Final = 28  # 24 id bytes + u32 index
_AWAKEABLE_B64_LEN: Final = 38  # ceil(28 * 4 / 3), no padding

_DEPLOYMENT_PREFIX: Final = "dp_1"

# Enum members named through their class cost ~170 ns each on Python 3.11 (EnumType defines
# ``__getattr__``, which sends every attribute lookup on the class through a slow hook): the per-call
# code reads module constants instead (docs/architecture.md, "What a call may cost").
_WORKFLOW: Final = HandlerKind.WORKFLOW


class InvalidId(ValueError):
    """Raised when a string or byte sequence is not a valid id of the expected kind."""


def _b62_u64(value: int) -> str:
    """``value`` (``0 <= value < 2**64 < 62**11``) in base62, left-padded with '0' to 11 chars."""
    # Two digits per division, through a table of the 3,844 two-character strings, unrolled: one
    # divmod per digit in a loop cost ~46k instructions per invocation id string (~6% of an echo call;
    # bench/instructions.py), this ~23k. An out-of-range value raises IndexError, never a wrong string.
    pairs = _B62_PAIRS
    value, a = divmod(value, 3844)
    value, b = divmod(value, 3844)
    value, c = divmod(value, 3844)
    value, d = divmod(value, 3844)
    value, e = divmod(value, 3844)
    return _B62_ALPHABET[value] + pairs[e] + pairs[d] + pairs[c] + pairs[b] + pairs[a]


def _b62_u128(value: int) -> str:
    """``value`` (``0 <= value < 2**128 < 62**22``) in base62, left-padded with '0' to 22 chars."""
    pairs = _B62_PAIRS
    value, a = divmod(value, 3844)
    value, b = divmod(value, 3844)
    value, c = divmod(value, 3844)
    value, d = divmod(value, 3844)
    value, e = divmod(value, 3844)
    value, f = divmod(value, 3844)
    value, g = divmod(value, 3844)
    value, h = divmod(value, 3844)
    value, i = divmod(value, 3844)
    value, j = divmod(value, 3844)
    return (
        pairs[value]
        + pairs[j]
        + pairs[i]
        + pairs[h]
        + pairs[g]
        + pairs[f]
        + pairs[e]
        + pairs[d]
        + pairs[c]
        + pairs[b]
        + pairs[a]
    )


def _b62_decode(text: str, start: int, width: int, limit: int) -> int | None:
    """Decode ``text[start:start+width]`` as base62; ``None`` if a char is invalid or value >= ``limit``."""
    index = _B62_INDEX
    value = 0
    for ch in text[start : start + width]:
        code = ord(ch)
        digit = index[code] if code < 128 else -1
        if digit < 0:
            return None
        value = value * 62 + digit
    return value if value < limit else None


def partition_key_for_key(key: str) -> int:
    """Stable u64 partition key of a virtual-object/workflow key.

    Contract: deterministic across processes and platforms (blake2b-64 of the
    UTF-8 key, read big-endian); the result is in ``[0, 2**64)``.
    """
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def partition_key_of(invocation_id: str) -> int:
    """The partition key of an invocation id's string form, without decoding its uuid (a third of
    ``InvocationId.parse``'s cost: routing a request by partition needs only this). Raises
    :class:`InvalidId` where ``parse`` would for a bad prefix, length, version or key."""
    if len(invocation_id) != _INV_STR_LEN or not invocation_id.startswith(_INV_PREFIX + _INV_VERSION):
        return InvocationId.parse(invocation_id).partition_key  # raises, saying what is wrong
    pk_le = _b62_decode(invocation_id, 5, _PK_WIDTH, _U64_LIMIT)
    if pk_le is None:
        raise InvalidId(f"bad invocation id '{invocation_id}': bad format")
    return int.from_bytes(pk_le.to_bytes(8, "little"), "big")


def partition_key_of_any(invocation_id: str) -> int:
    """``partition_key_of``, except that an id that is not an invocation id (tests name invocations freely)
    is hashed as a key, so every id has one stable partition (as the PostgreSQL store places its rows)."""
    try:
        return partition_key_of(invocation_id)
    except InvalidId:
        return partition_key_for_key(invocation_id)


def _sha256_joined(parts: list[str]) -> bytes:
    """SHA-256 over the UTF-8 encoded ``parts`` joined by single comma bytes (0x2C)."""
    return hashlib.sha256(b",".join(p.encode("utf-8") for p in parts)).digest()


class InvocationId(msgspec.Struct, frozen=True):
    """Identifier of one invocation: a u64 partition key plus a 16-byte uuid.

    Immutable and hashable; equality is field-wise.  Constructing one directly
    validates the ranges (``0 <= partition_key < 2**64``, ``len(uuid) == 16``)
    and raises :class:`InvalidId` otherwise.
    """

    partition_key: int
    uuid: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.partition_key < _U64_LIMIT:
            raise InvalidId(f"partition key out of u64 range: {self.partition_key}")
        if len(self.uuid) != 16:
            raise InvalidId(f"invocation uuid must be 16 bytes, got {len(self.uuid)}")

    # -- binary form -------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """24 bytes: partition key as u64 big-endian followed by the 16 uuid bytes."""
        return self.partition_key.to_bytes(8, "big") + self.uuid

    @classmethod
    def from_bytes(cls, raw: bytes) -> InvocationId:
        """Inverse of :meth:`to_bytes`; raises :class:`InvalidId` unless ``len(raw) == 24``."""
        if len(raw) != 24:
            raise InvalidId(f"bad invocation id bytes: expected 24 bytes, got {len(raw)}")
        return cls(int.from_bytes(raw[:8], "big"), bytes(raw[8:]))

    # -- string form -------------------------------------------------------------

    def __str__(self) -> str:
        """Restate string form, e.g. ``inv_19bgpVZDtDhn1WmN0YmdifiMxnJIozvDW8`` (38 chars)."""
        pk_le = int.from_bytes(self.partition_key.to_bytes(8, "big"), "little")
        uuid_le = int.from_bytes(self.uuid, "little")
        return _INV_PREFIX + _INV_VERSION + _b62_u64(pk_le) + _b62_u128(uuid_le)

    @classmethod
    def parse(cls, text: str) -> InvocationId:
        """Exact inverse of ``str(id)``.

        Raises :class:`InvalidId` with message ``bad invocation id '<text>': <reason>``
        where reason is ``unknown prefix`` (not ``inv_``), ``bad length`` (not 38
        chars), ``unrecognized codec version`` (version char is not ``1``) or
        ``bad format`` (non-base62 char, or a value overflowing u64/u128).
        """
        if not text.startswith(_INV_PREFIX):
            raise InvalidId(f"bad invocation id '{text}': unknown prefix")
        if len(text) != _INV_STR_LEN:
            raise InvalidId(f"bad invocation id '{text}': bad length")
        if text[4] != _INV_VERSION:
            raise InvalidId(f"bad invocation id '{text}': unrecognized codec version")
        pk_le = _b62_decode(text, 5, _PK_WIDTH, _U64_LIMIT)
        uuid_le = _b62_decode(text, 5 + _PK_WIDTH, _UUID_WIDTH, _U128_LIMIT)
        if pk_le is None or uuid_le is None:
            raise InvalidId(f"bad invocation id '{text}': bad format")
        partition_key = int.from_bytes(pk_le.to_bytes(8, "little"), "big")
        return cls(partition_key, uuid_le.to_bytes(16, "little"))

    # -- constructors ------------------------------------------------------------

    @classmethod
    def for_workflow(cls, service: str, key: str) -> InvocationId:
        """Deterministic id of the workflow run ``service``/``key``.

        uuid = SHA-256(``wf,<service>,<key>``)[:16]; partition key = ``partition_key_for_key(key)``.
        """
        digest = _sha256_joined(["wf", service, key])
        return cls(partition_key_for_key(key), digest[:16])

    @classmethod
    def for_idempotent(
        cls, service: str, key: str | None, handler: str, idempotency_key: str
    ) -> InvocationId:
        """Deterministic id of an idempotent call.

        uuid = SHA-256 over ``ik,<service>[,<key>],<handler>,<idempotency_key>``, first 16 bytes.
        Partition key = ``partition_key_for_key(key)`` for keyed services, else the
        first 8 bytes of that digest read as u64 big-endian.
        """
        parts = ["ik", service] + ([key] if key is not None else []) + [handler, idempotency_key]
        digest = _sha256_joined(parts)
        pk = partition_key_for_key(key) if key is not None else int.from_bytes(digest[:8], "big")
        return cls(pk, digest[:16])

    @classmethod
    def new(cls, partition_key: int, random_bytes: bytes, timestamp_ms: int) -> InvocationId:
        """Fresh ULID-style id: uuid = 48-bit BE ``timestamp_ms`` ‖ first 10 bytes of ``random_bytes``.

        The caller supplies time and randomness.  Raises :class:`InvalidId` if
        ``random_bytes`` is shorter than 10 bytes, ``timestamp_ms`` is outside
        ``[0, 2**48)`` or ``partition_key`` is outside u64.
        """
        if len(random_bytes) < 10:
            raise InvalidId(f"need at least 10 random bytes, got {len(random_bytes)}")
        if not 0 <= timestamp_ms < _U48_LIMIT:
            raise InvalidId(f"timestamp out of 48-bit range: {timestamp_ms}")
        return cls(partition_key, timestamp_ms.to_bytes(6, "big") + bytes(random_bytes[:10]))


# -- which id an invocation gets ------------------------------------------------------------------
#
# Each rule lives here once; the ingress (a request), its routes (attach by workflow key or idempotency
# key) and the state machine (a handler's call) all derive through these, so the same workflow run or
# idempotent call has the same id whichever way it is reached.

FRESH_ID_BYTES: Final = 18  # 10 for the uuid's random part, 8 for an unkeyed target's partition key


def workflow_invocation_id(service: str, key: str) -> str:
    """The id of the workflow run ``service``/``key`` (one run per key, however it is started)."""
    return str(InvocationId.for_workflow(service, key))


def idempotent_invocation_id(target: Target, idempotency_key: str) -> str:
    """The id of the call of ``target`` with ``idempotency_key`` (a retried request maps to it again)."""
    return str(InvocationId.for_idempotent(target.service, target.key, target.handler, idempotency_key))


def fixed_invocation_id(
    target: Target, handler_kind: HandlerKind | None, idempotency_key: str | None
) -> str | None:
    """The id fixed by the request itself: a workflow run's (by its key, before any idempotency key) or
    an idempotent call's; ``None`` when the invocation needs a new one."""
    if handler_kind is _WORKFLOW:
        if target.key is None:
            raise InvalidId(f"workflow target {target} without a key")
        return workflow_invocation_id(target.service, target.key)
    if idempotency_key is not None:
        return idempotent_invocation_id(target, idempotency_key)
    return None


def invocation_id_for(
    target: Target,
    handler_kind: HandlerKind | None,
    idempotency_key: str | None,
    fresh_bytes: bytes,
    now_ms: int,
) -> str:
    """The id of an invocation requested from outside (the ingress): the workflow's or idempotent call's
    id when the request fixes one, else a fresh time-ordered id from ``fresh_bytes`` (at least
    :data:`FRESH_ID_BYTES` unpredictable bytes) in the partition of the target's key (of random bytes for
    an unkeyed target)."""
    fixed = fixed_invocation_id(target, handler_kind, idempotency_key)
    if fixed is not None:
        return fixed
    if len(fresh_bytes) < FRESH_ID_BYTES:
        raise InvalidId(f"need at least {FRESH_ID_BYTES} fresh bytes, got {len(fresh_bytes)}")
    key = target.key
    pk = partition_key_for_key(key) if key is not None else int.from_bytes(fresh_bytes[10:18], "big")
    return str(InvocationId.new(pk, fresh_bytes[:10], now_ms))


def child_invocation_id(
    caller_id: str, target: Target, handler_kind: HandlerKind | None, idempotency_key: str | None, slot: int
) -> str:
    """The id of an invocation a handler creates (a call or a send): the workflow's or idempotent call's
    id as from the ingress, else derived from the caller's id and the call's completion ``slot``, so a
    replayed call maps to the same id (the state machine has no randomness)."""
    fixed = fixed_invocation_id(target, handler_kind, idempotency_key)
    if fixed is not None:
        return fixed
    digest = hashlib.sha256(f"call,{caller_id},{slot}".encode()).digest()
    key = target.key
    pk = partition_key_for_key(key) if key is not None else int.from_bytes(digest[16:24], "big")
    return str(InvocationId(partition_key=pk, uuid=digest[:16]))


# -- awakeable ids ----------------------------------------------------------------


def awakeable_id(inv: InvocationId, signal_index: int) -> str:
    """``sign_1`` + base64url (no padding) of ``inv.to_bytes()`` ‖ u32 BE ``signal_index``; 44 chars.

    Raises :class:`InvalidId` if ``signal_index`` is outside ``[0, 2**32)``.
    """
    if not 0 <= signal_index < _U32_LIMIT:
        raise InvalidId(f"signal index out of u32 range: {signal_index}")
    raw = inv.to_bytes() + signal_index.to_bytes(4, "big")
    return _AWAKEABLE_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def parse_awakeable_id(text: str) -> tuple[InvocationId, int]:
    """Inverse of :func:`awakeable_id`; also accepts legacy ``prom_1`` ids (index read as signal index).

    Only canonical unpadded base64url of exactly 28 bytes is accepted.  Anything
    else raises :class:`InvalidId`:
    ``bad awakeable id '<text>': id doesn't match the expected type``.
    """
    if text.startswith(_AWAKEABLE_PREFIX) or text.startswith(_LEGACY_AWAKEABLE_PREFIX):
        raw = _b64url_decode_canonical(text[len(_AWAKEABLE_PREFIX) :])
        if raw is not None:
            inv = InvocationId(int.from_bytes(raw[:8], "big"), raw[8:24])
            return inv, int.from_bytes(raw[24:], "big")
    raise InvalidId(f"bad awakeable id '{text}': id doesn't match the expected type")


def _b64url_decode_canonical(payload: str) -> bytes | None:
    """Decode an awakeable payload; ``None`` unless it is the canonical encoding of 28 bytes."""
    if len(payload) != _AWAKEABLE_B64_LEN or not payload.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(payload + "==")
    except (binascii.Error, ValueError):
        return None
    # urlsafe_b64decode silently skips junk and ignores non-zero trailing bits:
    # re-encoding rejects every non-canonical spelling.
    if len(raw) != _AWAKEABLE_RAW_LEN or base64.urlsafe_b64encode(raw)[:-2].decode("ascii") != payload:
        return None
    return raw


# -- deployment ids ---------------------------------------------------------------


def deployment_id(raw16: bytes) -> str:
    """Display form of a deployment id: ``dp_1`` + base62(little-endian int of ``raw16``, 22 chars).

    Raises :class:`InvalidId` unless ``len(raw16) == 16``.
    """
    if len(raw16) != 16:
        raise InvalidId(f"deployment id must be 16 bytes, got {len(raw16)}")
    return _DEPLOYMENT_PREFIX + _b62_u128(int.from_bytes(raw16, "little"))
