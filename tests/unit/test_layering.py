"""Architecture rules that code review would otherwise have to remember."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "unbroken"

# core is pure: no I/O, no clock, no ambient randomness, no threads, no other layer
CORE_FORBIDDEN = {
    "os", "io", "socket", "time", "random", "asyncio", "threading", "sqlite3", "subprocess", "uuid",
    "secrets", "logging", "unbroken.runtime", "unbroken.storage", "unbroken.ingress", "unbroken.admin",
    "unbroken.sdk", "unbroken.cli", "unbroken.protocol",
}  # fmt: skip
# the runtime never imports the SDK except where the server wires in-process handlers
RUNTIME_SDK_ALLOWED = {"server.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(folder: str, forbidden: set[str], allowed_files: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    out = []
    for path in (SRC / folder).rglob("*.py"):
        if path.name in allowed_files:
            continue
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(SRC)} imports {name}")
    return sorted(out)


def test_core_is_pure() -> None:
    assert _violations("core", CORE_FORBIDDEN) == []


# Reading the clock is not an import (core may import datetime to format and parse times): its time is ``now``.
CLOCK_READS = {"now", "utcnow", "today"}


def test_core_never_reads_the_clock() -> None:
    found = []
    for path in (SRC / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in CLOCK_READS and isinstance(node.value, ast.Name):
                if node.value.id in {"datetime", "date"}:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value.id}.{node.attr}")
    assert found == []


def test_runtime_talks_to_handlers_only_through_the_transport() -> None:
    assert _violations("runtime", {"unbroken.sdk"}, RUNTIME_SDK_ALLOWED) == []


def test_storage_does_not_reach_up() -> None:
    assert _violations("storage", {"unbroken.runtime", "unbroken.ingress", "unbroken.sdk", "unbroken.admin"}) == []


def test_ingress_never_touches_storage() -> None:
    assert _violations("ingress", {"unbroken.storage", "sqlite3"}) == []


def test_the_sdk_never_imports_the_official_restate_sdk() -> None:
    found = []
    for path in SRC.rglob("*.py"):
        found += [f"{path.relative_to(SRC)}: {n}" for n in _imports(path) if n == "restate" or n.startswith("restate.")]
    assert found == []


def test_admin_reads_only_through_the_read_model() -> None:
    """The admin API reads the store through ``core.read_model``: no backend, no SQL, no ingress or SDK."""
    assert _violations("admin", {"unbroken.storage", "unbroken.ingress", "unbroken.sdk", "sqlite3"}) == []
    # nor the engine's store object (its file path, its connection)
    found = []
    for path in (SRC / "admin").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "store":
                found.append(f"{path.relative_to(SRC)}:{node.lineno} reads .store")
    assert found == []


def test_shared_http_plumbing_stays_below_the_apps() -> None:
    assert _violations("http", {"unbroken.ingress", "unbroken.admin", "unbroken.runtime", "unbroken.storage", "unbroken.sdk"}) == []
