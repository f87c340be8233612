"""A small writer of the Arrow IPC *stream* format (``application/vnd.apache.arrow.stream``) for ``/query``.

Restate's CLI asks ``POST /query`` for Arrow unless it wants JSON, and reads the answer with arrow-rs's
``StreamReader`` (``restate sql``, the counts of ``invocations list``). The answer is a table of at most
``limits.query_rows_max`` rows of a few plain types, so this module writes it directly (a schema message,
one record batch, the end-of-stream marker) instead of pulling in pyarrow (~100 MB) for it.

Format facts (Arrow columnar format, "Serialization and Interprocess Communication"): each message is
``0xFFFFFFFF``, the int32 length of its FlatBuffers metadata (padded so that the body starts 8-byte
aligned), the metadata (a ``Message`` table whose ``header`` union holds a ``Schema`` or a ``RecordBatch``),
then the body: the buffers of every column, each padded to 8 bytes. A column of n rows has a validity
bitmap (left empty when nothing is null) and its values: 8 bytes a row for Int64/Float64, a bitmap for
Boolean, n+1 int32 offsets then the bytes for Utf8/Binary.

FlatBuffers are laid out front to back here: a table's vtable just before it, the objects it refers to
after it (FlatBuffers' unsigned offsets point forward), every scalar aligned to its size from the start.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import Any

_CONTINUATION = b"\xff\xff\xff\xff"
_METADATA_V5 = 4
_HEADER_SCHEMA = 1
_HEADER_RECORD_BATCH = 3


class ArrowType(enum.Enum):
    """The column types ``/query`` answers with, and their number in the ``Type`` union."""

    INT64 = 2
    FLOAT64 = 3
    BINARY = 4
    UTF8 = 5
    BOOL = 6


# ------------------------------------------------------------------------------------------- FlatBuffers
# A table is a list of (slot, kind, value). Kinds: "u8", "i16", "i32", "i64" (scalars), "str", "table",
# "tables" (a vector of tables) and "structs" (a vector of 16-byte structs, given as raw bytes).
_Field = tuple[int, str, Any]
_SCALAR = {"u8": "<B", "i16": "<h", "i32": "<i", "i64": "<q"}


class _FlatBuffer:
    def __init__(self) -> None:
        self.buf = bytearray(4)  # the root offset, patched by finish()

    def _pad_to(self, align: int, rest: int = 0) -> None:
        """Pad so that ``len(buf) % align == rest``."""
        while len(self.buf) % align != rest:
            self.buf.append(0)

    def finish(self, root: list[_Field]) -> bytes:
        struct.pack_into("<I", self.buf, 0, self._table(root))
        self._pad_to(8)
        return bytes(self.buf)

    def _table(self, fields: list[_Field]) -> int:
        slots = 1 + max((slot for slot, _, _ in fields), default=-1)
        # widest first, so that aligning each field wastes little
        inline = sorted(fields, key=lambda f: -struct.calcsize(_SCALAR.get(f[1], "<I")))
        self._pad_to(2)
        vtable_pos = len(self.buf)
        self.buf += bytes(4 + 2 * slots)
        self._pad_to(8)
        table_pos = len(self.buf)
        self.buf += struct.pack("<i", table_pos - vtable_pos)
        children: list[tuple[int, str, Any]] = []
        offsets = [0] * slots
        for slot, kind, value in inline:
            fmt = _SCALAR.get(kind, "<I")
            self._pad_to(struct.calcsize(fmt))
            offsets[slot] = len(self.buf) - table_pos
            if kind in _SCALAR:
                self.buf += struct.pack(fmt, value)
            else:
                children.append((len(self.buf), kind, value))
                self.buf += bytes(4)
        struct.pack_into(
            f"<HH{slots}H", self.buf, vtable_pos, 4 + 2 * slots, len(self.buf) - table_pos, *offsets
        )
        for field_pos, kind, value in children:
            struct.pack_into("<I", self.buf, field_pos, self._child(kind, value) - field_pos)
        return table_pos

    def _child(self, kind: str, value: Any) -> int:
        if kind == "table":
            return self._table(value)
        if kind == "str":
            data = value.encode()
            self._pad_to(4)
            pos = len(self.buf)
            self.buf += struct.pack("<I", len(data)) + data + b"\0"
            return pos
        if kind == "structs":  # 16-byte structs of int64s: the elements must be 8-byte aligned
            self._pad_to(8, 4)
            pos = len(self.buf)
            self.buf += struct.pack("<I", len(value) // 16) + value
            return pos
        if kind == "tables":
            self._pad_to(4)
            pos = len(self.buf)
            self.buf += struct.pack("<I", len(value)) + bytes(4 * len(value))
            for i, table in enumerate(value):
                slot_pos = pos + 4 + 4 * i
                struct.pack_into("<I", self.buf, slot_pos, self._table(table) - slot_pos)
            return pos
        raise ValueError(f"unknown FlatBuffers kind {kind!r}")


def _message(header_type: int, header: list[_Field], body: bytes) -> bytes:
    meta = _FlatBuffer().finish(
        [(0, "i16", _METADATA_V5), (1, "u8", header_type), (2, "table", header), (3, "i64", len(body))]
    )
    return _CONTINUATION + struct.pack("<i", len(meta)) + meta + body


# ----------------------------------------------------------------------------------------------- columns
def _type_table(ty: ArrowType) -> list[_Field]:
    if ty is ArrowType.INT64:
        return [(0, "i32", 64), (1, "u8", 1)]  # bitWidth, is_signed
    if ty is ArrowType.FLOAT64:
        return [(0, "i16", 2)]  # precision DOUBLE
    return []


def _bitmap(bits: Sequence[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def _column_buffers(ty: ArrowType, values: Sequence[Any]) -> tuple[int, list[bytes]]:
    """(null count, buffers) of one column."""
    valid = [v is not None for v in values]
    nulls = valid.count(False)
    validity = _bitmap(valid) if nulls else b""
    if ty is ArrowType.INT64:
        return nulls, [validity, struct.pack(f"<{len(values)}q", *(v or 0 for v in values))]
    if ty is ArrowType.FLOAT64:
        return nulls, [validity, struct.pack(f"<{len(values)}d", *(float(v or 0) for v in values))]
    if ty is ArrowType.BOOL:
        return nulls, [validity, _bitmap([bool(v) for v in values])]
    datas = [
        b"" if v is None else v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogatepass")
        for v in values
    ]
    offsets = [0]
    for d in datas:
        offsets.append(offsets[-1] + len(d))
    return nulls, [validity, struct.pack(f"<{len(offsets)}i", *offsets), b"".join(datas)]


def _pad8(data: bytes) -> bytes:
    return data + bytes(-len(data) % 8)


def write_stream(columns: Sequence[tuple[str, ArrowType]], rows: Sequence[Sequence[Any]]) -> bytes:
    """The whole stream: the schema, one record batch with ``rows`` (if any), the end-of-stream marker."""
    fields: list[list[_Field]] = [
        [
            (0, "str", name),
            (1, "u8", 1),
            (2, "u8", ty.value),
            (3, "table", _type_table(ty)),
            (5, "tables", []),
        ]
        for name, ty in columns
    ]
    out = [_message(_HEADER_SCHEMA, [(0, "i16", 0), (1, "tables", fields)], b"")]
    if rows:
        nodes, buffers, body = bytearray(), bytearray(), bytearray()
        for i, (_, ty) in enumerate(columns):
            nulls, column = _column_buffers(ty, [row[i] for row in rows])
            nodes += struct.pack("<qq", len(rows), nulls)
            for data in column:
                buffers += struct.pack("<qq", len(body), len(data))
                body += _pad8(data)
        header: list[_Field] = [
            (0, "i64", len(rows)),
            (1, "structs", bytes(nodes)),
            (2, "structs", bytes(buffers)),
        ]
        out.append(_message(_HEADER_RECORD_BATCH, header, bytes(body)))
    out.append(_CONTINUATION + b"\0\0\0\0")
    return b"".join(out)


def infer_type(values: Sequence[Any], declared: ArrowType | None) -> ArrowType:
    """A column's type from its values (SQLite's are typed per value): the declared one when all are null."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return declared or ArrowType.UTF8
    if kinds == {bool}:
        return ArrowType.BOOL
    if kinds == {int}:
        return ArrowType.INT64
    if kinds <= {int, float}:
        return ArrowType.FLOAT64
    if kinds == {bytes}:
        return ArrowType.BINARY
    return ArrowType.UTF8  # text, or a mix (written as text)


_DECLARED = {"Boolean": ArrowType.BOOL}


def answer_stream(columns: Sequence[str], rows: Sequence[dict[str, Any]], declared: dict[str, str]) -> bytes:
    """A ``/query`` answer (JSON-ready rows: blobs already hex text) as an Arrow stream. ``declared``: the
    Arrow type names of known columns (``core.query_tables``), used for a column that holds only nulls."""
    names = list(columns) or (list(rows[0]) if rows else [])
    table = [[row.get(name) for name in names] for row in rows]
    types = []
    for i, name in enumerate(names):
        known = declared.get(name, "Utf8")
        fallback = ArrowType.INT64 if known.startswith(("Int", "UInt")) else _DECLARED.get(known)
        values = [row[i] for row in table]
        ty = infer_type(values, fallback)
        if ty is ArrowType.FLOAT64:
            values = [None if v is None else float(v) for v in values]
        types.append((name, ty))
    return write_stream(types, table)
