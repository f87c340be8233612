"""The Arrow IPC stream writer of ``/query``, read back with a real Arrow reader (pyarrow)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.ipc as ipc
from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.admin.arrow_ipc import ArrowType, answer_stream, write_stream


def read(data: bytes) -> pa.Table:
    return ipc.open_stream(data).read_all()


def test_every_type_with_nulls() -> None:
    columns = [
        ("s", ArrowType.UTF8),
        ("i", ArrowType.INT64),
        ("f", ArrowType.FLOAT64),
        ("b", ArrowType.BOOL),
        ("bin", ArrowType.BINARY),
    ]
    rows = [["héllo ✓", -(2**63), 1.5, True, b"\x00\xff"], [None] * 5, ["", 2**63 - 1, -0.25, False, b""]]
    table = read(write_stream(columns, rows))
    assert table.schema == pa.schema(
        [("s", pa.string()), ("i", pa.int64()), ("f", pa.float64()), ("b", pa.bool_()), ("bin", pa.binary())]
    )
    assert [list(r.values()) for r in table.to_pylist()] == rows


def test_no_rows_still_has_the_schema() -> None:
    table = read(write_stream([("id", ArrowType.UTF8), ("n", ArrowType.INT64)], []))
    assert table.num_rows == 0 and table.column_names == ["id", "n"]


def test_answer_types_come_from_values_then_from_the_declared_type() -> None:
    rows = [
        {"n": 1, "x": None, "done": True, "t": "a", "r": 1},
        {"n": 2, "x": None, "done": None, "t": None, "r": 2.5},
    ]
    table = read(answer_stream(["n", "x", "done", "t", "r"], rows, {"x": "UInt64"}))
    assert table.schema.types == [pa.int64(), pa.int64(), pa.bool_(), pa.string(), pa.float64()]
    assert table.to_pylist() == [
        {"n": 1, "x": None, "done": True, "t": "a", "r": 1.0},
        {"n": 2, "x": None, "done": None, "t": None, "r": 2.5},
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | st.text(),
            st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.none() | st.booleans(),
        ),
        max_size=70,
    )
)
def test_any_rows_read_back_unchanged(rows: list[tuple[str | None, int | None, bool | None]]) -> None:
    columns = [("s", ArrowType.UTF8), ("i", ArrowType.INT64), ("b", ArrowType.BOOL)]
    text_rows = [list(r) for r in rows]  # st.text() makes no lone surrogates: all valid UTF-8
    table = read(write_stream(columns, text_rows))
    assert [[r["s"], r["i"], r["b"]] for r in table.to_pylist()] == text_rows
