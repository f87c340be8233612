"""The in-process kit (``unbroken.testing``): virtual time, the client, inspection, crashes."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest

import unbroken as restate
from tests.testing import kit_app
from tests.testing.kit_app import EFFECTS, WOKE, add, approval_or_timeout, awakeable_id, multi, nap
from unbroken.testing import RequestRefused, TestEngine, crash_at_every_journal_index

WAIT_S = 10.0  # every wait is bounded: a kit bug fails the test instead of hanging it


@pytest.fixture(autouse=True)
def _reset() -> None:
    EFFECTS.clear()
    WOKE.clear()


# ------------------------------------------------------------------------------------------ virtual time
async def test_timers_fire_in_order_under_virtual_time() -> None:
    async with TestEngine(kit_app.app) as engine:
        started = engine.now()
        labels = ["c:72", "a:1", "d:720", "b:5"]  # hours; sent in this (unsorted) order
        ids = [await engine.client.send(nap, label) for label in labels]
        delayed = await engine.client.send(nap, "e:0", delay=timedelta(hours=100))
        results = await asyncio.wait_for(
            asyncio.gather(*(engine.client.attach(i) for i in [*ids, delayed])), WAIT_S
        )
        assert results == [*labels, "e:0"]
        assert WOKE == ["a:1", "b:5", "c:72", "e:0", "d:720"]  # by due time: e is due at 100 h
        assert engine.now() - started == timedelta(hours=720)  # the clock jumped to each timer, no further


async def test_a_30_day_sleep_takes_milliseconds() -> None:
    async with TestEngine(kit_app.app) as engine:
        before = time.monotonic()
        assert await asyncio.wait_for(engine.client.call(nap, "x:720"), WAIT_S) == "x:720"
        assert time.monotonic() - before < 0.5


async def test_without_auto_advance_time_moves_only_when_told() -> None:
    async with TestEngine(kit_app.app, auto_advance=False) as engine:
        inv = await engine.client.send(nap, "x:2")
        await asyncio.sleep(0.05)  # real time passes; virtual time does not
        assert await engine.client.output(inv) == (False, None)
        await engine.advance(timedelta(hours=1, minutes=59))
        assert await engine.client.output(inv) == (False, None)
        await engine.advance(timedelta(minutes=1))
        assert await asyncio.wait_for(engine.client.attach(inv), WAIT_S) == "x:2"


async def test_virtual_time_waits_while_an_invocation_waits_on_the_outside_world() -> None:
    """An awakeable is the test's to resolve: the timeout racing it does not fire by itself."""
    async with TestEngine(kit_app.app) as engine:
        inv = await engine.client.send(approval_or_timeout)
        await engine.wait_idle()
        before = engine.now()
        await asyncio.sleep(0.05)  # real time passes, the auto-advance watcher polls: virtual time stays
        assert engine.now() == before
        await engine.client.resolve_awakeable(engine.state_json("Approvals", "approvals")["last"], "Grace")
        assert await asyncio.wait_for(engine.client.attach(inv), WAIT_S) == "approved by Grace"


async def test_advance_fires_the_timeout_racing_an_awakeable() -> None:
    async with TestEngine(kit_app.app) as engine:
        inv = await engine.client.send(approval_or_timeout)
        await engine.advance(timedelta(minutes=59))
        assert await engine.client.output(inv) == (False, None)
        await engine.advance(timedelta(minutes=1))
        assert await asyncio.wait_for(engine.client.attach(inv), WAIT_S) == "timed out"


# ------------------------------------------------------------------------------------------ the client
async def test_client_idempotency_key_runs_the_handler_once() -> None:
    async with TestEngine(kit_app.app) as engine:
        first = await engine.client.call(add, 2, key="k", idempotency_key="once")
        again = await engine.client.call(add, 2, key="k", idempotency_key="once")
        assert first == again == 2
        assert engine.state_json("Counter", "k") == {"n": 2}
        assert await engine.client.call("Counter/add", 1, key="k") == 3  # a path works as a target too


