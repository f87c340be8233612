"""Crash torture on PostgreSQL: 2-3 real ``unbroken serve`` nodes on one schema, hurt over and over.

    python -m tests.torture.driver --store postgres --nodes 3 --kills 30 --seed 7 --data-dir /tmp/t2 \
        --fault-points

The nodes, their load and the checks are tests/cluster's (harness.py: N nodes sharing the partitions by
their leases; load.py: a steady mixed load over every node's ingress, each operation retried with its
idempotency key until accepted; checks.py: the outside ledger's checkers). This adds the faults: at seeded
random moments the driver picks a running node and

* SIGKILLs it, then restarts it under the same name at once, a little later, or past the lease's TTL (the
  others take its partitions over first, and hand some back when it rejoins);
* or SIGSTOPs it past its lease (the others take over), then SIGCONTs it (it must find itself fenced);
* with ``--fault-points``, a restarted node is sometimes armed with a fault point (``UNBROKEN_FAULTS``),
  one of the leadership ones (lease renewal, acquisition, release on rebalance, recovery on gain) or of the
  single-node torture's; it dies there by itself whenever it gets there (an armed survivor dies in the
  middle of taking over a killed node's partitions).

Each SIGKILL, pause and fault-point crash counts as one of ``--kills``. Then every node is restarted
disarmed, the load stops (what is in flight is accepted), and the checks run: nothing accepted lost, no
counter incremented twice, every journaled step the token of one execution, no two executions of an
exclusive handler on one key overlapping (a killed process's open execution ends at its death, a paused
one's at its pause, until it has seen itself fenced).
"""

from __future__ import annotations

import argparse
import random
import re
import signal
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import checks
from tests.cluster.harness import Cluster, Node, pg_now
from tests.cluster.load import Load

LEADERSHIP_POINTS = (
    "lease.before_renew",
    "lease.after_renew",
    "lease.before_acquire",
    "lease.after_acquire",
    "lease.before_release",
    "takeover.mid_recovery",
)
CRASHED = 137  # exit status at an armed fault point
LEASE_TTL_S = 3.0  # limits.pg_lease_ttl_s: a pause longer than it lets the others take over
FENCED_WAIT_S = 15.0  # how long a woken node has to log that it lost its partitions
SERVING_WAIT_S = 90.0  # the final phase: every node restarted disarmed serves within this


@dataclass
class Member:
    """What the driver knows of one node beyond its process."""

    node: Node
    armed: str | None = None
    down_until: float | None = None  # monotonic: restart it then (None: running)
    paused_at: float | None = None  # database clock: SIGSTOPped then (None: not paused)
    waking: tuple[int, float, int, float] | None = None  # (pid, paused at, fence lines before, give up at)
    paused_since_start: bool = False  # a pause while starting may cost it its connection: it exits 1


@dataclass
class Stats:
    sigkills: int = 0
    pauses: int = 0
    fault_crashes: Tally[str] = field(default_factory=Tally)
    fenced_unseen: int = 0  # woken nodes that never logged a loss (nobody took over in time)
    start_failures: int = 0  # paused while starting, their PostgreSQL connection ended: exited 1, restarted

    @property
    def kills(self) -> int:
        return self.sigkills + self.pauses + sum(self.fault_crashes.values())


def _fence_lines(node: Node) -> int:
    try:
        text = node.log_path.read_text(errors="replace")
    except OSError:
        return 0
    return len(re.findall(rf"no longer led by node {node.name}|node {node.name} leads no partition", text))


def _store_refused(node: Node) -> bool:
    """The node's last start ended with a clear message that it could not use the store."""
    return "cannot use the PostgreSQL store" in node.log()[-2000:]


class ClusterRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.root = Path(args.data_dir).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.cluster = Cluster(self.root, args.nodes, partitions=args.partitions, mode="balanced")
        self.members = [Member(n) for n in self.cluster.nodes]
        self.stats = Stats()
        self.violations: list[str] = []
        # process id -> (lost at, fenced by) windows for the exclusivity check (checks.overlaps)
        self.cuts: dict[int, list[tuple[float, float]]] = {}
        self.summary_checked: dict[str, object] = {}
        self.quiet = False  # the final phase: no more faults, nodes restart disarmed

    # ------------------------------------------------------------------------------------ the nodes
    def targets(self) -> list[Node]:
        """Where the load sends: running, not paused (a load balancer's health check would drop it)."""
        return [m.node for m in self.members if m.node.alive() and m.paused_at is None]

    def start(self, m: Member, armed: str | None) -> None:
        m.armed, m.down_until, m.paused_since_start = armed, None, False
        m.node.start(extra_env={"UNBROKEN_FAULTS": f"{armed}:crash"} if armed else None, wait=False)

    def died(self, m: Member, at: float) -> None:
        """The process is gone (killed or crashed): its open executions end at ``at``."""
        pid = m.node.pid
        if m.waking is not None:  # never saw itself fenced: its pause window ends at its death
            self._close_pause(m, at)
        self.cuts.setdefault(pid, []).append((at, float("inf")))

    def _close_pause(self, m: Member, fenced_at: float) -> None:
        assert m.waking is not None
        pid, paused_at, _lines, _give_up = m.waking
        self.cuts.setdefault(pid, []).append((paused_at, fenced_at))
        m.waking = None

    def choose_fault(self) -> str | None:
        if self.quiet or not self.args.fault_points or self.rng.random() >= 0.5:
            return None
        from tests.torture.driver import FAULT_POINTS

        return self.rng.choice(LEADERSHIP_POINTS * 2 + FAULT_POINTS)  # the new ones twice as often

    def tend(self) -> None:
        """Notice crashes at armed points (and any other death: a violation), restart the nodes whose down
        time is over, and see woken nodes fenced."""
        now = time.monotonic()
        for m in self.members:
            proc = m.node.proc
            if m.down_until is None and proc is not None and proc.poll() is not None:
                if proc.returncode == CRASHED and m.armed:
                    self.stats.fault_crashes[m.armed] += 1
                    self.died(m, pg_now())
                    m.down_until = now + self.down_time()
                elif proc.returncode == 1 and m.paused_since_start and _store_refused(m.node):
                    self.stats.start_failures += 1  # what a supervisor restarts: the node said why
                    self.died(m, pg_now())
                    m.down_until = now
                else:
                    raise RuntimeError(
                        f"node {m.node.name} exited with {proc.returncode}:\n{m.node.log()[-3000:]}"
                    )
            if m.down_until is not None and now >= m.down_until:
                self.start(m, self.choose_fault())
            if m.waking is not None and m.node.alive():
                _pid, _at, lines, give_up = m.waking
                if _fence_lines(m.node) > lines:
                    self._close_pause(m, pg_now())
                elif now > give_up:
                    self.stats.fenced_unseen += 1
                    self._close_pause(m, pg_now())

    def down_time(self) -> float:
        """At once (takes its own leases back), soon, or past the TTL (the others took them over)."""
        return self.rng.choice((0.0, self.rng.uniform(0.2, 1.5), self.rng.uniform(LEASE_TTL_S + 0.5, 6.0)))

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.tend()
            time.sleep(0.05)  # the moment of the next fault is chosen by the seed; tend the nodes meanwhile

    def strike(self) -> None:
        up = [m for m in self.members if m.down_until is None and m.node.alive() and m.paused_at is None]
        if not up:
            return
        # mostly a node not armed: an armed one is left to live until it dies at its point, which the
        # leadership points reach only when it takes over, or hands back, another node's partitions
        plain = [m for m in up if m.armed is None]
        m = self.rng.choice(plain if plain and self.rng.random() < 0.8 else up)
        if self.rng.random() < self.args.pause_share:
            self.pause(m)
            return
        at = pg_now()
        m.node.kill()
        self.stats.sigkills += 1
        self.died(m, at)
        m.down_until = time.monotonic() + self.down_time()

    def pause(self, m: Member) -> None:
        """SIGSTOP past the lease, SIGCONT; the pause window stays open until it logs its loss."""
        if m.waking is not None:
            self._close_pause(m, pg_now())
        lines = _fence_lines(m.node)
        paused_at = pg_now()
        m.node.signal(signal.SIGSTOP)
        m.paused_at = paused_at
        m.paused_since_start = True
        self.stats.pauses += 1
        try:
            self.wait(LEASE_TTL_S + self.rng.uniform(0.5, 2.5))
        finally:
            m.paused_at = None
            if m.node.alive():
                m.node.signal(signal.SIGCONT)
        m.waking = (m.node.pid, paused_at, lines, time.monotonic() + FENCED_WAIT_S)

    # ------------------------------------------------------------------------------------ the run
    def kill_loop(self) -> None:
        while self.stats.kills < self.args.kills:
            self.wait(self.rng.uniform(0.3, 1.5))
            self.strike()

    def settle(self) -> None:
        """No more faults: every node running, disarmed, serving."""
        self.quiet = True
        self.tend()  # a crash at an armed point just now is counted, its node restarted disarmed
        for m in self.members:
            if m.node.alive() and m.armed:
                at = pg_now()
                m.node.kill()
                self.died(m, at)
                self.start(m, None)
            elif m.down_until is not None:
                self.start(m, None)
        self.cluster.wait_serving(self.cluster.nodes, SERVING_WAIT_S)
        for m in self.members:
            if m.waking is not None:
                self._close_pause(m, pg_now())

    def main(self) -> int:
        started = time.monotonic()
        self.cluster.start()
        load = Load(self.targets, self.root / "ops.jsonl", workers=self.args.workers).start()
        try:
            try:
                self.kill_loop()
            except Exception as exc:  # noqa: BLE001 - a node dying unexpectedly is a violation
                self.violations.append(f"node: {exc}")
            self.settle()
            load.stop()
            self.summary_checked = checks.check_all(self.cluster, load.ops, process_cuts=self.cuts)
        except Exception as exc:  # noqa: BLE001 - a failed check (or one that cannot run) is a violation
            self.violations.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.cluster.close()
        self.summary(time.monotonic() - started)
        return 1 if self.violations else 0

    def summary(self, duration: float) -> None:
        s = self.stats
        print(
            f"seed={self.args.seed} store=postgres nodes={self.args.nodes} kills={s.kills} "
            f"(sigkill={s.sigkills}, pauses={s.pauses}, fault points: {dict(s.fault_crashes)})"
        )
        print(
            f"woken nodes that never logged a loss: {s.fenced_unseen}; paused while starting, exited 1 and "
            f"restarted: {s.start_failures}; processes cut: {len(self.cuts)}"
        )
        print(f"checked: {self.summary_checked}")
        print(f"duration={duration:.1f}s violations={len(self.violations)}")
        for v in self.violations[:20]:
            print(f"  VIOLATION: {v[:4000]}")
        if self.violations:
            print(f"FAILED with seed {self.args.seed} (node logs in {self.root})")
