"""OpenTelemetry traces of invocations: off, and free, unless configured.

Spans (all with ``unbroken.invocation.id`` and ``unbroken.target``):

* one per **invocation**, named after its target. An invocation outlives attempts and even the process
  (it may wait for days, and run its last attempt after a restart), so its span is written once, when the
  attempt that returns its result ends, with the invocation's creation time as its start. Its ids are
  derived from the invocation id (the trace id too, when no caller's ``traceparent`` gave one), so every
  attempt, in whatever process, names the same parent before that span exists.
* one per **attempt** (``attempt N``), child of the invocation's, ended when the attempt ends: returned,
  suspended, failed or aborted (``unbroken.attempt.outcome``).
* children of the attempt for what it does live (not what it replays): ``run <name>`` around a ``ctx.run``
  action, ``call <target>`` from the call until its result comes back (or the attempt ends), ``send
  <target>`` for a one-way call. A call or send carries a ``traceparent`` header naming its span: the
  callee's invocation span is its child, in the same trace.

Configuration is OpenTelemetry's own: tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter other
than ``none``, or when ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set
(``OTEL_SDK_DISABLED=true`` wins). The OTLP/HTTP exporter reads the other ``OTEL_EXPORTER_OTLP_*``
variables, the resource reads ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``. When it is off, no
OpenTelemetry module is imported and each attempt pays one ``is None`` test (measured in BENCHMARKS.md).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from unbroken.core import journal as j
from unbroken.protocol.transport import AttemptSink, AttemptStart

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span, SpanContext, Tracer

log = logging.getLogger("unbroken.tracing")

SERVICE_NAME_DEFAULT = "unbroken"
_TRACEPARENT = "traceparent"
# (trace id, span id) the id generator hands out next instead of random ones: the invocation span's
_forced_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "unbroken_forced_span_ids", default=None
)


class Tracing:
    """The tracer and the provider it comes from (one per process, made by ``configure``)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("unbroken")

    def attempt(self, start: AttemptStart) -> AttemptTrace:
        return AttemptTrace(self, start)

    def root_sampled(self, trace_id: int, name: str) -> bool:
        """What the provider's sampler (``OTEL_TRACES_SAMPLER``) decides for a root span of ``trace_id``."""
        from opentelemetry.sdk.trace.sampling import Decision

        return (
            self.provider.sampler.should_sample(None, trace_id, name).decision is Decision.RECORD_AND_SAMPLE
        )


_active: Tracing | None = None


def active() -> Tracing | None:
    """The configured tracing, or None (off): the one test the hot path makes."""
    return _active


