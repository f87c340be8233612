"""What metrics and tracing cost the engine: ``python bench/obs_cost.py [--invocations N] [--rounds R]``.

1. Micro: the nanoseconds the metrics add per attempt (``runtime/stats.py`` as the invoker's sink does it)
   and per batch (the processor's), and what tracing costs per attempt when it is off (the ``is None``
   tests of ``sdk/local.py`` and ``sdk/session.py``).
2. In process: a real node on SQLite (fsync off, so the CPU cost shows rather than the disk's), driven
   through its ingress by 16 concurrent clients calling ``Shop/checkout`` (a ``ctx.run`` and a call: 2
   invocations, 2 attempts, 3 child spans each), with tracing off and on (a BatchSpanProcessor over an
   exporter that drops the spans: the SDK's own cost, not a collector's). Rounds alternate off/on.

Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from unbroken.runtime.stats import EngineStats  # noqa: E402
from unbroken.sdk import tracing  # noqa: E402


def micro(number: int = 200_000) -> dict[str, float]:
    stats = EngineStats()
    clock_ms = lambda: 1_000  # noqa: E731 - the invoker's clock.now_ms
    commands = (object(), object(), object())

    def attempt() -> None:  # what the sink adds to one attempt of 3 commands that returns
        target = stats.target("Shop", "checkout")
        started = time.perf_counter()
        outcome = "aborted"
        for command in commands:
            if type(command) is str:
                outcome = "completed"
        outcome = "completed"
        target.attempts[outcome] = target.attempts.get(outcome, 0) + 1
        target.attempt_s.observe(time.perf_counter() - started)
        target.invocation_s.observe(max(0, clock_ms() - 10) / 1000)

    def batch() -> None:  # what the processor adds to one batch
        stats.batch_records.observe(7)
        started = time.perf_counter()
        stats.commit_s.observe(time.perf_counter() - started)

    class _Session:
        trace = None

    session = _Session()

    def tracing_off() -> None:  # an attempt with 3 notifications and 3 steps, tracing off
        if tracing.active() is not None:
            raise AssertionError
        for _ in range(6):
            if session.trace is not None:
                raise AssertionError

    def empty() -> None:  # the harness' own cost (a call, a loop of 6), subtracted from the others
        for _ in range(6):
            pass

    def best_ns(fn: Any) -> float:
        return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9

    base = best_ns(empty)
    cases = (
        ("metrics per attempt", attempt),
        ("metrics per batch", batch),
        ("tracing off per attempt", tracing_off),
    )
    return {name: max(0.0, best_ns(fn) - base) for name, fn in cases}


class _Drop:
    """A span exporter that drops what it is given (the SDK's cost only)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


async def workload(invocations: int, traced: bool, concurrency: int = 16) -> tuple[float, float]:
    """Calls per second of ``Shop/checkout`` through the in-process ingress, and the process' CPU time per
    call in microseconds (steadier than the rate on a shared machine: other processes' load barely moves
    it)."""
    import httpx

    from tests.apps import ui_app
    from unbroken.config import Config
    from unbroken.ingress.app import IngressApp
    from unbroken.wiring import build_from_config

    if traced:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracing.configure(BatchSpanProcessor(_Drop()))  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(data_dir=tmp, fsync=False)
        engine, store = build_from_config(ui_app.app, config)
        engine.start()
        ingress = IngressApp(engine, config.request_size_limit_bytes)
        transport = httpx.ASGITransport(app=ingress)
        todo = iter(range(invocations))
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress", timeout=60) as client:

            async def worker() -> None:
                for n in todo:
                    resp = await client.post("/Shop/checkout", json=f"o{n}")
                    assert resp.status_code == 200, resp.text

            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await engine.stop()
        store.close()
    tracing.shutdown()
    return invocations / elapsed, cpu / invocations * 1e6


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--invocations", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    for name, ns in micro().items():
        print(f"| {name} | {ns:.0f} ns |")
    asyncio.run(workload(200, False))  # warm up (imports, first SQLite file)
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for r in range(args.rounds):
        for traced in (False, True) if r % 2 == 0 else (True, False):
            results[traced].append(asyncio.run(workload(args.invocations, traced)))
    for label, traced in (("off", False), ("on", True)):
        rate = statistics.median(x[0] for x in results[traced])
        cpu = statistics.median(x[1] for x in results[traced])
        rounds = [(round(x[0]), round(x[1])) for x in results[traced]]
        print(
            f"| tracing {label} | {rate:.0f} calls/s | {cpu:.0f} us CPU/call | rounds (calls/s, us) {rounds} |"
        )


if __name__ == "__main__":
    main()
