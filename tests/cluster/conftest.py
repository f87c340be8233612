from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # real processes on PostgreSQL, killed: crash tests, with a longer bound than the default 120 s
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.crash)
            item.add_marker(pytest.mark.timeout(240))
