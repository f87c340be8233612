"""The ingress core (ingress/requests.py) in-process: request -> record, reply -> HTTP, no server."""

from __future__ import annotations

from typing import Any

import pytest

import unbroken as restate
from unbroken.core import actions as a
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.actions import Reply
from unbroken.core.ids import (
    FRESH_ID_BYTES,
    InvocationId,
    awakeable_id,
    child_invocation_id,
    idempotent_invocation_id,
    partition_key_for_key,
)
from unbroken.core.schema import HandlerKind, RetryPolicy, Schemas, Target
from unbroken.http.asgi import HttpError
from unbroken.ingress import requests as ingress

NOW = 1_700_000_000_000
FRESH = bytes(range(1, ingress.FRESH_BYTES + 1))
DAY = 86_400_000

greeter = restate.Service("Greeter")
cart = restate.VirtualObject("Cart")
signup = restate.Workflow("Signup")


@greeter.handler()
async def greet(ctx: restate.Context, name: Any) -> Any:
    return name


@cart.handler()
async def add(ctx: restate.ObjectContext, n: Any) -> Any:
    return n


@signup.main()
async def run(ctx: restate.WorkflowContext, req: Any) -> Any:
    return req


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return restate.app([greeter, cart, signup]).schemas(RetryPolicy(), 60_000, 600_000, DAY, DAY, DAY)


def _submit(
    schemas: Schemas,
    path: str,
    body: bytes = b'"x"',
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    method: str = "POST",
) -> ingress.Submission:
    request = ingress.Request(method, path, query, headers or [(b"content-type", b"application/json")])
    return ingress.submission(request, ingress.route_request(request, schemas), body, NOW, FRESH)


def test_a_call_becomes_an_invoke_record_with_a_fresh_id_in_its_keys_partition(schemas: Schemas) -> None:
    rec = _submit(schemas, "/Cart/al%2Fice/add", b"3")(7)
    assert isinstance(rec, r.Invoke)
    assert rec.target == Target("Cart", "add", "al/ice") and rec.argument == b"3" and rec.request_id == 7
    inv = InvocationId.parse(rec.invocation_id)
    assert inv.partition_key == partition_key_for_key("al/ice")
    assert inv.uuid == NOW.to_bytes(6, "big") + FRESH[:10]
    assert rec.random_seed == int.from_bytes(FRESH[FRESH_ID_BYTES:], "big")
    assert rec.reply is r.ReplyMode.RESULT and rec.idempotency_key is None and rec.execute_at_ms == 0
    assert rec.headers[0] == j.Header("x-restate-ingress-path", "/Cart/al%2Fice/add")


def test_an_idempotent_call_has_the_id_a_handler_would_derive(schemas: Schemas) -> None:
    headers = [(b"idempotency-key", b"k-1")]
    sub = _submit(schemas, "/Greeter/greet", headers=headers)
    assert sub.dedup and sub(1).idempotency_key == "k-1"
    target = Target("Greeter", "greet")
    assert sub.invocation_id == idempotent_invocation_id(target, "k-1")
    assert sub.invocation_id == child_invocation_id("inv_caller", target, HandlerKind.SHARED, "k-1", 4)


def test_a_workflow_run_has_the_same_id_from_the_ingress_and_from_a_handler(schemas: Schemas) -> None:
    sub = _submit(schemas, "/Signup/user-1/run/send")
    assert sub.reply is r.ReplyMode.ACCEPTED
    assert sub.invocation_id == child_invocation_id(
        "inv_x", Target("Signup", "run", "user-1"), HandlerKind.WORKFLOW, None, 1
    )
    with pytest.raises(HttpError, match="idempotency key with workflow handlers") as err:
        _submit(schemas, "/Signup/user-1/run", headers=[(b"idempotency-key", b"k")])
    assert err.value.status == 400


def test_delays_only_on_sends(schemas: Schemas) -> None:
    assert _submit(schemas, "/Greeter/greet/send", query=b"delay=1500")(1).execute_at_ms == NOW + 1500
    assert _submit(schemas, "/Greeter/greet/send", query=b"delay=PT2S")(1).execute_at_ms == NOW + 2000
    with pytest.raises(HttpError, match="delay is supported only with sends"):
        _submit(schemas, "/Greeter/greet", query=b"delay=10")
    with pytest.raises(HttpError, match="bad delay"):
        _submit(schemas, "/Greeter/greet/send", query=b"delay=soon")


def test_input_checks(schemas: Schemas) -> None:
    with pytest.raises(HttpError, match="not valid JSON"):
        _submit(schemas, "/Greeter/greet", body=b"{nope")
    with pytest.raises(HttpError, match="Content-type 'text/plain' does not match"):
        _submit(schemas, "/Greeter/greet", headers=[(b"content-type", b"text/plain")])
    with pytest.raises(HttpError, match="handler 'nope' was not found") as err:
        _submit(schemas, "/Greeter/nope")
    assert err.value.status == 404
    with pytest.raises(HttpError, match="method not allowed") as err:
        _submit(schemas, "/Greeter/greet", method="PUT")
    assert err.value.status == 405


def test_awakeable_routes_check_the_id_before_the_body(schemas: Schemas) -> None:
    inv = InvocationId(3, bytes(16))
    aid = awakeable_id(inv, 17)
    request = ingress.Request("POST", f"/restate/awakeables/{aid}/resolve")
    route = ingress.route_request(request, schemas)
    rec = ingress.resolve_record(request, route, b'"ok"')(9)
    assert rec == r.ResolveSignal(str(inv), 17, j.Result(value=b'"ok"'), 9)
    with pytest.raises(HttpError, match="not an awakeable's"):
        ingress.route_request(
            ingress.Request("POST", f"/restate/awakeables/{awakeable_id(inv, 1)}/resolve"), schemas
        )
    with pytest.raises(HttpError, match="resolved with POST"):
        ingress.route_request(ingress.Request("GET", f"/restate/awakeables/{aid}/resolve"), schemas)
    assert ingress.awakeable_response(route, Reply(9, a.Accepted(str(inv)))) == (202, [], b"")
    with pytest.raises(HttpError, match="has not created it"):
        ingress.awakeable_response(route, Reply(9, a.NotAllocated(str(inv))))


def test_replies_as_http(schemas: Schemas) -> None:
    value = Reply(1, a.Output("inv_a", j.Result(value=b"42"), expires_at_ms=NOW))
    status, headers, body = ingress.reply_response(value, dedup=True) or (0, [], b"")
    assert (status, body) == (200, b"42")
    assert dict(headers)[b"idempotency-expires"] and dict(headers)[b"content-type"] == b"application/json"
    assert b"idempotency-expires" not in dict((ingress.reply_response(value, dedup=False) or (0, [], b""))[1])
    failed = ingress.reply_response(
        Reply(1, a.Output("inv_a", j.Result(failure=j.Failure(418, "teapot")))), False
    )
    assert failed is not None and failed[0] == 418 and b'"message":"teapot"' in failed[2]
    accepted = ingress.reply_response(Reply(1, a.PreviouslyAccepted("inv_a")), False)
    assert accepted is not None and accepted[0] == 202 and b"PreviouslyAccepted" in accepted[2]
    assert ingress.reply_response(Reply(1, a.Gone()), False) is None


def test_path_of_round_trips_through_routing(schemas: Schemas) -> None:
    target = Target("Cart", "add", "a b/c%d")
    route = ingress.route_request(ingress.Request("POST", ingress.path_of(target, send=True)), schemas)
    assert route.target == target and route.send
