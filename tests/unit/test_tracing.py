"""OpenTelemetry spans of invocations (sdk/tracing.py), with the SDK's in-memory exporter, on a real node
(SQLite in a temp dir) driven through the ingress in-process: a workflow that runs a step, calls a
service, sends to it and waits on a promise (so its first attempt suspends and a second one replays).

What an operator relies on: one trace for the whole call tree (the caller's ``traceparent`` included),
the callee's invocation under the call span, an attempt span ended when its attempt ends (even when the
invocation goes on), replayed steps not traced again, and no OpenTelemetry at all when it is off.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.apps import ui_app
from unbroken.config import Config
from unbroken.ingress.app import IngressApp
from unbroken.sdk import tracing
from unbroken.wiring import build_from_config

CLIENT_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CLIENT_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{CLIENT_TRACE:032x}-{CLIENT_SPAN:016x}-01"


@pytest.fixture
def exporter() -> Any:
    exp = InMemorySpanExporter()
    tracing.configure(SimpleSpanProcessor(exp))
    yield exp
    tracing.shutdown()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(data_dir=str(tmp_path / "data"), inactivity_timeout_ms=100)
    engine, store = build_from_config(ui_app.app, config)
    engine.start()
    ingress = IngressApp(engine, config.request_size_limit_bytes)
    transport = httpx.ASGITransport(app=ingress)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress", timeout=30) as c:
        yield c
    await engine.stop()
    store.close()


async def _until(predicate: Any, what: str, timeout_s: float = 10) -> Any:
    async with asyncio.timeout(timeout_s):
        while not (found := predicate()):
            await asyncio.sleep(0.01)  # spans are exported as attempts end, on this loop: poll it
        return found


def _named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = _named(spans, name)
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_workflow_with_a_run_a_call_and_a_send_makes_one_span_tree(
    exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    sent = await client.post("/Delivery/d1/run/send", json="Main St", headers={"traceparent": TRACEPARENT})
    assert sent.status_code == 202, sent.text
    invocation_id = sent.json()["invocationId"]

    def first_attempt_ended() -> bool:
        return any(
            s.name == "attempt 1" and s.attributes["unbroken.target"] == "Delivery/d1/run"
            for s in exporter.get_finished_spans()
        )

    # the attempt suspends on the promise (inactivity timeout 100ms): its span ends, the invocation goes on
    await _until(first_attempt_ended, "the first attempt's span")
    spans = list(exporter.get_finished_spans())
    assert not _named(spans, "Delivery/d1/run")  # the invocation span waits for its end
    signed = await client.post("/Delivery/d1/sign", json="Ada")
    assert signed.status_code == 200, signed.text
    out = await client.get("/restate/workflow/Delivery/d1/attach")
    assert out.json() == "label for Main St, signed by Ada"
    await _until(lambda: _named(exporter.get_finished_spans(), "Delivery/d1/run"), "the invocation span")
    spans = list(exporter.get_finished_spans())

    run_inv = _one(spans, "Delivery/d1/run")
    attempts = sorted(
        (
            s
            for s in spans
            if s.attributes
            and s.attributes.get("unbroken.invocation.id") == invocation_id
            and s.name.startswith("attempt")
        ),
        key=lambda s: s.attributes["unbroken.attempt"],  # type: ignore[index]
    )
    assert [a.attributes["unbroken.attempt.outcome"] for a in attempts] == ["suspended", "completed"]
    # the client's trace: the invocation span is the child of the client's span, its attempts of it
    assert run_inv.context.trace_id == CLIENT_TRACE and _parent_id(run_inv) == CLIENT_SPAN
    assert run_inv.kind is SpanKind.SERVER
    assert run_inv.attributes["unbroken.invocation.id"] == invocation_id
    for attempt in attempts:
        assert attempt.context.trace_id == CLIENT_TRACE
        assert _parent_id(attempt) == run_inv.context.span_id
        assert attempt.end_time is not None and attempt.end_time <= run_inv.end_time
    assert run_inv.start_time <= attempts[0].start_time  # it starts when the invocation was created

    # the steps of attempt 1; attempt 2 replays them and makes no span of its own for them
    first = attempts[0]
    label = _one(spans, "run label")
    call = _one(spans, "call Shop/reserve")
    send = _one(spans, "send Shop/reserve")
    for child in (label, call, send):
        assert _parent_id(child) == first.context.span_id, child.name
        assert child.context.trace_id == CLIENT_TRACE
    assert label.attributes["unbroken.run.name"] == "label"

    # the callees: their invocation spans hang under the call and the send, in the same trace
    reserves = _named(spans, "Shop/reserve")
    assert len(reserves) == 2
    assert {_parent_id(r) for r in reserves} == {call.context.span_id, send.context.span_id}
    assert all(r.context.trace_id == CLIENT_TRACE for r in reserves)
    # the call span lasted until its result came back, after the callee's attempt began
    called = next(r for r in reserves if _parent_id(r) == call.context.span_id)
    callee_attempt = next(
        s for s in spans if s.name == "attempt 1" and _parent_id(s) == called.context.span_id
    )
    assert call.end_time >= callee_attempt.start_time

    # the signing is an invocation of its own, in a trace of its own (no traceparent sent)
    sign = _one(spans, "Delivery/d1/sign")
    assert sign.context.trace_id != CLIENT_TRACE and sign.parent is None
    assert all(s.end_time is not None for s in spans)


async def test_a_failed_attempt_is_an_error_span_and_a_terminal_error_an_error_invocation(
    exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/Shop/flaky", json="t1")).json() == "ok"
    refused = await client.post("/Shop/refuse", json="t2")
    assert refused.status_code == 409
    await _until(lambda: _named(exporter.get_finished_spans(), "Shop/refuse"), "the refuse span")
    spans = list(exporter.get_finished_spans())
    flaky = _one(spans, "Shop/flaky")
    tries = sorted(
        (s for s in spans if s.name.startswith("attempt") and _parent_id(s) == flaky.context.span_id),
        key=lambda s: s.start_time or 0,
    )
    assert [t.attributes["unbroken.attempt.outcome"] for t in tries] == ["failed", "completed"]
    assert tries[0].status.status_code is StatusCode.ERROR
    assert "the warehouse is down for t1" in (tries[0].status.description or "")
    warehouse = _named(spans, "run warehouse")
    assert len(warehouse) == 2  # the failed action ran again in the retry (its result was never journaled)
    assert flaky.status.status_code is StatusCode.UNSET
    refuse = _one(spans, "Shop/refuse")
    assert refuse.status.status_code is StatusCode.ERROR and "no stock for t2" in (
        refuse.status.description or ""
    )


async def test_the_users_code_runs_inside_the_attempt_and_run_spans(
    exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    """Spans the handler's own code starts (an instrumented client, say) nest under the attempt's span,
    and under the ``ctx.run`` span inside its action."""
    outer, inner = (await client.post("/Shop/current_spans")).json()
    spans = await _until(lambda: _named(exporter.get_finished_spans(), "Shop/current_spans"), "the spans")
    spans = list(exporter.get_finished_spans())
    attempt = next(
        s for s in spans if s.name == "attempt 1" and s.attributes["unbroken.target"] == "Shop/current_spans"
    )
    assert outer == f"{attempt.context.span_id:016x}"
    assert inner == f"{_one(spans, 'run inner').context.span_id:016x}"


async def test_sampling_is_decided_once_per_invocation(tmp_path: Path) -> None:
    """A sampler that says no to root spans, and a caller's traceparent that says not sampled: no span of
    any attempt or step is recorded; a caller's sampled traceparent wins over the sampler."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    exporter = InMemorySpanExporter()
    tracing.configure(SimpleSpanProcessor(exporter), sampler=ParentBased(ALWAYS_OFF))
    config = Config(data_dir=str(tmp_path / "data"))
    engine, store = build_from_config(ui_app.app, config)
    engine.start()
    try:
        transport = httpx.ASGITransport(app=IngressApp(engine, config.request_size_limit_bytes))
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress", timeout=30) as c:
            assert (await c.post("/Shop/checkout", json="s1")).status_code == 200
            unsampled = TRACEPARENT[:-2] + "00"
            assert (
                await c.post("/Shop/checkout", json="s2", headers={"traceparent": unsampled})
            ).status_code == 200
            assert exporter.get_finished_spans() == ()
            assert (
                await c.post("/Shop/checkout", json="s3", headers={"traceparent": TRACEPARENT})
            ).status_code == 200
            spans = await _until(
                lambda: len(exporter.get_finished_spans()) >= 6 and exporter.get_finished_spans(), "the spans"
            )
    finally:
        await engine.stop()
        store.close()
        tracing.shutdown()
    assert {s.context.trace_id for s in spans} == {CLIENT_TRACE}
    assert {s.name for s in spans} == {
        "Shop/checkout",
        "attempt 1",
        "run price",
        "call Shop/reserve",
        "Shop/reserve",
    }


def test_tracing_is_off_and_imports_nothing_without_otel_variables() -> None:
    code = (
        "import sys, unbroken, unbroken.server, unbroken.sdk.local, unbroken.sdk.tracing as t\n"
        "assert t.configure_from_env({}) is None and t.active() is None\n"
        "assert t.configure_from_env({'OTEL_TRACES_EXPORTER': 'none'}) is None\n"
        "assert t.configure_from_env({'OTEL_SDK_DISABLED': 'true', 'OTEL_EXPORTER_OTLP_ENDPOINT': 'x'}) is None\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'opentelemetry imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_otel_variables_turn_tracing_on() -> None:
    assert tracing.enabled_by_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.enabled_by_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert tracing.enabled_by_env({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.enabled_by_env({})
    try:
        on = tracing.configure_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
        assert on is not None and tracing.active() is on
    finally:
        tracing.shutdown()
    assert tracing.active() is None


def test_traceparent_parsing() -> None:
    assert tracing.parse_traceparent(TRACEPARENT) == (CLIENT_TRACE, CLIENT_SPAN)
    for bad in ("", "00-xyz", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "00-abc-def-01"):
        assert tracing.parse_traceparent(bad) is None
