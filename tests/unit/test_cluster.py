"""The pure parts of forwarding between nodes: partition keys of requests, ids minted in a led partition,
the pinned claim option, the ``GET /cluster`` document and the CLI's partition ranges."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unbroken.admin.cluster import cluster_json, single_node_view
from unbroken.cli.cluster import ranges
from unbroken.cluster.directory import Directory, NoLeader, key_in_partition
from unbroken.config import ConfigError, load_config
from unbroken.core.ids import InvocationId, awakeable_id, idempotent_invocation_id, partition_key_for_key
from unbroken.core.schema import HandlerKind, HandlerSchema, Schemas, ServiceKind, ServiceSchema, Target
from unbroken.core.storage import ClusterView, NodeInfo, PartitionLeader
from unbroken.ingress.requests import Request, partition_key_of, resend_safe, route_request
from unbroken.storage.memory import MemoryStore


@given(st.integers(1, 1024), st.data())
def test_a_key_minted_for_a_partition_lies_in_it(partitions: int, data: st.DataObject) -> None:
    part = data.draw(st.integers(0, partitions - 1))
    raw = data.draw(st.integers(0, 2**64 - 1))
    key = key_in_partition(part, partitions, raw)
    assert 0 <= key < 2**64
    assert (key * partitions) >> 64 == part


class _Leads(MemoryStore):
    """A memory store that says it leads ``led`` of 64 partitions (as a node of a cluster would)."""

    def __init__(self, led: set[int]) -> None:
        super().__init__()
        self.led_parts = led

    def leads(self, part: int) -> bool:
        return part in self.led_parts

    def partition_of(self, partition_key: int) -> int:
        return (partition_key * 64) >> 64


def test_new_unkeyed_ids_are_minted_in_a_partition_led_here() -> None:
    directory = Directory(_Leads({5, 40}), "a")
    for _ in range(200):
        fresh = os.urandom(26)
        minted = directory.mint_here(fresh)
        assert minted[:10] == fresh[:10] and minted[18:] == fresh[18:]  # the uuid and the seed stay
        assert directory.partition_of(int.from_bytes(minted[10:18], "big")) in (5, 40)
    fresh = os.urandom(26)
    assert Directory(_Leads(set()), "a").mint_here(fresh) == fresh  # leading nothing: unchanged


_SCHEMAS = Schemas(
    {
        "Counter": ServiceSchema(
            "Counter", ServiceKind.VIRTUAL_OBJECT, {"add": HandlerSchema("add", HandlerKind.EXCLUSIVE)}
        ),
        "Greeter": ServiceSchema("Greeter", ServiceKind.SERVICE, {"hello": HandlerSchema("hello", None)}),
        "Job": ServiceSchema(
            "Job", ServiceKind.WORKFLOW, {"run": HandlerSchema("run", HandlerKind.WORKFLOW)}
        ),
    }
)


def _key_of(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> int | None:
    request = Request("POST", path, b"", headers or [])
    return partition_key_of(request, route_request(request, _SCHEMAS))


def test_the_partition_key_of_each_kind_of_request() -> None:
    assert _key_of("/Counter/k1/add") == partition_key_for_key("k1")
    assert _key_of("/Counter/k1/add/send") == partition_key_for_key("k1")
    assert _key_of("/Greeter/hello") is None  # minted where it is accepted
    idem = InvocationId.parse(idempotent_invocation_id(Target("Greeter", "hello"), "x")).partition_key
    assert _key_of("/Greeter/hello", [(b"idempotency-key", b"x")]) == idem
    inv = InvocationId(random.getrandbits(64), os.urandom(16))
    assert _key_of(f"/restate/invocation/{inv}/attach") == inv.partition_key
    assert _key_of(f"/restate/invocation/{inv}/output") == inv.partition_key
    assert _key_of(f"/restate/awakeables/{awakeable_id(inv, 17)}/resolve") == inv.partition_key


def _safe(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> bool:
    request = Request("POST", path, b"", headers or [])
    return resend_safe(request, route_request(request, _SCHEMAS))


def test_which_requests_a_forwarder_may_send_again_to_a_new_leader() -> None:
    assert not _safe("/Counter/k1/add") and not _safe("/Greeter/hello/send")  # may make a second one
    assert _safe("/Counter/k1/add", [(b"idempotency-key", b"x")])
    assert _safe("/Job/w1/run") and _safe("/Job/w1/run/send")  # the workflow id is the invocation's
    inv = InvocationId(random.getrandbits(64), os.urandom(16))
    assert _safe(f"/restate/invocation/{inv}/attach") and _safe(f"/restate/invocation/{inv}/output")
    assert _safe(f"/restate/awakeables/{awakeable_id(inv, 17)}/resolve")


def test_a_claim_is_a_list_of_partition_ranges() -> None:
    assert load_config(env={"UNBROKEN_STORE__CLAIM": "0-3, 7,9-10"}).store_claim == (0, 1, 2, 3, 7, 9, 10)
    assert load_config(env={"UNBROKEN_STORE__CLAIM": ""}).store_claim == ()
    assert load_config(env={}).store_claim is None
    with pytest.raises(ConfigError, match="partition numbers"):
        load_config(env={"UNBROKEN_STORE__CLAIM": "3-1"})


def test_the_cluster_document_counts_the_partitions_each_node_leads() -> None:
    nodes = (NodeInfo("a", "http://a/", "http://a:9070/", 0.2, True), NodeInfo("b", "", "", 9.0, False))
    leaders = (
        PartitionLeader(0, "a", 3, 2.5),
        PartitionLeader(1, None, 1, 0.0),
        PartitionLeader(2, "a", 1, 2),
    )
    doc = cluster_json(ClusterView(3, nodes, leaders))
    assert [(n["name"], n["alive"], n["partitions"]) for n in doc["nodes"]] == [
        ("a", True, 2),
        ("b", False, 0),
    ]
    assert doc["unled"] == 1 and doc["leaders"][0] == {
        "partition": 0,
        "node": "a",
        "epoch": 3,
        "lease_expires_in_s": 2.5,
    }
    alone = single_node_view("me", "http://i/", "http://a/")
    assert alone.leader_of(0) == alone.nodes[0] and cluster_json(alone)["nodes"][0]["partitions"] == 1


def test_ranges_print_partition_numbers_compactly() -> None:
    assert ranges([7, 0, 1, 2, 3, 9, 10]) == "0-3, 7, 9-10"
    assert ranges([]) == ""


class _Viewed(_Leads):
    """A store whose cluster view the test sets (the lease thread's last read)."""

    def __init__(self, led: set[int]) -> None:
        super().__init__(led)
        self.view: ClusterView | None = None

    def cluster(self) -> ClusterView | None:
        return self.view


def _view(leader: str | None, alive: bool = True) -> ClusterView:
    nodes = (
        NodeInfo("a", "http://a", "http://a:9070", 0.1, True),
        NodeInfo("b", "http://b", "http://b:1", 0, alive),
    )
    return ClusterView(64, nodes, tuple(PartitionLeader(p, leader, 1, 3.0) for p in range(64)))


async def test_the_leader_of_a_partition_and_the_wait_for_one() -> None:
    store = _Viewed({0})
    directory = Directory(store, "a", refresh_s=0.02, leader_wait_s=0.2)
    assert await directory.leader(0) is None  # led here
    store.view = _view("b")
    leader = await directory.leader(5)
    assert leader is not None and leader.name == "b"
    directory.suspect("b")  # it refused the connection: not asked again until the view is looked at again
    store.view = _view("b", alive=False)  # its heartbeat stopped: nobody leads 5 until a takeover
    with pytest.raises(NoLeader):
        await directory.leader(5)

    async def takeover() -> None:
        await asyncio.sleep(0.05)
        store.view = _view("b")

    task = asyncio.ensure_future(takeover())
    leader = await directory.leader(5)  # waits for the new leader, within the bound
    assert leader is not None and leader.name == "b"
    await task


def test_a_leader_is_deposed_by_a_new_epoch_a_stale_heartbeat_or_this_node_leading() -> None:
    store = _Viewed(set())
    directory = Directory(store, "a")
    store.view = _view("b")
    b = store.view.nodes[1]
    epoch = directory.epoch_of(5, b)
    assert epoch == 1 and directory.deposed(b, 5, epoch) is None  # still b's, same epoch: keep waiting
    moved = ClusterView(64, store.view.nodes, tuple(PartitionLeader(p, "b", 2, 3.0) for p in range(64)))
    store.view = moved  # b took it again (a new epoch): what it was sent before may be lost
    assert "epoch 2" in (directory.deposed(b, 5, epoch) or "")
    store.view = _view("b", alive=False)  # paused: its heartbeat is older than the TTL
    assert "heartbeat" in (directory.deposed(b, 5, epoch) or "")
    assert "heartbeat" in (directory.deposed(b, None, None) or "")  # any leader: the heartbeat alone
    store.view = None
    assert directory.deposed(b, 5, epoch) is None  # the database cannot be read: nothing known
    store.led_parts = {5}
    assert "leads partition 5" in (directory.deposed(b, 5, epoch) or "")
