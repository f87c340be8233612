"""Architecture rules that code review would otherwise have to remember (docs/architecture.md, "Layers").

Every import counts (at the top, inside functions, under TYPE_CHECKING), with no whitelist: ``core/`` imports
only ``core/`` (no I/O, no clock); ``protocol/`` only ``core/``; ``storage/`` nothing above it, and no backend
imports another; ``runtime/`` nothing of ``ingress``, ``admin``, ``sdk`` or ``cli``; ``sdk/`` nothing of
``runtime``, ``ingress``, ``admin``, ``storage`` or ``cli``; ``ingress/`` nothing of ``storage``, ``admin`` or
``sdk``; ``admin/`` nothing of ``ingress``, ``sdk`` or a storage backend. The layers that may import other
``unbroken`` modules may not reach a forbidden one through them either (a top-level facade such as
``unbroken.serde`` re-exports the SDK); none imports the composition root or the CLI.
"""

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


def _under(name: str, packages: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _violations(folder: str, forbidden: set[str], files: str = "*.py") -> list[str]:
    out = []
    for path in (SRC / folder).rglob(files):
        for name in _imports(path):
            if _under(name, forbidden):
                out.append(f"{path.relative_to(SRC)} imports {name}")
    return sorted(set(out))


def _only(folder: str, allowed: set[str]) -> list[str]:
    """Imports of any ``unbroken`` module outside ``allowed``, the package itself included (``import
    unbroken`` is its facade, which re-exports the SDK); the standard library and third parties aside."""
    out = []
    for path in (SRC / folder).rglob("*.py"):
        for name in _imports(path):
            if _under(name, {"unbroken"}) and not _under(name, allowed):
                out.append(f"{path.relative_to(SRC)} imports {name}")
    return sorted(set(out))


# ------------------------------------------------------------------ what a layer reaches, transitively
def _resolve(name: str) -> str | None:
    """The ``unbroken`` module an imported name is or lies in (``unbroken.core.journal.Failure`` ->
    ``unbroken.core.journal``); None for the standard library and third parties."""
    parts = name.split(".")
    while parts and parts[0] == "unbroken":
        rel = Path(*parts[1:]) if len(parts) > 1 else Path()
        if (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


def _graph() -> dict[str, set[str]]:
    """Module -> the ``unbroken`` modules it imports itself. Not the parent packages' ``__init__``s Python
    runs on the way (``unbroken/__init__.py`` imports the SDK, for users): those are not what a module
    depends on."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        edges = {_resolve(name) for name in _imports(path)}
        graph[_module_of(path)] = {m for m in edges if m is not None} - {_module_of(path)}
    return graph


GRAPH = _graph()


def _reaches(folder: str, forbidden: set[str]) -> list[str]:
    """Each module of ``folder`` that reaches a ``forbidden`` module through any chain of imports (a facade
    such as ``unbroken.serde`` re-exporting the SDK included), with the chain."""
    out = []
    for path in (SRC / folder).rglob("*.py"):
        start = _module_of(path)
        via: dict[str, str] = {start: start}
        todo = [start]
        while todo:
            module = todo.pop()
            for dep in GRAPH.get(module, ()):
                if dep in via:
                    continue
                via[dep] = module
                if _under(dep, forbidden):
                    chain = [dep]
                    while chain[-1] != start:
                        chain.append(via[chain[-1]])
                    out.append(" -> ".join(reversed(chain)))
                else:
                    todo.append(dep)
    return sorted(set(out))


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
    forbidden = {"unbroken.sdk", "unbroken.ingress", "unbroken.admin", "unbroken.cli"} | ABOVE_ALL
    assert _violations("runtime", forbidden) == []
    assert _reaches("runtime", forbidden) == []


def test_storage_does_not_reach_up() -> None:
    assert _only("storage", {"unbroken.core", "unbroken.storage"}) == []


# What every storage backend may use. Any other module of ``storage/`` belongs to the backend its name begins
# with (``sqlite.py``, ``sqlite_reads.py``: sqlite; ``memory*.py``: memory; a ``postgres`` one next).
STORAGE_SHARED = {"unbroken.storage", "unbroken.storage.codec"}


def _backend(module: str) -> str | None:
    if module in STORAGE_SHARED:
        return None
    return module.removeprefix("unbroken.storage.").split(".")[0].split("_")[0]


def test_no_storage_backend_imports_another() -> None:
    """Each backend imports only its own modules and the shared ones; the shared ones no backend."""
    found = []
    for path in (SRC / "storage").rglob("*.py"):
        mine = _backend(_module_of(path))
        for name in _imports(path):
            module = _resolve(name)
            if module is None or not _under(module, {"unbroken.storage"}):
                continue
            theirs = _backend(module)
            if theirs is not None and theirs != mine:
                found.append(f"{path.relative_to(SRC)} ({mine or 'shared'}) imports {module} ({theirs})")
    assert sorted(set(found)) == []
    assert {_backend(_module_of(p)) for p in (SRC / "storage").rglob("*.py")} >= {
        "sqlite",
        "memory",
        "postgres",
        None,
    }


def test_the_sdk_reaches_nothing_of_the_engine() -> None:
    """Not even inside a function: the clock, the fault points and the node factory are injected."""
    forbidden = {"unbroken.runtime", "unbroken.ingress", "unbroken.admin", "unbroken.storage", "unbroken.cli"}
    assert _violations("sdk", forbidden | ABOVE_ALL) == []
    assert _reaches("sdk", forbidden | ABOVE_ALL) == []


def test_ingress_never_touches_storage() -> None:
    assert _violations("ingress", {"unbroken.storage", "sqlite3"}) == []
    forbidden = {"unbroken.storage", "unbroken.admin", "unbroken.sdk", "unbroken.cli"} | ABOVE_ALL
    assert _violations("ingress", forbidden) == []
    assert _reaches("ingress", forbidden) == []


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
    forbidden = {"unbroken.storage", "unbroken.ingress", "unbroken.sdk", "unbroken.cli"} | ABOVE_ALL
    assert _violations("admin", forbidden) == []
    assert _reaches("admin", forbidden) == []
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


def test_cluster_builds_only_on_core_and_http() -> None:
    """Forwarding between nodes (``cluster/``) sees the store through ``core.storage``'s seam only: the
    ingress and the admin API use it without reaching storage, and the composition root wires it."""
    assert _only("cluster", {"unbroken.core", "unbroken.http", "unbroken.cluster"}) == []
