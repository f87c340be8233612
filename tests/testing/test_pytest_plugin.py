"""The pytest plugin, as a user's project sees it: installed by the entry point, nothing to configure but
the ``unbroken_app`` fixture. Run in a pytest of its own (a subprocess, so its loaded plugins are the ones
an installed unbroken gives, in asyncio's strict mode too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_TESTS = """
from datetime import timedelta

import pytest

import unbroken as restate

greeter = restate.Service("Greeter")


@greeter.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    await ctx.sleep(timedelta(days=7))
    return f"Hello {name}!"


@pytest.fixture
def unbroken_app() -> restate.App:
    return restate.app([greeter])


@pytest.mark.asyncio  # pytest-asyncio's strict mode needs it; its auto mode does not
async def test_call_through_the_client_fixture(unbroken_client) -> None:
    assert await unbroken_client.call(greet, "Ada") == "Hello Ada!"


@pytest.mark.asyncio
async def test_engine_fixture_has_virtual_time(unbroken_engine) -> None:
    start = unbroken_engine.now()
    await unbroken_engine.client.call(greet, "Bo")
    assert unbroken_engine.now() - start == timedelta(days=7)


@pytest.mark.asyncio
@pytest.mark.unbroken(auto_advance=False)
async def test_marker_sets_engine_options(unbroken_engine) -> None:
    inv = await unbroken_engine.client.send(greet, "Cy")
    assert await unbroken_engine.client.output(inv) == (False, None)
    await unbroken_engine.advance(timedelta(days=7))
    assert await unbroken_engine.client.attach(inv) == "Hello Cy!"


def test_sync_harness_fixture(unbroken_harness) -> None:
    assert unbroken_harness.ingress_client().post("/Greeter/greet", json="Di").json() == "Hello Di!"
"""

NO_APP = """
import pytest


@pytest.mark.asyncio
async def test_forgot_the_app(unbroken_engine) -> None:
    pass
"""


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            *(
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:schemathesis",
                "-p",
                "no:hypothesispytest",
            ),
            *("-o", "asyncio_default_fixture_loop_scope=function"),
            *args,
            str(folder),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fixtures_work_in_a_users_project(tmp_path: Path) -> None:
    (tmp_path / "test_users.py").write_text(USER_TESTS)
    run = _pytest(tmp_path, "-o", "asyncio_mode=strict", "-W", "error")  # auto mode asks less of the tests
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout, run.stdout


def test_a_missing_app_fixture_is_named(tmp_path: Path) -> None:
    (tmp_path / "test_no_app.py").write_text(NO_APP)
    run = _pytest(tmp_path, "-o", "asyncio_mode=auto")
    assert run.returncode != 0
    assert "a fixture named `unbroken_app`" in run.stdout + run.stderr
