"""Schemathesis against the admin API, driven by the OpenAPI document the server itself serves.

For every operation of ``GET /openapi``, schema-conforming (positive) and schema-violating (negative)
requests are generated; path parameters are often swapped for names that exist (services, handlers,
object keys, invocation ids) so that the requests reach past the 404s. No request may get a 5xx (the one
documented exception: registering a remote deployment is 501 Not Implemented), and afterwards the server
still answers health checks, SQL queries and invocations, with the state it had.

The run is bounded: a few examples per operation and mode (about 15 s in all).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.harness import Server

APP = "tests/apps/admin_app.py"
TOKEN = "fuzz-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
EXAMPLES = 12  # per operation and generation mode
NOT_IMPLEMENTED: set[tuple[str, str]] = set()  # documented 501s
# Not generated: registering a deployment contacts the URI it is given (any host); its input validation and
# the manifest parser are fuzzed in tests/unit/test_protocol_codec.py.
NOT_GENERATED = {("POST", "/deployments")}

SERVICES = ["Inbox", "Worker", "Sleeper", "Vote", "Patchable"]  # Counter is kept out: the canary below
HANDLERS = ["put", "get", "echo", "fail", "nap", "run", "decide", "wait_here"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        APP, tmp_path_factory.mktemp("schemathesis") / "data", env={"UNBROKEN_ADMIN__TOKEN": TOKEN}
    )
    server.start()
    yield server
    assert server.proc is not None and server.proc.poll() is None, server.log()
    server.kill()


def _canary(srv: Server) -> int:
    resp = srv.call("/Counter/canary/read")
    assert resp.status_code == 200, resp.text
    return int(resp.json().get("total") or 0)


def _invocations(srv: Server) -> list[str]:
    """A few real invocation ids: a completed one and some sent ones (in whatever state they reach)."""
    ids = [srv.call("/Worker/echo", "hi").headers["x-restate-id"]]
    for n in range(3):
        resp = srv.call("/Worker/echo/send", f"sent {n}")
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["invocationId"])
    return ids


def test_admin_api_answers_generated_requests_without_5xx(srv: Server) -> None:
    for _ in range(3):
        assert srv.call("/Counter/canary/add", 1).status_code == 200
    assert _canary(srv) == 3
    real = {
        "service": SERVICES,
        "handler": HANDLERS,
        "key": ["canary-not", "k1", "ключ", "a/b"],
        "invocation_id": _invocations(srv),
        "deployment": ["dp_14LbCd1B3RE5yhdhFXCjSjH"],
    }

    doc = httpx.get(f"{srv.admin}/openapi", headers=AUTH, timeout=10)
    assert doc.status_code == 200, doc.text
    schema = schemathesis.openapi.from_dict(doc.json())
    failures: list[str] = []
    statuses: Counter[int] = Counter()

    with requests.Session() as session:

        def probe(op: Any, mode: GenerationMode) -> None:
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(generation_mode=mode), data=st.data())
            def one(case: Any, data: st.DataObject) -> None:
                for name in list(case.path_parameters or {}):
                    if name in real and data.draw(st.integers(0, 3)) > 0:  # mostly names that exist
                        case.path_parameters[name] = data.draw(st.sampled_from(real[name]))
                resp = case.call(base_url=srv.admin, session=session, headers=AUTH, timeout=15)
                statuses[resp.status_code] += 1
                if resp.status_code >= 500 and (op.method.upper(), op.path) not in NOT_IMPLEMENTED:
                    failures.append(
                        f"{op.method.upper()} {op.path} {case.path_parameters} {case.query} "
                        f"{str(case.body)[:200]} -> {resp.status_code} {resp.text[:300]}"
                    )

            try:
                one()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong (no parameters, no body)

        for result in schema.get_all_operations():
            op = result.ok()  # type: ignore[union-attr]
            if (op.method.upper(), op.path) in NOT_GENERATED:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                probe(op, mode)

    assert failures == [], "\n".join(failures[:20])
    assert sum(statuses.values()) > 200
    assert sum(n for code, n in statuses.items() if code < 300) >= 15, (
        statuses
    )  # the fuzzing got past validation
    # Still alive, still consistent.
    assert httpx.get(f"{srv.admin}/health", timeout=5).status_code == 200
    assert srv.get("/restate/health").status_code == 200
    answer = httpx.post(
        f"{srv.admin}/query", json={"query": "SELECT count(*) AS n FROM sys_invocation"}, headers=AUTH
    )
    assert answer.status_code == 200, answer.text
    assert _canary(srv) == 3
    assert srv.call("/Counter/canary/add", 1).json() == 4
