"""Seeded simulation of the engine: the real state machine, processor code, invoker, timers and SDK
sessions, on a virtual clock and the in-memory store, under injected faults, with invariants and a
liveness phase. One seed reproduces a run exactly.

    python -m unbroken.testing.sim --seeds 10000 --workers 2     # many seeds, a summary
    python -m unbroken.testing.sim --seed 1234 -v                  # one seed, with its trace

See ``RELIABILITY.md`` ("Seeded simulation").
"""

from unbroken.testing.sim.runner import SimResult, run_seed
from unbroken.testing.sim.world import SimConfig

__all__ = ["SimConfig", "SimResult", "run_seed"]
