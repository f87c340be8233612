"""The runnable examples in examples/, driven through a real ``unbroken serve examples/demo.py``."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Server, wait_until

DEMO = "examples/demo.py"
TTL_MS = 1500  # SESSION_TTL_MS of the shared server: short, but well above a call's round trip
ENV = {"SESSION_TTL_MS": str(TTL_MS)}
ALL_SERVICES = ["Counter", "Greeter", "Ledger", "Notifications", "Orders", "Session", "Trip", "UserSignup"]
WAIT_S = 15.0


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(DEMO, tmp_path_factory.mktemp("examples") / "data", env=ENV).start()
    yield server
    alive = server.proc is not None and server.proc.poll() is None
    server.kill()
    assert alive, server.log()
    assert "Traceback" not in _full_log(server), server.log()


def _key() -> str:
    return uuid.uuid4().hex[:12]


def _ok(resp: Any) -> Any:
    assert resp.status_code == 200, resp.text
    return resp.json()


def _error(resp: Any, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == status and body["source"] == "invocation", body
    return str(body["message"])


def _full_log(srv: Server) -> str:
    return srv.log_path.read_text(errors="replace")


# --- demo.py / every example file -------------------------------------------------------------------------
def test_demo_serves_every_example(srv: Server) -> None:
    assert _ok(srv.get("/restate/health")) == {"services": ALL_SERVICES}
    admin = srv.admin_request("GET", "/services")
    assert admin.status_code == 200, admin.text
    assert sorted(s["name"] for s in admin.json()["services"]) == ALL_SERVICES
    assert _ok(srv.call("/Greeter/greet", "Alice")) == "Hello Alice!"


@pytest.mark.parametrize(
    ("example", "services"),
    [
        ("examples/greeter.py", ["Counter", "Greeter"]),
        ("examples/user_signup.py", ["UserSignup"]),
        ("examples/travel_saga.py", ["Ledger", "Trip"]),
        ("examples/notifications.py", ["Notifications", "Orders"]),
        ("examples/session_eviction.py", ["Session"]),
    ],
)
def test_each_example_serves_alone(server_factory: Any, example: str, services: list[str]) -> None:
    alone: Server = server_factory(example).start()
    assert _ok(alone.get("/restate/health")) == {"services": services}
    assert alone.stop() == 0, alone.log()


# --- user_signup.py -----------------------------------------------------------------------------------------
def _secret_from_email(srv: Server, user_id: str) -> str:
    """The "email" is a log line of the server: read the secret out of it, like a user would."""
    pattern = re.compile(rf'confirm with POST /UserSignup/{user_id}/click, body "([0-9a-f-]+)"')

    def sent() -> str | None:
        m = pattern.search(_full_log(srv))
        return m.group(1) if m else None

    return str(wait_until(sent, WAIT_S, what=f"verification email for {user_id}"))


def test_signup_happy_path(srv: Server) -> None:
    user_id = _key()
    user = {"name": "Alice", "email": "alice@example.com"}
    sent = srv.call(f"/UserSignup/{user_id}/run/send", user)
    assert sent.status_code == 202, sent.text
    assert sent.json()["status"] == "Accepted"

    secret = _secret_from_email(srv, user_id)
    assert str(uuid.UUID(secret)) == secret
    # The workflow is parked on the promise: no output yet, and the state says why.
    assert srv.get(f"/restate/workflow/UserSignup/{user_id}/output").status_code == 470
    assert _ok(srv.call(f"/UserSignup/{user_id}/status")) == {
        "user": user,
        "status": "waiting for email verification",
    }

    assert (
        _ok(srv.call(f"/UserSignup/{user_id}/click", secret))
        == "thanks, your email address is being verified"
    )
    result = _ok(srv.get(f"/restate/workflow/UserSignup/{user_id}/attach"))
    assert result == {"user_id": user_id, "verified": True, "message": "welcome, Alice!"}
    assert _ok(srv.call(f"/UserSignup/{user_id}/status"))["status"] == "verified"

    # The link works once; the workflow runs once per key.
    assert _error(srv.call(f"/UserSignup/{user_id}/click", secret), 409) == "promise was already completed"
    assert (
        _error(srv.call(f"/UserSignup/{user_id}/run", user), 409) == "the workflow method was already invoked"
    )
    again = srv.call(f"/UserSignup/{user_id}/run/send", user)
    assert again.status_code == 202 and again.json() == {
        "invocationId": sent.json()["invocationId"],
        "status": "PreviouslyAccepted",
    }
    # One email only, even though the workflow was suspended and resumed.
    assert _full_log(srv).count(f"/UserSignup/{user_id}/click") == 1


def test_signup_wrong_secret(srv: Server) -> None:
    user_id = _key()
    sent = srv.call(f"/UserSignup/{user_id}/run/send", {"name": "Mallory", "email": "m@example.com"})
    assert sent.status_code == 202, sent.text
    secret = _secret_from_email(srv, user_id)

    assert srv.call(f"/UserSignup/{user_id}/click", "not-" + secret).status_code == 200
    result = _ok(srv.get(f"/restate/workflow/UserSignup/{user_id}/attach"))
    assert result == {"user_id": user_id, "verified": False, "message": "the verification link is not valid"}
    assert _ok(srv.call(f"/UserSignup/{user_id}/status"))["status"] == "verification failed"
    # The right secret comes too late: the promise already holds the wrong one.
    assert _error(srv.call(f"/UserSignup/{user_id}/click", secret), 409) == "promise was already completed"


def test_signup_rejects_a_malformed_user(srv: Server) -> None:
    resp = srv.call(f"/UserSignup/{_key()}/run", {"name": "no email"})
    assert resp.status_code == 400, resp.text


# --- travel_saga.py -----------------------------------------------------------------------------------------
def _ledger(srv: Server, trip_id: str) -> list[str]:
    return list(_ok(srv.call(f"/Ledger/{trip_id}/entries")))


def test_saga_books_everything(srv: Server) -> None:
    trip_id = _key()
    booking = _ok(srv.call("/Trip/book", {"trip_id": trip_id, "traveller": "Alice"}))
    assert booking == {
        "trip_id": trip_id,
        "flight": f"FL-{trip_id}",
        "car": f"CAR-{trip_id}",
        "hotel": f"HOTEL-{trip_id}",
    }
    assert _ledger(srv, trip_id) == [
        f"flight booked: FL-{trip_id}",
        f"car booked: CAR-{trip_id}",
        f"hotel booked: HOTEL-{trip_id}",
    ]


def test_saga_compensates_in_reverse_order(srv: Server) -> None:
    trip_id = _key()
    resp = srv.call("/Trip/book", {"trip_id": trip_id, "traveller": "Bob", "fail_hotel": True})
    failure = f"no hotel room for trip {trip_id}: fully booked"
    assert _error(resp, 409) == failure  # the hotel's TerminalError reaches the caller, code included
    assert _ledger(srv, trip_id) == [
        f"flight booked: FL-{trip_id}",
        f"car booked: CAR-{trip_id}",
        f"booking failed: {failure}",
        "hotel cancelled",
        "car cancelled",
        "flight cancelled",
    ]


def test_saga_failing_compensation_does_not_stop_the_others(srv: Server) -> None:
    trip_id = _key()
    req = {"trip_id": trip_id, "traveller": "Carol", "fail_hotel": True, "fail_car_cancellation": True}
    failure = f"no hotel room for trip {trip_id}: fully booked"
    assert _error(srv.call("/Trip/book", req), 409) == failure
    entries = _ledger(srv, trip_id)
    assert entries[:4] == [
        f"flight booked: FL-{trip_id}",
        f"car booked: CAR-{trip_id}",
        f"booking failed: {failure}",
        "hotel cancelled",
    ]
    assert (
        entries[4].startswith("car cancellation FAILED: ") and "car rental API unreachable" in entries[4]
    ), entries
    assert entries[5:] == ["flight cancelled"]
    # The stuck compensation was retried (3 attempts), then logged for a human.
    assert f"trip {trip_id}: could not cancel the car" in _full_log(srv)
    assert "3 attempts" in entries[4], entries


# --- notifications.py ---------------------------------------------------------------------------------------
def _notifications(srv: Server, user: str) -> list[dict[str, Any]]:
    return list(_ok(srv.call(f"/Notifications/{user}/list")))


def test_orders_notify_the_user(srv: Server) -> None:
    user = _key()
    assert _ok(srv.call(f"/Notifications/{user}/unread_count")) == 0
    placed = _ok(srv.call("/Orders/place", {"order_id": "o1", "user_id": user, "items": ["book", "lamp"]}))
    assert placed == {"order_id": "o1", "status": "placed"}
    assert (
        _ok(srv.call("/Orders/place", {"order_id": "o2", "user_id": user, "items": ["tea"]}))["status"]
        == "placed"
    )

    # The sends are one-way: the order returns before they are delivered.
    wait_until(
        lambda: _ok(srv.call(f"/Notifications/{user}/unread_count")) == 4, WAIT_S, what="4 notifications"
    )
    assert _notifications(srv, user) == [
        {"id": 1, "text": "order o1 confirmed: book, lamp", "read": False},
        {"id": 2, "text": "order o1 is being packed", "read": False},
        {"id": 3, "text": "order o2 confirmed: tea", "read": False},
        {"id": 4, "text": "order o2 is being packed", "read": False},
    ]

    assert _ok(srv.call(f"/Notifications/{user}/mark_read")) == 4
    assert _ok(srv.call(f"/Notifications/{user}/unread_count")) == 0
    assert all(n["read"] for n in _notifications(srv, user))
    assert _ok(srv.call(f"/Notifications/{user}/mark_read")) == 0

    # A rejected order notifies nobody; the next good one does.
    rejected = srv.call("/Orders/place", {"order_id": "o3", "user_id": user, "items": []})
    assert _error(rejected, 400) == "an order needs at least one item"
    assert (
        _ok(srv.call("/Orders/place", {"order_id": "o4", "user_id": user, "items": ["pen"]}))["status"]
        == "placed"
    )
    wait_until(
        lambda: _ok(srv.call(f"/Notifications/{user}/unread_count")) == 2, WAIT_S, what="2 new notifications"
    )
    assert [n["text"] for n in _notifications(srv, user)[4:]] == [
        "order o4 confirmed: pen",
        "order o4 is being packed",
    ]
    assert _ok(srv.call(f"/Notifications/{_key()}/unread_count")) == 0  # other users are untouched


# --- session_eviction.py ------------------------------------------------------------------------------------
def _session(srv: Server, sid: str) -> dict[str, Any]:
    return dict(_ok(srv.call(f"/Session/{sid}/get")))


def test_session_expires_after_inactivity(srv: Server) -> None:
    sid = _key()
    last_activity = time.monotonic()
    assert _ok(srv.call(f"/Session/{sid}/put", {"cart": ["book"]})) == {"cart": ["book"]}
    assert _ok(srv.call(f"/Session/{sid}/put", {"user": "alice"})) == {"cart": ["book"], "user": "alice"}
    info = _ok(srv.call(f"/Session/{sid}/info"))
    assert info["active"] is True and info["generation"] == 2 and info["ttl_ms"] == TTL_MS
    assert isinstance(info["last_activity"], float)

    wait_until(lambda: _session(srv, sid) == {}, WAIT_S, what="session eviction")
    assert time.monotonic() - last_activity >= TTL_MS / 1000 - 0.05  # not evicted before the TTL
    assert _ok(srv.call(f"/Session/{sid}/info")) == {
        "active": False,
        "generation": None,
        "last_activity": None,
        "ttl_ms": TTL_MS,
    }


def test_session_activity_postpones_expiry(srv: Server) -> None:
    sid = _key()
    assert _ok(srv.call(f"/Session/{sid}/put", {"n": 1})) == {"n": 1}
    # Keep touching for longer than the TTL: the stale expire messages fire meanwhile and must not evict.
    # (Waiting here is the behaviour under test: time passing without/with activity.)
    deadline = time.monotonic() + 1.6 * TTL_MS / 1000
    touches = 0
    while time.monotonic() < deadline:
        time.sleep(TTL_MS / 1000 / 5)
        assert _ok(srv.call(f"/Session/{sid}/touch")) == {"n": 1}, (
            f"evicted despite activity after {touches} touches"
        )
        touches += 1
    assert _ok(srv.call(f"/Session/{sid}/info"))["generation"] == touches + 1
    wait_until(lambda: _session(srv, sid) == {}, WAIT_S, what="session eviction after the last touch")


def test_session_expire_is_not_public(srv: Server) -> None:
    resp = srv.call(f"/Session/{_key()}/expire", 1)
    assert resp.status_code == 400, resp.text
    assert resp.json()["source"] == "ingress"


@pytest.mark.crash
def test_session_expiry_survives_a_crash(server_factory: Any) -> None:
    ttl_ms = 6000  # longer than a restart takes (about a second; 3 s under a loaded 2-core machine)
    alone: Server = server_factory(
        "examples/session_eviction.py", env={"SESSION_TTL_MS": str(ttl_ms)}
    ).start()
    sid = _key()
    started = time.monotonic()
    assert _ok(alone.call(f"/Session/{sid}/put", {"k": "v"})) == {"k": "v"}
    alone.restart()  # SIGKILL before the TTL: the delayed expire is durable
    assert _session(alone, sid) == {"k": "v"}
    assert time.monotonic() - started < ttl_ms / 1000, (
        "restart took longer than the TTL: the test proves nothing"
    )
    wait_until(lambda: _session(alone, sid) == {}, WAIT_S, what="session eviction after a restart")


@pytest.mark.crash
def test_signup_waits_through_a_crash(server_factory: Any) -> None:
    alone: Server = server_factory("examples/user_signup.py").start()
    user_id = _key()
    sent = alone.call(f"/UserSignup/{user_id}/run/send", {"name": "Dan", "email": "dan@example.com"})
    assert sent.status_code == 202
    secret = _secret_from_email(alone, user_id)
    # The email step ran; wait until its result is durable (the run went on to await the promise), since
    # a kill before that would legitimately send the email again (ctx.run is at-least-once until journaled).
    inv = sent.json()["invocationId"]
    query = f"SELECT count(*) AS n FROM sys_journal WHERE id = '{inv}' AND entry_type = 'Command: GetPromise'"
    wait_until(
        lambda: alone.admin_request("POST", "/query", json={"query": query}).json()["rows"][0]["n"] == 1,
        what="the workflow awaiting its promise",
    )
    alone.restart()  # SIGKILL while the workflow waits for the click
    assert _ok(alone.call(f"/UserSignup/{user_id}/status"))["status"] == "waiting for email verification"
    # The emailed secret is still valid.
    assert alone.call(f"/UserSignup/{user_id}/click", secret).status_code == 200
    assert _ok(alone.get(f"/restate/workflow/UserSignup/{user_id}/attach"))["verified"] is True
    assert _full_log(alone).count(f"/UserSignup/{user_id}/click") == 1  # the email was not sent again


def test_shutdown_does_not_wait_for_attached_clients(server_factory: Any) -> None:
    """SIGTERM stops the server promptly even while a client waits on a days-long workflow."""
    alone: Server = server_factory("examples/user_signup.py").start()
    user_id = _key()
    assert (
        alone.call(f"/UserSignup/{user_id}/run/send", {"name": "Eve", "email": "eve@example.com"}).status_code
        == 202
    )
    secret = _secret_from_email(alone, user_id)
    # A raw connection, so the request is on the wire (not just scheduled in a client thread) before SIGTERM.
    with socket.create_connection(("127.0.0.1", alone.ingress_port), timeout=30) as attached:
        path = f"/restate/workflow/UserSignup/{user_id}/attach"
        attached.sendall(f"GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode())
        # One more round trip through the same event loop: the attach has been accepted and read by now.
        assert _ok(alone.call(f"/UserSignup/{user_id}/status"))["status"] == "waiting for email verification"
        started = time.monotonic()
        assert alone.stop() == 0, alone.log()
        assert time.monotonic() - started < 10, "SIGTERM waited for the attached client"
        reply = b""
        while chunk := attached.recv(65536):  # bounded by the socket timeout; the server is gone
            reply += chunk
        assert not reply.startswith(b"HTTP/1.1 200"), reply

    alone.start()  # the workflow is durable: it still waits, and completes after the restart
    assert alone.call(f"/UserSignup/{user_id}/click", secret).status_code == 200
    assert _ok(alone.get(f"/restate/workflow/UserSignup/{user_id}/attach"))["verified"] is True
