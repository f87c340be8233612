"""``GET /metrics``: the engine's counts in Prometheus' text format, every name prefixed ``unbroken_``.

Two sources, both read at scrape time so the engine pays nothing per request for them:

* what the runtime counted as it ran (``runtime/stats.py``: plain ints and bucket arrays on the loop):
  attempts by outcome, attempt and end-to-end latency, retries, suspensions, group-commit batch sizes and
  commit latency;
* what the store holds now, through the read model (``Snapshot.counts``, off the loop): invocations by
  service, handler and status, the inbox depth and the durable timers pending. On PostgreSQL these are the
  whole cluster's (every node reports the same numbers: sum them over one node only);
* the partitions this node leads (``Node.leadership``, from the store's lease thread: counts the lease thread keeps, read under its lock):
  on SQLite the node leads its one partition for good; on PostgreSQL the partitions whose lease it holds,
  and its lease acquisitions, renewals, failed renewals and partitions lost to another node.

prometheus-client is imported here only, when the first scrape comes: a server nobody scrapes never loads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from unbroken.core.read_model import ReadModel, StoreCounts
from unbroken.runtime.node import Node
from unbroken.runtime.stats import EngineStats, Histogram

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def render(engine: Node, reads: ReadModel) -> bytes:
    """The exposition text: the store's counts are read first (off the loop), then the runtime's (on the
    loop, between two callbacks: one consistent set)."""
    from prometheus_client import CollectorRegistry, generate_latest

    counts = await reads.read(lambda snap: snap.counts())
    families = list(_families(engine, counts))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)


class _Fixed:
    """A collector that yields metric families already built (prometheus-client's custom collector shape)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def _families(engine: Node, counts: StoreCounts) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    invocations = GaugeMetricFamily(
        "unbroken_invocations",
        "Invocations in the store, by service, handler and status (completed ones until their retention ends)",
        labels=["service", "handler", "status"],
    )
    for (service, handler, status), n in sorted(counts.invocations.items()):
        invocations.add_metric([service, handler, status], n)
    yield invocations
    yield GaugeMetricFamily(
        "unbroken_inbox_depth",
        "Invocations queued behind the lock of their object or workflow key",
        counts.inboxed,
    )
    yield GaugeMetricFamily("unbroken_timers_pending", "Durable timers not fired yet", counts.timers)
    yield GaugeMetricFamily(
        "unbroken_attempts_running",
        "Attempts running in this process now",
        sum(len(p.invoker.running) for p in engine.partitions),
    )
    yield GaugeMetricFamily(
        "unbroken_records_queued",
        "Records waiting for the next batch of the partition processors",
        sum(p.processor.queued() for p in engine.partitions),
    )
    yield from _lease_families(engine)
    yield from _target_families(engine.stats)
    yield from _commit_families(engine.stats)


def _lease_families(engine: Node) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    leadership = engine.leadership()
    led = len(engine.partitions) if leadership is None else leadership.led
    yield GaugeMetricFamily(
        "unbroken_partitions_led",
        "Partitions this node leads: holds the lease of and may commit to (on SQLite, its one partition)",
        led,
    )
    if leadership is None:  # no leases: nothing to renew or lose
        return
    yield CounterMetricFamily(
        "unbroken_lease_acquisitions",
        "Partition leases this node took, each with a new epoch (at start, or after a lapse)",
        leadership.acquired,
    )
    yield CounterMetricFamily(
        "unbroken_lease_renewals", "Lease renewal rounds the database acknowledged", leadership.renewals
    )
    yield CounterMetricFamily(
        "unbroken_lease_renewal_failures",
        "Lease renewal rounds that failed (a node that cannot renew in time stops committing)",
        leadership.renewal_failures,
    )
    yield CounterMetricFamily(
        "unbroken_partitions_lost",
        "Partitions whose leadership this node lost: another node took their lease",
        leadership.lost,
    )


def _target_families(stats: EngineStats) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    labels = ["service", "handler"]
    attempts = CounterMetricFamily(
        "unbroken_attempts",
        "Attempts that ended, by outcome: completed (the handler returned), suspended, failed (retried, "
        "paused or killed by the retry policy), aborted (stopped by the engine)",
        labels=[*labels, "outcome"],
    )
    retries = CounterMetricFamily(
        "unbroken_retries", "Attempts started after a failed attempt", labels=labels
    )
    suspensions = CounterMetricFamily("unbroken_suspensions", "Attempts that suspended", labels=labels)
    attempt_s = HistogramMetricFamily(
        "unbroken_attempt_duration_seconds", "Duration of each attempt, start to end", labels=labels
    )
    invocation_s = HistogramMetricFamily(
        "unbroken_invocation_duration_seconds",
        "End-to-end latency: from the invocation's creation to the end of the attempt that returned",
        labels=labels,
    )
    for (service, handler), t in sorted(stats.targets.items()):
        for outcome, n in sorted(t.attempts.items()):
            attempts.add_metric([service, handler, outcome], n)
        retries.add_metric([service, handler], t.retries)
        suspensions.add_metric([service, handler], t.suspensions)
        attempt_s.add_metric([service, handler], **_histogram(t.attempt_s))
        invocation_s.add_metric([service, handler], **_histogram(t.invocation_s))
    yield from (attempts, retries, suspensions, attempt_s, invocation_s)


def _commit_families(stats: EngineStats) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    batch = HistogramMetricFamily(
        "unbroken_batch_records", "Records applied and committed together (group commit: one fsync each)"
    )
    batch.add_metric([], **_histogram(stats.batch_records))
    yield batch
    commit = HistogramMetricFamily(
        "unbroken_commit_duration_seconds",
        "Commit latency of a batch: from its apply to the commit done (the fsync included)",
    )
    commit.add_metric([], **_histogram(stats.commit_s))
    yield commit
    yield CounterMetricFamily(
        "unbroken_commit_failures", "Batch commits the store refused (retried)", stats.commit_failures
    )


def _histogram(h: Histogram) -> dict[str, Any]:
    cumulative = h.cumulative()
    buckets = [(_le(bound), n) for bound, n in zip(h.bounds, cumulative, strict=False)]
    buckets.append(("+Inf", cumulative[-1]))
    return {"buckets": buckets, "sum_value": h.total}


def _le(bound: float) -> str:
    return repr(float(bound))
