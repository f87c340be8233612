from __future__ import annotations

from tests.harness import Server


def test_greeter_roundtrip(server_factory) -> None:  # type: ignore[no-untyped-def]
    srv: Server = server_factory("examples/greeter.py").start()
    resp = srv.call("/Greeter/greet", "bob")
    assert resp.status_code == 200, resp.text
    assert resp.json() == "Hello bob!"
    assert resp.headers["x-restate-id"].startswith("inv_1")
    assert srv.call("/Counter/k/add", 3).json() == 3
    assert srv.call("/Counter/k/add", 4).json() == 7
    assert srv.call("/Counter/k/get").json() == 7
