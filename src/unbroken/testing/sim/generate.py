"""A seed's workload: the operations drawn from its stream, and their model."""

from __future__ import annotations

from typing import Any

from unbroken.testing.sim.app import KEYS
from unbroken.testing.sim.ops import (
    Await,
    CounterAdd,
    CounterGet,
    Fan,
    Model,
    Nap,
    Observe,
    Op,
    OrderFlow,
    PauseResume,
    Saga,
    Transfer,
)
from unbroken.testing.sim.world import World


def generate(w: World, rng: Any, count: int, horizon_s: float) -> list[Op]:
    """A random workload: ``count`` operations starting within ``horizon_s`` virtual seconds."""
    ops: list[Op] = []
    keys = KEYS[: rng.randint(1, len(KEYS))]
    wf_keys = 0
    for idx in range(count):
        start = rng.uniform(0, horizon_s)
        kind = rng.choices(
            ["add", "send", "transfer", "get", "fan", "order", "saga", "nap", "await", "pause", "observe"],
            [30, 10, 6, 8, 8, 6, 8, 6, 6, 6, 4],
        )[0]
        if kind == "transfer" and len(keys) < 2:
            kind = "add"
        pausable = [
            o for o in ops if isinstance(o, CounterAdd | Transfer | Fan | OrderFlow | Saga | Nap | Await)
        ]
        if kind == "pause" and not pausable:
            kind = "nap"
        observable = [
            o
            for o in ops
            if isinstance(o, Transfer | Fan | Saga | Nap | Await | CounterGet)
            or (isinstance(o, CounterAdd) and not o.send)
        ]
        if kind == "observe" and not observable:
            kind = "add"
        op: Op
        if kind in ("add", "send"):
            op = CounterAdd(
                idx,
                start,
                key=rng.choice(keys),
                n=rng.randint(1, 9),
                audit=rng.random() < 0.3,
                nap_ms=rng.choice([0, 0, 0, 10, 500]),
                send=kind == "send",
                delay_ms=rng.choice([0, 0, 300, 4000]) if kind == "send" else 0,
            )
        elif kind == "transfer":
            i = rng.randrange(len(keys) - 1)
            op = Transfer(idx, start, source=keys[i], to=rng.choice(keys[i + 1 :]), n=rng.randint(1, 5))
        elif kind == "get":
            op = CounterGet(idx, start, key=rng.choice(keys))
        elif kind == "fan":
            adds = [
                (rng.choice(keys), rng.randint(1, 9), rng.choice([0, 0, 200, 3000]))
                for _ in range(rng.randint(0, 3))
            ]
            op = Fan(
                idx,
                start,
                n=rng.randint(1, 5),
                adds=adds,
                cancel_after_s=rng.choice([None, None, None, None, 0.0, 0.01, 0.5]),
                kill=rng.random() < 0.3,
            )
        elif kind == "order":
            wf_keys += 1
            op = OrderFlow(
                idx,
                start,
                key=f"order-{wf_keys}",
                ok=rng.random() < 0.7,
                approve_after_s=rng.choice([0.0, 0.2, 2.0, 10.0]),
                resubmit=rng.random() < 0.3,
            )
        elif kind == "saga":
            op = Saga(
                idx,
                start,
                steps=rng.randint(1, 4),
                fail=rng.random() < 0.4,
                nap_ms=rng.choice([0, 0, 100, 2000]),
                cancel_after_s=rng.choice([None, None, None, 0.0, 0.05, 1.0, 3.0]),
            )
        elif kind == "nap":  # some naps end just when the attempt would suspend (a race worth having)
            near = w.inactivity_timeout_ms + rng.choice([-1, 0, 0, 1])
            odd = rng.choice([1001, 1003, 2002, 4004, 8001, 16_002])  # ms * 0.001 * 1000 < ms in floats
            op = Nap(
                idx,
                start,
                ms=rng.choice([1, 100, 1000, 15_000, near, near, odd, rng.randint(1, 20_000)]),
                cancel_after_s=rng.choice([None, None, None, 0.5, 5.0]),
                kill=rng.random() < 0.3,
            )
        elif kind == "observe":
            target = rng.choice(observable)
            op = Observe(idx, target.start_s, target=target, after_s=rng.choice([0.0, 0.5, 5.0, 30.0]))
        elif kind == "pause":
            target = rng.choice(pausable)
            op = PauseResume(
                idx,
                target.start_s,
                target=target,
                pause_after_s=rng.choice([0.0, 0.01, 0.1, 1.0]),
                resume_after_s=rng.choice([0.0, 0.05, 1.0, 10.0]),
                cycles=rng.choice([1, 1, 3, 10]),
            )
        else:
            op = Await(
                idx, start, resolve_after_s=rng.choice([0.0, 0.1, 2.0, 20.0]), via_handler=rng.random() < 0.4
            )
        ops.append(op)
    return ops


def model_of(ops: list[Op]) -> Model:
    m = Model()
    for op in ops:
        if isinstance(op, CounterAdd | Fan | Transfer):
            op.model(m)
    return m