def enabled_by_env(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_from_env(env: Mapping[str, str] = os.environ) -> Tracing | None:
    """Turn tracing on if the ``OTEL_`` variables ask for it (see the module doc); None if they do not, or
    if the OpenTelemetry packages are missing (said once, in the log: ``pip install 'unbroken[otel]'``)."""
    if not enabled_by_env(env):
        return None
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        if exporter_name == "console":
            exporter: SpanExporter = ConsoleSpanExporter()
        else:
            if exporter_name not in ("otlp", "otlp_proto_http"):
                log.warning(
                    "OTEL_TRACES_EXPORTER=%s: only otlp (HTTP) and console are built in", exporter_name
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
    except ImportError as exc:
        log.warning(
            "tracing asked for by OTEL_ variables, but OpenTelemetry is not installed (%s): "
            "pip install 'unbroken[otel]'",
            exc,
        )
        return None
    tracing = configure(BatchSpanProcessor(exporter))
    from opentelemetry import trace

    trace.set_tracer_provider(tracing.provider)  # the user's own instrumentation reports to it too
    log.info("tracing on: %s exporter", exporter_name)
    return tracing


def configure(processor: SpanProcessor, sampler: Sampler | None = None) -> Tracing:
    """Tracing on, spans going to ``processor`` (tests: a ``SimpleSpanProcessor`` over an in-memory
    exporter), sampled by ``sampler`` (default: the SDK's, from ``OTEL_TRACES_SAMPLER``). Replaces any
    earlier configuration."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _Ids(RandomIdGenerator):
        """Random ids, except for the invocation span, whose ids are derived from the invocation id."""

        def generate_span_id(self) -> int:
            forced = _forced_ids.get()
            return forced[1] if forced is not None else super().generate_span_id()

        def generate_trace_id(self) -> int:
            forced = _forced_ids.get()
            return forced[0] if forced is not None else super().generate_trace_id()

    global _active
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME_DEFAULT)})
    provider = TracerProvider(resource=resource, id_generator=_Ids(), sampler=sampler)
    provider.add_span_processor(processor)
    _active = Tracing(provider)
    return _active


def shutdown() -> None:
    """Flush what is buffered and turn tracing off."""
    global _active
    if _active is not None:
        _active.provider.shutdown()
        _active = None


def traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def parse_traceparent(value: str) -> tuple[int, int] | None:
    """(trace id, span id) of a W3C ``traceparent``; None if it is not one."""
    parsed = _traceparent(value)
    return None if parsed is None else (parsed[0], parsed[1])


def _traceparent(value: str) -> tuple[int, int, bool] | None:
    """(trace id, span id, sampled) of a W3C ``traceparent``; None if it is not one."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) < 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    return (trace_id, span_id, bool(flags & 1)) if trace_id and span_id else None


def invocation_ids(invocation_id: str, parent: tuple[int, int] | None) -> tuple[int, int]:
    """The (trace id, span id) of an invocation's span: its caller's trace, else one of its own."""
    digest = hashlib.sha256(invocation_id.encode()).digest()
    trace_id = parent[0] if parent is not None else int.from_bytes(digest[:16], "big") or 1
    return trace_id, int.from_bytes(digest[16:24], "big") or 1


class AttemptTrace:
    """The spans of one attempt (see the module doc)."""

    def __init__(self, tracing: Tracing, start: AttemptStart) -> None:
        from opentelemetry import trace

        self._tracing = tracing
        self.start = start
        first = start.journal[0] if start.journal else None
        headers = {h.key.lower(): h.value for h in first.headers} if isinstance(first, j.InputCommand) else {}
        parent = _traceparent(headers.get(_TRACEPARENT, ""))
        self.parent = None if parent is None else (parent[0], parent[1])
        self.parent_sampled = parent is None or parent[2]
        trace_id, span_id = invocation_ids(start.invocation_id, self.parent)
        # Sampled or not, decided the same way by every attempt, in any process: the caller's flag, else
        # the configured sampler on the trace id (derived from the invocation id) of a root span.
        sampled = parent[2] if parent is not None else tracing.root_sampled(trace_id, str(start.target))
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
        self.invocation_context = trace.SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags)
        self.attributes: dict[str, Any] = {
            "unbroken.invocation.id": start.invocation_id,
            "unbroken.target": str(start.target),
        }
        self.span = tracing.tracer.start_span(
            f"attempt {start.attempt}",
            context=trace.set_span_in_context(trace.NonRecordingSpan(self.invocation_context)),
            attributes={**self.attributes, "unbroken.attempt": start.attempt},
        )
        self.outcome = "aborted"
        self.children: dict[int, Span] = {}  # open child spans by completion id (calls) or id()
        self.returned: j.Result | None = None

    def activate(self, span: Span | None = None) -> None:
        """Make ``span`` (default: the attempt's) the current span of the calling task, so spans the user's
        code starts there (an instrumented HTTP client, say) nest under it. The task's context is its own
        copy: nothing to undo when it ends."""
        from opentelemetry import context, trace

        context.attach(trace.set_span_in_context(span or self.span))

    def child(self, name: str, attributes: Mapping[str, Any], key: int | None = None) -> Span:
        from opentelemetry import trace

        span = self._tracing.tracer.start_span(
            name, context=trace.set_span_in_context(self.span), attributes={**self.attributes, **attributes}
        )
        self.children[key if key is not None else id(span)] = span
        return span

    def call_span(
        self, service: str, handler: str, key: str | None, headers: dict[str, str] | None, cid: int
    ) -> dict[str, str]:
        """Open the span of a call (ended by its result), and the headers that make it the callee's parent."""
        span = self.child(
            f"call {_target(service, handler, key)}",
            {"unbroken.call.target": _target(service, handler, key)},
            cid,
        )
        return {**(headers or {}), _TRACEPARENT: traceparent(span.get_span_context())}

    def send_span(
        self, service: str, handler: str, key: str | None, headers: dict[str, str] | None
    ) -> dict[str, str]:
        """The span of a one-way call (it ends as it is sent), and the headers naming it to the callee."""
        target = _target(service, handler, key)
        span = self.child(f"send {target}", {"unbroken.call.target": target})
        out = {**(headers or {}), _TRACEPARENT: traceparent(span.get_span_context())}
        self.end_child(span)
        return out

    def end_child(self, span: Span, failure: str | None = None) -> None:
        from opentelemetry.trace import Status, StatusCode

        for key, open_span in list(self.children.items()):
            if open_span is span:
                del self.children[key]
        if failure is not None:
            span.set_status(Status(StatusCode.ERROR, failure))
        span.end()

    def notified(self, notification: j.Notification) -> None:
        """A result came back: the call span waiting on it ends."""
        span = self.children.get(notification.completion_id) if notification.completion_id else None
        if span is not None:
            failure = notification.result.failure
            self.end_child(span, None if failure is None else f"[{failure.code}] {failure.message}")

    def end(self, failure: str | None = None) -> None:
        """The attempt ended: its open children end with it, then its span; the invocation's span is
        written if this attempt returned the result."""
        from opentelemetry.trace import Status, StatusCode

        for span in list(self.children.values()):
            span.set_attribute("unbroken.unfinished", True)  # the attempt ended first (e.g. it suspended)
            span.end()
        self.children.clear()
        self.span.set_attribute("unbroken.attempt.outcome", self.outcome)
        if failure is not None:
            self.span.set_status(Status(StatusCode.ERROR, failure))
        self.span.end()
        if self.returned is not None:
            self._invocation_span(self.returned)

    def _invocation_span(self, result: j.Result) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        start = self.start
        parent = None
        if self.parent is not None:
            remote = trace.SpanContext(
                self.parent[0],
                self.parent[1],
                is_remote=True,
                trace_flags=trace.TraceFlags(1 if self.parent_sampled else 0),
            )
            parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        created_ns = start.created_at_ms * 1_000_000 if start.created_at_ms else None
        token = _forced_ids.set((self.invocation_context.trace_id, self.invocation_context.span_id))
        try:
            span = self._tracing.tracer.start_span(
                str(start.target),
                context=parent if parent is not None else trace.set_span_in_context(trace.INVALID_SPAN),
                kind=trace.SpanKind.SERVER,
                attributes={**self.attributes, "unbroken.attempts": start.attempt},
                start_time=created_ns,
            )
        finally:
            _forced_ids.reset(token)
        if result.failure is not None:
            span.set_status(Status(StatusCode.ERROR, f"[{result.failure.code}] {result.failure.message}"))
        span.end(end_time=time.time_ns())


def _target(service: str, handler: str, key: str | None) -> str:
    return f"{service}/{key}/{handler}" if key is not None else f"{service}/{handler}"


class TracingSink:
    """Wraps an attempt's sink: learns how the attempt ends, and ends its spans then."""

    __slots__ = ("inner", "trace", "failure")

    def __init__(self, inner: AttemptSink, trace: AttemptTrace) -> None:
        self.inner = inner
        self.trace = trace
        self.failure: str | None = None

    def allocated(self, awakeables: int) -> None:
        self.inner.allocated(awakeables)

    def command(self, command: j.Command, awakeables: int | None = None) -> None:
        if type(command) is j.OutputCommand:
            self.trace.outcome = "completed"
            self.trace.returned = command.result
        self.inner.command(command, awakeables)

    def propose_run(self, completion_id: int, result: j.Result, awakeables: int | None = None) -> None:
        self.inner.propose_run(completion_id, result, awakeables)

    def suspend(
        self,
        waiting_completions: tuple[int, ...],
        waiting_signals: tuple[int, ...],
        awakeables: int | None = None,
    ) -> None:
        self.trace.outcome = "suspended"
        self.inner.suspend(waiting_completions, waiting_signals, awakeables)

    def fail(
        self, code: int, message: str, next_retry_delay_ms: int | None = None, pause: bool = False
    ) -> None:
        self.trace.outcome = "paused" if pause else "failed"
        self.failure = f"[{code}] {message.splitlines()[0] if message else ''}"
        if pause:
            self.inner.fail(code, message, next_retry_delay_ms, pause=True)
        else:
            self.inner.fail(code, message, next_retry_delay_ms)

    def ended(self) -> None:
        try:
            self.trace.end(self.failure)
        except Exception:  # noqa: BLE001 - tracing must never break an attempt
            log.exception("ending the spans of %s failed", self.trace.start.invocation_id)
        self.inner.ended()
