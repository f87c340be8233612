"""The web UI at ``/ui`` in headless Chromium (Debian's ``chromium``, driven by Playwright; no browser is
downloaded): a real server with an admin token, the operator enters the token, lists invocations,
filters them, watches a new one appear, opens one, reads its explain and journal, cancels it, edits and
clears an object's state, changes a service's settings and sees a workflow's promise. Each test runs
against a server on SQLite and against one on PostgreSQL (``serve --store postgresql://...``).

Without /usr/bin/chromium the browser tests skip, saying so; in CI (CI=true) they fail instead
(scripts/check installs chromium there).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import pg
from tests.harness import Server, wait_until

APP = "tests/apps/ui_app.py"
TOKEN = "ui-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
QUERY_HEADERS = {**AUTH, "accept": "application/json"}  # /query answers in Arrow unless JSON is asked for
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000  # every wait in the page is bounded


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"UNBROKEN_ADMIN__TOKEN": TOKEN, "UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "300ms"}
    data = tmp_path_factory.mktemp(f"ui-{request.param}") / "data"
    schema = None
    args: list[str] = []
    if request.param == "postgres":
        pg.require()
        schema = pg.schema_for(f"ui-{uuid.uuid4()}")
        args = ["--store", pg.url_for(schema)]
    server = Server(APP, data, env=env, args=args).start()
    yield server
    server.kill()
    if schema is not None:
        pg.drop(schema)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: scripts/check installs Debian's chromium in CI")
        pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium to run the web UI tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, srv: Server) -> Iterator[Any]:
    """A tab that has the admin token (entered in the token dialog, as an operator does)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.set_default_timeout(WAIT_MS)
    tab.goto(f"{srv.admin}/ui")
    tab.wait_for_selector("#token-dialog[open]")  # 401 from the API: the page asks for the token
    tab.fill("#token-input", TOKEN)
    tab.click("#token-save")
    tab.wait_for_selector("[data-testid=invocations], [data-testid=no-invocations]")
    yield tab
    context.close()
    assert errors == [], errors


def _key() -> str:
    return "k" + uuid.uuid4().hex[:8]


def _row(page: Any, invocation_id: str) -> Any:
    return page.locator(f'tr[data-id="{invocation_id}"]')


def _confirm(page: Any) -> None:
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-ok")


# ------------------------------------------------------------------------------------- no browser
def test_the_ui_files_need_no_token_the_api_does(srv: Server) -> None:
    page = httpx.get(f"{srv.admin}/ui", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]  # no CDN, no inline script
    assert '<script src="/ui/app.js"' in page.text
    for asset, kind in (
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("logo.svg", "image/svg+xml"),
    ):
        resp = httpx.get(f"{srv.admin}/ui/{asset}", timeout=10)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith(kind), asset
    assert httpx.get(f"{srv.admin}/ui/nope.js", timeout=10).status_code == 404
    assert httpx.get(f"{srv.admin}/ui/..%2Fapp.py", timeout=10).status_code == 404
    assert httpx.post(f"{srv.admin}/query", json={"query": "SELECT 1"}, timeout=10).status_code == 401
    assert httpx.get(f"{srv.admin}/metrics", timeout=10).status_code == 401


