"""Many nodes on PostgreSQL next to one node on SQLite and next to the real Restate, in one run:
``bench/cluster.py``. Then the failover time: SIGKILL the leading node, until every partition serves again.

    .venv/bin/python bench/cluster.py                               # W2, W3b at 16 and 128 connections
    .venv/bin/python bench/cluster.py --nodes 1,2,3 --duration 10 --warmup 3
    .venv/bin/python bench/cluster.py --no-sqlite --no-restate --kills 0 --rounds 5   # medians of ratios
    .venv/bin/python bench/cluster.py --only-failover --kills 3
    .venv/bin/python bench/cluster.py --quick                       # smoke test

Sides: ``sqlite`` (``unbroken serve`` on its SQLite file, fsync on), ``pgN`` (N ``unbroken serve`` processes
on one fresh PostgreSQL schema, each its own node name and data dir), ``restate`` (restate-server + the same
handlers in hypercorn, bench/anchor.py). Each cell is bench/compare's (lib/cells.measure: warm-up, idle,
measured wrk window, idle, deltas). A cluster side spreads the load: one ``wrk -t1`` per serving node, the
connections split between them, the summaries merged (lib/wrk.py). ``--mode``: ``balanced`` (the nodes share
the partitions themselves), ``pinned`` (``[store] claim``: node i leads the i-th slice; any node accepts any
request and forwards it), ``standby`` (one leads all and takes all the load; the others wait: the figure then
shows what standbys cost, not what nodes add). The default is the best the build can.

CPU ms/inv counts the unbroken processes only: PostgreSQL's own CPU is in "other load" (it is shared with
every side and with whatever else runs on the machine). Results: bench/results/cluster-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anchor as anchor_mod  # noqa: E402
import psycopg  # noqa: E402
from lib import RESULTS_DIR  # noqa: E402
from lib.cells import measure  # noqa: E402
from lib.procstats import git_rev, machine_info  # noqa: E402
from lib.restate_side import RestateSide  # noqa: E402
from lib.targets import Target, UnbrokenSide, UnbrokenTarget, http_status  # noqa: E402
from lib.workloads import ALL_WORKLOADS, resolve_workloads  # noqa: E402
from lib.wrk import wrk_version  # noqa: E402

PG_URL = os.environ.get("UNBROKEN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PARTITIONS = 64
START_S = 90.0  # a node's start, standbys waiting for leases included


def balanced() -> bool:
    """Whether this build balances partitions between live nodes and takes a dead node's over (#10)."""
    from unbroken.storage import postgres_lease

    return hasattr(postgres_lease.Leases, "start_up")


def shared_mode() -> str:
    """How nodes share the partitions in this build: ``balanced``; ``pinned`` (``[store] claim``: a fixed
    slice each, no takeover); ``standby`` (the first leads all, the others wait for its leases)."""
    from unbroken.config import Config

    return (
        "balanced" if balanced() else "pinned" if "store_claim" in Config.__dataclass_fields__ else "standby"
    )


