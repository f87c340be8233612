"""Screenshots of the web UI's main pages for the docs: ``python scripts/ui_screenshots.py [OUT_DIR]``.

Starts ``unbroken serve tests/apps/ui_app.py`` on free ports and a fresh data dir, runs a small workload
(a checkout with a step and a call, a retried step, a refused order, a cart, a workflow waiting on its
promise, an invocation waiting on an awakeable) and saves docs/ui/{invocations,invocation,services,state,
workflows}.png from headless Debian chromium (Playwright, no browser download).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.test_web_ui import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.harness import Server, wait_until  # noqa: E402

VIEWPORT = {"width": 1280, "height": 820}


def workload(srv: Server) -> str:
    """Returns the id of the workflow run, whose page is the invocation screenshot."""
    for order in ("books", "lamp"):
        assert srv.call("/Shop/checkout", order).status_code == 200
    assert srv.call("/Shop/flaky", "chair").status_code == 200
    assert srv.call("/Shop/refuse", "piano").status_code == 409
    for item in ("apple", "pear", "fig"):
        assert srv.call("/Cart/alice/add", item).status_code == 200
    assert srv.call("/Cart/bob/add", "milk").status_code == 200
    assert srv.call("/Shop/wait_forever/send", "a courier").status_code == 202
    run = srv.call("/Delivery/order-42/run/send", "12 Main St")
    assert srv.call("/Delivery/order-7/run/send", "3 Elm St").status_code == 202
    invocation_id = str(run.json()["invocationId"])

    def waiting() -> bool:
        resp = srv.admin_request("GET", f"/invocations/{invocation_id}/explain")
        return resp.status_code == 200 and "promise" in resp.json()["summary"]

    wait_until(waiting, timeout=20, what="the workflow to wait on its promise")
    assert srv.call("/Delivery/order-7/sign", "Ada").status_code == 200
    return invocation_id


def main() -> None:
    from playwright.sync_api import sync_playwright

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "ui"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "300ms"}
        srv = Server("tests/apps/ui_app.py", Path(tmp) / "data", env=env).start()
        try:
            run_id = workload(srv)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport=VIEWPORT)
                pages = {
                    "invocations": ("#/invocations", "[data-testid=invocations]"),
                    "invocation": (f"#/invocation/{run_id}", "[data-testid=journal]"),
                    "services": ("#/services", "form[data-service]"),
                    "state": ("#/state/Cart/alice", "[data-testid=state-editor]"),
                    "workflows": ("#/workflows", "[data-promise]"),
                }
                for name, (hash_, ready) in pages.items():
                    page.goto(f"{srv.admin}/ui{hash_}")
                    page.wait_for_selector(ready, timeout=15_000)
                    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                    print(out / f"{name}.png")
                browser.close()
        finally:
            srv.kill()


if __name__ == "__main__":
    main()
