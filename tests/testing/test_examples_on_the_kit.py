"""The examples' tests on the in-process kit, each well under a second: the 30-day trial workflow, the
saga whose compensation retries with backoff, the signup workflow with its promise."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import unbroken as restate
from unbroken.testing import TestEngine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WAIT_S = 10.0
FAST_S = 0.8  # "well under a second" for each test (they take ~0.05 s alone; the bound leaves room for a loaded CI)


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_on_kit_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


trial = _load("trial")
saga = _load("travel_saga")
signup = _load("user_signup")


@pytest.fixture
def stopwatch() -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < FAST_S


@pytest.fixture(autouse=True)
def _reset() -> None:
    trial.SENT.clear()
    trial.CHARGED.clear()


# ------------------------------------------------------------------------------------------ trial.py
async def test_trial_charges_once_after_30_days(stopwatch: None) -> None:
    async with TestEngine(trial.app) as engine:
        start = engine.now()
        await engine.client.workflow_submit(trial.run, "ada", "ada@example.com")
        # The first 27 days pass by themselves (auto-advance); the last 3 race the `cancel` promise, which
        # only the test can resolve: virtual time waits for the test to move it.
        await engine.wait_idle()
        assert engine.now() - start == timedelta(days=27)
        await engine.advance(timedelta(days=3))
        assert await asyncio.wait_for(engine.client.workflow_attach(trial.run, "ada"), WAIT_S) == "receipt-1"
        assert trial.CHARGED == ["ada@example.com"]
        assert trial.SENT == [
            "ada@example.com: welcome to your 30-day trial",
            "ada@example.com: your trial ends in 3 days",
        ]
        assert await engine.client.call(trial.status, key="ada") == "subscribed"


async def test_trial_cancelled_in_its_last_days_is_not_charged(stopwatch: None) -> None:
    async with TestEngine(trial.app) as engine:
        await engine.client.workflow_submit(trial.run, "bo", "bo@example.com")
        await engine.wait_idle()
        await engine.client.call(trial.cancel, key="bo")
        assert await asyncio.wait_for(engine.client.workflow_attach(trial.run, "bo"), WAIT_S) == "cancelled"
        assert trial.CHARGED == []


# ------------------------------------------------------------------------------------------ travel_saga.py
async def test_saga_compensation_retries_with_backoff_then_gives_up(stopwatch: None) -> None:
    attempts: list[float] = []

    async with TestEngine(saga.app) as engine:
        real_cancel_car = saga.cancel_car

        def cancel_car(req: Any) -> None:
            attempts.append(engine.clock.now_ms())
            real_cancel_car(req)

        saga.cancel_car = cancel_car
        try:
            request = {
                "trip_id": "t1",
                "traveller": "Alice",
                "fail_hotel": True,
                "fail_car_cancellation": True,
            }
            with pytest.raises(restate.TerminalError, match="fully booked"):
                await asyncio.wait_for(engine.client.call(saga.book, request), WAIT_S)
        finally:
            saga.cancel_car = real_cancel_car
        entries = await engine.client.call(saga.entries, key="t1")
    assert entries == [
        "flight booked: FL-t1",
        "car booked: CAR-t1",
        "booking failed: no hotel room for trip t1: fully booked",
        "hotel cancelled",
        "car cancellation FAILED: ctx.run 'cancel car' failed after 3 attempts: "
        "ConnectionError('car rental API unreachable')",
        "flight cancelled",
    ]
    assert len(attempts) == 3  # the compensation's retry budget (max_attempts=3)
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps == [100, 200]  # backoff from 100 ms, doubling: virtual time jumped, nothing was waited


async def test_saga_happy_path(stopwatch: None) -> None:
    async with TestEngine(saga.app) as engine:
        booking = await asyncio.wait_for(
            engine.client.call(saga.book, {"trip_id": "t2", "traveller": "Bob"}), WAIT_S
        )
        assert booking == saga.TripBooking(trip_id="t2", flight="FL-t2", car="CAR-t2", hotel="HOTEL-t2")


# ------------------------------------------------------------------------------------------ user_signup.py
async def test_signup_waits_for_the_click(stopwatch: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="examples.user_signup")
    async with TestEngine(signup.app) as engine:
        user = {"name": "Alice", "email": "alice@example.com"}
        await engine.client.workflow_submit(signup.run, "alice", user)
        await engine.wait_idle()
        secret = json.loads(caplog.records[-1].args[-1])  # the "email": the log line with the link's secret
        assert await engine.client.output(engine.invocation_ids()[0]) == (False, None)
        assert await engine.client.call(signup.click, secret, key="alice") == (
            "thanks, your email address is being verified"
        )
        result = await asyncio.wait_for(engine.client.workflow_attach(signup.run, "alice"), WAIT_S)
        assert result == {"user_id": "alice", "verified": True, "message": "welcome, Alice!"}
        with pytest.raises(restate.TerminalError, match="promise was already completed"):
            await engine.client.call(signup.click, secret, key="alice")
