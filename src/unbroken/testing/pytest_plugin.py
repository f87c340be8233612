"""The pytest plugin (registered by the ``pytest11`` entry point, so installing unbroken is enough).

Define a fixture ``unbroken_app`` returning your App; then::

    async def test_greet(unbroken_client):
        assert await unbroken_client.call(greet, "Ada") == "Hello Ada!"

Fixtures (function scope):

* ``unbroken_engine``: a started :class:`~unbroken.testing.TestEngine` of ``unbroken_app`` in the test's event
  loop (virtual time, a temporary store), stopped after the test. Options come from the fixture
  ``unbroken_engine_options`` (a dict, ``{}`` by default) and the marker
  ``@pytest.mark.unbroken(always_replay=True, auto_advance=False, ...)``, the marker's winning.
* ``unbroken_client``: ``unbroken_engine.client``.
* ``unbroken_harness``: restate-sdk's sync harness (``unbroken.test_harness``) of ``unbroken_app``, for tests
  that talk HTTP.

The async fixtures are pytest-asyncio's when it is installed (they work in its strict and auto modes).
Nothing of the engine is imported until a fixture is used: a project's test start-up does not pay for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from unbroken.sdk.app import App
    from unbroken.testing.client import TestClient
    from unbroken.testing.engine import TestEngine
    from unbroken.testing.harness import RestateTestHarness


def _async_fixture() -> Callable[[Any], Any]:
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - another async plugin (anyio) runs async fixtures then
        return pytest.fixture
    return pytest_asyncio.fixture


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "unbroken(**options): options of the unbroken_engine fixture's TestEngine"
    )


@pytest.fixture
def unbroken_app() -> App:
    """Your App: override this fixture (conftest.py or the test module)."""
    raise pytest.UsageError(
        "the unbroken fixtures test the App a fixture named `unbroken_app` returns: define it in your "
        "conftest.py or test module, e.g. `@pytest.fixture\\ndef unbroken_app(): return my_module.app`"
    )


@pytest.fixture
def unbroken_engine_options() -> dict[str, Any]:
    """Keyword arguments of the ``unbroken_engine`` fixture's TestEngine (override; the marker wins)."""
    return {}


@_async_fixture()
async def unbroken_engine(
    request: pytest.FixtureRequest, unbroken_app: App, unbroken_engine_options: dict[str, Any]
) -> AsyncIterator[TestEngine]:
    """A started TestEngine of ``unbroken_app`` in the test's event loop, stopped after the test."""
    from unbroken.testing.engine import TestEngine

    options = dict(unbroken_engine_options)
    marker = request.node.get_closest_marker("unbroken")
    if marker is not None:
        options.update(marker.kwargs)
    async with TestEngine(unbroken_app, **options) as engine:
        yield engine


@pytest.fixture
def unbroken_client(unbroken_engine: TestEngine) -> TestClient:
    """The ``unbroken_engine``'s client: call, send, attach, awakeables, workflows."""
    return unbroken_engine.client


@pytest.fixture
def unbroken_harness(unbroken_app: App) -> Iterator[RestateTestHarness]:
    """restate-sdk's harness of ``unbroken_app`` (real HTTP: ``.ingress_client()``)."""
    from unbroken.testing.harness import test_harness

    with test_harness(unbroken_app) as harness:
        yield harness
