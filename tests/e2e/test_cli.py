"""The operator CLI, run as a real command (``python -m unbroken.cli.main ...``) against a real server:
output, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, Server, free_port, wait_until
from unbroken.core.ids import InvocationId

APP = "tests/apps/ops_app.py"
ENV = {
    "UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "1s",
    "UNBROKEN_DEFAULT_RETRY_POLICY__MAX_ATTEMPTS": "3",
    "UNBROKEN_DEFAULT_RETRY_POLICY__INITIAL_INTERVAL": "50ms",
}
_URL_VARS = ("UNBROKEN_ADMIN_URL", "RESTATE_ADMIN_URL", "UNBROKEN_INGRESS_URL", "RESTATE_INGRESS_URL")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("cli") / "data", env=ENV).start()
    yield server
    server.kill()


def cli(
    srv: Server | None,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    ok: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``unbroken ARGS``; the server's URLs come from the environment (as a user would set them)."""
    base = {k: v for k, v in os.environ.items() if k not in _URL_VARS}
    if srv is not None:
        base.update(UNBROKEN_ADMIN_URL=srv.admin, UNBROKEN_INGRESS_URL=srv.ingress)
    proc = subprocess.run(
        [sys.executable, "-m", "unbroken.cli.main", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=ROOT,
        timeout=60,
    )
    if ok:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        assert proc.stderr == "", proc.stderr
    return proc


def failed(srv: Server | None, *args: str, code: int = 1, **kw: Any) -> str:
    """Run a command that must fail: exit ``code``, nothing on stdout, one ``error: ...`` line on stderr."""
    proc = cli(srv, *args, ok=False, **kw)
    assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


def status(srv: Server, inv: str) -> str | None:
    rows = as_json(cli(srv, "sql", f"SELECT status FROM sys_invocation WHERE id = '{inv}'", "--json"))
    return rows[0]["status"] if rows else None


def published(srv: Server, box: str) -> dict[str, Any]:
    def get() -> Any:
        resp = srv.call(f"/Inbox/{box}/get")
        return resp.json() if resp.content else None

    return wait_until(get, timeout=10, what=f"Inbox/{box}")  # type: ignore[no-any-return]


def unknown_id() -> str:
    return str(InvocationId.new(5, uuid.uuid4().bytes[:10], 1_700_000_000_000))


# ---------------------------------------------------------------------------------------------- invoke
def test_invoke_prints_the_result(srv: Server) -> None:
    assert cli(srv, "invoke", "Greeter/greet", '"Ada"').stdout == '"Hello Ada!"\n'
    key = uuid.uuid4().hex
    assert cli(srv, "invoke", f"Counter/{key}/add", "2", "--idempotency-key", "k1").stdout == "2\n"
    assert (
        cli(srv, "invoke", f"Counter/{key}/add", "2", "--idempotency-key", "k1").stdout == "2\n"
    )  # same invocation
    assert cli(srv, "invoke", f"Counter/{key}/add", "1").stdout == "3\n"
    got = as_json(cli(srv, "invoke", "Greeter/headers", "--header", "x-trace: abc", "-H", "x-user:ada"))
    assert got["x-trace"] == "abc" and got["x-user"] == "ada"
    # Flags instead of the environment; Restate's variable names work too.
    out = cli(None, "invoke", "Greeter/greet", '"Bo"', "--ingress-url", srv.ingress).stdout
    assert out == '"Hello Bo!"\n'
    assert (
        cli(None, "invoke", "Greeter/greet", '"Cy"', env={"RESTATE_INGRESS_URL": srv.ingress}).stdout
        == '"Hello Cy!"\n'
    )


def test_invoke_send_delay_and_cancel(srv: Server) -> None:
    inv = cli(srv, "invoke", "Greeter/greet", '"Di"', "--send").stdout.strip()
    assert InvocationId.parse(inv)
    wait_until(lambda: status(srv, inv) == "completed", timeout=10, what="the send to complete")
    later = cli(srv, "invoke", "Greeter/greet", '"Ed"', "--send", "--delay", "1h").stdout.strip()
    listed = as_json(cli(srv, "invocations", "list", "--status", "scheduled", "--json"))
    assert later in [r["id"] for r in listed]
    assert all(r["status"] == "scheduled" for r in listed)
    assert "is scheduled\n  scheduled (a delayed send): it starts at " in cli(srv, "explain", later).stdout
    assert cli(srv, "invocations", "cancel", later).stdout == f"cancelled {later}\n"
    described = as_json(cli(srv, "invocations", "describe", later, "--json"))
    assert described["invocation"]["completion_failure"] == "[409] cancelled"


def test_invoke_errors_are_one_line_with_an_exit_code(srv: Server) -> None:
    line = failed(srv, "invoke", "Greeter/fail", '"nope"')
    assert line.startswith("error: [418] nope (invocation inv_")
    assert failed(srv, "invoke", "Greeter/greet", "Ada", code=2).startswith(
        "error: the argument is not valid JSON: Expecting value: line 1 column 1 (char 0)"
    )
    assert failed(srv, "invoke", "Greeter", '"x"', code=2) == (
        "error: bad target 'Greeter': expected Service/handler or Object/key/handler"
    )
    assert failed(srv, "invoke", "Greeter/greet", '"x"', "--delay", "1s", code=2) == (
        "error: --delay only works with --send (a call waits for its result)"
    )
    assert failed(srv, "invoke", "Nobody/greet", '"x"').startswith("error: [404] ")
    assert (
        failed(srv, "invoke", "Greeter/greet", "-H", "nocolon", code=2)
        == "error: bad --header 'nocolon': expected NAME:VALUE"
    )


def test_unreachable_servers(srv: Server) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    assert failed(srv, "invocations", "list", "--admin-url", url) == (
        f"error: cannot reach the admin API at {url} (connection refused)"
    )
    assert failed(None, "explain", unknown_id(), env={"UNBROKEN_ADMIN_URL": url}) == (
        f"error: cannot reach the admin API at {url} (connection refused)"
    )
    assert failed(srv, "invoke", "Greeter/greet", '"x"', "--ingress-url", url) == (
        f"error: cannot reach the ingress at {url} (connection refused)"
    )
    assert failed(srv, "sql", "SELECT 1", "--admin-url", "localhost:9070").startswith(
        "error: invalid admin API URL"
    )


# ----------------------------------------------------------------------------------------- invocations
def test_unknown_and_malformed_invocation_ids(srv: Server) -> None:
    missing = unknown_id()
    for command in (
        ["invocations", "describe"],
        ["explain"],
        ["invocations", "kill"],
        ["invocations", "resume"],
    ):
        assert failed(srv, *command, missing) == f"error: invocation '{missing}' not found", command
    assert (
        failed(srv, "explain", "inv_nope", code=2)
        == "error: 'inv_nope' is not an invocation id (expected inv_1…)"
    )


def test_list_and_describe(srv: Server) -> None:
    inv = srv.call("/Greeter/greet", "Fay").headers["x-restate-id"]
    failed_inv = srv.call("/Greeter/fail", "bad").headers["x-restate-id"]
    rows = as_json(
        cli(
            srv,
            "invocations",
            "list",
            "--service",
            "Greeter",
            "--status",
            "completed",
            "--limit",
            "2",
            "--json",
        )
    )
    assert [r["id"] for r in rows] == [failed_inv, inv]  # newest first
    assert rows[0]["completion_failure"] == "[418] bad" and rows[1]["completion_result"] == "success"
    table = cli(srv, "invocations", "list", "--service", "Greeter", "--limit", "2").stdout
    header, _, first, second = table.splitlines()[:4]
    assert header.split() == ["ID", "TARGET", "STATUS", "CREATED", "INFO"]
    assert first.split()[:3] == [failed_inv, "Greeter/fail", "completed"] and first.rstrip().endswith(
        "[418] bad"
    )
    assert second.split()[:3] == [inv, "Greeter/greet", "completed"] and second.rstrip().endswith("ok")
    assert failed(srv, "invocations", "list", "--status", "nope", code=2).startswith(
        "error: unknown status 'nope'"
    )

    out = cli(srv, "invocations", "describe", inv).stdout
    assert out.startswith(f"{inv}  Greeter/greet\n  status ")
    lines = out.splitlines()
    fields = {
        line.split("  ")[1]: line.split("  ", 2)[2].strip() for line in lines[1:] if line.startswith("  ")
    }
    assert (
        fields["status"] == "completed"
        and fields["attempts"] == "1 (0 failed)"
        and fields["result"] == "success"
    )
    assert fields["why"].startswith("completed successfully at ") and fields["created"].endswith("Z")
    timeline = [line.split() for line in lines if line[:1].isdigit()]
    assert [row[:3] for row in timeline] == [["0", "Command:", "Input"], ["1", "Command:", "Output"]]
    assert timeline[0][3] == '"Fay"' and timeline[1][3] == '"Hello' and timeline[1][4] == 'Fay!"'
    described = as_json(cli(srv, "invocations", "describe", inv, "--json"))
    assert described["attempts"] == 1 and described["explain"]["status"] == "completed"
    assert [e["entry_type"] for e in described["journal"]] == ["Command: Input", "Command: Output"]


def test_explain_prints_the_summary_and_the_chain(srv: Server) -> None:
    box = uuid.uuid4().hex
    top = srv.call("/Waiter/relay_twice/send", box).json()["invocationId"]
    got = published(srv, box)
    leaf, aid = got["id"], got["aid"]
    wait_until(
        lambda: status(srv, leaf) == "suspended" and status(srv, top) == "suspended",
        timeout=15,
        what="the chain to suspend",
    )
    answer = as_json(cli(srv, "explain", top, "--json"))
    middle = answer["reasons"][0]["callee_id"]
    lines = cli(srv, "explain", top).stdout.splitlines()
    assert lines == [
        f"{top} (Waiter/relay_twice) is suspended",
        f"  suspended, waiting on a call to Waiter/relay ({middle}) made at journal entry 1",
        f"    └─ {middle} (Waiter/relay) is suspended",
        f"         suspended, waiting on a call to Waiter/wait ({leaf}) made at journal entry 1",
        f"        └─ {leaf} (Waiter/wait) is suspended",
        f"             {answer['chain'][1]['summary']}",
    ]
    assert f"awaiting awakeable {aid} (created at journal entry 1" in lines[-1]
    assert cli(srv, "awakeables", "resolve", aid, '{"v": 1}').stdout == f"resolved {aid}\n"
    assert srv.get(f"/restate/invocation/{top}/attach").json() == {"v": 1}


def test_control_by_filter_asks_first(srv: Server) -> None:
    key, box = uuid.uuid4().hex, uuid.uuid4().hex
    holder = srv.call(f"/Counter/{key}/hold/send", box).json()["invocationId"]
    published(srv, box)
    # Queued behind the holder; each holds the lock too once it runs (so none completes on its own).
    queued = [srv.call(f"/Counter/{key}/hold/send", uuid.uuid4().hex).json()["invocationId"] for _ in (1, 2)]
    proc = cli(srv, "invocations", "kill", "--service", "Counter", "--key", key, stdin="n\n", ok=False)
    assert proc.returncode == 1 and proc.stderr == "error: aborted: nothing was changed\n"
    assert proc.stdout.startswith(f"3 invocation(s) match:\n  {holder}\n")
    assert "Kill 3 invocation(s)? [y/N]" in proc.stdout
    assert status(srv, holder) != "completed" and status(srv, queued[0]) == "pending"

    out = cli(srv, "invocations", "kill", "--service", "Counter", "--key", key, "--yes").stdout
    assert sorted(out.splitlines()) == sorted(f"killed {i}" for i in [holder, *queued])
    rows = as_json(
        cli(
            srv,
            "sql",
            f"SELECT completion_failure AS f FROM sys_invocation WHERE target_service_key = '{key}'",
            "--json",
        )
    )
    assert rows == [{"f": "[409] killed"}] * 3
    out = cli(srv, "invocations", "purge", "--service", "Counter", "--key", key, stdin="y\n").stdout
    assert out.endswith("".join(f"purged {i}\n" for i in [holder, *queued]))
    assert as_json(cli(srv, "invocations", "list", "--key", key, "--json")) == []
    assert cli(srv, "invocations", "purge", "--key", key).stdout == "no invocations to purge\n"
    assert failed(srv, "invocations", "kill", code=2).startswith(
        "error: nothing to kill: give invocation ids or filters"
    )


def test_pause_after_max_attempts_then_resume_to_success(srv: Server, tmp_path: Path) -> None:
    path = tmp_path / "needed"
    inv = cli(srv, "invoke", "Flaky/needs_file", json.dumps(str(path)), "--send").stdout.strip()
    wait_until(lambda: status(srv, inv) == "paused", timeout=15, what="the invocation to pause")
    assert (tmp_path / "needed.attempts").read_text().count("x") == 3  # max attempts from the environment
    assert (
        "paused after 3 attempts with error 'RuntimeError('needed is missing')'"
        in cli(srv, "explain", inv).stdout
    )
    path.touch()
    assert cli(srv, "invocations", "resume", inv).stdout == f"resumed {inv}\n"
    wait_until(lambda: status(srv, inv) == "completed", timeout=15, what="the invocation to complete")
    assert srv.get(f"/restate/invocation/{inv}/output").json() == "ok"
    assert (
        failed(srv, "invocations", "resume", inv) == f"error: The invocation '{inv}' was already completed."
    )


def test_pause_an_invocation(srv: Server) -> None:
    inv = srv.call("/Waiter/nap/send", 3600).json()["invocationId"]
    wait_until(lambda: status(srv, inv) == "suspended", timeout=15, what="the nap to suspend")
    assert cli(srv, "invocations", "pause", inv).stdout == f"paused {inv}\n"
    assert "paused by an operator" in cli(srv, "explain", inv).stdout
    assert cli(srv, "invocations", "kill", inv).stdout == f"killed {inv}\n"


# ----------------------------------------------------------------------------------- state, services, sql
def test_state_commands(srv: Server) -> None:
    key = uuid.uuid4().hex
    assert cli(srv, "state", "set", "Counter", key, "total", "41").stdout == f"set total of Counter/{key}\n"
    assert cli(srv, "invoke", f"Counter/{key}/add", "1").stdout == "42\n"
    cli(srv, "state", "set", "Counter", key, "note", '{"a": [1, "b"]}')
    assert as_json(cli(srv, "state", "get", "Counter", key, "--json")) == {
        "note": {"a": [1, "b"]},
        "total": 42,
    }
    table = cli(srv, "state", "get", "Counter", key).stdout.splitlines()
    assert (
        table[0].split() == ["NAME", "VALUE"]
        and table[2].split() == ["note", '{"a":[1,"b"]}']
        and table[3].split() == ["total", "42"]
    )
    assert {"key": key, "entries": 2} in as_json(cli(srv, "state", "keys", "Counter", "--json"))
    assert cli(srv, "state", "clear", "Counter", key).stdout == f"cleared the state of Counter/{key}\n"
    assert cli(srv, "state", "get", "Counter", key).stdout == f"Counter/{key} has no state\n"
    assert (
        failed(srv, "state", "get", "Greeter", "x")
        == "error: 'Greeter' is a service: only virtual objects and workflows have state"
    )
    assert failed(srv, "state", "keys", "Nobody") == "error: service 'Nobody' not found"
    assert failed(srv, "state", "set", "Counter", key, "n", "{bad", code=2).startswith(
        "error: the value is not valid JSON"
    )
    # Clearing every key asks first.
    cli(srv, "state", "set", "Approval", key, "x", "1")
    proc = cli(srv, "state", "clear", "Approval", stdin="n\n", ok=False)
    assert proc.returncode == 1 and proc.stderr == "error: aborted: nothing was changed\n"
    assert as_json(cli(srv, "state", "get", "Approval", key, "--json")) == {"x": 1}
    assert f"cleared the state of Approval/{key}\n" in cli(srv, "state", "clear", "Approval", "--yes").stdout
    assert cli(srv, "state", "keys", "Approval").stdout == "no key of Approval has state\n"


def test_services_commands(srv: Server) -> None:
    listed = cli(srv, "services", "list").stdout.splitlines()
    assert listed[0].split() == ["NAME", "TYPE", "HANDLERS", "PUBLIC", "REVISION"]
    assert ["Counter", "VirtualObject", "add,", "hold,", "total", "true", "1"] in [
        line.split() for line in listed
    ]
    assert [s["name"] for s in as_json(cli(srv, "services", "list", "--json"))] == [
        "Approval",
        "Counter",
        "Flaky",
        "Greeter",
        "Inbox",
        "Waiter",
    ]
    described = cli(srv, "services", "describe", "Approval").stdout
    assert described.startswith("Approval  (Workflow, revision 1, deployment dp_")
    assert "  workflow_completion_retention       1d\n" in described and "\nrun " in described

    out = cli(
        srv,
        "services",
        "config",
        "Greeter",
        "--set",
        "idempotency_retention=2h",
        "--set",
        "retry_policy.max_attempts=5",
        "--set",
        "public=true",
    ).stdout
    assert (
        "  idempotency_retention               2h\n" in out
        and "  retry_policy.max_attempts           5\n" in out
    )
    config = as_json(cli(srv, "services", "config", "Greeter", "--json"))
    assert config["idempotency_retention"] == "2h" and config["retry_policy"]["max_attempts"] == 5
    assert srv.admin_request("GET", "/services/Greeter").json()["idempotency_retention"] == "2h"
    assert failed(srv, "services", "config", "Greeter", "--set", "bogus=1") == (
        "error: The request field 'bogus' is invalid. Reason: unknown field"
    )
    assert (
        failed(srv, "services", "config", "Greeter", "--set", "novalue", code=2)
        == "error: bad --set 'novalue': expected KEY=VALUE"
    )
    assert failed(srv, "services", "describe", "Nobody") == "error: service 'Nobody' not found"


def test_awakeable_rejection_and_bad_ids(srv: Server) -> None:
    box = uuid.uuid4().hex
    inv = srv.call("/Waiter/wait/send", box).json()["invocationId"]
    aid = published(srv, box)["aid"]
    assert cli(srv, "awakeables", "reject", aid, "no thanks").stdout == f"rejected {aid}\n"
    wait_until(lambda: status(srv, inv) == "completed", timeout=10, what="the rejection")
    assert (
        as_json(cli(srv, "invocations", "describe", inv, "--json"))["invocation"]["completion_failure"]
        == "[500] no thanks"
    )
    assert failed(srv, "awakeables", "resolve", "sign_bad", "1").startswith(
        "error: bad awakeable id 'sign_bad'"
    )
    assert failed(srv, "awakeables", "resolve", aid, "{", code=2).startswith(
        "error: the value is not valid JSON"
    )


def test_sql(srv: Server) -> None:
    header, rule, row, count = cli(srv, "sql", "SELECT 1 AS one, 'x' AS two").stdout.splitlines()
    assert (header.split(), set(rule.strip()), row.split(), count) == (
        ["one", "two"],
        {"─"},
        ["1", "x"],
        "(1 row)",
    )
    assert as_json(cli(srv, "sql", "SELECT 1 AS one", "--json")) == [{"one": 1}]
    assert cli(srv, "sql", "SELECT 1 WHERE 0").stdout == "(no rows)\n"
    assert failed(srv, "sql", "SELEKT 1").startswith('error: invalid query: near "SELEKT": syntax error')
    assert failed(srv, "sql", "DELETE FROM state").startswith("error: only read-only queries are allowed")
