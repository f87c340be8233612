from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg
from tests.harness import Server


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the PostgreSQL schemas this test process left (servers killed mid-test keep theirs)."""
    if pg.unavailable() is None:
        pg.drop_all()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[object]:
    """Start servers for a test; every one is stopped (or killed) at the end."""
    started: list[Server] = []

    def make(app: str, name: str = "data", **kw: object) -> Server:
        srv = Server(app, tmp_path / name, **kw)  # type: ignore[arg-type]
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.kill()
