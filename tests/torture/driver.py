"""Crash torture: a mixed workload against a real ``unbroken serve`` that is SIGKILLed over and over.

    python -m tests.torture.driver --kills 200 --seed 7 --data-dir /tmp/torture [--fault-points]
    python -m tests.torture.driver --store postgres --nodes 3 --kills 30 --data-dir /tmp/t2 --fault-points

(``--store postgres``: several nodes on one PostgreSQL schema, killed, paused and crashed at the leadership
fault points too: tests/torture/cluster.py.)

Client workers send the workload of tests/torture/app.py, each request with an idempotency key (or a
workflow key), retrying with the same key on connection errors; a request counts as *accepted* only once
the server answered it with a 2xx. Meanwhile the main thread SIGKILLs the server at seeded random moments
and restarts it on the same data dir (with ``--fault-points`` some restarts arm a random fault point, and
the process dies there by itself). After N kills a final phase without kills lets everything finish, then
the checks run (see :func:`check`). Exit status 1 on any violation (the seed is printed).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter as Tally
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.harness import Server

APP = "tests/torture/app.py"
FAULT_POINTS = (
    "processor.before_commit",
    "processor.mid_batch",
    "processor.after_commit",
    "timer.before_fire",
    "invoker.before_start",
    "ingress.before_reply",
    "sdk.run.before_propose",
)
CRASHED = 137  # exit status at an armed fault point
COUNTERS, SINKS = 4, 3
FINAL_TIMEOUT_S = 90.0


@dataclass
class Accepted:
    kind: str  # add | flow | saga | nap | fan
    inv: str
    key: str  # idempotency key (or workflow key)
    body: dict[str, Any]
    target: str  # object key for add/fan (counter / sink)


@dataclass
class Stats:
    kills: int = 0
    fault_crashes: Tally[str] = field(default_factory=Tally)
    retries: int = 0
    statuses: Tally[int] = field(default_factory=Tally)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        root = Path(args.data_dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        data = root / "data"
        if data.exists():
            raise SystemExit(f"{data} exists: the model needs a fresh data dir")
        self.ledger_path = root / "ledger.jsonl"
        self.ledger_path.touch()
        self.server = Server(APP, data, env={"TORTURE_LEDGER": str(self.ledger_path)})
        self.accepted: list[Accepted] = []
        self.approvals: dict[str, str] = {}  # workflow key -> approval value (sent and answered 2xx)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.stats = Stats()
        self.violations: list[str] = []
        self.errors: list[BaseException] = []
        self.checked: dict[str, int] = {}
        self.current_fault: str | None = None  # the point the running server is armed with

    # ------------------------------------------------------------------------------------ clients
    def request(
        self, client: httpx.Client, path: str, body: Any, key: str | None, timeout: float = 10
    ) -> httpx.Response:
        """POST until the server answers 2xx; same key on every retry. Never gives up while it could have
        been accepted (the model must know every accepted key), but is bounded overall."""
        deadline = time.monotonic() + 300
        headers = {"idempotency-key": key} if key else {}
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} ({key}) never accepted")
            try:
                resp = client.post(
                    f"{self.server.ingress}{path}", json=body, headers=headers, timeout=timeout
                )
            except httpx.TransportError:
                with self.lock:
                    self.stats.retries += 1
                time.sleep(0.05)  # client back-off while the server is down
                continue
            with self.lock:
                self.stats.statuses[resp.status_code] += 1
            if 200 <= resp.status_code < 300:
                return resp
            raise AssertionError(f"{path} ({key}): unexpected {resp.status_code} {resp.text[:300]}")

    def worker(self, w: int) -> None:
        rng = random.Random(f"{self.args.seed}-{w}")
        n = 0
        with httpx.Client() as client:
            while not self.stop.is_set():
                n += 1
                key = f"w{w}-{n}"
                try:
                    self.one(client, rng, key)
                except BaseException as exc:  # noqa: BLE001 - reported as a violation
                    self.errors.append(exc)
                    return

    def one(self, client: httpx.Client, rng: random.Random, key: str) -> None:
        kind = rng.choices(["add", "flow", "saga", "nap", "fan"], weights=[5, 2, 2, 2, 2])[0]
        body: dict[str, Any]
        if kind == "add":
            target = f"c{rng.randrange(COUNTERS)}"
            body = {"n": key}
            if rng.random() < 0.5:
                resp = self.request(client, f"/Counter/{target}/add/send", body, key)
                inv = resp.json()["invocationId"]
            else:
                resp = self.request(client, f"/Counter/{target}/add", body, key, timeout=30)
                inv = resp.headers["x-restate-id"]
            self.accept(Accepted(kind, inv, key, body, target))
        elif kind == "flow":
            resp = self.request(client, f"/Flow/{key}/run/send", {}, None)
            self.accept(Accepted(kind, resp.json()["invocationId"], key, {}, key))
            if rng.random() < 0.8:  # else approved in the final phase
                self.approve(client, key)
        elif kind == "saga":
            body = {"fail": rng.random() < 0.5}
            resp = self.request(client, "/Saga/book/send", body, key)
            self.accept(Accepted(kind, resp.json()["invocationId"], key, body, ""))
        elif kind == "nap":
            body = {"ms": rng.randint(50, 300)}
            if rng.random() < 0.5:
                resp = self.request(client, "/Sleeper/nap/send", body, key)
                inv = resp.json()["invocationId"]
            else:
                resp = self.request(client, "/Sleeper/nap", body, key, timeout=30)
                inv = resp.headers["x-restate-id"]
            self.accept(Accepted(kind, inv, key, body, ""))
        else:
            body = {"n": rng.randint(2, 4), "sink": f"s{rng.randrange(SINKS)}"}
            resp = self.request(client, "/FanOut/fan/send", body, key)
            self.accept(Accepted(kind, resp.json()["invocationId"], key, body, body["sink"]))

    def approve(self, client: httpx.Client, key: str) -> None:
        value = f"ok-{key}"
        self.request(client, f"/Flow/{key}/approve", value, f"approve-{key}")
        with self.lock:
            self.approvals[key] = value

    def accept(self, a: Accepted) -> None:
        with self.lock:
            self.accepted.append(a)

    # ---------------------------------------------------------------------------------- the killer
    def start_server(self, faults: str | None) -> None:
        """Start (maybe armed); a process that dies at its armed point while starting counts as a kill."""
        try:
            self.server.start(extra_env={"UNBROKEN_FAULTS": f"{faults}:crash"} if faults else None)
        except RuntimeError:
            assert self.server.proc is not None
            if faults is None or self.server.proc.returncode != CRASHED:
                raise
            self.stats.kills += 1
            self.stats.fault_crashes[faults] += 1
            self.current_fault = None
            self.start_server(None)

    def kill_loop(self) -> None:
        while self.stats.kills < self.args.kills and not self.errors:
            proc = self.server.proc
            assert proc is not None
            deadline = time.monotonic() + self.rng.uniform(0.1, 1.0)
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)  # the kill moment is chosen by the seed; watch for a fault-point crash
            if proc.poll() is None:
                self.server.kill()
                self.stats.kills += 1
            elif proc.returncode == CRASHED and self.current_fault:
                self.stats.kills += 1
                self.stats.fault_crashes[self.current_fault] += 1
            else:
                raise RuntimeError(f"server died with {proc.returncode}:\n{self.server.log()}")
            fault = None
            if self.args.fault_points and self.rng.random() < 0.4:
                fault = self.rng.choice(FAULT_POINTS)
            self.current_fault = fault
            self.start_server(fault)

    def main(self) -> int:
        started = time.monotonic()
        self.start_server(None)
        workers = [
            threading.Thread(target=self.worker, args=(w,), daemon=True) for w in range(self.args.workers)
        ]
        for t in workers:
            t.start()
        try:
            self.kill_loop()
        except Exception as exc:  # noqa: BLE001 - an unexpected exit status is a violation, reported below
            self.violations.append(f"server: {exc}")
        finally:
            self.stop.set()
        # Final phase: no more kills. A server still armed is restarted disarmed.
        if self.current_fault is not None or self.server.proc is None or self.server.proc.poll() is not None:
            if self.server.proc is not None and self.server.proc.poll() is None:
                self.server.kill()
                self.stats.kills += 1
            self.current_fault = None
            self.start_server(None)
        for t in workers:
            t.join(timeout=FINAL_TIMEOUT_S)
            if t.is_alive():
                self.violations.append("a client worker never got its request accepted")
        for err in self.errors:
            self.violations.append(f"client error: {err!r}")
        try:
            with httpx.Client() as client:
                for a in list(self.accepted):
                    if a.kind == "flow" and a.key not in self.approvals:
                        self.approve(client, a.key)
            check(self)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is a violation too
            self.violations.append(f"checks failed to run: {exc!r}")
        finally:
            self.server.kill()
        self.summary(time.monotonic() - started)
        return 1 if self.violations else 0

    def summary(self, duration: float) -> None:
        kinds = Tally(a.kind for a in self.accepted)
        print(
            f"seed={self.args.seed} kills={self.stats.kills} (fault points: {dict(self.stats.fault_crashes)})"
        )
        print(f"accepted invocations={len(self.accepted)} {dict(kinds)} retries={self.stats.retries}")
        print(f"checked: {self.checked}")
        print(f"duration={duration:.1f}s violations={len(self.violations)}")
        for v in self.violations[:50]:
            print(f"  VIOLATION: {v}")
        if self.violations:
            print(f"FAILED with seed {self.args.seed}")


# ------------------------------------------------------------------------------------------ checks
def query_all(srv: Server, sql: str, order: str, page: int = 5000) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        resp = srv.admin_request(
            "POST", "/query", {"query": f"{sql} ORDER BY {order} LIMIT {page} OFFSET {len(rows)}"}
        )
        assert resp.status_code == 200, resp.text
        got = resp.json()["rows"]
        rows.extend(got)
        if len(got) < page:
            return rows


def query_by_id(srv: Server, sql: str, ids: list[str], chunk: int = 300) -> list[dict[str, Any]]:
    """``sql`` (ending in a WHERE clause) for the given invocation ids, a chunk at a time (uses the index)."""
    rows: list[dict[str, Any]] = []
    for i in range(0, len(ids), chunk):
        quoted = ",".join(f"'{x}'" for x in ids[i : i + chunk])  # ids are inv_ + base62: nothing to escape
        resp = srv.admin_request("POST", "/query", {"query": f"{sql} AND id IN ({quoted})"}, timeout=60)
        assert resp.status_code == 200, resp.text
        assert not resp.json().get("truncated"), "query truncated"
        rows.extend(resp.json()["rows"])
    return rows


def attach(client: httpx.Client, srv: Server, a: Accepted) -> httpx.Response:
    if a.kind == "flow":
        url = f"{srv.ingress}/restate/workflow/Flow/{a.key}/attach"
    else:
        url = f"{srv.ingress}/restate/invocation/{a.inv}/attach"
    return client.get(url, timeout=FINAL_TIMEOUT_S)


Results = dict[str, Any]  # invocation id -> what attach answered (a failed saga: its message, decoded)
Ledger = dict[tuple[str, str], list[dict[str, Any]]]  # (invocation id, step) -> executions, in order
Tokens = dict[
    tuple[str, str], dict[str, Any]
]  # (invocation id, step) -> the execution whose result is durable


def check(run: Run) -> None:
    """Every check, each appending what it finds to ``run.violations``:

    1. every accepted invocation completes, with a result (attach), and each key ran as one invocation;
    2. ``ctx.run``: the journaled result is the last execution, and nothing ran after it was durable;
    3. results agree with the journal, by kind;
    4. counters: the model, and the order exclusive handlers ran in;
    5. sinks: every accepted fan-out's one-way and delayed sends delivered exactly once;
    6. timers: no sleep woke before its wake-up time.
    """
    results = _attach_all(run)
    _check_one_invocation_per_key(run)
    inv_rows, invocations = _check_invocations(run)
    journaled = _journaled_runs(run, inv_rows)
    ledger = _read_ledger(run)
    durable_token = _check_runs(run, journaled, ledger, inv_rows)
    run.checked.update(
        journaled_runs=len(journaled),
        executions=sum(map(len, ledger.values())),
        reruns=sum(len(r) - 1 for r in ledger.values()),
        invocations=invocations,
    )
    for a in run.accepted:
        res = results.get(a.inv)
        if res is not None:
            _check_result(run, a, res, durable_token)
    _check_counters(run, results, durable_token)
    _check_sinks(run)
    _check_sleeps(run, durable_token)


def _attach_all(run: Run) -> Results:
    """1. Every accepted invocation completes, with a result (attach), within the final phase."""
    srv, v = run.server, run.violations
    results: Results = {}
    with httpx.Client() as client:
        for a in run.accepted:
            resp = attach(client, srv, a)
            if a.kind == "saga" and a.body["fail"]:
                if resp.status_code != 409:
                    v.append(f"saga {a.inv} should fail with 409, got {resp.status_code} {resp.text[:200]}")
                    continue
                results[a.inv] = json.loads(resp.json()["message"])
            elif resp.status_code != 200:
                v.append(f"{a.kind} {a.inv} attach answered {resp.status_code} {resp.text[:200]}")
                continue
            else:
                results[a.inv] = resp.json() if resp.content else None
    return results


def _check_one_invocation_per_key(run: Run) -> None:
    """Idempotency: one invocation per accepted key."""
    by_key: dict[str, set[str]] = defaultdict(set)
    for a in run.accepted:
        by_key[f"{a.kind}/{a.key}"].add(a.inv)
    for k, ids in by_key.items():
        if len(ids) != 1:
            run.violations.append(f"key {k} was accepted as several invocations: {sorted(ids)}")


def _check_invocations(run: Run) -> tuple[dict[str, dict[str, Any]], int]:
    """Every invocation completed, each accepted one is there, once, and no idempotency key ran twice
    (the rows by id, and how many rows)."""
    v = run.violations
    invocations = query_all(
        run.server, "SELECT id, target, status, idempotency_key, completion_result FROM sys_invocation", "id"
    )
    inv_rows = {r["id"]: r for r in invocations}
    if len(inv_rows) != len(invocations):
        v.append("sys_invocation lists an id twice")
    for r in invocations:
        if r["status"] != "completed":
            v.append(f"stuck: {r['id']} {r['target']} is {r['status']}")
    for a in run.accepted:
        if a.inv not in inv_rows:
            v.append(f"accepted {a.kind} {a.inv} missing from sys_invocation")
    idem = Tally((r["target"], r["idempotency_key"]) for r in invocations if r["idempotency_key"])
    for (target, key), count in idem.items():
        if count > 1:
            v.append(f"{target} with idempotency key {key} ran as {count} invocations")
    return inv_rows, len(invocations)


def _journaled_runs(run: Run, inv_rows: dict[str, dict[str, Any]]) -> dict[tuple[str, str], tuple[str, Any]]:
    """(invocation id, run name) -> ("value", the value) or ("failure", its message), from the journals."""
    entries = query_by_id(
        run.server,
        'SELECT id, "index", entry_type, entry_json FROM sys_journal '
        "WHERE entry_type IN ('Command: Run', 'Notification: Run')",
        sorted(inv_rows),
    )
    names: dict[tuple[str, int], str] = {}
    journaled: dict[tuple[str, str], tuple[str, Any]] = {}
    for e in entries:
        body = json.loads(e["entry_json"])
        if e["entry_type"] == "Command: Run":
            names[(e["id"], body["completion_id"])] = body["name"]
    for e in entries:
        body = json.loads(e["entry_json"])
        if e["entry_type"] == "Notification: Run":
            name = names.get((e["id"], body["completion_id"]))
            if name is None:
                run.violations.append(f"run notification without its command: {e['id']} {body}")
                continue
            if (e["id"], name) in journaled:
                run.violations.append(f"run {name} of {e['id']} journaled twice")
            result = body["result"]
            if result["failure"] is not None:  # a failure: its message carries the token
                journaled[(e["id"], name)] = ("failure", result["failure"]["message"])
            else:
                journaled[(e["id"], name)] = ("value", json.loads(result["value"]))
    return journaled


def _read_ledger(run: Run) -> Ledger:
    ledger: Ledger = defaultdict(list)
    for line in run.ledger_path.read_text().splitlines():
        row = json.loads(line)
        ledger[(row["inv"], row["step"])].append(row)
    return ledger


def _check_runs(
    run: Run,
    journaled: dict[tuple[str, str], tuple[str, Any]],
    ledger: Ledger,
    inv_rows: dict[str, dict[str, Any]],
) -> Tokens:
    """2. ctx.run: the journaled result is the last execution, and nothing ran after it was durable."""
    v = run.violations
    pid_order: dict[int, float] = {}  # pid -> first time seen in the ledger (process start order)
    for rows in ledger.values():
        for row in rows:
            pid_order[row["pid"]] = min(pid_order.get(row["pid"], row["t"]), row["t"])
    durable_token: Tokens = {}
    for (inv, name), (how, value) in journaled.items():
        runs = ledger.get((inv, name), [])
        if not runs:
            v.append(f"journaled run {name} of {inv} never executed per the ledger")
            continue
        token = value if how == "value" else None
        if how == "value" and name in ("before", "after"):
            token = repr(value)
        last = runs[-1]
        if how == "failure":
            if last["token"] not in value:
                v.append(f"run {name} of {inv}: journaled failure {value!r} is not the last execution {last}")
        elif last["token"] != token:
            v.append(
                f"run {name} of {inv}: journaled {token} but the last execution was {last['token']} ({len(runs)} runs)"
            )
        else:
            durable_token[(inv, name)] = last
        for row in runs:
            if pid_order[row["pid"]] > pid_order[last["pid"]]:
                v.append(f"run {name} of {inv} ran in a later process after its result was journaled")
    for inv, name in ledger:
        if inv not in inv_rows:
            v.append(f"ledger has {name} for unknown invocation {inv}")
        elif (inv, name) not in journaled and inv_rows[inv]["status"] == "completed":
            v.append(f"run {name} of completed {inv} executed but never journaled")
    return durable_token


def _check_result(run: Run, a: Accepted, res: Any, durable_token: Tokens) -> None:
    """3. One result agrees with the journal (the steps its kind returns are the durable ones)."""
    for name, token in _expected_steps(run, a, res).items():
        got = durable_token.get((a.inv, name))
        if got is None or got["token"] != token:
            run.violations.append(
                f"{a.kind} {a.inv} returned {name}={token}, the journal/ledger say {got and got['token']}"
            )


def _expected_steps(run: Run, a: Accepted, res: Any) -> dict[str, str]:
    """The run steps whose durable tokens ``res`` must carry, by kind (and the kind's own checks)."""
    v = run.violations
    if a.kind == "add":
        return {"apply": res["token"]}
    if a.kind == "flow":
        if res["approval"] != f"ok-{a.key}":
            v.append(f"workflow {a.key} saw approval {res['approval']!r}")
        return {"prepare": res["prepare"], "finish": res["finish"]}
    if a.kind == "saga":
        want = (
            {"reserve_a", "reserve_b", "undo_b", "undo_a"}
            if a.body["fail"]
            else {"reserve_a", "reserve_b", "charge"}
        )
        if set(res) != want:
            v.append(f"saga {a.inv} (fail={a.body['fail']}) ran steps {sorted(res)}")
        return dict(res.items())
    if a.kind == "nap":
        if res["after"] < res["before"] + a.body["ms"] / 1000 - 0.001:
            v.append(
                f"sleep {a.inv} woke {res['after'] - res['before']:.3f}s after it began, asked {a.body['ms']}ms"
            )
        return {"before": repr(res["before"]), "after": repr(res["after"])}
    if a.kind == "fan" and [p["part"] for p in res["parts"]] != list(range(a.body["n"])):
        v.append(f"fan-out {a.inv} got parts {res['parts']}")
    return {}


def _check_counters(run: Run, results: Results, durable_token: Tokens) -> None:
    """4. Counters: the model, and the order exclusive handlers ran in."""
    with httpx.Client() as client:
        for c in range(COUNTERS):
            target = f"c{c}"
            resp = client.post(f"{run.server.ingress}/Counter/{target}/get", json=None, timeout=30)
            _check_counter(run, target, resp.json(), results, durable_token)


def _check_counter(run: Run, target: str, state: Any, results: Results, durable_token: Tokens) -> None:
    v = run.violations
    expected = [a for a in run.accepted if a.kind == "add" and a.target == target]
    applied = state["applied"]
    if len(applied) != len(set(applied)):
        v.append(f"counter {target}: an increment applied twice: {Tally(applied).most_common(3)}")
    if set(applied) != {a.key for a in expected} or state["count"] != len(expected):
        v.append(f"counter {target}: count {state['count']}, applied {len(applied)}, model {len(expected)}")
    for a in expected:
        res = results.get(a.inv)
        if res is not None and (res["count"] > len(applied) or applied[res["count"] - 1] != a.key):
            v.append(f"counter {target}: {a.key} saw count {res['count']}, not its place in the order")
    inv_of = {a.key: a.inv for a in expected}
    order = sorted(
        (durable_token[(inv_of[k], "apply")] for k in applied if (inv_of.get(k), "apply") in durable_token),
        key=lambda row: row["t"],
    )
    if [row["n"] for row in order] != applied:
        v.append(f"counter {target}: exclusive handlers did not run in the order of the state")


def _check_sinks(run: Run) -> None:
    """5. Sinks: every accepted fan-out's one-way and delayed sends delivered exactly once."""
    with httpx.Client() as client:
        for s in range(SINKS):
            target = f"s{s}"
            delivered = client.post(f"{run.server.ingress}/Sink/{target}/items", json=None, timeout=30).json()
            sent = sorted(
                f"{a.inv}:{suffix}"
                for a in run.accepted
                if a.kind == "fan" and a.target == target
                for suffix in ("oneway", "delayed")
            )
            if sorted(delivered) != sent:
                extra, missing = Tally(delivered) - Tally(sent), Tally(sent) - Tally(delivered)
                run.violations.append(
                    f"sink {target}: duplicated/unexpected {dict(extra)}, missing {dict(missing)}"
                )


def _check_sleeps(run: Run, durable_token: Tokens) -> None:
    """6. Timers: no sleep woke before its wake-up time (per the journal)."""
    naps = [a.inv for a in run.accepted if a.kind == "nap"]
    sleeps = query_by_id(
        run.server, "SELECT id, sleep_wakeup_at FROM sys_journal WHERE entry_type = 'Command: Sleep'", naps
    )
    for sl in sleeps:
        after = durable_token.get((sl["id"], "after"))
        if sl["sleep_wakeup_at"] is None:
            continue
        wake = datetime.fromisoformat(sl["sleep_wakeup_at"].replace("Z", "+00:00")).timestamp()
        if after is not None and after["t"] < wake - 0.001:
            run.violations.append(
                f"sleep of {sl['id']} fired at {after['t']:.3f} before its wake-up {wake:.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--fault-points", action="store_true")
    p.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--nodes", type=int, default=3, help="postgres: how many nodes share the schema")
    p.add_argument("--partitions", type=int, default=16, help="postgres: storage partitions")
    p.add_argument("--pause-share", type=float, default=0.2, help="postgres: faults that are SIGSTOPs")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 30)
    if args.store == "postgres":  # several nodes on one schema (tests/torture/cluster.py)
        from tests.torture.cluster import ClusterRun

        return ClusterRun(args).main()
    return Run(args).main()


if __name__ == "__main__":
    sys.exit(main())
