"""Printing for the operator commands: rich tables for people, JSON for ``--json``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

MAX_CELL = 80


def console() -> Console:
    """stdout; not a terminal (a pipe, a file): wide, so tables never wrap ids."""
    width = None if sys.stdout.isatty() else max(int(os.environ.get("COLUMNS", "0") or 0), 200)
    return Console(highlight=False, soft_wrap=False, width=width)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def clip(text: str, limit: int = MAX_CELL) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell(value: Any, limit: int = MAX_CELL) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return clip(json.dumps(value, ensure_ascii=False), limit)
    return clip(str(value), limit)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    no_wrap: Sequence[str] = (),
    upper: bool = True,
    limit: int = MAX_CELL,
) -> None:
    t = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", show_edge=False, pad_edge=False)
    for name in columns:
        t.add_column(name.upper() if upper else name, no_wrap=name in no_wrap, overflow="fold")
    for row in rows:
        t.add_row(*(cell(v, limit) for v in row))
    console().print(t)


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """``name  value`` lines, aligned; empty values are skipped."""
    items = [(k, v) for k, v in pairs if v not in (None, "")]
    width = max((len(k) for k, _ in items), default=0)
    for k, v in items:
        echo(f"  {k.ljust(width)}  {cell(v, 300)}")


def echo(text: str) -> None:
    """One line as is (never wrapped: ids and timestamps stay whole)."""
    sys.stdout.write(text + "\n")


def result_text(result: Any) -> str:
    """A journaled result (``{"value", "failure"}`` from ``entry_json``) as short text."""
    if not isinstance(result, dict):
        return cell(result)
    failure = result.get("failure")
    if failure:
        return f"failure [{failure.get('code')}] {failure.get('message')}"
    value = result.get("value")
    if value is None:
        return "(void)"
    return cell(value)
