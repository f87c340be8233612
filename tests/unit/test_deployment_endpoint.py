"""The App as a Restate deployment (``sdk/deployment.py``), driven in-process as an ASGI application: discovery,
the invoke route's answers to bad requests, request/response (the whole request first) and streaming (the
notifications after the attempt started), and which requests a whole App hands to it. The real Restate server
drives it in tests/e2e/test_on_restate_server.py."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unbroken
from unbroken.core import journal as j
from unbroken.core.ids import InvocationId
from unbroken.core.schema import ServiceKind, Target
from unbroken.protocol import framing as f
from unbroken.protocol.control import decode_start, encode_start
from unbroken.protocol.entries import decode_command, decode_notification, encode_command, encode_notification
from unbroken.protocol.pb import Fields
from unbroken.protocol.transport import AttemptStart
from unbroken.sdk.app import _speaks_protocol

svc = unbroken.Service("Svc")


@svc.handler()
async def napper(ctx: unbroken.Context, name: str) -> str:
    await ctx.sleep(timedelta(milliseconds=10))
    return f"hi {name}"


@svc.handler()
async def runner(ctx: unbroken.Context) -> str:
    return await ctx.run("step", lambda: "done")


obj = unbroken.VirtualObject("Obj")


@obj.handler()
async def add(ctx: unbroken.ObjectContext, delta: int) -> int:
    value = (await ctx.get("n", type_hint=int) or 0) + delta
    ctx.set("n", value)
    return value


@obj.handler(kind="shared")
async def get(ctx: unbroken.ObjectSharedContext) -> int:
    return await ctx.get("n", type_hint=int) or 0


APP = unbroken.app([svc, obj])
INV = str(InvocationId.new(7, bytes(range(10)), 1_700_000_000_000))
V6 = "application/vnd.restate.invocation.v6"
ALL = ", ".join(f"application/vnd.restate.endpointmanifest.v{v}+json" for v in (1, 2, 3, 4))


def _ctype(version: int) -> str:
    return f"application/vnd.restate.invocation.v{version}"


def _request(
    entries: list[j.Entry],
    key: str = "",
    state: dict[str, bytes] | None = None,
    kind: ServiceKind = ServiceKind.SERVICE,
    version: int = 6,
) -> bytes:
    start = AttemptStart(
        INV, 1, Target("Svc", "x", key or None), kind, None, tuple(entries), state, 5, 0, 0, 60_000, None
    )
    parts = [f.encode_frame(f.START, encode_start(start, version))]
    kinds: dict[int, int] = {}
    for entry in entries:
        if isinstance(entry, j.Notification):
            parts.append(f.encode_frame(*encode_notification(entry, kinds, version)))
        else:
            parts.append(f.encode_frame(*encode_command(entry, version)))
    return b"".join(parts)


def _input(value: object) -> j.InputCommand:
    return j.InputCommand([], orjson.dumps(value))


class Call:
    """One ASGI request, its body given in chunks (``close``: the last one ends it)."""

    def __init__(self, app: Any, method: str, path: str, headers: dict[str, str], http_version: str = "2"):
        self.app = app
        self.incoming: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.sent: list[MutableMapping[str, Any]] = []
        self.got_body = asyncio.Event()
        self.scope = {
            "type": "http",
            "http_version": http_version,
            "method": method,
            "path": path,
            "root_path": "",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }

    def feed(self, body: bytes, more: bool) -> None:
        self.incoming.put_nowait({"type": "http.request", "body": body, "more_body": more})

    async def receive(self) -> MutableMapping[str, Any]:
        return await self.incoming.get()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)
        self.got_body.set()

    def run(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self.app(self.scope, self.receive, self.send))

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])

    def frames(self) -> list[f.Frame]:
        return f.FrameDecoder().feed(self.body)

    async def frames_until(self, count: int) -> list[f.Frame]:
        async with asyncio.timeout(10):
            while len(self.frames()) < count:
                self.got_body.clear()
                await self.got_body.wait()
        return self.frames()


async def _invoke(path: str, body: bytes, ctype: str = V6) -> Call:
    call = Call(APP.deployment(), "POST", path, {"content-type": ctype})
    call.feed(body, False)
    async with asyncio.timeout(10):
        await call.run()
    return call


# ------------------------------------------------------------------------------------------- discovery
async def test_discovery_answers_the_highest_manifest_version_asked_for() -> None:
    call = Call(APP, "GET", "/discover", {"accept": ALL}, http_version="1.1")
    call.feed(b"", False)
    await call.run()
    assert call.status == 200
    assert (
        dict(call.sent[0]["headers"])[b"content-type"] == b"application/vnd.restate.endpointmanifest.v4+json"
    )
    doc = orjson.loads(call.body)
    assert doc["protocolMode"] == "REQUEST_RESPONSE"  # discovered over HTTP/1.1
    assert (doc["minProtocolVersion"], doc["maxProtocolVersion"]) == (5, 6)
    services = {s["name"]: s for s in doc["services"]}
    assert services["Svc"]["ty"] == "SERVICE" and services["Obj"]["ty"] == "VIRTUAL_OBJECT"
    handlers = {h["name"]: h for h in services["Obj"]["handlers"]}
    assert handlers["add"]["ty"] == "EXCLUSIVE" and handlers["get"]["ty"] == "SHARED"
    assert handlers["get"]["input"] == {} and handlers["add"]["input"]["jsonSchema"] == {"type": "integer"}
    streaming = Call(APP.deployment(), "GET", "/discover", {"accept": ALL}, http_version="2")
    streaming.feed(b"", False)
    await streaming.run()
    assert orjson.loads(streaming.body)["protocolMode"] == "BIDI_STREAM"


async def test_discovery_refuses_a_manifest_version_it_does_not_write() -> None:
    call = Call(
        APP.deployment(), "GET", "/discover", {"accept": "application/vnd.restate.endpointmanifest.v1+json"}
    )
    call.feed(b"", False)
    await call.run()
    assert call.status == 415 and b"v2, v3 and v4" in call.body


# ------------------------------------------------------------------------------------------- bad requests
@pytest.mark.parametrize(
    ("path", "ctype", "status", "says"),
    [
        ("/invoke/Svc/napper", "application/json", 415, b"unsupported service protocol"),
        ("/invoke/Svc/napper", "application/vnd.restate.invocation.v7", 415, b"invocation.v5 to"),
        ("/invoke/Svc/nope", V6, 404, b"no handler Svc/nope"),
        ("/invoke/Nope/napper", V6, 404, b"no handler Nope/napper"),
        ("/elsewhere", V6, 404, b"not a Restate deployment route"),
    ],
)
async def test_bad_invoke_requests_get_a_status_saying_why(
    path: str, ctype: str, status: int, says: bytes
) -> None:
    call = await _invoke(path, b"", ctype)
    assert call.status == status and says in call.body


async def test_a_malformed_start_is_an_error_message_with_code_571() -> None:
    call = await _invoke("/invoke/Svc/napper", f.encode_frame(f.INPUT, b""))
    assert call.status == 200
    (frame,) = call.frames()
    assert frame.type == f.ERROR
    error = Fields(frame.body, "ErrorMessage")
    assert error.uint(1) == 571 and "not Start" in error.text(2)
    truncated = await _invoke("/invoke/Svc/napper", _request([_input("a")])[:-3])
    (frame,) = truncated.frames()
    assert frame.type == f.ERROR and "ended inside a message" in Fields(frame.body, "e").text(2)


@settings(max_examples=150, deadline=None)
@given(head=st.sampled_from([b"", b"valid start"]), tail=st.binary(max_size=64), cut=st.integers(0, 80))
def test_any_request_body_ends_in_one_final_message(head: bytes, tail: bytes, cut: int) -> None:
    """Whatever the body (a valid Start and input or not, cut anywhere, garbage after): a 200 whose frames
    end in exactly one End, Suspension or Error, never an exception or a hang."""
    body = (_request([_input("x")]) if head else b"") + tail
    body = body[: len(body) - cut] if cut < len(body) else body

    async def go() -> Call:
        return await _invoke("/invoke/Svc/napper", body)

    call = asyncio.run(go())
    assert call.status == 200
    frames = call.frames()
    finals = [fr for fr in frames if fr.type in (f.END, f.SUSPENSION, f.ERROR)]
    assert len(finals) == 1 and frames[-1] is finals[0]
    if finals[0].type == f.ERROR:
        assert Fields(finals[0].body, "ErrorMessage").uint(1) in (571, 500)


# ------------------------------------------------------------------------------------------- request/response
@pytest.mark.parametrize("version", [5, 6])
async def test_request_response_suspends_at_a_sleep_then_replays_to_the_output(version: int) -> None:
    first = await _invoke("/invoke/Svc/napper", _request([_input("ada")], version=version), _ctype(version))
    sleep, suspension = first.frames()
    assert sleep.type == f.SLEEP
    command = decode_command(sleep.type, sleep.body)
    assert isinstance(command, j.SleepCommand) and command.completion_id == 1
    assert suspension.type == f.SUSPENSION
    waits = Fields(suspension.body, "SuspensionMessage")
    assert (waits.repeated_uint32(1), waits.repeated_uint32(2)) == ([1], [1])  # the sleep, and CANCEL
    woke = j.Notification("sleep", 1, 0, j.VOID)
    replay = _request([_input("ada"), command, woke], version=version)
    second = await _invoke("/invoke/Svc/napper", replay, _ctype(version))
    output, end = second.frames()
    assert output.type == f.OUTPUT and end.type == f.END
    out = decode_command(output.type, output.body)
    assert isinstance(out, j.OutputCommand) and out.result.value == b'"hi ada"'


async def test_object_state_arrives_eagerly_and_leaves_as_commands() -> None:
    body = _request([_input(2)], key="k", state={"n": b"40"}, kind=ServiceKind.VIRTUAL_OBJECT)
    assert decode_start(f.decode_frames(body)[0].body).state == {"n": b"40"}
    call = await _invoke("/invoke/Obj/add", body)
    kinds = [decode_command(fr.type, fr.body) for fr in call.frames()[:-1]]
    assert kinds == [
        j.GetEagerStateCommand("n", b"40"),
        j.SetStateCommand("n", b"42"),
        j.OutputCommand(j.Result(value=b"42")),
    ]
    assert call.frames()[-1].type == f.END


# ------------------------------------------------------------------------------------------- streaming
async def test_streaming_a_run_result_into_the_open_attempt() -> None:
    call = Call(APP.deployment(), "POST", "/invoke/Svc/runner", {"content-type": V6})
    call.feed(_request([j.InputCommand([], b"")]), True)  # the request stays open
    task = call.run()
    run, propose = await call.frames_until(2)
    assert run.type == f.RUN and propose.type == f.PROPOSE_RUN_COMPLETION
    assert Fields(propose.body, "ProposeRun").blob(14) == b'"done"'
    # the server stores the proposal and streams it back as a notification (Run 0x0411 -> 0x8011)
    stored = j.Notification("run", 1, 0, j.Result(value=b'"done"'))
    msg_type, notification = encode_notification(stored, {1: f.notification_type(f.RUN)}, 6)
    assert msg_type == 0x8011 and decode_notification(msg_type, notification) == stored
    call.feed(f.encode_frame(msg_type, notification), True)
    frames = await call.frames_until(4)
    assert [fr.type for fr in frames[2:]] == [f.OUTPUT, f.END]
    assert not task.done()  # the response ends once the server ended its side
    call.feed(b"", False)
    async with asyncio.timeout(10):
        await task
    assert call.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_wait_suspends_when_the_server_ends_its_side() -> None:
    call = Call(APP.deployment(), "POST", "/invoke/Svc/napper", {"content-type": V6})
    call.feed(_request([_input("bob")]), True)
    task = call.run()
    (sleep,) = await call.frames_until(1)
    assert sleep.type == f.SLEEP
    call.feed(b"", False)  # Restate's inactivity timeout: nothing more will come
    async with asyncio.timeout(10):
        await task
    assert [fr.type for fr in call.frames()] == [f.SLEEP, f.SUSPENSION]


# ------------------------------------------------------------------------------------------- the App's two roles
def test_the_app_hands_protocol_requests_to_the_deployment_by_media_type() -> None:
    def scope(path: str, **headers: str) -> dict[str, Any]:
        return {
            "path": path,
            "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        }

    assert _speaks_protocol(scope("/invoke/Svc/napper", content_type=V6))
    assert _speaks_protocol(scope("/discover", accept=ALL))
    assert not _speaks_protocol(
        scope("/invoke/key/handler", content_type="application/json")
    )  # an object "invoke"
    assert not _speaks_protocol(scope("/discover", accept="application/json"))
    assert not _speaks_protocol(scope("/Svc/napper", content_type=V6))


async def test_mounted_in_fastapi() -> None:
    fastapi = pytest.importorskip("fastapi")
    web = fastapi.FastAPI()
    web.mount("/restate", APP.deployment())
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        found = await client.get("/restate/discover", headers={"accept": ALL})
        assert found.status_code == 200 and {s["name"] for s in found.json()["services"]} == {"Svc", "Obj"}
        ran = await client.post(
            "/restate/invoke/Svc/napper", content=_request([_input("x")]), headers={"content-type": V6}
        )
        assert ran.status_code == 200
        assert [fr.type for fr in f.decode_frames(ran.content)] == [f.SLEEP, f.SUSPENSION]
        assert (await client.get("/restate/health")).json() == {"status": "ok"}


async def test_identity_keys_are_refused_not_ignored() -> None:
    """Request signing is not built: a deployment given keys must not serve unsigned requests."""
    signed = unbroken.app([svc], identity_keys=["publickeyv1_x"]).deployment()
    call = Call(signed, "GET", "/discover", {"accept": ALL})
    call.feed(b"", False)
    await call.run()
    assert call.status == 501 and b"identity_keys" in call.body


async def test_an_app_given_a_protocol_is_a_deployment_only() -> None:
    """restate-sdk's ``protocol=``: the App announces that mode and starts no engine (its lifespan does nothing)."""
    forced = unbroken.app([svc], protocol="bidi")
    call = Call(forced, "GET", "/discover", {"accept": ALL}, http_version="1.1")
    call.feed(b"", False)
    await call.run()
    assert orjson.loads(call.body)["protocolMode"] == "BIDI_STREAM"
    events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        events.put_nowait({"type": kind})
    answers: list[str] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        answers.append(message["type"])

    async with asyncio.timeout(10):
        await forced({"type": "lifespan"}, events.get, send)
    assert answers == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert forced._node is None  # no embedded engine
    with pytest.raises(ValueError, match="protocol must be"):
        unbroken.app([svc], protocol="grpc")
