"""Deployments as records: registered and removed in the store's transaction (durable on every durable
backend), and their services served next to the in-process ones with the configured defaults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.backends import BACKENDS, DURABLE, Opener, opener
from unbroken.admin.deployments import parse_register
from unbroken.core import actions as a
from unbroken.core import limits
from unbroken.core import records as r
from unbroken.core.deployments import (
    DeployedHandler,
    DeployedService,
    Deployment,
    decode_deployment,
    deployed_schemas,
    encode_deployment,
)
from unbroken.core.schema import (
    HandlerKind,
    HandlerSchema,
    RetryPolicy,
    Schemas,
    ServiceKind,
    ServiceSchema,
)
from unbroken.core.state_machine import apply
from unbroken.core.storage import Store
from unbroken.http.asgi import HttpError
from unbroken.protocol.remote import endpoints

NOW = 1_700_000_000_000
LOCAL = Schemas({"Local": ServiceSchema("Local", ServiceKind.SERVICE, {"h": HandlerSchema("h", None)})})


def _deployment(dep_id: str, uri: str, *names: str, at: int = NOW) -> Deployment:
    services = [
        DeployedService(
            n,
            ServiceKind.VIRTUAL_OBJECT,
            [DeployedHandler("add", HandlerKind.EXCLUSIVE), DeployedHandler("get", HandlerKind.SHARED)],
            inactivity_timeout_ms=5000,
        )
        for n in names
    ]
    return Deployment(dep_id, uri, 5, 7, services, at, sdk_version="restate-sdk-python/1.2.0")


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    yield from opener(request, tmp_path)


@pytest.fixture(params=DURABLE, ids=lambda b: b.name)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    yield from opener(request, tmp_path)


def _apply(store: Store, record: r.Record) -> list[a.Action]:
    with store.transaction() as txn:
        return apply(txn, record, NOW, LOCAL)


def test_a_registration_is_stored_and_announced(stores: Opener) -> None:
    store = stores()
    dep = _deployment("dp_1", "http://a:9080", "Counter")
    actions = _apply(store, r.RegisterDeployment(dep, (), 7))
    assert a.UpdateDeployments(dep, ()) in actions
    assert a.Reply(7, a.Done()) in actions
    assert store.deployments() == [dep]


def test_a_forced_re_registration_replaces_the_old_one_in_the_same_transaction(stores: Opener) -> None:
    store = stores()
    old = _deployment("dp_1", "http://a:9080", "Counter")
    new = _deployment("dp_2", "http://a:9080", "Counter", "Extra", at=NOW + 1)
    _apply(store, r.RegisterDeployment(old, (), 1))
    actions = _apply(store, r.RegisterDeployment(new, ("dp_1", "dp_gone"), 2))
    assert a.UpdateDeployments(new, ("dp_1",)) in actions  # only what existed is said removed
    assert store.deployments() == [new]


def test_removing_a_deployment(stores: Opener) -> None:
    store = stores()
    assert a.Reply(3, a.NotFound("dp_1")) in _apply(store, r.RemoveDeployment("dp_1", 3))
    _apply(store, r.RegisterDeployment(_deployment("dp_1", "http://a:9080", "Counter"), (), 1))
    actions = _apply(store, r.RemoveDeployment("dp_1", 4))
    assert a.UpdateDeployments(None, ("dp_1",)) in actions and a.Reply(4, a.Done()) in actions
    assert store.deployments() == []


def test_a_registration_survives_reopening_the_store(durable: Opener) -> None:
    dep = _deployment("dp_1", "http://a:9080", "Counter")
    store = durable("data")
    _apply(store, r.RegisterDeployment(dep, (), 1))
    store.close()
    assert durable("data").deployments() == [dep]


def test_deployed_services_get_their_manifest_options_over_the_defaults() -> None:
    defaults = ServiceSchema(
        "", ServiceKind.SERVICE, {}, retry_policy=RetryPolicy(max_attempts=9), abort_timeout_ms=1234
    )
    older = _deployment("dp_1", "http://a:9080", "Counter", "Old")
    newer = _deployment("dp_2", "http://b:9080", "Counter", at=NOW + 1)
    schemas = deployed_schemas([newer, older], defaults)
    counter = schemas["Counter"]
    assert counter.deployment_id == "dp_2"  # the newest deployment declaring a service serves it
    assert schemas["Old"].deployment_id == "dp_1"
    assert counter.kind is ServiceKind.VIRTUAL_OBJECT
    assert {n: h.kind for n, h in counter.handlers.items()} == {
        "add": HandlerKind.EXCLUSIVE,
        "get": HandlerKind.SHARED,
    }
    assert counter.inactivity_timeout_ms == 5000 and counter.abort_timeout_ms == 1234
    assert counter.retry_policy.max_attempts == 9


# ------------------------------------------------------------------------------------------ the register body
@settings(max_examples=300)
@given(
    st.one_of(
        st.dictionaries(
            st.sampled_from(["uri", "force", "additional_headers", "use_http_11", "dry_run", "arn", "other"]),
            st.none()
            | st.booleans()
            | st.integers()
            | st.text(max_size=30)
            | st.dictionaries(st.text(), st.text()),
        ),
        st.lists(st.integers()),
        st.text(),
    )
)
def test_any_register_body_is_parsed_or_refused_with_400(body: object) -> None:
    try:
        ask = parse_register(body)
    except HttpError as exc:
        assert exc.status == 400 and exc.message
        return
    assert ask.uri.startswith(("http://", "https://"))


def test_a_register_body_as_the_restate_cli_sends_it() -> None:
    ask = parse_register({"uri": "http://localhost:9080/", "force": None, "additional_headers": {"x-a": "1"}})
    assert (ask.uri, ask.force, ask.headers, ask.use_http_11, ask.dry_run) == (
        "http://localhost:9080",
        False,
        {"x-a": "1"},
        False,  # HTTP/2 unless asked, as Restate
        False,
    )


def test_register_metadata_is_kept_and_bounded() -> None:
    """``restate deployments register --metadata k=v`` (and the git labels the CLI adds from the env)."""
    ask = parse_register({"uri": "http://a:9080", "metadata": {"team": "payments", "git.commit.sha": "abc"}})
    assert ask.metadata == {"team": "payments", "git.commit.sha": "abc"}
    assert parse_register({"uri": "http://a:9080", "metadata": {}}).metadata == {}
    for bad, reason in (
        ({"team": 1}, "expected an object of strings"),
        (["team"], "expected an object of strings"),
        ({f"k{i}": "v" for i in range(limits.deployment_metadata_entries_max + 1)}, "entries"),
        ({"k": "v" * limits.deployment_metadata_bytes_max}, "bytes"),
    ):
        with pytest.raises(HttpError) as exc:
            parse_register({"uri": "http://a:9080", "metadata": bad})
        assert exc.value.status == 400 and "'metadata'" in exc.value.message and reason in exc.value.message


def test_a_deployment_stored_before_metadata_existed_reads_back_without_any() -> None:
    dep = _deployment("dp_1", "http://a:9080", "Counter")
    labelled = msgspec.structs.replace(dep, metadata={"team": "payments"})
    assert decode_deployment(encode_deployment(labelled)).metadata == {"team": "payments"}
    old = msgspec.msgpack.encode({k: v for k, v in msgspec.to_builtins(dep).items() if k != "metadata"})
    assert decode_deployment(old) == dep and decode_deployment(old).metadata == {}


def test_routes_new_invocations_to_the_newest_deployment_and_pinned_ones_to_theirs() -> None:
    older = _deployment("dp_1", "http://a:9080", "Counter", "Old")
    newer = msgspec.structs.replace(
        _deployment("dp_2", "https://b:9080/", "Counter", at=NOW + 1), protocol_mode="BIDI_STREAM"
    )
    ancient = msgspec.structs.replace(
        _deployment("dp_0", "http://c:9080", "Gone"), min_protocol_version=1, max_protocol_version=4
    )
    by_service, by_id = endpoints([newer, ancient, older])
    assert by_service["Counter"].deployment_id == "dp_2" and by_service["Old"].deployment_id == "dp_1"
    assert by_id["dp_1"].uri == "http://a:9080" and by_id["dp_2"].uri == "https://b:9080"
    assert by_id["dp_1"].version == 6  # the SDK's 5-7 and Unbroken's 5-6: v6
    assert not by_id["dp_2"].streaming  # https: no h2 streams yet (TLS + ALPN), request/response
    assert "Gone" not in by_service and "dp_0" not in by_id  # speaks no version Unbroken speaks
