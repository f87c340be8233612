"""Micro-benchmark: the ingress's own cost per W1-shaped request (``POST /Bench/noop`` with a small JSON body),
from the ASGI call to the record built and the reply written, with an engine that answers at once.

No sockets, no engine, no storage: what is measured is routing, body checks, id derivation, record building
and the reply's mapping to HTTP. A figure for comparing two builds (``PYTHONPATH=<other tree>/src python
bench/ingress_cost.py``), not an end-to-end number.

    python bench/ingress_cost.py [--requests N] [--idempotent]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from services import bench  # noqa: E402

import unbroken as restate  # noqa: E402
from unbroken.core import records as r  # noqa: E402
from unbroken.core.actions import Output, Reply  # noqa: E402
from unbroken.core.journal import Result  # noqa: E402
from unbroken.core.schema import RetryPolicy
from unbroken.ingress.app import IngressApp  # noqa: E402
from unbroken.runtime.entropy import RandomBytes
from unbroken.runtime.faults import FaultPoints

DAY_MS = 86_400_000


class _Clock:
    def now_ms(self) -> int:
        return 1_700_000_000_000


class FakeEngine:
    """Answers every record at once with its invocation's result (what a finished noop would answer)."""

    def __init__(self) -> None:
        policy = RetryPolicy(100, 2.0, 5_000, None, "pause")
        self.schemas = restate.app([bench]).schemas(policy, 60_000, 600_000, DAY_MS, DAY_MS, DAY_MS)
        self.clock = _Clock()
        self.loop = asyncio.get_event_loop()
        self.records = 0
        self._rid = 0
        self.entropy = RandomBytes()  # the node's injected parts the ingress uses
        self.faults = FaultPoints()

    def request(self, make: Any, client_gone: Any = None, bounded: bool = False) -> asyncio.Future[Reply]:
        self._rid += 1
        rec = make(self._rid)
        assert isinstance(rec, r.Invoke)
        self.records += 1
        fut: asyncio.Future[Reply] = self.loop.create_future()
        fut.set_result(Reply(self._rid, Output(rec.invocation_id, Result(value=rec.argument))))
        return fut

    def forget(self, request_id: int) -> None:
        pass

    def health(self) -> str | None:
        return None


async def _run(n: int, idempotent: bool) -> float:
    engine = FakeEngine()
    app = IngressApp(engine)  # type: ignore[arg-type]
    body = b'{"hello": "world", "n": 1}'
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def scope(i: int) -> dict[str, Any]:
        extra = [(b"idempotency-key", f"k{i}".encode())] if idempotent else []
        return {
            "type": "http",
            "method": "POST",
            "path": "/Bench/noop",
            "raw_path": b"/Bench/noop",
            "query_string": b"",
            "headers": headers + extra,
        }

    for i in range(2_000):  # warm-up
        await app(scope(i), receive, send)
    scopes = [scope(i) for i in range(n)]
    sent.clear()
    start = time.process_time()  # CPU time: the machine may be shared
    for s in scopes:
        await app(s, receive, send)
    elapsed = time.process_time() - start
    assert sent[0]["status"] == 200 and len(sent) == 2 * n, sent[:2]
    return elapsed / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--idempotent", action="store_true", help="with an idempotency-key header")
    p.add_argument("--repeat", type=int, default=9, help="runs; the best is printed")
    args = p.parse_args()
    best = min(asyncio.run(_run(args.requests, args.idempotent)) for _ in range(args.repeat))
    print(f"ingress request->record->reply: {best:.2f} us per request (best of {args.repeat})")


if __name__ == "__main__":
    main()
