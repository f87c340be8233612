"""The storage backends every contract and state-machine test runs against.

Adding a backend is one entry in ``BACKENDS``: a name and how to open a store at a directory (open again on
the same directory to test durability; ``durable=False`` for stores that do not outlive their object;
``concurrent=True`` for stores several partitions share, each with a transaction open at once: SQLite has
one writer connection, so one partition), and for a server-backed one what to check before (``require``)
and drop after (``destroy``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import pg
from unbroken.core.storage import Store
from unbroken.storage.memory import MemoryStore
from unbroken.storage.postgres import PostgresStore
from unbroken.storage.sqlite import SqliteStore


@dataclass(frozen=True)
class Backend:
    name: str
    open: Callable[[Path], Store]
    durable: bool
    concurrent: bool = False
    require: Callable[[], None] = lambda: None  # skips (or fails under CI) when the backend cannot run
    destroy: Callable[[Path], None] = lambda _path: None  # removes what ``open`` created outside tmp dirs


def _postgres(path: Path) -> Store:
    return PostgresStore(pg.url_for(pg.schema_for(str(path))), partitions=8, node="test-node")


BACKENDS = [
    Backend("memory", lambda _path: MemoryStore(), durable=False, concurrent=True),
    Backend("sqlite", lambda path: SqliteStore(str(path), fsync=False), durable=True),
    Backend(
        "postgres",
        _postgres,
        durable=True,
        require=pg.require,
        destroy=lambda path: pg.drop(pg.schema_for(str(path))),
    ),
]
DURABLE = [b for b in BACKENDS if b.durable]
CONCURRENT = [b for b in BACKENDS if b.concurrent]


class Opener:
    """Opens stores of one backend under a test's tmp dir and closes them all at the end."""

    def __init__(self, backend: Backend, root: Path) -> None:
        self.backend = backend
        self.root = root
        self.opened: list[Store] = []
        self.paths: set[Path] = set()

    def __call__(self, name: str | None = None) -> Store:
        """A store in ``name`` (a fresh directory per call if not given; the same name opens it again)."""
        path = self.root / (name or f"store{len(self.opened)}")
        self.paths.add(path)
        store = self.backend.open(path)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()
        for path in self.paths:
            self.backend.destroy(path)


def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """The body of a fixture parametrized with ``params=BACKENDS`` (``ids=`` the names)."""
    request.param.require()
    open_ = Opener(request.param, tmp_path)
    yield open_
    open_.close_all()
