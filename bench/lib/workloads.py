"""The benchmark workloads of ../shared/bench/WORKLOADS.md and the Restate anchor figures copied from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    name: str
    wid: str  # id in WORKLOADS.md
    path: str  # ingress path; "{key}" is replaced per request by one of `keys` random keys
    body: str | None  # JSON text, or None for handlers without input
    invocations_per_call: int = 1
    keys: int = 0
    description: str = ""


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("noop", "W1", "/Bench/noop", '{"hello":"world"}', description="echo"),
        Workload("steps", "W2", "/Bench/steps", "1", description="three ctx.run_typed steps"),
        Workload("counter", "W3a", "/Counter/{key}/add", "1", keys=1000, description="object add, 1000 keys"),
        Workload("hot", "W3b", "/Counter/hot/add", "1", description="object add, one key"),
        Workload("sleep", "W4", "/Bench/sleep", None, description="ctx.sleep(100 ms)"),
        Workload(
            "fanout", "W5", "/Bench/fanout", None, invocations_per_call=11, description="10 calls + gather"
        ),
    ]
}

# Restate 1.7.12 + restate-sdk 1.2.0, two runs each, copied from ../shared/bench/WORKLOADS.md (2 vCPU machine).
# (inv/s, p50 ms, p99 ms, server+service CPU ms/inv) per (workload, conns). NOT measured by this script.
ANCHOR: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {
    ("noop", 16): [(562, 27.9, 47.4, 1.78 + 1.26), (527, 29.2, 53.5, 1.92 + 1.30)],
    ("noop", 128): [(559, 223, 375, 1.72 + 1.31), (653, 189, 304, 1.53 + 1.09)],
    ("steps", 16): [(185, 85.7, 127, 5.34 + 4.16), (184, 82.9, 145, 5.47 + 4.05)],
    ("steps", 128): [(267, 463, 646, 3.41 + 2.91), (247, 495, 717, 3.67 + 3.10)],
    ("counter", 16): [(448, 34.9, 59.2, 2.23 + 1.53), (548, 29.0, 46.7, 1.80 + 1.24)],
    ("counter", 128): [(541, 221, 480, 1.84 + 1.32), (604, 197, 428, 1.65 + 1.14)],
    ("hot", 16): [(162, 97.9, 133, 4.98 + 2.37), (189, 84.2, 128, 4.29 + 1.91)],
    ("hot", 128): [(198, 572, 1712, 3.96 + 2.02), (183, 636, 1015, 4.36 + 2.16)],
    ("sleep", 16): [(142, 111, 130, 4.56 + 2.68), (144, 110, 133, 4.21 + 2.41)],
    ("sleep", 128): [(427, 279, 507, 2.53 + 1.57), (458, 275, 365, 2.30 + 1.51)],
    ("sleep", 512): [(584, 850, 1026, 1.55 + 1.27), (490, 1007, 1352, 1.79 + 1.51)],
    ("fanout", 16): [(541, 313, 542, 1.98 + 1.30), (513, 333, 553, 2.06 + 1.34)],
    ("fanout", 128): [(468, 2674, 4167, 1.94 + 1.65), (657, 2109, 2727, 1.31 + 1.18)],
}


SEND = Workload(
    "send", "W6", "/Bench/noop/send", '{"hello":"world"}', description="one-way noop: accepted/s, then drain"
)
ALL_WORKLOADS: dict[str, Workload] = {**WORKLOADS, SEND.name: SEND}
DEFAULT_ORDER = ["noop", "steps", "counter", "hot", "sleep", "fanout", "send"]
DEFAULT_CONNS: dict[str, list[int]] = {name: [16, 128] for name in DEFAULT_ORDER} | {"sleep": [16, 128, 512]}


def resolve_workloads(spec: str) -> list[str]:
    by_id = {w.wid.lower(): n for n, w in ALL_WORKLOADS.items()}
    by_id |= {"w3": "counter"}
    names = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name = item if item in ALL_WORKLOADS else by_id.get(item.lower())
        if name is None:
            raise ValueError(
                f"unknown workload {item!r}; choose from "
                + ", ".join(f"{ALL_WORKLOADS[n].wid}/{n}" for n in DEFAULT_ORDER)
            )
        names.append(name)
    return names