class PgCluster:
    """``n`` ``unbroken serve`` processes on one fresh schema: a bench/compare ``Target`` whose load is spread
    over ``ingress_urls`` (the nodes that take load)."""

    def __init__(self, workdir: Path, n: int, mode: str) -> None:
        self.name, self.label = f"pg{n}", f"PostgreSQL x{n}"
        self.n = n
        self.schema = f"ub_bench_cluster_{os.getpid()}_{n}_{uuid.uuid4().hex[:6]}"
        self.url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={self.schema}"
        self.mode = mode
        self.startup: dict[str, float] = {}
        self.nodes = [self._node(workdir, chr(ord("a") + i)) for i in range(n)]

    def _node(self, workdir: Path, name: str) -> UnbrokenTarget:
        env = {
            "UNBROKEN_NODE_NAME": name,
            "UNBROKEN_STORE__LEASE_WAIT": "10m",  # before balancing: a standby waits for the leader's leases
            "UNBROKEN_STORE__PARTITIONS": str(PARTITIONS),
        }
        if self.mode == "pinned":  # node i leads the i-th slice of the partitions
            i = ord(name) - ord("a")
            env["UNBROKEN_STORE__CLAIM"] = f"{i * PARTITIONS // self.n}-{(i + 1) * PARTITIONS // self.n - 1}"
        node = UnbrokenTarget(workdir / f"{self.name}-{name}", store_url=self.url, env=env)
        node.label = f"{self.label} node {name}"  # type: ignore[attr-defined]
        return node

    @property
    def ingress_url(self) -> str:
        return self.ingress_urls[0]

    @property
    def ingress_urls(self) -> list[str]:
        if self.mode != "standby":
            return [n.ingress_url for n in self.nodes]
        return [n.ingress_url for n in self.nodes if n.alive() and self._serves(n)]

    @staticmethod
    def _serves(node: UnbrokenTarget) -> bool:
        try:
            return http_status(node.host, node.ingress_port, "GET", "/restate/health", timeout=0.5) == 200
        except OSError:
            return False

    def start(self, timeout: float = START_S) -> None:
        t0 = time.monotonic()
        first, *rest = self.nodes
        first.start(timeout)
        for node in rest:
            node.start(timeout, wait=self.mode != "standby")
        self.startup = {**first.startup, "all_s": round(time.monotonic() - t0, 3)}

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def alive(self) -> bool:
        return all(n.alive() for n in self.nodes)

    def pids(self) -> dict[str, int]:
        return {f"node_{n.env['UNBROKEN_NODE_NAME']}": n.proc.pid for n in self.nodes if n.proc is not None}

    def data_dirs(self) -> list[Path]:
        return [n.data_dir for n in self.nodes]

    def _count(self, where: str) -> int | None:
        try:
            with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(f'SELECT count(*) FROM "{self.schema}".invocation {where}').fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row else None

    def total_invocations(self) -> int | None:
        return self._count("")

    def active_invocations(self) -> int | None:
        return self._count("WHERE status != 'completed'")

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {n.env['UNBROKEN_NODE_NAME']}\n{n.log_tail(chars // 3)}" for n in self.nodes)

    def log_problems(self) -> list[str]:
        return [line for n in self.nodes for line in n.log_problems()]

    def leaders(self) -> dict[str, int]:
        """Live leases per node."""
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                f'SELECT node, count(*) FROM "{self.schema}".partition_lease WHERE expires_at > now() GROUP BY node'
            ).fetchall()
        return {str(node): int(c) for node, c in rows}


# ------------------------------------------------------------------------------------------ failover
def probe_keys(partitions: int) -> list[str]:
    """One Counter key in each storage partition (the store's split: ``(key * P) >> 64``)."""
    from unbroken.core.ids import partition_key_for_key

    keys: dict[int, str] = {}
    i = 0
    while len(keys) < partitions:
        keys.setdefault((partition_key_for_key(f"p-{i}") * partitions) >> 64, f"p-{i}")
        i += 1
    return [keys[p] for p in range(partitions)]


def _post(node: UnbrokenTarget, path: str, idem: str, timeout: float) -> int:
    conn = http.client.HTTPConnection(node.host, node.ingress_port, timeout=timeout)
    try:
        conn.request(
            "POST", path, body=b"1", headers={"content-type": "application/json", "idempotency-key": idem}
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def served_again(nodes: list[UnbrokenTarget], keys: list[str], since: float, bound_s: float) -> float:
    """Seconds from ``since`` until an exclusive call on every key answered 200 through one of ``nodes``
    whose health endpoint answers (a standby's port accepts and never answers); one idempotency key per
    probe, so a retry waits for the first attempt instead of adding load."""
    deadline = since + bound_s

    def probe(key: str) -> float:
        idem, i = f"probe-{key}-{uuid.uuid4().hex}", 0
        while time.monotonic() < deadline:
            up = [n for n in nodes if n.alive() and PgCluster._serves(n)]
            if up:
                node, i = up[i % len(up)], i + 1
                try:
                    if _post(node, f"/Counter/{key}/add", idem, max(0.5, deadline - time.monotonic())) == 200:
                        return time.monotonic() - since
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.1)  # the partition is not led yet: ask again
        return math.inf

    with ThreadPoolExecutor(max_workers=16) as pool:
        return max(pool.map(probe, keys))


def failover(workdir: Path, kills: int) -> list[dict[str, Any]]:
    """Three nodes; ``kills`` times: SIGKILL the node leading the most partitions, time until every partition
    serves again through the others, restart the killed node (it rejoins, or waits as a standby). Pinned
    nodes never take each other's partitions: without balancing this runs one leader and two standbys."""
    cluster = PgCluster(workdir, 3, "balanced" if balanced() else "standby")
    keys = probe_keys(PARTITIONS)
    out: list[dict[str, Any]] = []
    try:
        cluster.start()
        for _ in range(kills):
            served_again(cluster.nodes, keys, time.monotonic(), 60.0)  # every partition led before the kill
            led = cluster.leaders()
            victim = next(
                n for n in cluster.nodes if n.env["UNBROKEN_NODE_NAME"] == max(led, key=led.__getitem__)
            )
            others = [n for n in cluster.nodes if n is not victim]
            assert victim.proc is not None
            killed = time.monotonic()
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            took = served_again(others, keys, killed, 60.0)
            out.append(
                {"killed": victim.env["UNBROKEN_NODE_NAME"], "led": led, "served_again_s": round(took, 2)}
            )
            print(
                f"  failover: SIGKILL node {out[-1]['killed']} (led {led}) -> every partition served in {took:.2f} s"
            )
            victim.start(START_S, wait=cluster.mode != "standby")
    finally:
        cluster.stop()
    return out


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="W2,W3b", help="workload ids or names (default W2,W3b)")
    p.add_argument("--connections", default="16,128")
    p.add_argument("--nodes", default="1,2,3", help="PostgreSQL cluster sizes (default 1,2,3)")
    p.add_argument("--no-sqlite", action="store_true")
    p.add_argument("--no-restate", action="store_true")
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--timeout", type=int, default=60)
    p.add_argument("--kills", type=int, default=3, help="failover measurements (0: none)")
    p.add_argument("--only-failover", action="store_true")
    p.add_argument(
        "--mode",
        choices=["balanced", "pinned", "standby"],
        default=None,
        help="how the nodes share the partitions (default: the best this build can; pinned: [store] claim "
        "slices; standby: one leads, the load goes to it only)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every cell this many times, the sides' order alternating; the summary gives medians, "
        "and each cluster's median ratio to one node over the rounds (a 2-core machine's runs spread ±15%%)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 16 connections, 1 s + 2 s, one kill")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.wait_quiet = 0.0  # lib.cells.measure reads it
    args.mode = args.mode or shared_mode()
    if args.quick:
        args.connections, args.duration, args.warmup, args.kills = "16", 2, 1, 1
    return args


