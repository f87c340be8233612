"""What the engine counts as it runs, for ``GET /metrics`` (``admin/metrics.py`` renders it for Prometheus).

The hot path only adds to plain ints and fixed bucket arrays: no lock (everything here is written on the
event loop's thread; a scrape reads the numbers between two callbacks), no label lookup in a client
library, no allocation once a (service, handler) pair has been seen. A counter from prometheus-client costs
a lock and a ``labels()`` lookup per increment; here an increment is a dict access and an add, and the
export work (cumulative buckets, label sets) is done at scrape time. Measured in BENCHMARKS.md.

The label sets are bounded: services and handlers are the deployed ones (the ingress refuses others), and
outcomes are the few names below.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Seconds. An attempt takes from a millisecond (no I/O) to minutes (a long ctx.run); an invocation may
# wait for days on a timer or a promise: its buckets go further.
ATTEMPT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
INVOCATION_BUCKETS_S = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 3600, 86400, 604800)
COMMIT_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# How an attempt ended
COMPLETED = "completed"  # the handler returned (a value or a terminal error)
SUSPENDED = "suspended"
FAILED = "failed"  # an error: the retry policy decides (retry, pause or kill)
ABORTED = "aborted"  # the engine stopped it (kill, cancel on pause, shutdown, inactivity)

Target = tuple[str, str]  # (service, handler)


class Histogram:
    """Fixed upper bounds; ``counts[i]`` holds observations in (bounds[i-1], bounds[i]], the last +Inf."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out


@dataclass(slots=True)
class TargetStats:
    """The counts of one (service, handler)."""

    attempts: dict[str, int] = field(default_factory=dict)  # outcome -> attempts that ended so
    retries: int = 0  # attempts started after a failed one
    suspensions: int = 0
    attempt_s: Histogram = field(default_factory=lambda: Histogram(ATTEMPT_BUCKETS_S))
    invocation_s: Histogram = field(default_factory=lambda: Histogram(INVOCATION_BUCKETS_S))


class EngineStats:
    """One per node, shared by its partitions (they all run on the loop's thread)."""

    __slots__ = ("targets", "batch_records", "commit_s", "commit_failures")

    def __init__(self) -> None:
        self.targets: dict[Target, TargetStats] = {}
        self.batch_records = Histogram(BATCH_BUCKETS)
        self.commit_s = Histogram(COMMIT_BUCKETS_S)
        self.commit_failures = 0

    def target(self, service: str, handler: str) -> TargetStats:
        key = (service, handler)
        found = self.targets.get(key)
        if found is None:
            found = self.targets[key] = TargetStats()
        return found
