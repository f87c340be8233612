"""A steady mixed load spread over every serving node's ingress, and the outside ledger of what was accepted.

Each operation gets an idempotency key (or a workflow id) before it is first sent and is retried, on the
next serving node, with the same key until a node accepts it: what a real client does. Accepted means a 200
for a call (its result is the answer) or a 202 for a send (its invocation id is kept to attach to later).
Operations that no node accepted within ``OP_DEADLINE_S`` are kept too, as failures the test reports.

Kinds: ``add`` (an exclusive object call, counter ``d-*``), ``steps`` (three ``ctx.run``), ``nap`` (a durable
sleep, then a step), ``fan`` (a call to counter ``c-*`` and a send to ``s-*``, in other partitions), ``wf``
(a workflow whose promise the load resolves through another node).
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.cluster.harness import Node

OP_DEADLINE_S = 60.0  # one operation retried across failovers for at most this long
RETRY_PAUSE_S = 0.1  # client back-off between attempts
KINDS = (("add", 4), ("steps", 2), ("nap", 1), ("fan", 2), ("wf", 1))
RETRYABLE = {429, 500, 502, 503, 504}


@dataclass
class Op:
    kind: str
    idem: str
    path: str
    body: Any
    args: dict[str, str] = field(default_factory=dict)
    accepted: bool = False
    inv: str | None = None  # the invocation id (sends)
    result: Any = None  # the answer (calls)
    node: str | None = None  # the node that accepted it
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    sent_at: float = 0.0
    accepted_at: float = 0.0


class Load:
    """Worker threads sending a weighted mix of operations to ``targets()`` (the nodes serving now)."""

    def __init__(
        self, targets: Callable[[], Sequence[Node]], ledger_path: Path, workers: int = 6, keys: int = 12
    ) -> None:
        self.targets = targets
        self.ledger_path = ledger_path
        self.workers = workers
        self.keys = keys
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rr = itertools.count()
        self._nodes: Sequence[Node] = ()
        self._nodes_at = 0.0

    # --- running ------------------------------------------------------------------------------------
    def start(self) -> Load:
        self._threads = [
            threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(self.workers)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = OP_DEADLINE_S + 10) -> None:
        """Stop sending new operations; wait (bounded) for those in flight to be accepted or given up."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            raise TimeoutError(f"load workers {stuck} still running after {timeout_s}s")

    def wait_accepted(self, count: int, timeout_s: float) -> None:
        """Wait (bounded) until ``count`` more operations are accepted than now."""
        target = len(self.accepted()) + count
        deadline = time.monotonic() + timeout_s
        while len(self.accepted()) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(self.accepted())} of {target} operations accepted in {timeout_s}s"
                )
            time.sleep(0.05)  # the workers make progress on their own threads

    def accepted(self) -> list[Op]:
        with self._lock:
            return [op for op in self.ops if op.accepted]

    def failed(self) -> list[Op]:
        with self._lock:
            return [op for op in self.ops if not op.accepted]

    # --- one worker -----------------------------------------------------------------------------------
    def _work(self, worker: int) -> None:
        rng = random.Random(worker)
        kinds = [k for k, weight in KINDS for _ in range(weight)]
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                op = self._make(rng.choice(kinds), rng)
                self._submit(client, op)
                if op.kind == "wf" and op.accepted:
                    self._signal(client, op)
                with self._lock:
                    self.ops.append(op)
                with open(self.ledger_path, "a") as f:
                    f.write(json.dumps(asdict(op)) + "\n")

    def _make(self, kind: str, rng: random.Random) -> Op:
        idem = uuid.uuid4().hex
        k = rng.randrange(self.keys)
        if kind == "add":
            return Op(kind, idem, f"/Counter/d-{k}/add", 1, {"key": f"d-{k}"})
        if kind == "steps":
            return Op(kind, idem, "/Work/steps/send", None)
        if kind == "nap":
            return Op(kind, idem, "/Work/nap/send", {"ms": rng.choice((50, 200, 500))})
        if kind == "fan":
            args = {"call_key": f"c-{k}", "send_key": f"s-{rng.randrange(self.keys)}"}
            return Op(kind, idem, "/Work/fan/send", args, args)
        return Op(kind, idem, f"/Job/{idem}/run/send", None, {"value": f"v-{idem[:8]}"})

    def _node(self) -> Node | None:
        now = time.monotonic()
        if now - self._nodes_at > 0.5:  # refreshed twice a second: a dead node drops out quickly
            self._nodes = list(self.targets())
            self._nodes_at = now
        if not self._nodes:
            return None
        return self._nodes[next(self._rr) % len(self._nodes)]

    def _request(
        self, client: httpx.Client, op: Op, path: str, body: Any, idem: str | None
    ) -> httpx.Response | None:
        """One attempt on the next node; None when it should be retried. ``idem``: its idempotency key
        (None for a workflow's run, idempotent by its workflow id)."""
        node = self._node()
        if node is None:
            op.errors.append("no node serving")
            return None
        op.attempts += 1
        headers = {"content-type": "application/json"}
        if idem is not None:
            headers["idempotency-key"] = idem
        try:
            resp = client.post(f"{node.ingress}{path}", content=json.dumps(body).encode(), headers=headers)
        except httpx.HTTPError as exc:
            op.errors.append(f"{node.name}: {type(exc).__name__}")
            self._nodes_at = 0.0  # look again at who serves
            return None
        if resp.status_code in RETRYABLE:
            op.errors.append(f"{node.name}: {resp.status_code} {resp.text[:120]}")
            return None
        op.node = node.name
        return resp

    def _submit(self, client: httpx.Client, op: Op) -> None:
        op.sent_at = time.time()
        deadline = time.monotonic() + OP_DEADLINE_S
        while time.monotonic() < deadline:
            resp = self._request(client, op, op.path, op.body, None if op.kind == "wf" else op.idem)
            if resp is None:
                time.sleep(RETRY_PAUSE_S)
                continue
            if resp.status_code == 200 and op.kind == "add":
                op.accepted, op.result = True, resp.json()
            elif resp.status_code in (200, 202) and op.kind != "add":
                op.accepted, op.inv = True, resp.json()["invocationId"]
            else:
                op.errors.append(f"refused: {resp.status_code} {resp.text[:200]}")
                return
            op.accepted_at = time.time()
            return

    def _signal(self, client: httpx.Client, op: Op) -> None:
        """Resolve the workflow's promise, through whichever node is next (usually another one)."""
        deadline = time.monotonic() + OP_DEADLINE_S
        path = op.path.replace("/run/send", "/signal")
        while time.monotonic() < deadline:
            resp = self._request(client, op, path, op.args["value"], f"sig-{op.idem}")
            if resp is not None:
                if resp.status_code != 200:
                    op.errors.append(f"signal refused: {resp.status_code} {resp.text[:200]}")
                op.args["signalled"] = str(resp.status_code == 200)
                return
            time.sleep(RETRY_PAUSE_S)
        op.args["signalled"] = "False"