def make_sides(args: argparse.Namespace, tmp: Path) -> list[Target]:
    sides: list[Target] = []
    if not args.no_sqlite:
        (tmp / "sqlite").mkdir()
        side = UnbrokenSide(tmp / "sqlite")
        side.name, side.label = "sqlite", "SQLite x1"
        sides.append(side)
    sides += [PgCluster(tmp, int(n), args.mode) for n in args.nodes.split(",") if n.strip()]  # type: ignore[misc]
    if not args.no_restate:
        anchor = anchor_mod.find(anchor_mod.ANCHOR_DIR) or anchor_mod.install(anchor_mod.ANCHOR_DIR)
        (tmp / "restate").mkdir()
        sides.append(RestateSide(tmp / "restate", anchor))
    return sides


def table(cells: list[dict[str, Any]], names: list[str]) -> str:
    head = "| workload | conns | " + " | ".join(f"{n} inv/s (p50/p99 ms, CPU ms/inv)" for n in names) + " |"
    lines = [head, "|" + "---|" * (2 + len(names))]
    rounds = any(c.get("round") for c in cells)
    for c in cells:
        row = [f"{c['wid']} (round {c['round'] + 1})" if rounds else c["wid"], str(c["conns"])]
        for n in names:
            r = c["results"].get(n)
            row.append(
                "-"
                if r is None
                else f"{r['invocations_per_s']:.0f} ({r['p50_ms']:.0f}/{r['p99_ms']:.0f}, "
                f"{r['cpu_ms_per_inv_total'] or 0:.2f}){' err ' + str(r['errors']) if r['errors'] else ''}"
                f" [other {r['other_cpu_pct']:.0f}%]"
            )
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary(cells: list[dict[str, Any]], names: list[str]) -> str:
    """Over the rounds: each side's median inv/s per cell, and each cluster's median ratio to one node (the
    ratio of each round, then their median: a round's drift hits every side of it alike)."""
    base = "pg1" if "pg1" in names else None
    head = "| workload | conns | rounds | " + " | ".join(f"{n} inv/s" for n in names) + " |"
    lines = [head, "|" + "---|" * (3 + len(names))]
    for wid, conns in dict.fromkeys((c["wid"], c["conns"]) for c in cells):
        rounds = [c["results"] for c in cells if c["wid"] == wid and c["conns"] == conns]
        row = [wid, str(conns), str(len(rounds))]
        for n in names:
            rates = [r[n]["invocations_per_s"] for r in rounds if n in r]
            text = f"{statistics.median(rates):.0f}" if rates else "-"
            if base is not None and n.startswith("pg") and n != base:
                ratios = [
                    r[n]["invocations_per_s"] / r[base]["invocations_per_s"]
                    for r in rounds
                    if n in r and r[base]["invocations_per_s"]
                ]
                if ratios:
                    text += f" (÷ pg1 {statistics.median(ratios):.2f}, {min(ratios):.2f}-{max(ratios):.2f})"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def run_cells(
    sides: list[Target], args: argparse.Namespace, tmp: Path, cells: list[dict[str, Any]], round_: int = 0
) -> None:
    for i, w_id in enumerate(resolve_workloads(args.workloads)):
        for j, conns in enumerate(int(c) for c in args.connections.split(",")):
            w = ALL_WORKLOADS[w_id]
            cell: dict[str, Any] = {
                "workload": w.name,
                "wid": w.wid,
                "conns": conns,
                "round": round_,
                "results": {},
            }
            # the order alternates from cell to cell and round to round
            for side in sides if (i + j + round_) % 2 == 0 else list(reversed(sides)):
                r = measure(side, w, conns, args, tmp)
                cell["results"][side.name] = r
                print(
                    f"  {w.wid} c={conns} {side.label}: {r['invocations_per_s']:.0f} inv/s, p50 "
                    f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}, other load "
                    f"{r['other_cpu_pct']:.0f}%",
                    flush=True,
                )
            cells.append(cell)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    m = machine_info()
    meta: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["bench/cluster.py", *(argv or sys.argv[1:])]),
        "git": git_rev(),
        "machine": m,
        "load_generator": wrk_version(),
        "loadavg_at_start": os.getloadavg()[0],
        "mode": args.mode,
    }
    print(
        f"bench/cluster.py {meta['git']} on {m['nproc']} CPU ({m['cpu_model']}); load {meta['loadavg_at_start']:.1f}"
    )
    print(f"nodes share the partitions: {args.mode}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    cells: list[dict[str, Any]] = []
    names: list[str] = []
    status = 0
    try:
        if not args.only_failover:
            sides = make_sides(args, tmp)
            names = [s.name for s in sides]
            for side in sides:  # all up for the whole run, as in bench/compare: drift hits every side alike
                side.start()
                print(f"{side.label} up: {side.startup}", flush=True)
            try:
                for round_ in range(args.rounds):
                    if args.rounds > 1:
                        print(f"round {round_ + 1} of {args.rounds}", flush=True)
                    run_cells(sides, args, tmp, cells, round_)
            finally:
                for side in sides:
                    problems = side.log_problems()
                    if problems:
                        print(
                            f"{side.label}: {len(problems)} warning/error log lines, first: {problems[0][:200]}"
                        )
                    side.stop()
        meta["failover"] = failover(tmp / "failover", args.kills) if args.kills else []
    except (RuntimeError, TimeoutError, OSError, AssertionError) as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        status = 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if cells:
        print()
        print(table(cells, names))
        if args.rounds > 1:
            print()
            print(summary(cells, names))
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"cluster-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps({"meta": meta, "cells": cells}, indent=2, default=str) + "\n")
    print(f"results: {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
