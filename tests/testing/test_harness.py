"""restate-sdk's test harness API without Docker (``restate.test_harness``, ``restate.create_test_harness``).

The first tests are written exactly as restate-sdk's documentation shows its harness ("Testing" in the
Python SDK docs: a fixture entering ``restate.test_harness(app)``, ``harness.ingress_client()``), with
``import unbroken as restate`` in place of ``import restate``: nothing else changes.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

import unbroken as restate
from tests.testing import restate_style_app
from tests.testing.restate_style_app import add, app, click, get, greet, remind, run
from unbroken.testing.harness import RestateTestHarness


# ----------------------------------------------------------------- restate-sdk's documented usage, unchanged
@pytest.fixture(scope="module")
def restate_test_harness() -> Iterator[RestateTestHarness]:
    with restate.test_harness(app) as harness:
        yield harness


def test_greet(restate_test_harness: RestateTestHarness) -> None:
    restate_client = restate_test_harness.ingress_client()
    assert restate_client.post("/greeter/greet", json="Alice").json() == "Hello Alice!"


def test_counter_keeps_state(restate_test_harness: RestateTestHarness) -> None:
    client = restate_test_harness.ingress_client()
    assert client.post("/counter/a/add", json=2).json() == 2
    assert client.post("/counter/a/add", json=3).json() == 5
    assert client.post("/counter/a/get").json() == 5


def test_workflow_with_promise(restate_test_harness: RestateTestHarness) -> None:
    client = restate_test_harness.ingress_client()
    sent = client.post("/signup/ada/run/send", json="ada@example.com")
    assert sent.status_code == 202
    client.post("/signup/ada/click", json="s3cret").raise_for_status()
    assert client.get("/restate/workflow/signup/ada/attach").json() == "verified"


def test_admin_api_is_served(restate_test_harness: RestateTestHarness) -> None:
    with httpx.Client(base_url=restate_test_harness.admin_api_url) as admin:
        names = {s["name"] for s in admin.get("/services").json()["services"]}
    assert names == {"greeter", "counter", "signup", "wallClock"}


def test_a_30_day_sleep_takes_well_under_a_second(
    restate_test_harness: RestateTestHarness,
) -> None:
    client = restate_test_harness.ingress_client()
    started = time.monotonic()
    assert client.post("/greeter/remind", json=30).json() == "reminded after 30 days"
    assert time.monotonic() - started < 0.5


# ----------------------------------------------------------------- the async harness and its typed client
@pytest.fixture
async def env() -> AsyncIterator[restate.HarnessEnvironment]:
    async with restate.create_test_harness(app) as environment:
        yield environment


async def test_create_test_harness_yields_restates_environment(env: restate.HarnessEnvironment) -> None:
    assert env.ingress_url.startswith("http://127.0.0.1:") and env.admin_api_url.startswith("http://")
    assert await env.client.service_call(greet, arg="Bob") == "Hello Bob!"
    assert await env.client.object_call(add, key="b", arg=4) == 4
    assert await env.client.object_call(get, key="b", arg=None) == 4
    await env.client.workflow_send(run, key="bob", arg="bob@example.com")
    await env.client.workflow_call(click, key="bob", arg="wrong")
    async with httpx.AsyncClient(base_url=env.ingress_url) as http:
        answer = await http.get("/restate/workflow/signup/bob/attach")
    assert answer.json() == "rejected"
    started = time.monotonic()
    assert await env.client.service_call(remind, arg=365) == "reminded after 365 days"
    assert time.monotonic() - started < 0.5


# ----------------------------------------------------------------- always_replay, disable_retries
@pytest.fixture
def clock_moving_an_hour_per_read(monkeypatch: pytest.MonkeyPatch) -> None:
    hours = itertools.count(11)
    monkeypatch.setattr(restate_style_app, "wall_clock_hour", lambda: next(hours))


@pytest.mark.usefixtures("clock_moving_an_hour_per_read")
def test_without_replays_a_wall_clock_branch_goes_unnoticed() -> None:
    with restate.test_harness(app, disable_retries=True) as harness:
        assert harness.ingress_client().post("/wallClock/branchy").json() == "done"


@pytest.mark.usefixtures("clock_moving_an_hour_per_read")
def test_always_replay_catches_a_handler_that_branches_on_wall_time() -> None:
    with restate.test_harness(app, always_replay=True, disable_retries=True) as harness:
        answer = harness.ingress_client().post("/wallClock/branchy")
    assert answer.status_code == 570, answer.text  # Restate's journal mismatch code
    assert answer.json()["message"] == (
        "non-deterministic handler: journal entry 1 is Run('morning greeting'), but the code now issues "
        "Run('afternoon greeting')"
    )


async def test_always_replay_still_runs_a_deterministic_workflow() -> None:
    async with restate.create_test_harness(app, always_replay=True) as env:
        assert await env.client.service_call(remind, arg=30) == "reminded after 30 days"
        await env.client.workflow_send(run, key="cy", arg="cy@example.com")
        await env.client.workflow_call(click, key="cy", arg="s3cret")
        async with httpx.AsyncClient(base_url=env.ingress_url) as http:
            answer = await http.get("/restate/workflow/signup/cy/attach")
        assert answer.json() == "verified"


def test_follow_logs_shows_every_step_while_the_harness_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with restate.test_harness(app, follow_logs=True) as harness:
        assert harness.ingress_client().post("/greeter/greet", json="Zoe").json() == "Hello Zoe!"
    logged = capsys.readouterr().err
    assert "attempt 1 of greeter/greet" in logged and "Output" in logged
    with restate.test_harness(app) as harness:  # the handler is gone with the harness that added it
        harness.ingress_client().post("/greeter/greet", json="Yan")
    assert "greeter/greet" not in capsys.readouterr().err
