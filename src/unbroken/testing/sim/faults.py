"""The faults of one run, all drawn from its seed.

A :class:`FaultPlan` says which faults a seed injects and how often: crashes (at random instants and
right after random commits), storage write errors (a transaction raising at commit, rolled back),
late timers, delayed and reordered delivery of independent records, late delivery of actions, and
transient exceptions in handlers (inside ``ctx.run`` actions and between awaits). Every decision during
the run comes from a :class:`random.Random` stream of its own, seeded from the run's seed and the
stream's name, so adding a fault kind does not reshuffle the workload.

Faults are active during the *fault phase* only; :attr:`FaultPlan.active` turns them all off for the
liveness phase.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


class InjectedStorageError(OSError):
    """A write that failed (disk I/O error, disk full): the transaction rolled back."""


class InjectedHandlerError(RuntimeError):
    """A transient failure of user code (an API that timed out): the attempt is retried."""


def stream(seed: int, name: str) -> random.Random:
    """An independent, reproducible random stream (``random`` seeds str via SHA-512, not ``hash()``)."""
    return random.Random(f"unbroken-sim:{seed}:{name}")


@dataclass
class FaultPlan:
    seed: int
    active: bool = True
    # crashes
    crash_interval_s: float = 0.0  # mean virtual seconds between random-instant crashes (0 = none)
    crash_after_commit_p: float = 0.0  # probability that a commit is followed by a crash
    downtime_max_s: float = 0.0  # a crashed engine restarts after 0..this
    # storage
    storage_error_p: float = 0.0  # per transaction
    # timing perturbations
    record_delay_p: float = 0.0  # a submitted record becomes visible to the processor later
    record_delay_max_ms: float = 0.0
    timer_delay_p: float = 0.0  # a due timer fires late
    timer_delay_max_ms: float = 0.0
    action_delay_max_ms: float = 0.0  # committed actions reach the runtime later (in commit order)
    commit_latency_max_ms: float = 1.0  # the "fsync" of a batch (always > 0: virtual time moves)
    batch_max: int = 512
    # user code
    run_error_p: float = 0.0  # a ctx.run action raises a transient error
    body_error_p: float = 0.0  # handler code raises between awaits
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_seed(cls, seed: int, intensity: float = 1.0) -> FaultPlan:
        r = stream(seed, "plan")

        def some(p_on: float, low: float, high: float) -> float:
            return r.uniform(low, high) * intensity if r.random() < p_on else 0.0

        return cls(
            seed=seed,
            crash_interval_s=r.uniform(3.0, 30.0) if r.random() < 0.7 * min(1.0, intensity) else 0.0,
            crash_after_commit_p=some(0.5, 0.002, 0.03),
            downtime_max_s=r.choice([0.0, 0.05, 0.5, 3.0]),
            storage_error_p=some(0.5, 0.005, 0.08),
            record_delay_p=some(0.6, 0.05, 0.5),
            record_delay_max_ms=r.choice([1.0, 5.0, 50.0, 500.0]),
            timer_delay_p=some(0.5, 0.1, 0.8),
            timer_delay_max_ms=r.choice([10.0, 500.0, 5000.0]),
            action_delay_max_ms=r.choice([0.0, 0.0, 1.0, 10.0]),
            commit_latency_max_ms=r.choice([0.2, 1.0, 5.0]),
            batch_max=r.choice([1, 2, 8, 64, 512]),
            run_error_p=some(0.5, 0.02, 0.25),
            body_error_p=some(0.4, 0.01, 0.1),
            rng=stream(seed, "faults"),
        )

    @classmethod
    def none(cls, seed: int) -> FaultPlan:
        return cls(seed=seed, active=False, rng=stream(seed, "faults"))

    def describe(self) -> str:
        parts = []
        if self.crash_interval_s or self.crash_after_commit_p:
            parts.append(
                f"crashes(every~{self.crash_interval_s:.1f}s, after-commit p={self.crash_after_commit_p:.3f}, "
                f"downtime<={self.downtime_max_s}s)"
            )
        if self.storage_error_p:
            parts.append(f"storage-errors(p={self.storage_error_p:.3f})")
        if self.record_delay_p:
            parts.append(f"record-delays(p={self.record_delay_p:.2f}, <={self.record_delay_max_ms}ms)")
        if self.timer_delay_p:
            parts.append(f"late-timers(p={self.timer_delay_p:.2f}, <={self.timer_delay_max_ms}ms)")
        if self.run_error_p or self.body_error_p:
            parts.append(f"handler-errors(run p={self.run_error_p:.2f}, body p={self.body_error_p:.2f})")
        parts.append(f"batch<={self.batch_max}, fsync<={self.commit_latency_max_ms}ms")
        return ", ".join(parts)

    # -------------------------------------------------------------------------------- decisions
    def _hit(self, p: float) -> bool:
        return self.active and p > 0 and self.rng.random() < p

    def storage_error(self) -> bool:
        return self._hit(self.storage_error_p)

    def crash_after_commit(self) -> bool:
        return self._hit(self.crash_after_commit_p)

    def run_error(self) -> bool:
        return self._hit(self.run_error_p)

    def body_error(self) -> bool:
        return self._hit(self.body_error_p)

    def record_delay_s(self, is_timer: bool) -> float:
        if self._hit(self.timer_delay_p if is_timer else self.record_delay_p):
            top = self.timer_delay_max_ms if is_timer else self.record_delay_max_ms
            return self.rng.uniform(0, top) / 1000
        return 0.0

    def action_delay_s(self) -> float:
        if self.active and self.action_delay_max_ms:
            return self.rng.uniform(0, self.action_delay_max_ms) / 1000
        return 0.0

    def commit_latency_s(self) -> float:
        return self.rng.uniform(0.05, max(0.05, self.commit_latency_max_ms)) / 1000

    def batch_size(self) -> int:
        return self.rng.randint(1, self.batch_max)

    def downtime_s(self) -> float:
        return self.rng.uniform(0, self.downtime_max_s)

    def next_crash_in_s(self) -> float | None:
        if not self.crash_interval_s:
            return None
        return self.rng.expovariate(1.0 / self.crash_interval_s)
