"""Server logs: a line a handler logs names its invocation, target and attempt; a line logged before a
suspension is not printed again when the handler replays; ``--log-format json`` writes JSON lines."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.harness import Server, wait_until

APP = "tests/apps/ui_app.py"
ENV = {"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "200ms"}


def _nap_twice_attempted(srv: Server) -> str:
    """A nap that suspends (its timer outlives the inactivity timeout) and resumes in a second attempt."""
    resp = srv.call("/Shop/nap", 1.0, timeout=30)
    assert resp.status_code == 200 and resp.json() == "rested", resp.text
    return str(resp.headers.get("x-restate-id") or "")


def test_json_lines_carry_the_invocation_and_replayed_lines_are_not_repeated(tmp_path: Path) -> None:
    srv = Server(APP, tmp_path / "data", env={**ENV, "UNBROKEN_LOG_FORMAT": "json"}).start()
    try:
        _nap_twice_attempted(srv)
        assert srv.call("/Shop/checkout", "o-log").status_code == 200

        def lines() -> list[dict[str, Any]] | None:
            parsed = [
                json.loads(line) for line in srv.log_path.read_text().splitlines() if line.startswith("{")
            ]
            return parsed if any(p["message"] == "checking out o-log" for p in parsed) else None

        parsed = wait_until(lines, timeout=10, what="the checkout's log line")
    finally:
        srv.kill()
    for line in parsed:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line
    napping = [p for p in parsed if p["message"].startswith("napping")]
    woke = [p for p in parsed if p["message"] == "woke up"]
    assert len(napping) == 1, napping  # attempt 2 replays past it without printing it again
    assert len(woke) == 1
    assert napping[0]["target"] == "Shop/nap" and napping[0]["attempt"] == 1
    assert woke[0]["attempt"] == 2 and woke[0]["invocation_id"] == napping[0]["invocation_id"]
    assert napping[0]["invocation_id"].startswith("inv_")
    checkout = next(p for p in parsed if p["message"] == "checking out o-log")
    assert checkout["logger"] == "ui_app" and checkout["target"] == "Shop/checkout"
    pricing = next(p for p in parsed if p["message"] == "pricing o-log")  # in a ctx.run on a worker thread
    assert pricing["invocation_id"] == checkout["invocation_id"] and pricing["attempt"] == 1
    # engine lines have no invocation fields and are JSON too
    assert any(p["logger"] == "unbroken" and "serving" in p["message"] for p in parsed)


def test_text_lines_name_the_invocation(tmp_path: Path) -> None:
    srv = Server(APP, tmp_path / "data", env=ENV).start()
    try:
        _nap_twice_attempted(srv)

        def logged() -> str | None:
            text = srv.log_path.read_text()
            return text if "woke up" in text else None

        text = wait_until(logged, timeout=10, what="the line after the nap")
    finally:
        srv.kill()
    assert re.search(r"INFO ui_app\.plain: \[inv_\w+ Shop/nap attempt 1\] napping for 1\.0s", text), text
    assert re.search(r"INFO ui_app\.plain: \[inv_\w+ Shop/nap attempt 2\] woke up", text), text
    assert text.count("napping for") == 1