# ---------------------------------------------------------------------------------------- browser
def test_list_filter_and_live_refresh(page: Any, srv: Server) -> None:
    key = _key()
    checkout = srv.call("/Shop/checkout", "list-1")
    added = srv.call(f"/Cart/{key}/add", "apple")
    assert checkout.status_code == 200 and added.status_code == 200
    checkout_id, cart_id = checkout.headers["x-restate-id"], added.headers["x-restate-id"]
    page.goto(f"{srv.admin}/ui#/invocations")
    _row(page, cart_id).wait_for()  # already there, or the next live refresh brings it
    _row(page, checkout_id).wait_for()
    assert "Cart/" + key + "/add" in _row(page, cart_id).inner_text()

    page.select_option("[data-testid=filter-service]", "Cart")  # filters apply as they change
    page.wait_for_function("!location.hash.includes('Shop') && location.hash.includes('service=Cart')")
    _row(page, cart_id).wait_for()
    _row(page, checkout_id).wait_for(state="detached")
    page.fill("[data-testid=filter-key]", key)
    page.press("[data-testid=filter-key]", "Enter")
    page.wait_for_function(f"location.hash.includes('key={key}')")
    page.wait_for_function("document.querySelectorAll('[data-testid=invocations] tbody tr').length === 1")
    page.select_option("[data-testid=filter-status]", "running")
    page.wait_for_selector("[data-testid=no-invocations]")
    page.select_option("[data-testid=filter-status]", "completed")
    page.select_option("[data-testid=filter-since]", "5m")  # created in the last 5 minutes: it was
    page.wait_for_function("location.hash.includes('since=5m') && location.hash.includes('status=completed')")
    _row(page, cart_id).wait_for()

    # live refresh: a new invocation shows up on the open list without a reload
    page.goto(f"{srv.admin}/ui#/invocations?service=Cart&key={key}")
    _row(page, cart_id).wait_for()
    again = srv.call(f"/Cart/{key}/add", "pear")
    assert again.status_code == 200
    _row(page, again.headers["x-restate-id"]).wait_for()


def test_open_an_invocation_see_its_journal_and_cancel_it(page: Any, srv: Server) -> None:
    sent = srv.call("/Shop/wait_forever/send", "the parcel")
    assert sent.status_code == 202
    invocation_id = sent.json()["invocationId"]
    page.goto(f"{srv.admin}/ui#/invocations?service=Shop&handler=wait_forever")
    _row(page, invocation_id).locator("a").click()
    page.wait_for_selector("[data-testid=invocation]")
    assert page.locator("[data-testid=target]").inner_text() == "Shop/wait_forever"
    summary = page.locator("[data-testid=explain-summary]")
    summary.wait_for()
    assert "awakeable" in summary.inner_text()
    journal = page.locator("[data-testid=journal] > li")
    assert journal.nth(0).get_attribute("data-entry-type") == "Command: Input"
    assert '"the parcel"' in journal.nth(0).inner_text()

    page.click("button[data-action=cancel]")
    _confirm(page)
    # the handler sees the cancel at its await and fails with 409: the invocation completes
    page.wait_for_selector('[data-testid=invocation] h1 + [data-testid=status]:text("completed")')
    output = page.locator('[data-testid=journal] li[data-entry-type="Command: Output"]')
    output.wait_for()
    assert "409" in output.inner_text() and "cancel" in output.inner_text()
    status = httpx.post(
        f"{srv.admin}/query",
        json={"query": f"SELECT status, completion_failure FROM sys_invocation WHERE id = '{invocation_id}'"},
        headers=QUERY_HEADERS,
        timeout=10,
    ).json()["rows"][0]
    assert status["status"] == "completed" and "409" in status["completion_failure"]
    assert page.locator("button[data-action=purge]").is_enabled()
    assert not page.locator("button[data-action=cancel]").is_enabled()


def test_a_retried_step_shows_its_failures(page: Any, srv: Server) -> None:
    resp = srv.call(
        "/Shop/flaky", "retried-" + _key()
    )  # its first attempt fails in the step, the retry passes
    assert resp.status_code == 200
    page.goto(f"{srv.admin}/ui#/invocation/{resp.headers['x-restate-id']}")
    step = page.locator('[data-testid=journal] li[data-entry-type="Command: Run"]')
    step.wait_for()
    assert "warehouse" in step.inner_text()
    assert step.locator("[data-testid=retries]").inner_text() == "retried: 1 failed attempt"
    assert "the warehouse is down" in page.locator("[data-testid=last-failure]").inner_text()


