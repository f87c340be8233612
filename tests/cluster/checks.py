"""The checkers: what the outside ledger (the load's accepted operations, the handlers' ledger tables) says
must hold after a scenario, read through the nodes that serve and straight from PostgreSQL.

* nothing lost: every accepted send reaches its final result (attach answers 200 with the right value);
* nothing done twice: every counter equals exactly the number of accepted increments aimed at it (calls
  with idempotency keys, and the fan's call and send); every journaled step result names one execution of
  its action, and each (invocation, step) has its result journaled once;
* exclusivity: no two executions of ``Counter.add`` on the same key overlap in time (database clock).
"""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.cluster.harness import Cluster, Node
from tests.cluster.load import Op

SETTLE_S = 60.0  # after the load stops, how long every accepted invocation has to reach its result
# A failover probe's client timeout, then it retries with the same idempotency key (as a client would); the
# forwarder gives up a paused leader by itself once it is deposed (#10), this only bounds each attempt
PROBE_ATTEMPT_S = 8.0


def _get(nodes: Sequence[Node], path: str, timeout_s: float, attempt_s: float = 10.0) -> httpx.Response:
    """GET (POST for a handler) through the nodes, in turn, until one answers 200 (bounded); each attempt
    bounded by ``attempt_s`` (a standby's bound port accepts and never answers)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}  # node -> its last answer
    i = 0
    while time.monotonic() < deadline:
        node = nodes[i % len(nodes)]
        i += 1
        try:
            attempt = min(attempt_s, max(0.1, deadline - time.monotonic()))
            if path.endswith("/get") or path.endswith("/add"):
                body = b"1" if path.endswith("/add") else b""
                headers = {"content-type": "application/json"}
                resp = httpx.post(f"{node.ingress}{path}", content=body, headers=headers, timeout=attempt)
            else:
                resp = httpx.get(f"{node.ingress}{path}", timeout=attempt)
            if resp.status_code == 200:
                return resp
            last[node.name] = f"{resp.status_code} {resp.text[:200]}"
        except httpx.HTTPError as exc:
            last[node.name] = type(exc).__name__
        time.sleep(0.1)  # the invocation is still running, or a node is failing over
    raise AssertionError(f"{path}: no 200 in {timeout_s:.1f}s, last answers: {last}")


def results(cluster: Cluster, ops: Sequence[Op]) -> dict[str, Any]:
    """Attach to every accepted send; its JSON result by invocation id. Fails naming what is lost."""
    nodes = cluster.serving()
    sends = [op for op in ops if op.accepted and op.inv is not None]
    deadline = time.monotonic() + SETTLE_S

    def attach(op: Op) -> tuple[str, Any]:
        assert op.inv is not None
        left = max(1.0, deadline - time.monotonic())
        resp = _get(nodes, f"/restate/invocation/{op.inv}/attach", left)
        return op.inv, resp.json() if resp.content else None

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(attach, sends))


def expected_counters(ops: Sequence[Op]) -> dict[str, int]:
    want: collections.Counter[str] = collections.Counter()
    for op in ops:
        if not op.accepted:
            continue
        if op.kind == "add":
            want[op.args["key"]] += 1
        elif op.kind == "fan":
            want[op.args["call_key"]] += 1
            want[op.args["send_key"]] += 1
    return dict(want)


def counters(cluster: Cluster, keys: Sequence[str]) -> dict[str, int]:
    nodes = cluster.serving()
    return {k: int(_get(nodes, f"/Counter/{k}/get", 30).json()) for k in keys}


def check_counters(cluster: Cluster, ops: Sequence[Op], timeout_s: float = 30.0) -> dict[str, int]:
    """Every counter equals its accepted increments (sends arrive later: wait for them, bounded)."""
    want = expected_counters(ops)
    deadline = time.monotonic() + timeout_s
    while True:
        got = counters(cluster, sorted(want))
        if got == want or time.monotonic() > deadline or any(got[k] > want[k] for k in want):
            break
        time.sleep(0.2)  # a send still in flight between partitions
    diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not diff, f"counters (got, accepted increments) that differ: {diff}"
    return got


@dataclass
class Effects:
    executions: dict[tuple[str, str], int]  # (invocation, step) -> how often its action ran
    reran: list[tuple[str, str, int]] = field(default_factory=list)  # run more than once (at least once)


def check_effects(cluster: Cluster, ops: Sequence[Op], res: dict[str, Any]) -> Effects:
    """Each journaled step result is the token of one execution of that step of that invocation."""
    rows = cluster.ledger("SELECT inv, step, token FROM {L}.effect")
    by_token = {token: (inv, step) for inv, step, token in rows}
    runs = collections.Counter((inv, step) for inv, step, _t in rows)
    problems = []
    for op in ops:
        if not op.accepted or op.inv is None or op.kind == "fan":
            continue
        result = res[op.inv]
        if op.kind == "wf":
            if result.get("go") != op.args["value"]:
                problems.append(f"{op.inv}: workflow result {result} lacks its signal {op.args['value']}")
            tokens = {"after": result.get("token")}
        else:
            names = ["s0", "s1", "s2"] if op.kind == "steps" else ["after"]
            tokens = dict(zip(names, result, strict=True))
        for step, token in tokens.items():
            if by_token.get(token) != (op.inv, step):
                problems.append(f"{op.inv}/{step}: journaled token {token} is no execution of it")
    assert not problems, "\n".join(problems[:20])
    reran = [(inv, step, n) for (inv, step), n in runs.items() if n > 1]
    return Effects(dict(runs), reran)


@dataclass(frozen=True)
class Interval:
    key: str
    inv: str
    node: str
    enter: float
    exit: float | None
    pid: int = 0  # the process that ran it


def lock_intervals(cluster: Cluster) -> list[Interval]:
    rows = cluster.ledger(
        "SELECT key, inv, node, extract(epoch FROM enter_at), extract(epoch FROM exit_at), pid FROM {L}.lock"
    )
    return [
        Interval(k, i, n, float(a), None if b is None else float(b), int(pid)) for k, i, n, a, b, pid in rows
    ]


Cut = dict[str, tuple[float, float]]  # node -> (lost at, fenced by): database clock, epoch seconds
# process id -> its (lost at, fenced by) windows, in time order (the crash torture: a process paused, woken,
# later killed)
ProcessCuts = Mapping[int, Sequence[tuple[float, float]]]


def _cut_end(iv: Interval, windows: Sequence[tuple[float, float]]) -> float:
    """Where an execution ends once cut: at the first window it entered before the end of."""
    end = iv.exit if iv.exit is not None else float("inf")
    for lost, fenced in windows:
        if iv.enter < fenced:
            return min(end, max(iv.enter, lost))
    return end


def overlaps(
    intervals: Sequence[Interval], cut: Cut | None = None, process_cuts: ProcessCuts | None = None
) -> list[tuple[Interval, Interval]]:
    """Pairs of executions on one key that overlap. ``cut``: node -> (the moment it was killed or paused,
    the moment it was known fenced). Its executions entered before the second end at the first: a killed
    process writes no exit, and what a paused one runs after others took over commits nothing (its epoch
    is refused), so it is not a second execution of the key in the sense exclusivity is about.
    ``process_cuts``: the same by process id, several windows each (nodes restarted many times)."""
    cut = cut or {}
    process_cuts = process_cuts or {}
    by_key: dict[str, list[tuple[float, float, Interval]]] = collections.defaultdict(list)
    for iv in intervals:
        windows = [*([cut[iv.node]] if iv.node in cut else []), *process_cuts.get(iv.pid, ())]
        end = _cut_end(iv, windows)
        by_key[iv.key].append((iv.enter, end, iv))
    found = []
    for spans in by_key.values():
        spans.sort(key=lambda s: s[0])
        reach_end, reach = spans[0][1], spans[0][2]
        for start, end, iv in spans[1:]:
            if start < reach_end:
                found.append((reach, iv))
            if end > reach_end:
                reach_end, reach = end, iv
    return found


def check_exclusive(cluster: Cluster, cut: Cut | None = None, process_cuts: ProcessCuts | None = None) -> int:
    """No overlapping executions of the exclusive handler on a key; how many executions were checked."""
    intervals = lock_intervals(cluster)
    found = overlaps(intervals, cut, process_cuts)
    assert not found, f"{len(found)} overlapping executions on one key, e.g. {found[:3]}"
    return len(intervals)


def check_all(
    cluster: Cluster, ops: Sequence[Op], cut: Cut | None = None, process_cuts: ProcessCuts | None = None
) -> dict[str, Any]:
    """Every check; a summary to print."""
    accepted = [op for op in ops if op.accepted]
    lost = [op for op in ops if not op.accepted]
    assert not lost, (
        f"{len(lost)} operations no node accepted, e.g. {[(o.kind, o.errors[-3:]) for o in lost[:3]]}"
    )
    res = results(cluster, accepted)
    got = check_counters(cluster, accepted)
    eff = check_effects(cluster, accepted, res)
    checked = check_exclusive(cluster, cut, process_cuts)
    return {
        "accepted": len(accepted),
        "by_kind": dict(collections.Counter(op.kind for op in accepted)),
        "increments": sum(got.values()),
        "step_executions": sum(eff.executions.values()),
        "steps_run_again": len(eff.reran),
        "exclusive_executions": checked,
        "retried_ops": sum(1 for op in accepted if op.attempts > 1),
    }


def probe_keys(partitions: int) -> list[str]:
    """One counter key in each storage partition (``(key * P) >> 64``, as the store splits rows)."""
    from unbroken.core.ids import partition_key_for_key

    keys: dict[int, str] = {}
    i = 0
    while len(keys) < partitions:
        key = f"p-{i}"
        keys.setdefault((partition_key_for_key(key) * partitions) >> 64, key)
        i += 1
    return [keys[p] for p in range(partitions)]


def served_again(nodes: Sequence[Node], keys: Sequence[str], since: float, timeout_s: float) -> float:
    """Seconds from ``since`` (monotonic) until an exclusive call on every key was answered by one of
    ``nodes``: the moment every partition is led again. Each key is probed on its own thread, through a node
    whose health endpoint answers (a standby's port accepts and never answers), with one idempotency key per
    probe, so a retry attaches to the first attempt instead of adding load."""
    deadline = since + timeout_s
    # One client for every probe (httpx's is thread-safe): a fresh one per request builds a TLS context and
    # opens new connections, tens of ms of CPU each; 16 threads doing that on a loaded 2-core machine took
    # seconds, measured as failover time (a round of probes with nothing killed took 6 s under the load).
    client = httpx.Client(limits=httpx.Limits(max_connections=4 * len(keys)))

    def probe(key: str) -> float:
        last: dict[str, str] = {}
        idem = f"probe-{key}-{uuid.uuid4().hex}"
        i = 0
        while time.monotonic() < deadline:
            up = [n for n in nodes if n.serving(client)]
            if not up:
                time.sleep(0.05)  # nobody leads yet: ask again
                continue
            node = up[i % len(up)]
            i += 1
            try:
                resp = client.post(
                    f"{node.ingress}/Counter/{key}/add",
                    content=b"1",
                    headers={"content-type": "application/json", "idempotency-key": idem},
                    timeout=min(PROBE_ATTEMPT_S, max(0.5, deadline - time.monotonic())),
                )
                if resp.status_code == 200:
                    return time.monotonic() - since
                last[node.name] = f"{resp.status_code} {resp.text[:200]}"
            except httpx.HTTPError as exc:
                last[node.name] = type(exc).__name__
            time.sleep(0.05)  # refused while the partition is not led yet
        raise AssertionError(f"{key}: not served within {timeout_s:.1f}s, last answers: {last}")

    with client, ThreadPoolExecutor(max_workers=len(keys)) as pool:
        took = sorted(pool.map(probe, keys))
    # where the time goes: the first key served, the median, the last (printed with -s)
    print(
        f"served again per key: first {took[0]:.2f}s, median {took[len(took) // 2]:.2f}s, last {took[-1]:.2f}s"
    )
    return took[-1]
