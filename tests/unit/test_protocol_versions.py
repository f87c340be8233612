"""Each protocol version Unbroken speaks, against restate-sdk 1.2.0's own implementation (its ASGI app called
in-process): the SDK accepts our Start and replayed journal and answers messages we decode, on v5 and v6;
a version outside the SDK's range is refused by it (restate-sdk 1.2.0 raises "(415) Unsupported protocol
version" before its response head, so its ASGI server answers 500): the attempt fails with that status and
its body quoted. Unbroken never sends one: it picks the version from the range the manifest declared."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.apps.restate_peer import app as peer_app
from unbroken.core import journal as j
from unbroken.core.ids import InvocationId
from unbroken.core.schema import ServiceKind, Target
from unbroken.protocol import framing as f
from unbroken.protocol.control import End, NewCommand, ProposeRun, Suspend, decode_sdk_frame
from unbroken.protocol.remote import build_request_body
from unbroken.protocol.transport import AttemptStart


def _start(target: Target, journal: tuple[j.Entry, ...], state: dict[str, bytes] | None) -> AttemptStart:
    inv = str(InvocationId.new(3, b"\x07" * 10, int(time.time() * 1000)))
    kind = ServiceKind.VIRTUAL_OBJECT if target.key else ServiceKind.SERVICE
    return AttemptStart(inv, 1, target, kind, None, journal, state, 42, 0, 0, 60_000, None)


async def _invoke(start: AttemptStart, version: int) -> tuple[int, list[object]]:
    body, _ = build_request_body(start, version)
    transport = httpx.ASGITransport(app=peer_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sdk") as client:
        resp = await client.post(
            f"/invoke/{start.target.service}/{start.target.handler}",
            content=body,
            headers={"content-type": f.content_type(version), "accept": f.content_type(version)},
        )
    if resp.status_code != 200:
        return resp.status_code, []
    assert f.parse_content_type(resp.headers["content-type"]) == version
    return 200, [decode_sdk_frame(frame) for frame in f.decode_frames(resp.content)]


@pytest.mark.parametrize("version", [5, 6])
async def test_eager_state_and_output_on_each_version(version: int) -> None:
    start = _start(Target("PeerCounter", "add", "k1"), (j.InputCommand([], b"5"),), {"count": b"3"})
    status, messages = await _invoke(start, version)
    assert status == 200
    assert messages == [
        NewCommand(j.GetEagerStateCommand("count", b"3")),
        NewCommand(j.SetStateCommand("count", b"8")),
        NewCommand(j.OutputCommand(j.Result(value=b"8"))),
        End(),
    ]


@pytest.mark.parametrize("version", [5, 6])
async def test_run_then_sleep_replayed_on_each_version(version: int) -> None:
    target = Target("PeerGreeter", "greet")
    first = _start(target, (j.InputCommand([], b'"ada"'),), None)
    status, messages = await _invoke(first, version)
    assert status == 200
    run = j.RunCommand(1, "pick greeting")
    assert messages == [
        NewCommand(run),
        ProposeRun(1, j.Result(value=b'"Hello"')),
        Suspend((1,), (1,), ()),  # the run's result, and CANCEL (always awaited)
    ]
    # the next attempt replays the stored command and its notification, then sleeps
    journal = (j.InputCommand([], b'"ada"'), run, j.Notification("run", 1, 0, j.Result(value=b'"Hello"')))
    status, messages = await _invoke(_start(target, journal, None), version)
    assert status == 200
    (sleep, suspension) = messages
    assert isinstance(sleep, NewCommand) and isinstance(sleep.command, j.SleepCommand)
    assert sleep.command.completion_id == 2 and sleep.command.wake_up_time_ms > time.time() * 1000 - 5000
    assert suspension == Suspend((2,), (1,), ())
    journal = (*journal, sleep.command, j.Notification("sleep", 2, 0, j.VOID))
    status, messages = await _invoke(_start(target, journal, None), version)
    assert messages == [NewCommand(j.OutputCommand(j.Result(value=b'"Hello ada!"'))), End()]


@pytest.mark.parametrize("version", [4, 9])
async def test_a_version_the_sdk_does_not_speak_is_refused(version: int) -> None:
    start = _start(Target("PeerCounter", "add", "k1"), (j.InputCommand([], b"5"),), {})
    status, messages = await _invoke(start, version)
    assert status == 500 and messages == []  # no protocol answer at all: the attempt fails with the status
