"""The admin API on every node of a cluster: writes forwarded to the partition's leader, ``GET /cluster``.

Reads (``/query``, explain, state, services) read the whole store from any node. What changes it is a
record, applied by the node leading the record's partition: an invocation control (cancel, kill, purge,
pause, resume) by the invocation's, a state write by the key's; a schema change (``PATCH /services``,
deployments) touches no partition and is applied by any node leading one. A node that does not lead the
partition proxies the request to the one that does (``cluster/forward.py``), exactly as the ingress does.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import orjson

from unbroken.cluster.forward import Forwarder, replay
from unbroken.core.errors import EngineUnavailable
from unbroken.core.ids import InvalidId, InvocationId, partition_key_for_key
from unbroken.core.storage import ClusterView, NodeInfo, PartitionLeader
from unbroken.http.asgi import BodyTooLarge, HttpError, Receive, Scope, Send, read_body, respond_json

# The admin routes that submit a record, and where its partition is read from.
_BY_INVOCATION = frozenset(
    {
        "delete_invocation",
        "cancel_invocation",
        "kill_invocation",
        "purge_invocation",
        "purge_journal",
        "pause_invocation",
        "resume_invocation",
    }
)
_BY_PATH_KEY = frozenset({"clear_state"})
_BY_BODY_KEY = frozenset({"set_state"})
_ANY_LEADER = frozenset({"modify_service", "register_deployment", "remove_deployment"})
WRITES = _BY_INVOCATION | _BY_PATH_KEY | _BY_BODY_KEY | _ANY_LEADER


async def _read(scope: Scope, receive: Receive, limit: int) -> bytes:
    try:
        return await read_body(scope, receive, limit)
    except BodyTooLarge:
        raise HttpError(413, f"request body too large: the limit is {limit} bytes") from None


def _body_key(body: bytes) -> str | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # the node called answers the 400
    key = parsed.get("object_key") if isinstance(parsed, dict) else None
    return key if isinstance(key, str) else None


async def forward_write(
    cluster: Forwarder,
    name: str,
    params: dict[str, str],
    scope: Scope,
    receive: Receive,
    send: Send,
    body_limit: int,
) -> Receive | None:
    """Proxy the write ``name`` to the leader of its partition if another node leads it: None when
    answered, else the ``receive`` the local handler reads the request from (the body may have been read)."""
    directory = cluster.directory
    key: str | int | None = None
    if name in _BY_INVOCATION:
        try:
            key = InvocationId.parse(params["invocation_id"]).partition_key
        except InvalidId:
            return receive  # answered 400 here
    elif name in _BY_PATH_KEY:
        key = params["key"]
    body = b""
    if name in _BY_BODY_KEY:
        body = await _read(scope, receive, body_limit)
        receive = replay(body, receive)
        key = _body_key(body)
        if key is None:
            return receive
    part: int | None = None
    if key is None:  # a schema change: any node leading a partition applies it
        if directory.led():
            return receive
    else:
        part = directory.partition_of(partition_key_for_key(key) if isinstance(key, str) else key)
        if directory.leads(part):
            return receive
    cluster.refuse_second_hop(scope, part)
    if name not in _BY_BODY_KEY:
        body = await _read(scope, receive, body_limit)
        receive = replay(body, receive)
    if not await cluster.forward(scope, body, send, part, "admin"):
        return receive  # led here now
    return None


# ------------------------------------------------------------------------------------------- GET /cluster
def _node_json(node: NodeInfo, led: int) -> dict[str, Any]:
    return {
        "name": node.name,
        "ingress_url": node.ingress_url,
        "admin_url": node.admin_url,
        "heartbeat_age_s": round(node.heartbeat_age_s, 3),
        "alive": node.alive,
        "partitions": led,
        "backlog": node.backlog,
    }


def _leader_json(leader: PartitionLeader) -> dict[str, Any]:
    return {
        "partition": leader.part,
        "node": leader.node,
        "epoch": leader.epoch,
        "lease_expires_in_s": round(leader.lease_expires_in_s, 3),
    }


def cluster_json(view: ClusterView) -> dict[str, Any]:
    """``GET /cluster``: the nodes (with how many partitions each leads) and each partition's leader."""
    counts: dict[str, int] = {}
    for leader in view.leaders:
        if leader.node is not None and leader.lease_expires_in_s > 0:
            counts[leader.node] = counts.get(leader.node, 0) + 1
    return {
        "partitions": view.partitions,
        "nodes": [_node_json(n, counts.get(n.name, 0)) for n in view.nodes],
        "leaders": [_leader_json(leader) for leader in view.leaders],
        "unled": sum(1 for leader in view.leaders if leader.node is None or leader.lease_expires_in_s <= 0),
    }


def single_node_view(name: str, ingress_url: str, admin_url: str) -> ClusterView:
    """A node on its own store (SQLite): it leads its one partition for good, with no lease."""
    me = NodeInfo(name, ingress_url.rstrip("/"), admin_url.rstrip("/"), 0.0, True)
    return ClusterView(1, (me,), (PartitionLeader(0, name, 0, float("inf")),))


class _Request(Protocol):
    send: Send


class ClusterRoutes:
    """Mixed into ``AdminApp``, which sets these."""

    cluster: Forwarder | None
    node_name: str
    ingress_url: str
    admin_url: str

    async def cluster_status(self, req: _Request) -> None:
        if self.cluster is None:
            view = single_node_view(self.node_name, self.ingress_url, self.admin_url)
            payload = cluster_json(view)
            payload["leaders"][0]["lease_expires_in_s"] = None  # no lease: led for good
        else:
            fresh = self.cluster.directory.view()
            if fresh is None:  # the database could not be read (the directory logged why)
                raise EngineUnavailable("cannot read the cluster's nodes and leases now: retry", 503)
            payload = cluster_json(fresh)
        payload["node"] = self.node_name  # the node that answered
        payload["read_at"] = time.time()
        await respond_json(req.send, 200, payload)


__all__ = ["WRITES", "ClusterRoutes", "cluster_json", "forward_write", "single_node_view"]
