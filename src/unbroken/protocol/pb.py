"""Protocol Buffers wire format, the subset Restate's service protocol uses (proto3, no groups).

Written by hand instead of generated: the messages are few and flat, and a remote SDK's bytes are untrusted
input, so every way they can be wrong (a truncated varint, a length past the end, a wire type that does not
fit the field, invalid UTF-8) must end in one typed error, :class:`ProtocolViolation` with code 571, which
fails the attempt and nothing else.
"""

from __future__ import annotations

from unbroken.core.errors import PROTOCOL_VIOLATION, ProtocolViolation

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_U64_VARINT_BYTES = 10  # a u64 takes at most 10 groups of 7 bits


def violation(message: str) -> ProtocolViolation:
    return ProtocolViolation(PROTOCOL_VIOLATION, message)


# --------------------------------------------------------------------------------------------- writing
class Writer:
    """Appends fields in the order written; proto3 defaults (0, empty) are skipped by the ``*_opt`` calls."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def _varint(self, value: int) -> None:
        while value > 0x7F:
            self.buf.append((value & 0x7F) | 0x80)
            value >>= 7
        self.buf.append(value)

    def _tag(self, field: int, wire_type: int) -> None:
        self._varint((field << 3) | wire_type)

    def uint(self, field: int, value: int) -> None:
        """A uint32/uint64/bool field, written even when 0 (a oneof member or an ``optional``)."""
        self._tag(field, VARINT)
        self._varint(value)

    def uint_opt(self, field: int, value: int) -> None:
        if value:
            self.uint(field, value)

    def blob(self, field: int, value: bytes) -> None:
        self._tag(field, LEN)
        self._varint(len(value))
        self.buf += value

    def blob_opt(self, field: int, value: bytes) -> None:
        if value:
            self.blob(field, value)

    def text(self, field: int, value: str) -> None:
        self.blob(field, value.encode())

    def text_opt(self, field: int, value: str) -> None:
        if value:
            self.blob(field, value.encode())

    def packed(self, field: int, values: list[int] | tuple[int, ...]) -> None:
        """A packed repeated varint field (proto3's default for repeated scalars); nothing if empty."""
        if values:
            inner = Writer()
            for value in values:
                inner._varint(value)
            self.message(field, inner)

    def message(self, field: int, inner: Writer) -> None:
        self.blob(field, bytes(inner.buf))

    def done(self) -> bytes:
        return bytes(self.buf)


# --------------------------------------------------------------------------------------------- reading
def _read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    shift = 0
    end = len(data)
    for _ in range(_U64_VARINT_BYTES):
        if pos >= end:
            raise violation(f"{what}: truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > _U64:
                raise violation(f"{what}: varint larger than 64 bits")
            return value, pos
        shift += 7
    raise violation(f"{what}: varint longer than {_U64_VARINT_BYTES} bytes")


class Fields:
    """The fields of one message: field number -> the values in order (int for varint/fixed, bytes for
    length-delimited), with typed getters that raise :class:`ProtocolViolation` naming ``what``."""

    __slots__ = ("what", "values", "wire")

    def __init__(self, data: bytes, what: str) -> None:
        self.what = what
        self.values: dict[int, list[int | bytes]] = {}
        self.wire: dict[int, int] = {}
        pos = 0
        end = len(data)
        while pos < end:
            key, pos = _read_varint(data, pos, what)
            field, wire_type = key >> 3, key & 7
            if field == 0 or field > 0x1FFFFFFF:
                raise violation(f"{what}: invalid field number {field}")
            value: int | bytes
            if wire_type == VARINT:
                value, pos = _read_varint(data, pos, what)
            elif wire_type == LEN:
                size, pos = _read_varint(data, pos, what)
                if size > end - pos:
                    raise violation(f"{what}: field {field} is {size} bytes long, only {end - pos} remain")
                value = data[pos : pos + size]
                pos += size
            elif wire_type in (FIXED64, FIXED32):
                width = 8 if wire_type == FIXED64 else 4
                if width > end - pos:
                    raise violation(f"{what}: truncated fixed-width field {field}")
                value = int.from_bytes(data[pos : pos + width], "little")
                pos += width
            else:
                raise violation(f"{what}: unsupported wire type {wire_type} (field {field})")
            previous = self.wire.setdefault(field, wire_type)
            if previous != wire_type:
                raise violation(f"{what}: field {field} sent with two wire types")
            self.values.setdefault(field, []).append(value)

    def has(self, field: int) -> bool:
        return field in self.values

    def _last(self, field: int, wire_type: int, kind: str) -> int | bytes | None:
        values = self.values.get(field)
        if values is None:
            return None
        if self.wire[field] != wire_type:
            raise violation(f"{self.what}: field {field} should be a {kind}")
        return values[-1]  # proto3: the last occurrence of a scalar wins

    def uint(self, field: int, bits: int = 32) -> int:
        value = self._last(field, VARINT, "varint")
        if value is None:
            return 0
        assert isinstance(value, int)
        if value > (_U32 if bits == 32 else _U64):
            raise violation(f"{self.what}: field {field} is out of range for a uint{bits}")
        return value

    def boolean(self, field: int) -> bool:
        return self.uint(field, 64) != 0

    def blob(self, field: int) -> bytes:
        value = self._last(field, LEN, "length-delimited field")
        if value is None:
            return b""
        assert isinstance(value, bytes)
        return value

    def text(self, field: int) -> str:
        return self._text(self.blob(field), field)

    def opt_text(self, field: int) -> str | None:
        return self.text(field) if self.has(field) else None

    def message(self, field: int, what: str) -> Fields | None:
        if not self.has(field):
            return None
        return Fields(self.blob(field), f"{self.what}.{what}")

    def repeated_bytes(self, field: int) -> list[bytes]:
        if not self.has(field):
            return []
        if self.wire[field] != LEN:
            raise violation(f"{self.what}: field {field} should be length-delimited")
        return [v for v in self.values[field] if isinstance(v, bytes)]

    def repeated_text(self, field: int) -> list[str]:
        return [self._text(v, field) for v in self.repeated_bytes(field)]

    def repeated_messages(self, field: int, what: str) -> list[Fields]:
        return [Fields(v, f"{self.what}.{what}") for v in self.repeated_bytes(field)]

    def repeated_uint32(self, field: int) -> list[int]:
        """Packed (proto3's default) or not; both are valid on the wire."""
        out: list[int] = []
        for value in self.values.get(field, []):
            if isinstance(value, int):
                out.append(value)
                continue
            pos = 0
            while pos < len(value):
                item, pos = _read_varint(value, pos, self.what)
                out.append(item)
        for item in out:
            if item > _U32:
                raise violation(f"{self.what}: field {field} holds a value out of range for a uint32")
        return out

    def _text(self, raw: bytes, field: int) -> str:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise violation(f"{self.what}: field {field} is not valid UTF-8") from None