async def test_client_refuses_what_the_ingress_refuses() -> None:
    async with TestEngine(kit_app.app) as engine:
        with pytest.raises(RequestRefused) as refused:
            await engine.client.call("Nope/handler")
        assert refused.value.status == 404
        with pytest.raises(RequestRefused) as bad:
            await engine.client.call("Counter/add", "not an int", key="k")
        assert bad.value.status == 400


async def test_rejected_awakeable_fails_the_invocation_with_a_terminal_error() -> None:
    async with TestEngine(kit_app.app) as engine:
        inv = await engine.client.send(awakeable_id)
        await engine.wait_idle()
        await engine.client.reject_awakeable(engine.state_json("Approvals", "approvals")["last"], "no")
        with pytest.raises(restate.TerminalError, match="no"):
            await asyncio.wait_for(engine.client.attach(inv), WAIT_S)


async def test_journal_and_invocation_inspection() -> None:
    async with TestEngine(kit_app.app) as engine:
        inv = await engine.client.send(multi, "o1")
        result = await asyncio.wait_for(engine.client.attach(inv), WAIT_S)
        assert result == {"charged": "charge o1", "total": 5, "shipped": "ship o1"}
        row = engine.invocation(inv)
        assert row is not None and row.status == "completed"
        assert engine.journal_commands(inv) == [
            "Input",
            "Run('charge')",
            "Call(Counter/o1/add)",
            "Sleep",
            "OneWayCall(Counter/o1/add)",
            "Run('ship')",
            "Output",
        ]
        assert inv in engine.invocation_ids()


# ------------------------------------------------------------------------------------------ crashes
async def test_crash_at_every_journal_index_keeps_effects_exactly_once() -> None:
    async def scenario(engine: TestEngine) -> None:
        EFFECTS.clear()
        result = await asyncio.wait_for(engine.client.call(multi, "o2"), WAIT_S)
        assert result == {"charged": "charge o2", "total": 5, "shipped": "ship o2"}
        assert EFFECTS == {"charge o2": 1, "ship o2": 1}
        await engine.wait_idle()
        assert engine.state_json("Counter", "o2") == {"n": 6}

    crashes = await crash_at_every_journal_index(kit_app.app, scenario)
    assert crashes >= 11  # every entry of the journal, notifications included


@pytest.mark.parametrize(
    ("point", "charges"),
    [
        ("invoker.before_start", 1),
        ("processor.before_commit", 1),
        ("processor.after_commit", 1),
        ("timer.before_fire", 1),
        ("ingress.before_reply", 1),  # the answer is lost: the client attaches again
        ("sdk.run.before_propose", 2),  # the action ran, its result was not durable: ctx.run is at least once
    ],
)
async def test_crash_at_a_fault_point(point: str, charges: int) -> None:
    async with TestEngine(kit_app.app) as engine:
        engine.crash_at(point=point)
        result = await asyncio.wait_for(engine.client.call(multi, "o3"), WAIT_S)
        assert result["shipped"] == "ship o3"
        assert engine.crashes == 1
        assert EFFECTS["charge o3"] == charges and EFFECTS["ship o3"] == 1


async def test_crash_drops_memory_and_the_new_engine_replays() -> None:
    async with TestEngine(kit_app.app) as engine:
        inv = await engine.client.send(awakeable_id)
        await engine.wait_idle()
        old_node = engine.node
        await engine.crash()
        assert engine.node is not old_node and engine.crashes == 1
        await engine.client.resolve_awakeable(engine.state_json("Approvals", "approvals")["last"], "Ada")
        assert await asyncio.wait_for(engine.client.attach(inv), WAIT_S) == "approved by Ada"
        row = engine.invocation(inv)
        assert row is not None and row.attempts >= 2  # the new engine started it again, from its journal


def test_crash_at_takes_one_target(tmp_path: Path) -> None:
    engine = TestEngine(kit_app.app, data_dir=str(tmp_path))
    with pytest.raises(ValueError):
        engine.crash_at()
    with pytest.raises(ValueError):
        engine.crash_at(journal_index=1, point="timer.before_fire")
    with pytest.raises(ValueError, match="no fault point 'sdk.run.before_propse'"):
        engine.crash_at(point="sdk.run.before_propse")


