"""``GET /metrics`` on the admin port: a real server runs a workload, Prometheus' text is scraped and
parsed with prometheus-client's own parser (what a Prometheus server would read). Once on SQLite, once on
PostgreSQL (``serve --store postgresql://...``: the store's counts are read from it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests import pg
from tests.harness import Server, wait_until
from tests.scrape import Samples, scrape
from tests.scrape import value as _value

APP = "tests/apps/ui_app.py"
TOKEN = "metrics-token"
ENV = {
    "UNBROKEN_ADMIN__TOKEN": TOKEN,
    "UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "500ms",
    "UNBROKEN_DEFAULT_RETRY_POLICY__INITIAL_INTERVAL": "20ms",
}
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp(f"metrics-{request.param}") / "data"
    if request.param == "sqlite":
        server = Server(APP, data, env=ENV).start()
        yield server
        server.kill()
        return
    pg.require()
    schema = pg.schema_for(f"metrics-{uuid.uuid4()}")
    server = Server(APP, data, env=ENV, args=["--store", pg.url_for(schema)]).start()
    yield server
    server.kill()
    pg.drop(schema)


def _on_postgres(srv: Server) -> bool:
    return "--store" in srv.args or os.environ.get("UNBROKEN_TEST_STORE") == "postgres"


def _scrape(srv: Server) -> Samples:
    return scrape(srv.admin, TOKEN)


def test_metrics_need_the_admin_token(srv: Server) -> None:
    resp = httpx.get(f"{srv.admin}/metrics", timeout=10)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.get(f"{srv.admin}/metrics", headers={"authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401


def test_metrics_after_a_workload(srv: Server) -> None:
    for n in range(3):
        assert (
            srv.call("/Shop/checkout", f"order-{n}").json() == f"order-{n}: 70 ({'reserved order-' + str(n)})"
        )
    assert srv.call("/Shop/flaky", "o1").json() == "ok"  # its first attempt fails, the retry succeeds
    assert srv.call("/Shop/refuse", "o2").status_code == 409
    assert srv.call("/Cart/c1/add", "apple").json() == ["apple"]
    sent = srv.call("/Shop/nap/send", 3600)  # a timer of an hour: suspended after the inactivity timeout
    assert sent.status_code == 202
    holder = srv.call("/Cart/held/hold/send").json()["invocationId"]  # holds the key's lock...
    for item in ("a", "b"):  # ...so these two wait in the key's inbox
        assert srv.call("/Cart/held/add/send", item).status_code == 202

    def suspended() -> Samples | None:
        samples = _scrape(srv)
        ok = _value(samples, "unbroken_invocations", service="Shop", handler="nap", status="suspended")
        return samples if ok == 1 else None

    samples = wait_until(suspended, timeout=20, what="the nap to suspend")
    shop = {"service": "Shop"}
    assert _value(samples, "unbroken_invocations", handler="checkout", status="completed", **shop) == 3
    assert _value(samples, "unbroken_invocations", handler="reserve", status="completed", **shop) == 3
    assert _value(samples, "unbroken_attempts_total", handler="flaky", outcome="failed", **shop) == 1
    assert _value(samples, "unbroken_attempts_total", handler="flaky", outcome="completed", **shop) == 1
    assert _value(samples, "unbroken_retries_total", handler="flaky", **shop) == 1
    assert _value(samples, "unbroken_retries_total", handler="checkout", **shop) == 0
    # checkout suspends while it waits on its call to reserve only if the call takes longer than the
    # inactivity timeout: it does not here, so every attempt completed
    assert _value(samples, "unbroken_attempts_total", handler="checkout", outcome="completed", **shop) == 3
    assert _value(samples, "unbroken_suspensions_total", handler="nap", **shop) == 1
    assert _value(samples, "unbroken_attempts_total", handler="refuse", outcome="completed", **shop) == 1
    assert _value(samples, "unbroken_timers_pending") >= 1
    assert _value(samples, "unbroken_inbox_depth") == 2
    assert _value(samples, "unbroken_invocations", service="Cart", handler="add", status="pending") == 2
    assert ("unbroken_attempts_running", ()) in samples and ("unbroken_records_queued", ()) in samples
    # SQLite: the node leads its one partition for good, no leases; PostgreSQL: the 64 partitions it leases
    assert _value(samples, "unbroken_partitions_led") == (64 if _on_postgres(srv) else 1)
    assert (("unbroken_lease_renewals_total", ()) in samples) is _on_postgres(srv)
    # the holder killed, the queued ones run: the inbox empties
    assert httpx.patch(f"{srv.admin}/invocations/{holder}/kill", headers=AUTH, timeout=10).status_code == 200
    wait_until(
        lambda: _value(_scrape(srv), "unbroken_inbox_depth") == 0, timeout=20, what="the inbox to empty"
    )
    # histograms: one observation per attempt (end-to-end: per attempt that returned)
    assert _value(samples, "unbroken_attempt_duration_seconds_count", handler="checkout", **shop) == 3
    assert _value(samples, "unbroken_invocation_duration_seconds_count", handler="checkout", **shop) == 3
    inf = _value(
        samples, "unbroken_invocation_duration_seconds_bucket", handler="checkout", le="+Inf", **shop
    )
    assert inf == 3
    assert 0 < _value(samples, "unbroken_invocation_duration_seconds_sum", handler="checkout", **shop) < 30
    assert _value(samples, "unbroken_batch_records_count") >= 10
    assert _value(samples, "unbroken_batch_records_sum") >= _value(samples, "unbroken_batch_records_count")
    batches = _value(samples, "unbroken_batch_records_count")
    assert (
        batches - 1 <= _value(samples, "unbroken_commit_duration_seconds_count") <= batches
    )  # one in flight
    assert _value(samples, "unbroken_commit_failures_total") == 0
