"""Test your handlers: the engine in the test's own event loop, virtual time, crashes on demand.

    from unbroken.testing import TestEngine

    async def test_trial_reminder():
        async with TestEngine(app) as engine:               # a temporary store, virtual time
            result = await engine.client.call(start_trial, "ada")   # a 30-day sleep: milliseconds
            engine.crash_at(journal_index=3)                 # or point="sdk.run.before_propose"
            ...

``TestEngine`` (``engine.py``): the production node on a temporary SQLite file; ``engine.client`` calls,
sends (delayed, idempotent), attaches, resolves awakeables, submits and attaches to workflows;
``advance(timedelta)`` or auto-advance; ``state``, ``journal``, ``invocation`` to inspect; ``crash()`` and
``crash_at(...)``. ``crash_at_every_journal_index`` runs a scenario once per journal index with a crash there.
``check_journal`` replays an exported journal against the code (``replay.py``, ``unbroken replay-check``).
``unbroken.test_harness``/``create_test_harness`` (``harness.py``) are restate-sdk's harness over HTTP.
The pytest plugin (``pytest_plugin.py``) gives the ``unbroken_engine`` fixture. The seeded simulator is
``unbroken.testing.sim`` (``python -m unbroken.testing.sim``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unbroken.testing.client import RequestRefused, TestClient
    from unbroken.testing.engine import EngineCrashed, TestEngine, crash_at_every_journal_index
    from unbroken.testing.replay import Divergence, ExportedInvocation, check_journal

# Imported on first use: pytest loads this package for its plugin (``pytest_plugin.py``) in every project that
# installs unbroken, and ``python -m unbroken.testing.sim`` needs none of it.
_WHERE = {
    "Divergence": "unbroken.testing.replay",
    "ExportedInvocation": "unbroken.testing.replay",
    "check_journal": "unbroken.testing.replay",
    "EngineCrashed": "unbroken.testing.engine",
    "RequestRefused": "unbroken.testing.client",
    "TestClient": "unbroken.testing.client",
    "TestEngine": "unbroken.testing.engine",
    "crash_at_every_journal_index": "unbroken.testing.engine",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'unbroken.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Divergence",
    "EngineCrashed",
    "ExportedInvocation",
    "RequestRefused",
    "TestClient",
    "TestEngine",
    "check_journal",
    "crash_at_every_journal_index",
]
