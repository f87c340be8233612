"""Architecture rules that code review would otherwise have to remember."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "unbroken"

# core is pure: no I/O, no clock, no ambient randomness, no threads, no other layer
CORE_FORBIDDEN = {
    "os",
    "io",
    "socket",
    "time",
    "random",
    "asyncio",
    "threading",
    "sqlite3",
    "subprocess",
    "uuid",
    "secrets",
    "logging",
    "unbroken.runtime",
    "unbroken.storage",
    "unbroken.ingress",
    "unbroken.admin",
    "unbroken.sdk",
    "unbroken.cli",
    "unbroken.protocol",
}
# Above every layer: the composition root (``wiring.py``, ``embedded.py``, the server) and the CLI.
ABOVE_ALL = {"unbroken.wiring", "unbroken.embedded", "unbroken.server", "unbroken.cli"}
UNBROKEN_PACKAGES = {
    "unbroken.core",
    "unbroken.protocol",
    "unbroken.storage",
    "unbroken.runtime",
    "unbroken.ingress",
    "unbroken.admin",
    "unbroken.sdk",
    "unbroken.http",
    "unbroken.cli",
    "unbroken.testing",
    "unbroken.config",
} | ABOVE_ALL


def _module_of(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it: at the top, inside functions, under TYPE_CHECKING;
    relative imports resolved."""
    tree = ast.parse(path.read_text())
    package = _module_of(path) if path.name == "__init__.py" else _module_of(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # ``from unbroken import wiring``
    return names


def _violations(folder: str, forbidden: set[str], files: str = "*.py") -> list[str]:
    out = []
    for path in (SRC / folder).rglob(files):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(SRC)} imports {name}")
    return sorted(set(out))


def _only(folder: str, allowed: set[str]) -> list[str]:
    """Imports of ``unbroken`` modules outside ``allowed`` (the standard library and third parties aside)."""
    others = {p for p in UNBROKEN_PACKAGES if not any(p == a or p.startswith(a + ".") for a in allowed)}
    return _violations(folder, others)


def test_core_is_pure() -> None:
    assert _violations("core", CORE_FORBIDDEN) == []
    assert _only("core", {"unbroken.core"}) == []


def test_protocol_builds_only_on_core() -> None:
    assert _only("protocol", {"unbroken.core", "unbroken.protocol"}) == []


# Reading the clock is not an import (core may import datetime to format and parse times): its time is ``now``.
CLOCK_READS = {"now", "utcnow", "today"}


def test_core_never_reads_the_clock() -> None:
    found = []
    for path in (SRC / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in CLOCK_READS
                and isinstance(node.value, ast.Name)
            ):
                if node.value.id in {"datetime", "date"}:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value.id}.{node.attr}")
    assert found == []


def test_runtime_talks_to_handlers_only_through_the_transport() -> None:
    """No whitelist: the server that wires the SDK's in-process transport in is the composition root's."""
    assert (
        _violations(
            "runtime", {"unbroken.sdk", "unbroken.ingress", "unbroken.admin", "unbroken.cli"} | ABOVE_ALL
        )
        == []
    )


def test_storage_does_not_reach_up() -> None:
    assert _only("storage", {"unbroken.core", "unbroken.storage"}) == []


def test_no_storage_backend_imports_another() -> None:
    """``sqlite*.py`` is one backend, ``memory*.py`` another, ``postgres*.py`` a third; ``codec.py`` (row
    codecs) is shared. PostgreSQL's ``/query`` uses SQLite's views through ``wiring``, not an import."""
    assert (
        _violations("storage", {"unbroken.storage.memory", "unbroken.storage.memory_reads"}, "sqlite*.py")
        == []
    )
    assert (
        _violations(
            "storage",
            {
                "unbroken.storage.sqlite",
                "unbroken.storage.sqlite_reads",
                "unbroken.storage.sqlite_views",
                "unbroken.storage.sqlite_snapshot",
            },
            "memory*.py",
        )
        == []
    )
    assert _violations("storage", {"unbroken.storage.sqlite", "unbroken.storage.memory"}, "codec.py") == []
    postgres = {
        "unbroken.storage.postgres",
        "unbroken.storage.postgres_schema",
        "unbroken.storage.postgres_lease",
        "unbroken.storage.postgres_reads",
    }
    sqlite = {
        "unbroken.storage.sqlite",
        "unbroken.storage.sqlite_reads",
        "unbroken.storage.sqlite_views",
        "unbroken.storage.sqlite_snapshot",
        "unbroken.storage.sqlite_mirror",
    }
    memory = {"unbroken.storage.memory", "unbroken.storage.memory_reads"}
    assert _violations("storage", sqlite | memory, "postgres*.py") == []
    assert _violations("storage", postgres, "sqlite*.py") == []
    assert _violations("storage", postgres, "memory*.py") == []


def test_the_sdk_reaches_nothing_of_the_engine() -> None:
    """Not even inside a function: the clock, the fault points and the node factory are injected."""
    forbidden = {"unbroken.runtime", "unbroken.ingress", "unbroken.admin", "unbroken.storage", "unbroken.cli"}
    assert _violations("sdk", forbidden | ABOVE_ALL) == []


def test_ingress_never_touches_storage() -> None:
    assert _violations("ingress", {"unbroken.storage", "sqlite3"}) == []
    assert _violations("ingress", {"unbroken.admin", "unbroken.sdk", "unbroken.cli"} | ABOVE_ALL) == []


def test_the_sdk_never_imports_the_official_restate_sdk() -> None:
    found = []
    for path in SRC.rglob("*.py"):
        found += [
            f"{path.relative_to(SRC)}: {n}"
            for n in _imports(path)
            if n == "restate" or n.startswith("restate.")
        ]
    assert found == []


def test_admin_reads_only_through_the_read_model() -> None:
    """The admin API reads the store through ``core.read_model``: no backend, no SQL, no ingress or SDK."""
    assert _violations("admin", {"unbroken.storage", "unbroken.ingress", "unbroken.sdk", "sqlite3"}) == []
    assert _violations("admin", {"unbroken.cli"} | ABOVE_ALL) == []
    # nor the engine's store object (its file path, its connection)
    found = []
    for path in (SRC / "admin").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "store":
                found.append(f"{path.relative_to(SRC)}:{node.lineno} reads .store")
    assert found == []


def test_shared_http_plumbing_stays_below_the_apps() -> None:
    assert (
        _violations(
            "http",
            {"unbroken.ingress", "unbroken.admin", "unbroken.runtime", "unbroken.storage", "unbroken.sdk"},
        )
        == []
    )
