"""A real server exports its spans over OTLP/HTTP, configured by nothing but the standard ``OTEL_``
variables: a collector stand-in on loopback receives ``POST /v1/traces`` and decodes the protobuf."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.harness import Server, wait_until

APP = "tests/apps/ui_app.py"


class _Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[tuple[str, str, dict[str, str]]] = []  # (path, span name, string attributes)
        self.lock = threading.Lock()


class _Receive(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        server = self.server
        assert isinstance(server, _Collector)
        with server.lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attrs = {a.key: a.value.string_value for a in span.attributes}
                        server.spans.append((self.path, span.name, attrs))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def collector() -> Iterator[_Collector]:
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_spans_reach_an_otlp_collector(tmp_path: Path, collector: _Collector) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_address[1]}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 100 ms, not every 5 s
        "OTEL_SERVICE_NAME": "shop-under-test",
    }
    srv = Server(APP, tmp_path / "data", env=env).start()
    try:
        resp = srv.call("/Shop/checkout", "otlp-1")
        assert resp.status_code == 200
        invocation_id = resp.headers["x-restate-id"]

        def exported() -> list[tuple[str, str, dict[str, str]]] | None:
            with collector.lock:
                spans = list(collector.spans)
            names = {name for _, name, _ in spans}
            return (
                spans
                if {"Shop/checkout", "Shop/reserve", "call Shop/reserve", "run price"} <= names
                else None
            )

        spans = wait_until(exported, timeout=20, what="the spans at the collector")
    finally:
        srv.stop()
    assert {path for path, _, _ in spans} == {"/v1/traces"}
    checkout = next(attrs for _, name, attrs in spans if name == "Shop/checkout")
    assert (
        checkout["unbroken.invocation.id"] == invocation_id and checkout["unbroken.target"] == "Shop/checkout"
    )
    assert "tracing on: otlp exporter" in srv.log_path.read_text()
