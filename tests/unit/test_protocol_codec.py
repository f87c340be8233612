"""The service-protocol codec: frames, journal entries to and from Restate's messages, and what a remote
SDK's bytes can do to it (anything at all ends in a ProtocolViolation with code 571, never another error)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unbroken.core import journal as j
from unbroken.core.errors import PROTOCOL_VIOLATION, ProtocolViolation
from unbroken.core.ids import InvocationId
from unbroken.core.schema import ServiceKind, Target
from unbroken.protocol import framing as f
from unbroken.protocol.control import (
    End,
    Error,
    NewCommand,
    ProposeRun,
    Suspend,
    decode_sdk_frame,
    decode_start,
    encode_error,
    encode_propose_run,
    encode_start,
    encode_suspension,
)
from unbroken.protocol.discovery import DiscoveryError, parse_manifest
from unbroken.protocol.entries import (
    completion_type,
    decode_command,
    decode_notification,
    encode_command,
    encode_notification,
)
from unbroken.protocol.remote import build_request_body
from unbroken.protocol.transport import AttemptStart

# ------------------------------------------------------------------------------------------ strategies
text = st.text(max_size=20)
name = st.text(min_size=1, max_size=12)
data = st.binary(max_size=40)
u32 = st.integers(1, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
failure = st.builds(
    j.Failure,
    st.integers(0, 2**32 - 1),
    text,
    st.none() | st.dictionaries(name, text, min_size=1, max_size=3),
)
value_or_failure = st.one_of(st.builds(j.Result, value=data), st.builds(j.Result, failure=failure))
any_result = st.one_of(st.just(j.VOID), value_or_failure)
headers = st.lists(st.builds(j.Header, name, text), max_size=3)
opt_key = st.none() | name

commands = st.one_of(
    st.builds(j.InputCommand, headers, data),
    st.builds(j.OutputCommand, value_or_failure),
    st.builds(j.GetEagerStateCommand, text, st.none() | data),
    st.builds(j.GetEagerStateKeysCommand, st.lists(text, max_size=4)),
    st.builds(j.GetLazyStateCommand, text, u32, text),
    st.builds(j.GetLazyStateKeysCommand, u32, text),
    st.builds(j.SetStateCommand, text, data),
    st.builds(j.ClearStateCommand, text),
    st.just(j.ClearAllStateCommand()),
    st.builds(j.SleepCommand, u64, u32, text),
    st.builds(j.CallCommand, name, name, data, headers, opt_key, opt_key, u32, u32, text),
    st.builds(j.OneWayCallCommand, name, name, data, u64, headers, opt_key, opt_key, u32, text),
    st.builds(j.RunCommand, u32, text),
    st.builds(j.GetPromiseCommand, text, u32),
    st.builds(j.PeekPromiseCommand, text, u32),
    st.builds(j.CompletePromiseCommand, text, value_or_failure, u32),
    st.builds(j.SendSignalCommand, name, u32, any_result, text),
    st.builds(lambda t, r, n, s: j.SendSignalCommand(t, 0, r, n, s), name, any_result, text, name),
    st.builds(j.CompleteAwakeableCommand, name, value_or_failure, text),
    st.builds(j.AttachInvocationCommand, name, u32, text),
    st.builds(j.GetInvocationOutputCommand, name, u32, text),
)


# ------------------------------------------------------------------------------------------ round trips
@given(commands)
def test_every_command_round_trips(cmd: j.Command) -> None:
    msg_type, body = encode_command(cmd, 6)
    assert decode_command(msg_type, body) == cmd


@given(st.builds(j.OutputCommand, st.builds(j.Result, failure=failure)))
def test_v5_drops_failure_metadata_only(cmd: j.OutputCommand) -> None:
    msg_type, body = encode_command(cmd, 5)
    decoded = decode_command(msg_type, body)
    assert isinstance(decoded, j.OutputCommand) and decoded.result.failure is not None
    assert cmd.result.failure is not None
    assert decoded.result.failure.code == cmd.result.failure.code
    assert decoded.result.failure.message == cmd.result.failure.message
    assert decoded.result.failure.metadata is None


@given(
    st.sampled_from(["sleep", "call", "run", "promise", "attach", "output", "get_lazy_state"]),
    u32,
    any_result,
)
def test_completion_notifications_round_trip(kind: str, completion_id: int, result: j.Result) -> None:
    n = j.Notification(kind, completion_id, 0, result)
    msg_type, body = encode_notification(n, {}, 6)
    assert msg_type & f.NOTIFICATION_BIT
    assert decode_notification(msg_type, body) == n


@given(u32, name)
def test_call_invocation_id_notification_carries_the_id(completion_id: int, inv: str) -> None:
    n = j.Notification("call_id", completion_id, 0, j.Result(value=inv.encode()), inv)
    msg_type, body = encode_notification(n, {}, 6)
    assert msg_type == f.CALL_INVOCATION_ID
    assert decode_notification(msg_type, body) == n


@given(u32, st.lists(text, max_size=4, unique=True))
def test_lazy_state_keys_travel_as_state_keys(completion_id: int, keys: list[str]) -> None:
    n = j.Notification("get_lazy_state_keys", completion_id, 0, j.Result(value=j.encode_state_keys(keys)))
    msg_type, body = encode_notification(n, {}, 6)
    assert msg_type == f.notification_type(f.GET_LAZY_STATE_KEYS)
    assert decode_notification(msg_type, body) == n


@given(u32, any_result)
def test_signals_round_trip_by_index_and_by_name(idx: int, result: j.Result) -> None:
    for n in (j.Notification("signal", 0, idx, result), j.Notification("signal", 0, 0, result, None, "go")):
        msg_type, body = encode_notification(n, {}, 6)
        assert msg_type == f.SIGNAL
        assert decode_notification(msg_type, body) == n


def test_a_promise_notification_takes_the_type_of_the_command_it_answers() -> None:
    kinds = completion_type(j.PeekPromiseCommand("p", 3))
    msg_type, _ = encode_notification(j.Notification("promise", 3, 0, j.VOID), kinds, 6)
    assert msg_type == f.notification_type(f.PEEK_PROMISE)
    call = completion_type(j.CallCommand("S", "h", b"", [], None, None, 1, 2))
    assert call == {1: f.CALL_INVOCATION_ID, 2: f.notification_type(f.CALL)}


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), data), max_size=5), st.data())
def test_frames_split_anywhere_decode_the_same(
    frames: list[tuple[int, int, bytes]], cut: st.DataObject
) -> None:
    stream = b"".join(f.encode_frame(t, b, flags) for t, flags, b in frames)
    decoder = f.FrameDecoder()
    got: list[f.Frame] = []
    pos = 0
    while pos < len(stream):
        step = cut.draw(st.integers(1, max(1, len(stream) - pos)))
        got += decoder.feed(stream[pos : pos + step])
        pos += step
    decoder.finish()
    assert [(g.type, g.flags, g.body) for g in got] == [(t, fl, b) for t, fl, b in frames]


def _start(state: dict[str, bytes] | None, key: str | None = "k1", lazy: bool = False) -> AttemptStart:
    inv = str(InvocationId.new(7, b"\x02" * 10, 1_700_000_000_000))
    kind = ServiceKind.VIRTUAL_OBJECT if key else ServiceKind.SERVICE
    journal = (j.InputCommand([j.Header("a", "b")], b"5"),)
    return AttemptStart(
        inv, 3, Target("S", "h", key), kind, None, journal, state, 99, 2, 1500, 60_000, None, lazy
    )


def test_start_message_carries_id_state_key_and_seed() -> None:
    start = _start({"count": b"3", "other": b""})
    info = decode_start(encode_start(start, 6))
    assert info.id == InvocationId.parse(start.invocation_id).to_bytes() and len(info.id) == 24
    assert info.debug_id == start.invocation_id and info.known_entries == 1
    assert info.state == {"count": b"3", "other": b""} and not info.partial_state
    assert (info.key, info.retry_count, info.ms_since_progress, info.random_seed) == ("k1", 2, 1500, 99)
    assert decode_start(encode_start(start, 5)).random_seed == 0  # v5 has no seed
    assert decode_start(encode_start(_start(None, None), 6)).partial_state  # a service: no state
    lazy = decode_start(encode_start(_start({"count": b"3"}, lazy=True), 6))
    assert lazy.partial_state and lazy.state == {}


def test_request_body_is_start_then_the_journal() -> None:
    start = _start({})
    body, _ = build_request_body(start, 6)
    frames = f.decode_frames(body)
    assert [fr.type for fr in frames] == [f.START, f.INPUT]


# ------------------------------------------------------------------------------------------ from an SDK
def test_bytes_seen_on_the_wire_decode() -> None:
    """Frames captured from restate-sdk 1.2.0 under restate-server 1.7.12 (../shared/restate-interfaces.md)."""
    output = bytes.fromhex("040100000000000f720d0a0b2248656c6c6f20626f6222")
    (frame,) = f.decode_frames(output)
    assert decode_sdk_frame(frame) == NewCommand(j.OutputCommand(j.Result(value=b'"Hello bob"')))
    suspension = f.Frame(f.SUSPENSION, 0, bytes.fromhex("0a0101120101"))
    assert decode_sdk_frame(suspension) == Suspend((1,), (1,), ())


@given(
    st.one_of(
        st.builds(ProposeRun, u32, value_or_failure),
        st.builds(Suspend, st.lists(u32, min_size=1).map(tuple), st.lists(u32).map(tuple), st.just(())),
        st.builds(Error, st.integers(0, 2**32 - 1), text, text, st.none() | u64, st.just("")),
    )
)
def test_sdk_control_messages_round_trip(msg: ProposeRun | Suspend | Error) -> None:
    if isinstance(msg, ProposeRun):
        frame = f.Frame(f.PROPOSE_RUN_COMPLETION, 0, encode_propose_run(msg, 6))
    elif isinstance(msg, Suspend):
        frame = f.Frame(f.SUSPENSION, 0, encode_suspension(msg))
    else:
        frame = f.Frame(f.ERROR, 0, encode_error(msg))
    assert decode_sdk_frame(frame) == msg
    assert decode_sdk_frame(f.Frame(f.END, 0, b"")) == End()


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        (f.Frame(f.INPUT, 0, b""), "only the engine writes it"),
        (f.Frame(f.START, 0, b""), "only the engine sends"),
        (f.Frame(f.notification_type(f.SLEEP), 0, b""), "only the engine sends"),
        (f.Frame(0x0199, 0, b""), "unknown message type 0x0199"),
        (f.Frame(0x0415, 0, b""), "unknown command message type 0x0415"),
        (f.Frame(0xFC01, 0, b""), "unknown message type 0xfc01"),
        (f.Frame(f.SUSPENSION, 0, b""), "waiting on nothing"),
        (f.Frame(f.SUSPENSION, 0, bytes.fromhex("2200")), "future tree (protocol v7)"),
        (f.Frame(f.SET_STATE, 0, bytes.fromhex("0a05")), "5 bytes long, only 0 remain"),
        (f.Frame(f.SET_STATE, 0, bytes.fromhex("0a01ff")), "not UTF-8"),
        (f.Frame(f.SLEEP, 0, bytes.fromhex("08ffffffffffffffffffff01")), "varint longer than 10 bytes"),
        (f.Frame(f.RUN, 0, bytes.fromhex("58ffffffff1f")), "out of range for a uint32"),
        (f.Frame(f.RUN, 0, bytes.fromhex("5b")), "unsupported wire type 3"),
        (f.Frame(f.OUTPUT, 0, bytes.fromhex("72007a00")), "more than one result case"),
        (f.Frame(f.CALL, 0, bytes.fromhex("3200")), "idempotency key, when present, must not be empty"),
        (f.Frame(f.ATTACH_INVOCATION, 0, bytes.fromhex("2200")), "workflow target is not supported"),
    ],
)
def test_bad_sdk_frames_are_protocol_violations(frame: f.Frame, says: str) -> None:
    with pytest.raises(ProtocolViolation) as err:
        decode_sdk_frame(frame)
    assert err.value.code == PROTOCOL_VIOLATION == 571
    assert says in err.value.message


def test_truncated_and_oversized_streams_are_violations() -> None:
    decoder = f.FrameDecoder()
    decoder.feed(f.encode_frame(f.END, b"")[:5])
    with pytest.raises(ProtocolViolation, match="ended inside a message"):
        decoder.finish()
    with pytest.raises(ProtocolViolation, match="announces 4294967295 bytes"):
        f.FrameDecoder().feed(bytes.fromhex("04000000ffffffff"))


@settings(max_examples=300)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=64))
def test_garbage_frames_raise_nothing_but_protocol_violations(msg_type: int, flags: int, body: bytes) -> None:
    try:
        decode_sdk_frame(f.Frame(msg_type, flags, body))
    except ProtocolViolation as exc:
        assert exc.code == PROTOCOL_VIOLATION and exc.message


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_garbage_streams_raise_nothing_but_protocol_violations(stream: bytes) -> None:
    try:
        for frame in f.decode_frames(stream):
            decode_sdk_frame(frame)
    except ProtocolViolation as exc:
        assert exc.code == PROTOCOL_VIOLATION


def test_versions_negotiate_to_the_highest_both_speak() -> None:
    assert f.pick_version(5, 7) == 6 and f.pick_version(5, 5) == 5
    assert f.pick_version(1, 4) is None and f.pick_version(7, 8) is None
    assert f.parse_content_type("application/vnd.restate.invocation.v6") == 6
    assert f.parse_content_type("application/json") is None
    assert f.parse_content_type("application/vnd.restate.invocation.vX") is None


# ------------------------------------------------------------------------------------------ discovery
def test_the_manifest_restate_sdk_sends_parses() -> None:
    manifest = parse_manifest(
        b'{"protocolMode": "REQUEST_RESPONSE", "minProtocolVersion": 5, "maxProtocolVersion": 7, "services": ['
        b'{"name": "Greeter", "ty": "SERVICE", "handlers": [{"name": "greet", "input": {"required": false, '
        b'"contentType": "application/json", "jsonSchema": {"type": "string"}}, "output": {"contentType": '
        b'"application/json", "setContentTypeIfEmpty": false, "jsonSchema": {"type": "string"}}}]},'
        b'{"name": "Counter", "ty": "VIRTUAL_OBJECT", "inactivityTimeout": 5000, "handlers": ['
        b'{"name": "add", "ty": "EXCLUSIVE", "input": {}, "output": {"setContentTypeIfEmpty": false}},'
        b'{"name": "get", "ty": "SHARED", "ingressPrivate": true}]}]}'
    )
    assert (manifest.protocol_mode, manifest.min_protocol_version, manifest.max_protocol_version) == (
        "REQUEST_RESPONSE",
        5,
        7,
    )
    greeter, counter = manifest.services
    assert greeter.kind is ServiceKind.SERVICE and greeter.handlers[0].kind is None
    assert greeter.handlers[0].input_schema == '{"type":"string"}'
    assert counter.inactivity_timeout_ms == 5000
    assert [(h.name, h.kind and h.kind.value, h.public) for h in counter.handlers] == [
        ("add", "Exclusive", True),
        ("get", "Shared", False),
    ]


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (b"nope", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"minProtocolVersion": 1, "maxProtocolVersion": 4, "services": []}', "versions 1-4"),
        (b'{"maxProtocolVersion": 6, "services": []}', "minProtocolVersion: required"),
        (b'{"minProtocolVersion": 5, "maxProtocolVersion": 6, "services": [{"name": "a/b"}]}', "no '/'"),
        (b'{"minProtocolVersion": 5, "maxProtocolVersion": 6, "services": [{"name": "A", "ty": "X"}]}', "ty"),
    ],
)
def test_bad_manifests_say_what_is_wrong(doc: bytes, says: str) -> None:
    with pytest.raises(DiscoveryError, match=says):
        parse_manifest(doc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {"minProtocolVersion": st.just(5), "maxProtocolVersion": st.just(6)},
        optional={"services": st.lists(json_values, max_size=3), "protocolMode": json_values},
    )
)
def test_garbage_manifests_raise_nothing_but_discovery_errors(doc: dict[str, object]) -> None:
    try:
        parse_manifest(json.dumps(doc).encode())
    except DiscoveryError as exc:
        assert exc.message


def test_notification_types_are_numbered_as_restate_numbers_them() -> None:
    """Restate's table (restate-server 1.7.12 sends these): a completion notification is numbered in the
    notification range after its command (Sleep 0x040C -> 0x800C), not the command's type | 0x8000."""
    assert f.notification_type(f.SLEEP) == 0x800C
    assert f.notification_type(f.RUN) == 0x8011
    assert f.notification_type(f.GET_LAZY_STATE) == 0x8002
    assert f.notification_type(f.CALL) == 0x800D
    assert f.notification_type(f.COMPLETE_PROMISE) == 0x800B
    run = decode_notification(0x8011, bytes.fromhex("0801") + b"\x2a\x03\x0a\x01x")  # id 1, value "x"
    assert run.kind == "run" and run.completion_id == 1 and run.result.value == b"x"
