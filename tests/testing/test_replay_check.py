"""The pre-deploy replay check (``unbroken replay-check``, ``unbroken invocations export``,
``unbroken.testing.check_journal``): in-flight journals replayed against new code, with no side effect."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

import unbroken as restate
from unbroken.cli.app_loader import load_app
from unbroken.testing import TestEngine, check_journal
from unbroken.testing.replay import replay_check

APP = """
from datetime import timedelta

import unbroken as restate

CALLS = {{}}


def act(name: str) -> str:
    CALLS[name] = CALLS.get(name, 0) + 1
    return name


orders = restate.Service("Orders")


@orders.handler()
async def place(ctx: restate.Context, order: str) -> str:
{steps}
    await ctx.sleep(timedelta(days=1))
    await ctx.run("charge", act, args=("charge",))
    return order


app = restate.app([orders])
"""
STEPS = {
    "v1": '    await ctx.run("reserve", act, args=("reserve",))',
    "renamed": '    await ctx.run("reserve stock", act, args=("reserve",))',
    "removed": "    pass",
    "v1_again": '    await ctx.run("reserve", act, args=("reserve",))  # unchanged, a comment added',
}


@pytest.fixture
def apps(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, steps in STEPS.items():
        path = tmp_path / f"orders_{name}.py"
        path.write_text(APP.format(steps=steps))
        out[name] = path
    return out


def _app(path: Path) -> restate.App:
    app = load_app(str(path))
    assert isinstance(app, restate.App)
    return app


async def _in_flight(app: restate.App, data_dir: Path, orders: int) -> list[str]:
    """``orders`` invocations parked on their one-day sleep, the engine stopped: in flight on disk."""
    async with TestEngine(app, data_dir=str(data_dir), auto_advance=False) as engine:
        ids = [await engine.client.send("Orders/place", f"o{i}") for i in range(orders)]
        await engine.wait_idle()
        for inv in ids:
            assert engine.journal_commands(inv) == ["Input", "Run('reserve')", "Sleep"]
    return ids


async def test_unchanged_code_passes_renamed_and_removed_steps_diverge(
    apps: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    v1 = _app(apps["v1"])
    ids = await _in_flight(v1, data, orders=2)
    module = sys.modules[v1.services[0].handlers["place"].fn.__module__]
    before = dict(module.CALLS)

    assert await replay_check(v1, str(data)) == (2, [])
    assert await replay_check(_app(apps["v1_again"]), str(data)) == (2, [])

    total, renamed = await replay_check(_app(apps["renamed"]), str(data))
    assert total == 2 and sorted(d.invocation_id for d in renamed) == sorted(ids)
    assert {(d.index, d.expected, d.actual) for d in renamed} == {
        (1, "Run('reserve')", "Run('reserve stock')")
    }
    assert renamed[0].target == "Orders/place"

    _, removed = await replay_check(_app(apps["removed"]), str(data))
    assert {(d.index, d.expected, d.actual) for d in removed} == {(1, "Run('reserve')", "Sleep")}
    assert module.CALLS == before  # nothing ran: the replay takes results from the journal, runs no action

    gone = tmp_path / "orders_gone.py"
    gone.write_text(APP.format(steps=STEPS["v1"]).replace("async def place(", "async def place_order("))
    _, missing = await replay_check(_app(gone), str(data))
    assert {d.message for d in missing} == {"the new code has no handler Orders/place"}


async def test_an_action_in_flight_is_not_run_by_the_check(tmp_path: Path) -> None:
    started: list[str] = []
    release = asyncio.Event()

    async def slow_step() -> str:
        started.append("slow")
        await release.wait()
        return "done"

    svc = restate.Service("Slow")

    @svc.handler()
    async def go(ctx: restate.Context) -> str:
        return await ctx.run("slow step", slow_step)

    app = restate.app([svc])
    async with TestEngine(app, data_dir=str(tmp_path)) as engine:
        inv = await engine.client.send(go)
        for _ in range(500):  # the action started: its result is not journaled
            if started:
                break
            await asyncio.sleep(0.002)
        assert engine.journal_commands(inv) == ["Input", "Run('slow step')"]
    assert await replay_check(app, str(tmp_path)) == (1, [])
    assert started == ["slow"]  # the check replayed up to the step, and did not start it again
    release.set()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unbroken.cli.main", *args], capture_output=True, text=True, timeout=60
    )


async def test_cli_replay_check_and_export(apps: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    (inv,) = await _in_flight(_app(apps["v1"]), data, orders=1)

    ok = await asyncio.to_thread(_cli, "replay-check", str(apps["v1_again"]), "--data-dir", str(data))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("replayed 1 in-flight invocation(s): 0 would diverge")

    bad = await asyncio.to_thread(_cli, "replay-check", str(apps["renamed"]), "--data-dir", str(data))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert (
        f"{inv} Orders/place: entry 1: the journal has Run('reserve'), the new code issues Run('reserve stock')"
        in bad.stdout
    )

    exported = tmp_path / "journal.json"
    out = await asyncio.to_thread(
        _cli, "invocations", "export", inv, "--data-dir", str(data), "-o", str(exported)
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(exported.read_text())
    assert [e["entry"] for e in doc["entries"]] == ["Input", "Run('reserve')", "Notification(run)", "Sleep"]

    # The exported journal, checked in a test against each version of the code:
    assert await check_journal(_app(apps["v1"]), exported) is None
    removed = await check_journal(_app(apps["removed"]), exported)
    assert removed is not None and (removed.index, removed.expected, removed.actual) == (
        1,
        "Run('reserve')",
        "Sleep",
    )

    missing = await asyncio.to_thread(
        _cli, "invocations", "export", inv, "--data-dir", str(tmp_path / "nowhere")
    )
    assert missing.returncode == 2 and "no Unbroken store" in missing.stderr


def test_cli_takes_exactly_one_store(apps: dict[str, Path], tmp_path: Path) -> None:
    both = _cli(
        "replay-check", str(apps["v1"]), "--data-dir", str(tmp_path), "--store", "postgresql://x@h/db"
    )
    neither = _cli("invocations", "export", "inv_1cvAKV37zeqs5kDxikgWdLN7X0eaFrfUHv")
    for out in (both, neither):
        assert out.returncode == 2, out.stdout + out.stderr
        assert "give exactly one of --data-dir DIR (a SQLite store) or --store URL" in out.stderr
    not_pg = _cli("replay-check", str(apps["v1"]), "--store", str(tmp_path))
    assert not_pg.returncode == 2 and "--store: a PostgreSQL URL like postgresql://" in not_pg.stderr
