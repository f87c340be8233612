"""The SDK refuses to journal what the engine could not store, and says why (tests/e2e/test_security_limits.py
has the same limits end to end)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import unbroken as restate
from tests.unit.test_replay import INPUT, FakeSink, _start
from unbroken.core import journal as j
from unbroken.core import limits
from unbroken.sdk.attempt import cap_message, check_journalable, failure
from unbroken.sdk.serde import Serde


async def _run(obj: restate.VirtualObject) -> FakeSink:
    from unbroken.sdk.local import LocalTransport

    sink = FakeSink()
    sink.session = LocalTransport([obj], lambda: 1_000).start(_start([INPUT]), sink)
    await asyncio.wait_for(sink.done.wait(), 5)
    return sink


class TextSerde(Serde[Any]):
    """A broken custom serde: it returns text where bytes are due."""

    def deserialize(self, buf: bytes) -> Any:
        return buf.decode()

    def serialize(self, obj: Any) -> bytes:
        return str(obj)  # type: ignore[return-value]


async def test_the_journal_entry_count_is_bounded_and_the_output_still_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``journal_entries_max`` a command fails the handler; before the fix the count only grew
    during replay, so a handler looping in one attempt was never stopped."""
    monkeypatch.setattr(limits, "journal_entries_max", 50)
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> None:
        for i in range(1000):
            ctx.set("k", i)

    sink = await _run(obj)
    assert len(sink.commands) == 50  # 49 sets after the input entry, then the output
    assert all(isinstance(c, j.SetStateCommand) for c in sink.commands[:-1])
    assert sink.commands[-1] == j.OutputCommand(
        j.Result(failure=j.Failure(500, "journal too long: more than 50 entries"))
    )


async def test_a_custom_serde_returning_text_fails_the_invocation_instead_of_the_store() -> None:
    obj = restate.VirtualObject("Obj")

    @obj.handler("h", output_serde=TextSerde())
    async def h(ctx: restate.ObjectContext) -> str:
        return "not bytes"

    sink = await _run(obj)
    (out,) = sink.commands
    assert isinstance(out, j.OutputCommand) and out.result.failure is not None
    assert out.result.failure.code == 500
    assert out.result.failure.message.startswith("cannot journal Output: Expected `bytes | null`, got `str`")


async def test_a_run_whose_serde_returns_text_fails_terminally() -> None:
    obj = restate.VirtualObject("Obj")

    @obj.handler("h")
    async def h(ctx: restate.ObjectContext) -> str:
        try:
            await ctx.run("step", lambda: 1, serde=TextSerde())
        except restate.TerminalError as exc:
            return f"{exc.status_code} {exc.message}"
        return "journaled"

    sink = await _run(obj)
    ((cid, result),) = sink.proposals
    assert result.failure is not None and result.failure.message.startswith(
        "cannot journal Notification(run)"
    )
    assert sink.commands[-1] == j.OutputCommand(j.Result(value=f'"400 {result.failure.message}"'.encode()))


@pytest.mark.parametrize(
    "entry",
    [
        j.SetStateCommand("\udcff", b"1"),
        j.SleepCommand(2**64, 1),
        j.RunCommand(1, "\ud800"),
        j.CallCommand("S", "h", b"", [j.Header("k", "\udc80")], None, None, 1, 2),
        j.OutputCommand(j.Result(failure=j.Failure("418", "x"))),  # type: ignore[arg-type,unused-ignore]
    ],
    ids=["surrogate-key", "int-overflow", "surrogate-name", "surrogate-header", "str-code"],
)
def test_check_journalable_refuses_what_the_store_cannot_write_or_read_back(entry: j.Entry) -> None:
    with pytest.raises(restate.TerminalError) as err:
        check_journalable(entry)
    assert err.value.status_code == 400
    assert err.value.message.startswith("cannot journal ")


def test_failures_are_always_storable() -> None:
    f = failure("418", "bad \udcff", {"k\ud800": 1, "ok": "v"})
    assert f == j.Failure(500, "bad \\udcff", {"k\\ud800": "1", "ok": "v"})
    check_journalable(j.OutputCommand(j.Result(failure=f)))
    assert (
        failure(418, "x").code == 418 and failure(True, "x").code == 500 and failure(70000, "x").code == 500
    )

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert cap_message(Unprintable()).startswith("<")
    long = cap_message("m" * (limits.failure_message_chars_max + 10))
    assert long.endswith(f"[cut: the message had {limits.failure_message_chars_max + 10} characters]")
