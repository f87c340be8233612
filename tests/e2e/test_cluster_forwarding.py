"""Any node accepts any request, and the admin API works on every node: real ``unbroken serve`` processes on
one PostgreSQL database, each leading a pinned set of partitions (``store.claim``), talking over loopback.

Node ``a`` leads partitions 0-31, ``b`` 32-63; ``c`` (where started) leads none. A request sent to a node
that does not lead its partition is proxied to the leader and answered on the node called.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import pg
from tests.harness import ROOT, Server, wait_until
from unbroken.core.ids import InvocationId, partition_key_for_key

pytestmark = pytest.mark.crash

APP = "tests/apps/cluster_app.py"
PARTITIONS = 64
CLAIMS = {"a": "0-31", "b": "32-63", "c": ""}


def _part(partition_key: int) -> int:
    return (partition_key * PARTITIONS) >> 64


def key_led_by(node: str) -> str:
    """A fresh object key whose partition ``node`` leads."""
    lo, hi = (0, 31) if node == "a" else (32, 63)
    while True:
        key = uuid.uuid4().hex
        if lo <= _part(partition_key_for_key(key)) <= hi:
            return key


def _node(tmp_path: Path, url: str, name: str, pinned: bool = True) -> Server:
    """Node ``name``; ``pinned``: leading its partitions of CLAIMS, else its share (balanced)."""
    env = {"UNBROKEN_STORE__URL": url, "UNBROKEN_NODE_NAME": name}
    if pinned:
        env["UNBROKEN_STORE__CLAIM"] = CLAIMS[name]
    return Server(APP, tmp_path / f"data-{name}", env=env)


@pytest.fixture
def url() -> Iterator[str]:
    pg.require()
    schema = pg.schema_for(f"cluster-{uuid.uuid4()}")
    yield pg.url_for(schema)
    pg.drop(schema)


@pytest.fixture
def nodes(tmp_path: Path, url: str) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for name in ("a", "b"):
            started[name] = _node(tmp_path, url, name).start()
        yield started
    finally:
        for srv in started.values():
            srv.kill()


def published(srv: Server, key: str) -> str | None:
    """The awakeable id ``Waiter/{key}/wait`` published (None until it has)."""
    resp = srv.call(f"/Waiter/{key}/awakeable")
    assert resp.status_code == 200, resp.text
    return resp.json() if resp.content else None  # type: ignore[no-any-return]


def _body(resp: httpx.Response) -> dict[str, object]:
    assert resp.status_code == 200, resp.text
    out: dict[str, object] = resp.json()
    return out


def test_a_call_for_a_key_led_elsewhere_is_answered_by_its_leader(nodes: dict[str, Server]) -> None:
    a, b = nodes["a"], nodes["b"]
    key = key_led_by("b")
    assert _body(a.call(f"/Counter/{key}/add", 1)) == {"value": 1, "node": "b"}
    assert _body(b.call(f"/Counter/{key}/add", 2)) == {"value": 3, "node": "b"}
    assert a.call(f"/Counter/{key}/get").json() == 3
    # a new call of an unkeyed service is minted in a partition the node called leads: no hop
    resp = a.call("/Greeter/hello", "x")
    assert _body(resp) == {"hello": "x", "node": "a"}
    assert _part(InvocationId.parse(resp.headers["x-restate-id"]).partition_key) <= 31
    # a send is forwarded too: its 202 names the invocation, attached to through the other node
    sent = a.call(f"/Counter/{key}/add/send", 10)
    assert sent.status_code == 202, sent.text
    attached = b.get(f"/restate/invocation/{sent.json()['invocationId']}/attach")
    assert _body(attached) == {"value": 13, "node": "b"}


def test_idempotency_key_retries_through_different_nodes_attach_to_one_invocation(
    nodes: dict[str, Server],
) -> None:
    a, b = nodes["a"], nodes["b"]
    key = key_led_by("a")
    answers = [srv.call(f"/Counter/{key}/add", 5, headers={"idempotency-key": "once"}) for srv in (b, a, b)]
    assert {r.headers["x-restate-id"] for r in answers} == {answers[0].headers["x-restate-id"]}
    assert [_body(r) for r in answers] == [{"value": 5, "node": "a"}] * 3
    assert b.call(f"/Counter/{key}/get").json() == 5
    # an unkeyed service with an idempotency key: its id (so its partition) comes from the key
    greeted = [a.call("/Greeter/hello", "y", headers={"idempotency-key": "g"}) for _ in range(2)]
    greeted += [b.call("/Greeter/hello", "y", headers={"idempotency-key": "g"})]
    assert len({r.headers["x-restate-id"] for r in greeted}) == 1
    assert len({r.json()["node"] for r in greeted}) == 1


def test_an_awakeable_created_on_one_node_is_resolved_through_another(nodes: dict[str, Server]) -> None:
    b = nodes["b"]
    key = key_led_by("a")
    sent = b.call(f"/Waiter/{key}/wait/send")
    assert sent.status_code == 202, sent.text
    aid = wait_until(lambda: published(b, key), 10, what="the awakeable id")
    resolved = b.call(f"/restate/awakeables/{aid}/resolve", "yes")
    assert resolved.status_code == 202, resolved.text
    attached = b.get(f"/restate/invocation/{sent.json()['invocationId']}/attach")
    assert attached.status_code == 200 and attached.json() == "resolved with yes"


def test_cancel_through_a_node_that_does_not_lead_the_invocation(nodes: dict[str, Server]) -> None:
    a = nodes["a"]
    key = key_led_by("b")
    inv = a.call(f"/Waiter/{key}/wait/send").json()["invocationId"]
    wait_until(lambda: published(a, key), 10, what="the handler to wait")
    resp = a.admin_request("PATCH", f"/invocations/{inv}/cancel")
    assert resp.status_code in (200, 202), resp.text
    attached = a.get(f"/restate/invocation/{inv}/attach")
    assert attached.status_code == 409, attached.text  # cancelled
    # state written through the node that does not lead the key lands on its leader
    resp = a.admin_request("POST", "/services/Counter/state", {"object_key": key, "new_state": {"n": "41"}})
    assert resp.status_code == 202, resp.text
    assert _body(a.call(f"/Counter/{key}/add", 1)) == {"value": 42, "node": "b"}


def test_a_forwarded_request_is_never_forwarded_again(nodes: dict[str, Server]) -> None:
    a = nodes["a"]
    resp = a.call(f"/Counter/{key_led_by('b')}/add", 1, headers={"x-unbroken-forwarded": "z"})
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    assert "forwarded by z" in resp.json()["message"]


def test_cluster_status_shows_every_node_and_partition(
    tmp_path: Path, url: str, nodes: dict[str, Server]
) -> None:
    a, b = nodes["a"], nodes["b"]
    c = _node(tmp_path, url, "c").start()
    try:

        def with_c() -> dict[str, Any] | None:  # a's lease thread reads the node table every 0.5 s
            status: dict[str, Any] = a.admin_request("GET", "/cluster").json()
            return status if any(n["name"] == "c" and n["alive"] for n in status["nodes"]) else None

        status = wait_until(with_c, 10, what="a to see c")
        assert status["partitions"] == PARTITIONS and status["unled"] == 0
        by_name = {n["name"]: n for n in status["nodes"]}
        assert {n: (v["alive"], v["partitions"]) for n, v in by_name.items()} == {
            "a": (True, 32),
            "b": (True, 32),
            "c": (True, 0),
        }
        assert by_name["b"]["ingress_url"] == b.ingress
        assert all(isinstance(v["backlog"], int) and v["backlog"] >= 0 for v in by_name.values())
        assert [p["partition"] for p in status["leaders"]] == list(range(PARTITIONS))
        assert {p["node"] for p in status["leaders"][:32]} == {"a"}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "unbroken.cli.main",
                "cluster",
                "status",
                "--admin-url",
                c.admin,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=True,
        ).stdout
        assert {n["name"] for n in json.loads(out)["nodes"]} == {"a", "b", "c"}
        table = subprocess.run(
            [sys.executable, "-m", "unbroken.cli.main", "cluster", "status", "--admin-url", c.admin],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=True,
        ).stdout
        assert "0-31" in table and "32-63" in table
        # a node leading nothing serves everything: calls, reads of the whole store, schema changes
        key = key_led_by("a")
        added = c.call(f"/Counter/{key}/add", 1)
        assert _body(added)["node"] == "a"
        state = c.admin_request("GET", f"/services/Counter/state/{key}")
        assert state.status_code == 200 and state.json() == {"n": "1"}
        explained = c.admin_request("GET", f"/invocations/{added.headers['x-restate-id']}/explain")
        assert explained.status_code == 200, explained.text
        assert c.call("/Greeter/hello", "z").json()["node"] in ("a", "b")
        count = c.admin_request("POST", "/query", {"query": "SELECT count(*) AS n FROM sys_invocation"})
        assert count.status_code == 200 and count.json()["rows"][0]["n"] >= 2
        patched = c.admin_request("PATCH", "/services/Counter", {"idempotency_retention": "2h"})
        assert patched.status_code == 200, patched.text
        for srv in (a, b, c):  # applied by one leader, picked up by every node
            wait_until(
                lambda srv=srv: (
                    srv.admin_request("GET", "/services/Counter").json()["idempotency_retention"] == "2h"
                ),
                10,
                what=f"the change to reach {srv.admin}",
            )
    finally:
        c.kill()


def test_no_leader_answers_503_after_the_bound_and_a_dead_leader_asks_for_a_retry(
    nodes: dict[str, Server],
) -> None:
    a, b = nodes["a"], nodes["b"]
    key = key_led_by("b")
    waiting: dict[str, httpx.Response | Exception] = {}

    def call() -> None:
        try:
            waiting["resp"] = a.call(f"/Waiter/{key}/wait", timeout=30)
        except httpx.HTTPError as exc:
            waiting["resp"] = exc

    import threading

    thread = threading.Thread(target=call)
    thread.start()
    wait_until(lambda: published(a, key), 10, what="the handler to wait")
    b.kill()  # the leader dies while a waits on its answer
    thread.join(30)
    resp = waiting["resp"]
    assert isinstance(resp, httpx.Response) and resp.status_code == 502, resp
    assert "idempotency-key" in resp.json()["message"]
    started = time.monotonic()
    resp = a.call(f"/Counter/{key}/add", 1)  # b's partitions have no leader: a is pinned to its own
    waited = time.monotonic() - started
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1", resp.text
    assert 5.0 <= waited < 20.0


def test_a_node_on_its_own_store_leads_everything(tmp_path: Path) -> None:
    srv = Server(APP, tmp_path / "data", env={"UNBROKEN_NODE_NAME": "solo"}).start()
    try:
        status = srv.admin_request("GET", "/cluster").json()
        partitions = status["partitions"]  # 1 on SQLite; 64 when the suite runs on PostgreSQL
        assert [(n["name"], n["alive"], n["partitions"]) for n in status["nodes"]] == [
            ("solo", True, partitions)
        ]
        assert {p["node"] for p in status["leaders"]} == {"solo"} and status["unled"] == 0
        assert status["nodes"][0]["admin_url"] == srv.admin
        table = subprocess.run(
            [sys.executable, "-m", "unbroken.cli.main", "cluster", "status", "--admin-url", srv.admin],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=True,
        ).stdout
        assert "solo *" in table and f"{partitions} partitions" in table
    finally:
        srv.kill()


def test_a_request_during_a_failover_waits_for_the_new_leader(tmp_path: Path, url: str) -> None:
    a = _node(tmp_path, url, "a", pinned=False).start()
    b = _node(tmp_path, url, "b", pinned=False).start()
    try:

        def split() -> bool:
            nodes = a.admin_request("GET", "/cluster").json()["nodes"]
            return sorted(n["partitions"] for n in nodes if n["alive"]) == [32, 32]

        wait_until(split, 15, what="a 32/32 split")
        leaders = a.admin_request("GET", "/cluster").json()["leaders"]
        key = next(
            k
            for k in iter(lambda: uuid.uuid4().hex, None)
            if leaders[_part(partition_key_for_key(k))]["node"] == "b"
        )
        assert _body(a.call(f"/Counter/{key}/add", 1)) == {"value": 1, "node": "b"}
        b.kill()
        started = time.monotonic()
        # forwarded to b until its death shows, then held until a leads the partition: answered by a
        assert _body(a.call(f"/Counter/{key}/add", 1)) == {"value": 2, "node": "a"}
        assert time.monotonic() - started < 6.0 + 2.0
    finally:
        a.kill()
        b.kill()


def test_a_request_forwarded_to_a_paused_leader_goes_to_the_new_one_or_answers_502(
    tmp_path: Path, url: str
) -> None:
    """#10: the proxy has no read timeout; a request forwarded to a leader that is then SIGSTOPped is given
    up once another node leads its partition (or the leader's heartbeat is stale), not when it wakes. One
    that is safe to resend (an idempotency key) is answered by the new leader; a plain call gets 502 asking
    for a retry with an idempotency key (it may have been accepted: nothing tells)."""
    import signal
    import threading

    a = _node(tmp_path, url, "a", pinned=False).start()
    b = _node(tmp_path, url, "b", pinned=False).start()
    try:
        wait_until(lambda: _split(a), 15, what="a 32/32 split")
        leaders = a.admin_request("GET", "/cluster").json()["leaders"]
        keyed = next(_keys_of(leaders, "b", ""))
        plain = next(_keys_of(leaders, "b", keyed))
        answers: dict[str, httpx.Response | Exception] = {}

        def call(name: str, key: str, headers: dict[str, str]) -> None:
            try:
                answers[name] = a.call(f"/Counter/{key}/add", 1, headers=headers, timeout=40)
            except httpx.HTTPError as exc:
                answers[name] = exc

        assert b.proc is not None
        b.proc.send_signal(signal.SIGSTOP)  # a still sees b alive for up to a lease TTL: it forwards
        try:
            started = time.monotonic()
            threads = [
                threading.Thread(target=call, args=("keyed", keyed, {"idempotency-key": "paused-1"})),
                threading.Thread(target=call, args=("plain", plain, {})),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(40)
            waited = time.monotonic() - started
        finally:
            b.proc.send_signal(signal.SIGCONT)
        got, refused = answers["keyed"], answers["plain"]
        assert isinstance(got, httpx.Response) and got.status_code == 200, got
        assert got.json() == {"value": 1, "node": "a"}  # b never ran it: it was paused
        assert isinstance(refused, httpx.Response) and refused.status_code == 502, refused
        assert "idempotency-key" in refused.json()["message"]
        # the lease TTL (3 s), the poll that sees it and a's takeover: not b's pause (40 s bound)
        assert waited < 15.0, waited
    finally:
        a.kill()
        b.kill()


def _split(srv: Server) -> bool:
    nodes = srv.admin_request("GET", "/cluster").json()["nodes"]
    return sorted(n["partitions"] for n in nodes if n["alive"]) == [32, 32]


def _led_by(leaders: list[dict[str, object]], key: str) -> object:
    return leaders[_part(partition_key_for_key(key))]["node"]


def _keys_of(leaders: list[dict[str, object]], node: str, but: str) -> Iterator[str]:
    return (k for k in iter(lambda: uuid.uuid4().hex, None) if _led_by(leaders, k) == node and k != but)


def test_a_caller_waiting_on_a_leader_that_hands_its_partition_over_is_answered_through_the_new_one(
    tmp_path: Path, url: str
) -> None:
    """#10: a call waiting on its leader (not forwarded) whose partition moves away (here: handed over to a
    node that joins) is not answered 503: the node holding the caller's connection attaches to the
    invocation through the new leader, and the caller gets its result."""
    import threading

    a = _node(tmp_path, url, "a", pinned=False).start()
    b = _node(tmp_path, url, "b", pinned=False).start()
    c: Server | None = None
    try:
        wait_until(lambda: _split(a), 15, what="a 32/32 split")
        leaders = a.admin_request("GET", "/cluster").json()["leaders"]
        # a joining node takes its share from the top of each node's partitions: b's highest move
        top = sorted(p["partition"] for p in leaders if p["node"] == "b")[-5:]
        key = next(k for k in iter(lambda: uuid.uuid4().hex, None) if _part(partition_key_for_key(k)) in top)
        answer: dict[str, httpx.Response | Exception] = {}

        def call() -> None:
            try:
                headers = {"idempotency-key": "moving"}
                answer["resp"] = b.call(f"/Waiter/{key}/wait", headers=headers, timeout=60)
            except httpx.HTTPError as exc:
                answer["resp"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        aid = wait_until(lambda: published(b, key), 10, what="the handler to wait")
        c = _node(tmp_path, url, "c", pinned=False).start()

        def moved() -> bool:
            now = a.admin_request("GET", "/cluster").json()["leaders"]
            return _led_by(now, key) not in ("b", None)

        wait_until(moved, 20, what="the key's partition to move away from b")
        wait_until(
            lambda: a.call(f"/restate/awakeables/{aid}/resolve", "yes").status_code == 202,
            20,
            what="the awakeable resolved through a",
        )
        thread.join(60)
        resp = answer["resp"]
        assert isinstance(resp, httpx.Response) and resp.status_code == 200, resp
        assert resp.json() == "resolved with yes"
    finally:
        for srv in (a, b, c):
            if srv is not None:
                srv.kill()
