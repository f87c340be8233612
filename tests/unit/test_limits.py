"""Every bound lives in core/limits.py, named with its unit last, and the bounds agree with each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "unbroken"
LIMITS = SRC / "core" / "limits.py"

# A module-level number whose name says it bounds something.
BOUND_NAME = re.compile(r"(^|_)(MAX|MIN|LIMIT|CAP|ENTRIES|TIMEOUT)(_|$)", re.IGNORECASE)
# Thresholds of an algorithm, not bounds on what the engine holds or waits for: they stay with their code.
NOT_BOUNDS = {
    "ingress/body.py:_DECODE_BYTES_MAX",  # below it a body is checked by decoding, above by scanning
    "ingress/body.py:_MARK_BYTES_MAX",  # the longest byte pattern the number scan looks for
    "http/wire.py:_HEAD_BYTES_MAX",  # derived from limits.url_bytes_max + limits.header_bytes_max
    "runtime/invoker.py:ABORT_TIMEOUT_MS_DEFAULT",  # a default of a service option
    "runtime/invoker.py:ABORT_TIMEOUT_CODE",  # a status code
    "core/durations.py:_MS_RANGE_MAX",  # the range of the stored integer, not a choice
    "core/ids.py:_U32_LIMIT",
    "core/ids.py:_U48_LIMIT",
    "core/ids.py:_U64_LIMIT",
    "core/ids.py:_U128_LIMIT",  # ranges
    "cli/output.py:MAX_CELL",  # the display width of a table cell
}


def _numeric(node: ast.expr) -> bool:
    return all(
        isinstance(n, ast.Constant | ast.BinOp | ast.UnaryOp | ast.operator | ast.unaryop | ast.Name)
        for n in ast.walk(node)
    ) and any(isinstance(n, ast.Constant) and isinstance(n.value, int | float) for n in ast.walk(node))


def _stray_bounds() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == LIMITS:
            continue
        for stmt in ast.parse(path.read_text()).body:
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) else getattr(stmt, "target", None)
            value = getattr(stmt, "value", None)
            if isinstance(target, ast.Name) and value is not None and BOUND_NAME.search(target.id):
                where = f"{path.relative_to(SRC)}:{target.id}"
                if _numeric(value) and where not in NOT_BOUNDS:
                    found.append(where)
    return found


def test_every_bound_is_in_core_limits() -> None:
    assert _stray_bounds() == []


def test_limit_names_end_with_their_unit() -> None:
    units = ("_max", "_min", "_ms", "_s", "_bytes", "_count", "_entries", "_chars")
    names = [
        n.id for n in ast.walk(ast.parse(LIMITS.read_text())) if isinstance(n, ast.Name) and n.id.islower()
    ]
    assert names and [n for n in names if not n.endswith(units)] == []


def test_contradictory_bounds_refuse_to_load() -> None:
    source = LIMITS.read_text().replace("batch_records_max = 512", "batch_records_max = 20_000")
    assert source != LIMITS.read_text()
    with pytest.raises(AssertionError):
        exec(compile(source, str(LIMITS), "exec"), {})