def test_backing_out_of_the_confirmation_does_nothing(page: Any, srv: Server) -> None:
    sent = srv.call("/Shop/wait_forever/send", "kept")
    invocation_id = sent.json()["invocationId"]
    page.goto(f"{srv.admin}/ui#/invocation/{invocation_id}")
    page.click("button[data-action=kill]")
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-dialog button[value=cancel]")
    page.wait_for_selector("#confirm-dialog[open]", state="detached")
    rows = httpx.post(
        f"{srv.admin}/query",
        json={"query": f"SELECT status FROM sys_invocation WHERE id = '{invocation_id}'"},
        headers=QUERY_HEADERS,
        timeout=10,
    ).json()["rows"]
    assert rows[0]["status"] != "completed"
    assert (
        httpx.patch(f"{srv.admin}/invocations/{invocation_id}/kill", headers=AUTH, timeout=10).status_code
        == 200
    )


def test_edit_and_clear_an_objects_state(page: Any, srv: Server) -> None:
    key = _key()
    assert srv.call(f"/Cart/{key}/add", "pear").json() == ["pear"]
    page.goto(f"{srv.admin}/ui#/state/Cart/{key}")
    editor = page.locator("[data-testid=state-editor]")
    editor.wait_for()
    value = editor.locator('textarea[data-field="value"]')
    assert value.input_value() == '["pear"]'
    value.fill('["plum","fig"]')
    page.click("[data-testid=save-state]")
    _confirm(page)
    wait_until(lambda: srv.call(f"/Cart/{key}/items").json() == ["plum", "fig"], what="the edited state")
    assert srv.call(f"/Cart/{key}/add", "kiwi").json() == ["plum", "fig", "kiwi"]  # the handler sees it

    page.goto(f"{srv.admin}/ui#/state/Cart/{key}")
    page.locator('[data-testid=state-editor] textarea[data-field="value"]').wait_for()
    page.click("[data-testid=clear-state]")
    _confirm(page)
    wait_until(lambda: srv.call(f"/Cart/{key}/items").content in (b"", b"null"), what="the state cleared")
    page.wait_for_selector("[data-testid=state-editor] tbody:not(:has(tr))", state="attached")


def test_change_a_services_settings(page: Any, srv: Server) -> None:
    page.goto(f"{srv.admin}/ui#/services")
    form = page.locator('form[data-service="Cart"]')
    form.locator('input[data-setting="journal_retention"]').fill("2h")
    form.locator('input[data-setting="retry.max_attempts"]').fill("9")
    form.locator("[data-testid=save-service]").click()
    page.wait_for_selector("#notice.ok")
    cart = httpx.get(f"{srv.admin}/services/Cart", headers=AUTH, timeout=10).json()
    assert cart["journal_retention"] == "2h" and cart["retry_policy"]["max_attempts"] == 9
    form = page.locator('form[data-service="Cart"]')
    assert form.locator('input[data-setting="journal_retention"]').input_value() == "2h"
    # a bad value is the server's 400, shown to the operator, nothing changed
    form.locator('input[data-setting="abort_timeout"]').fill("soon")
    form.locator("[data-testid=save-service]").click()
    page.wait_for_selector("#notice:not(.ok):not([hidden])")
    assert "abort_timeout" in page.locator("#notice").inner_text()
    assert httpx.get(f"{srv.admin}/services/Cart", headers=AUTH, timeout=10).json()["abort_timeout"] == "10m"


def test_a_workflow_and_its_promise(page: Any, srv: Server) -> None:
    key = _key()
    assert srv.call(f"/Delivery/{key}/run/send", "Elm St").status_code == 202
    page.goto(f"{srv.admin}/ui#/workflows")
    promise = page.locator(f'tr[data-workflow-key="{key}"] [data-promise="signed"]')
    promise.wait_for()
    assert "not completed" in promise.inner_text()
    assert srv.call(f"/Delivery/{key}/sign", "Bo").status_code == 200
    from playwright.sync_api import expect

    page.reload()
    expect(page.locator(f'tr[data-workflow-key="{key}"] [data-promise="signed"]')).to_contain_text(
        '= "Bo"', timeout=WAIT_MS
    )
    expect(page.locator(f'tr[data-workflow-key="{key}"] [data-testid=status]')).to_have_text(
        "completed", timeout=WAIT_MS
    )