async def test_real_time_engine_runs_handlers_and_refuses_to_advance() -> None:
    async with TestEngine(kit_app.app, virtual_time=False) as engine:
        assert await asyncio.wait_for(engine.client.call(add, 1, key="rt"), WAIT_S) == 1
        with pytest.raises(RuntimeError, match="virtual time"):
            await engine.advance(timedelta(seconds=1))


async def test_start_at_sets_the_virtual_clock() -> None:
    from datetime import UTC, datetime

    start = datetime(2030, 1, 1, tzinfo=UTC)
    async with TestEngine(kit_app.app, start_at=start) as engine:
        await asyncio.wait_for(engine.client.call(nap, "n:24"), WAIT_S)
        assert engine.now() == datetime(2030, 1, 2, tzinfo=UTC)


def test_the_known_fault_points_are_the_ones_in_the_code() -> None:
    import re

    from unbroken.runtime.faults import POINTS

    src = Path(__file__).resolve().parents[2] / "src" / "unbroken"
    declared = {
        name
        for path in src.rglob("*.py")
        for name in re.findall(
            r"(?:faults\.point|fault_point|faults\.rate)\(\"([a-z_.]+)\"[,)]", path.read_text()
        )
    }
    assert declared == POINTS


async def test_always_replay_replays_after_every_step() -> None:
    from unbroken.core.journal import Notification

    async with TestEngine(kit_app.app, always_replay=True) as engine:
        inv = await engine.client.send(multi, "o5")
        result = await asyncio.wait_for(engine.client.attach(inv), WAIT_S)
        assert result == {"charged": "charge o5", "total": 5, "shipped": "ship o5"}
        assert EFFECTS == {"charge o5": 1, "ship o5": 1}  # replays take results from the journal
        row = engine.invocation(inv)
        notifications = sum(isinstance(e, Notification) for e in engine.journal(inv))
        assert row is not None and row.attempts == notifications + 1  # a new attempt after each result


async def test_a_workflow_submitted_across_crashes_runs_once() -> None:
    from tests.testing.restate_style_app import app as style_app
    from tests.testing.restate_style_app import click, run

    for index in range(3):  # the crash lands before, at and after the run's first entries are stored
        async with TestEngine(style_app) as engine:
            engine.crash_at(journal_index=index)
            await engine.client.workflow_submit(run, "w", "w@example.com")
            await engine.wait_idle()
            await engine.client.call(click, "s3cret", key="w")
            assert await asyncio.wait_for(engine.client.workflow_attach(run, "w"), WAIT_S) == "verified"
            assert engine.crashes == 1


async def test_crash_in_the_middle_of_a_batch_of_concurrent_calls() -> None:
    async with TestEngine(kit_app.app) as engine:
        engine.crash_at(
            point="processor.mid_batch"
        )  # a batch of several records: one applied, none committed
        calls = (engine.client.call(multi, f"m{i}") for i in range(4))
        results = await asyncio.wait_for(asyncio.gather(*calls), WAIT_S)
        assert [r["shipped"] for r in results] == [f"ship m{i}" for i in range(4)]
        assert engine.crashes == 1
        assert EFFECTS == {f"{step} m{i}": 1 for i in range(4) for step in ("charge", "ship")}


async def test_restate_sdks_client_on_the_kit() -> None:
    """Tests written against ``create_test_harness``'s ``env.client`` run on the in-process engine too."""
    from tests.testing.restate_style_app import add as style_add
    from tests.testing.restate_style_app import app as style_app
    from tests.testing.restate_style_app import click, greet, remind, run

    async with TestEngine(style_app) as engine, engine.restate_client() as client:
        assert await client.service_call(greet, arg="Ada") == "Hello Ada!"
        assert await client.object_call(style_add, key="k", arg=3) == 3
        handle = await client.workflow_send(run, key="ada", arg="ada@example.com")
        assert handle.invocation_id.startswith("inv_")
        await client.workflow_call(click, key="ada", arg="s3cret")
        assert await asyncio.wait_for(engine.client.workflow_attach(run, "ada"), WAIT_S) == "verified"
        assert await asyncio.wait_for(client.service_call(remind, arg=30), WAIT_S) == "reminded after 30 days"
        await engine.crash()
        assert await client.object_call(style_add, key="k", arg=1) == 4  # the new node's ingress
