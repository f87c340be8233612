"""Restate's own CLI (npm ``@restatedev/restate`` 1.7.12) against ``unbroken serve examples/demo.py``.

Every command that reads or acts on what Unbroken has, run as a Restate user runs it (only
``RESTATE_ADMIN_URL`` / ``RESTATE_INGRESS_URL`` set), asserting what it prints and its exit code. The CLI
is installed from npm by ``scripts/restate-cli`` (cached in ``.cache/restate-cli``); without npm or the
registry the tests skip, saying so, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_remote_deployments import Peer
from tests.harness import ROOT, Server, wait_until

pytestmark = pytest.mark.timeout(300)

APP = "examples/demo.py"


@pytest.fixture(scope="module")
def restate_bin() -> str:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "restate-cli")], capture_output=True, text=True, timeout=360, cwd=ROOT
    )
    if proc.returncode != 0:
        reason = f"Restate's CLI is not available: {proc.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(APP, tmp_path_factory.mktemp("restate-cli") / "data").start()
    yield server
    server.kill()


class Cli:
    def __init__(self, binary: str, srv: Server, home: Path) -> None:
        self.binary, self.srv, self.home = binary, srv, home

    def run(
        self, *args: str, editor: str | None = None, ok: bool = True, srv: Server | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``srv``: another server than the module's (the admin and ingress URLs the CLI is given)."""
        target = srv or self.srv
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),  # no user config of the machine's own restate CLI
            "RESTATE_ADMIN_URL": target.admin,
            "RESTATE_INGRESS_URL": target.ingress,
            "NO_COLOR": "1",
            "TERM": "dumb",
        }
        if editor is not None:
            env["EDITOR"] = env["VISUAL"] = editor
        proc = subprocess.run(
            [self.binary, "--yes", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if ok:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
            assert "Could not verify the admin API version" not in proc.stdout + proc.stderr
        return proc


@pytest.fixture(scope="module")
def restate(restate_bin: str, srv: Server, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(restate_bin, srv, tmp_path_factory.mktemp("home"))


def editor_script(tmp_path: Path, body: str) -> str:
    """An $EDITOR that edits the file it is given with ``body`` (a shell snippet on "$1")."""
    path = tmp_path / "editor.sh"
    path.write_text(f"#!/bin/sh\nset -e\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def sql_json(srv: Server, query: str) -> list[dict[str, Any]]:
    resp = srv.admin_request("POST", "/query", {"query": query})
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = resp.json()["rows"]
    return rows


def status(srv: Server, inv: str) -> str | None:
    rows = sql_json(srv, f"SELECT status FROM sys_invocation WHERE id = '{inv}'")
    return rows[0]["status"] if rows else None


def start_signup(srv: Server, user: str) -> str:
    """A workflow that waits for its email to be verified (running, then suspended): a long-lived one."""
    resp = srv.call(f"/UserSignup/{user}/run/send", {"name": user, "email": f"{user}@example.com"})
    assert resp.status_code == 202, resp.text
    inv: str = resp.json()["invocationId"]
    waiting = f"SELECT id FROM sys_journal WHERE id = '{inv}' AND entry_type = 'Command: GetPromise'"
    wait_until(lambda: sql_json(srv, waiting), what=f"{inv} waiting for its promise")
    return inv


def deployment_id(srv: Server) -> str:
    deployments = srv.admin_request("GET", "/deployments").json()["deployments"]
    return str(deployments[0]["id"])


# ------------------------------------------------------------------------------------------- services
def test_services_list(restate: Cli, srv: Server) -> None:
    out = restate.run("services", "list").stdout
    for name in ("Greeter", "Counter", "UserSignup", "Trip", "Ledger", "Notifications", "Orders", "Session"):
        assert re.search(rf"\b{name}\b", out), out
    assert re.search(r"Counter\s+1\s+virtual object", out), out
    assert re.search(r"UserSignup\s+1\s+workflow", out), out
    assert deployment_id(srv) in out


def test_services_describe(restate: Cli, srv: Server) -> None:
    out = restate.run("services", "describe", "Counter").stdout
    assert re.search(r"Name:\s+Counter", out) and re.search(r"Service type:\s+VirtualObject", out), out
    assert deployment_id(srv) in out
    assert re.search(r"add\s+JSON integer\s+JSON integer", out), out
    assert re.search(r"get\s+none\s+JSON integer", out), out
    signup = restate.run("services", "describe", "UserSignup").stdout
    assert re.search(r"run\s+JSON 'User'\s+JSON 'SignupResult'", signup), signup
    missing = restate.run("services", "describe", "Nope", ok=False)
    assert (
        missing.returncode != 0
        and "The requested service 'Nope' does not exist" in missing.stderr + missing.stdout
    )


def test_services_config_view_and_edit(restate: Cli, srv: Server, tmp_path: Path) -> None:
    out = restate.run("services", "config", "view", "Greeter").stdout
    assert re.search(r"Inactivity timeout:\s+1m\b", out) and re.search(r"Abort timeout:\s+10m\b", out), out
    editor = editor_script(
        tmp_path, 'printf \'inactivity_timeout = "2min"\\nidempotency_retention = "10hours"\\n\' >> "$1"'
    )
    edited = restate.run("services", "config", "edit", "Greeter", editor=editor).stdout
    assert re.search(r"Inactivity timeout:\s+2m", edited), edited
    meta = srv.admin_request("GET", "/services/Greeter").json()
    assert meta["inactivity_timeout"] == "2m" and meta["idempotency_retention"] == "10h", meta
    assert meta["abort_timeout"] == "10m"  # left alone: the CLI sends it as null
    after = restate.run("services", "config", "view", "Greeter").stdout
    assert re.search(r"Inactivity timeout:\s+2m\b", after), after


# ---------------------------------------------------------------------------------------- invocations
def test_invocations_list_and_describe(restate: Cli, srv: Server) -> None:
    inv = start_signup(srv, "list-alice")
    listed = restate.run("invocations", "list")
    out = listed.stdout
    assert inv in out and "UserSignup/list-alice/run" in out, out
    assert re.search(r"Status:\s+(running|suspended)", out), out
    assert re.search(r"Showing \d+/\d+ invocations", listed.stderr), listed.stderr
    described = restate.run("invocations", "describe", inv).stdout
    assert re.search(r"Target:\s+UserSignup/list-alice/run", described), described
    assert "Command: Input" in described and "Command: Run [send verification email]" in described, described
    done = srv.call("/Greeter/greet", "Ada").json()
    assert done == "Hello Ada!"
    everything = restate.run("invocations", "list", "--all").stdout
    assert "Greeter/greet" in everything and "completed with success" in everything, everything
    # filters: the CLI's count query names the inner alias from outside (DataFusion allows it)
    greeter = restate.run("invocations", "list", "--service", "Greeter", "--all").stdout
    assert "Greeter/greet" in greeter and "UserSignup" not in greeter, greeter
    keyed = restate.run("invocations", "list", "--key", "list-alice", "--all").stdout
    assert inv in keyed and "Greeter/greet" not in keyed, keyed
    failed = restate.run("invocations", "list", "--completion-result", "success").stdout
    assert "Greeter/greet" in failed and inv not in failed, failed
    unknown = "inv_1bPMPec3I4kl664wvcAzXPjvAjst0QnilX"
    missing = restate.run("invocations", "describe", unknown, ok=False)
    assert missing.returncode != 0 and f"Invocation {unknown} not found" in missing.stderr, missing.stderr


def test_invocations_cancel(restate: Cli, srv: Server) -> None:
    inv = start_signup(srv, "cancel-bob")
    out = restate.run("invocations", "cancel", inv).stdout
    assert inv in out and "Cancelled 1 invocations" in out, out
    wait_until(lambda: status(srv, inv) == "completed", what="cancelled")
    row = sql_json(srv, f"SELECT completion_failure FROM sys_invocation WHERE id = '{inv}'")[0]
    assert row["completion_failure"].startswith("[409]"), row


def test_invocations_kill(restate: Cli, srv: Server) -> None:
    inv = start_signup(srv, "kill-carol")
    out = restate.run("invocations", "kill", inv).stdout
    assert inv in out and "Killed 1 invocations" in out, out
    wait_until(lambda: status(srv, inv) == "completed", what="killed")
    row = sql_json(srv, f"SELECT completion_failure FROM sys_invocation WHERE id = '{inv}'")[0]
    assert row["completion_failure"] == "[409] killed", row


def test_invocations_pause_and_resume(restate: Cli, srv: Server) -> None:
    inv = start_signup(srv, "pause-dan")
    out = restate.run("invocations", "pause", inv).stdout
    assert inv in out and "paused" in out.lower(), out
    wait_until(lambda: status(srv, inv) == "paused", what="paused")
    out = restate.run("invocations", "resume", inv).stdout
    assert inv in out and "resumed" in out.lower(), out
    wait_until(lambda: status(srv, inv) in ("running", "suspended"), what="resumed")


def test_invocations_purge(restate: Cli, srv: Server) -> None:
    resp = srv.call("/Greeter/greet/send", "Purgeable")
    inv = resp.json()["invocationId"]
    wait_until(lambda: status(srv, inv) == "completed", what="completed")
    out = restate.run("invocations", "purge", inv).stdout
    assert inv in out and "Purged 1 invocations" in out, out
    assert status(srv, inv) is None


# ---------------------------------------------------------------------------------------------- state
def test_state_get_edit_clear(restate: Cli, srv: Server, tmp_path: Path) -> None:
    assert srv.call("/Counter/cli-erin/add", 5).json() == 5
    out = restate.run("state", "get", "Counter", "cli-erin").stdout
    assert re.search(r"count\s+5\b", out), out
    assert json.loads(restate.run("state", "get", "Counter", "cli-erin", "--plain").stdout) == {"count": 5}
    editor = editor_script(tmp_path, "sed -i 's/5/42/' \"$1\"")
    edited = restate.run("state", "edit", "Counter", "cli-erin", editor=editor).stdout
    assert "Successfully submitted state update" in edited, edited
    assert srv.get("/Counter/cli-erin/get").json() == 42
    assert json.loads(restate.run("state", "get", "Counter", "cli-erin", "--plain").stdout) == {"count": 42}
    cleared = restate.run("state", "clear", "Counter/cli-erin").stdout
    assert "Enqueued successfully" in cleared, cleared
    assert json.loads(restate.run("state", "get", "Counter", "cli-erin", "--plain").stdout) == {}
    assert srv.call("/Counter/cli-erin/add", 1).json() == 1  # the count starts again from nothing


def test_state_edit_from_a_stale_read_is_refused(restate: Cli, srv: Server, tmp_path: Path) -> None:
    """The CLI sends the version of the state it read; a change in between makes the edit fail, not win."""
    assert srv.call("/Counter/cli-fay/add", 5).json() == 5
    # the "editor" adds 1 through the ingress while the user edits: the CLI's read is now stale
    editor = editor_script(
        tmp_path,
        f"curl -s -o /dev/null {srv.ingress}/Counter/cli-fay/add -H 'content-type: application/json' -d 1\n"
        "sed -i 's/5/42/' \"$1\"",
    )
    stale = restate.run("state", "edit", "Counter", "cli-fay", editor=editor, ok=False)
    # the CLI prints only the status of this answer (Restate would drop the change silently, answering 202)
    assert stale.returncode != 0 and "409 Conflict" in stale.stderr, stale.stderr
    assert srv.get("/Counter/cli-fay/get").json() == 6


# ------------------------------------------------------------------------------------------------ sql
def test_sql(restate: Cli, srv: Server) -> None:
    assert srv.call("/Counter/sql-gus/add", 3).json() == 3
    proc = restate.run(
        "sql", "SELECT target, status FROM sys_invocation WHERE target = 'Counter/sql-gus/add'"
    )
    assert re.search(r"Counter/sql-gus/add\s+completed", proc.stdout), proc.stdout
    assert "1 rows" in proc.stderr, proc.stderr
    rows = json.loads(
        restate.run(
            "sql",
            "--json",
            "SELECT status, COUNT(*) AS n FROM sys_invocation GROUP BY status ORDER BY status",
        ).stdout
    )
    assert {
        "status": "completed",
        "n": len(sql_json(srv, "SELECT id FROM sys_invocation WHERE status = 'completed'")),
    } in rows
    state = restate.run(
        "sql",
        "SELECT service_key, key, value_utf8 FROM state WHERE service_name = 'Counter' AND service_key = 'sql-gus'",
    ).stdout
    assert re.search(r"sql-gus\s+count\s+3", state), state
    columns = restate.run(
        "sql",
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'sys_journal' ORDER BY ordinal_position",
    ).stdout
    assert "entry_type" in columns and "promise_name" in columns, columns
    cast = json.loads(
        restate.run("sql", "--json", "SELECT '7'::BIGINT + 1 AS n, CAST(2 AS STRING) AS s").stdout
    )
    assert cast == [{"n": 8, "s": "2"}]
    bad = restate.run("sql", "SELECT nope FROM sys_invocation", ok=False)
    assert bad.returncode != 0 and "no such column: nope" in bad.stderr, bad.stderr
    write = restate.run("sql", "DELETE FROM state", ok=False)
    assert write.returncode != 0 and "read-only" in write.stderr, write.stderr


# ---------------------------------------------------------------------------------------- deployments
@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """Services written with restate-sdk 1.2.0, served by hypercorn: a remote deployment to register."""
    p = Peer("tests.apps.restate_peer:app", tmp_path_factory.mktemp("peer") / "peer.log")
    yield p
    p.stop()


PEER_SERVICES = ("PeerCounter", "PeerGreeter", "PeerLazy", "PeerSignup")


def register_peer(restate: Cli, srv: Server, peer: Peer, *flags: str) -> str:
    """``restate deployments register URL``: the services it will add, then the id it was given."""
    out = restate.run("deployments", "register", *flags, peer.url, srv=srv).stdout
    assert "SERVICES THAT WILL BE ADDED" in out, out
    assert re.search(r"greet\s+JSON string\s+JSON string", out), out  # the dry run's handler table
    match = re.search(r"Deployment ID:\s+(dp_\w+)", out)
    assert match, out
    for name in PEER_SERVICES:
        assert re.search(rf"\b{name}\s+1\b", out), out
    dep = match.group(1)
    assert dep in [d["id"] for d in srv.admin_request("GET", "/deployments").json()["deployments"]]
    return dep


def assert_described(out: str, dep: str, peer: Peer) -> None:
    """``restate deployments describe``: where the deployment is, what serves it, its services' handlers."""
    assert re.search(rf"ID:\s+{dep}\b", out), out
    assert re.search(rf"Endpoint:\s+{re.escape(peer.url)}/?\s", out), out
    assert re.search(r"SDK Version\s+restate-sdk-python/1\.2\.0", out), out
    assert re.search(r"- PeerCounter\s+Type: VirtualObject", out), out
    assert re.search(r"- PeerSignup\s+Type: Workflow", out), out
    assert re.search(r"Revision: 1 \[Latest\]", out), out
    for handler in (
        r"add\s+JSON integer\s+JSON integer",
        r"greet\s+JSON string\s+JSON string",
        r"peek\s+none",
    ):
        assert re.search(handler, out), (handler, out)


def assert_remote_invocation_listed(restate: Cli, srv: Server, dep: str, who: str) -> None:
    """A call on the remote service, then ``restate invocations list`` names it and its deployment."""
    assert srv.call("/PeerGreeter/greet", who).json() == f"Hello {who}!"
    out = restate.run("invocations", "list", "--service", "PeerGreeter", "--all", srv=srv).stdout
    assert re.search(r"Target:\s+PeerGreeter/greet", out), out
    assert "completed with success" in out and re.search(rf"Deployment:\s+{dep}\b", out), out


def test_deployments_register_list_describe_next_to_the_app(restate: Cli, srv: Server, peer: Peer) -> None:
    """With an APP: the remote deployment is registered next to the in-process one and listed with it."""
    dep = register_peer(restate, srv, peer, "--metadata", "team=payments")
    listed = restate.run("deployments", "list").stdout
    assert dep in listed and deployment_id(srv) in listed, listed
    assert re.search(rf"{re.escape(peer.url)}/?\s+HTTP\s+{dep}", listed), listed
    assert "- PeerGreeter [1]" in listed and "- Counter [1]" in listed, listed
    described = restate.run("deployments", "describe", dep).stdout
    assert_described(described, dep, peer)
    assert re.search(r"team:\s+payments", described), described  # the metadata it was registered with
    assert "Counter" not in described.replace("PeerCounter", ""), described  # only its own services
    local = restate.run("deployments", "describe", deployment_id(srv)).stdout
    assert re.search(r"- Greeter\s+Type: Service", local) and "PeerGreeter" not in local, local
    # registering the same URL again changes nothing (as Restate's admin API v3+ answers: 200, its id)
    again = restate.run("deployments", "register", peer.url).stdout
    assert f"Deployment already exists with id {dep}" in again and "No changes will be made" in again, again
    services = restate.run("services", "list").stdout
    assert re.search(rf"PeerCounter\s+1\s+virtual object\s+HTTP\s+{dep}", services), services
    assert re.search(rf"Greeter\s+1\s+HTTP\s+{deployment_id(srv)}", services), services
    assert_remote_invocation_listed(restate, srv, dep, "Ada")
    unknown = "dp_1bPMPec3I4kl664wvcAzXPj"
    missing = restate.run("deployments", "describe", unknown, ok=False)
    assert missing.returncode != 0, missing.stdout
    assert f"The requested deployment '{unknown}' does not exist" in missing.stderr, missing.stderr


def test_deployments_register_list_describe_without_an_app(
    restate: Cli, peer: Peer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No APP (the engine alone, as restate-server): nothing listed, then the remote deployment alone."""
    bare = Server(None, tmp_path_factory.mktemp("restate-cli-bare") / "data").start()
    try:
        empty = restate.run("deployments", "list", srv=bare)
        assert "No deployments were found!" in empty.stdout + empty.stderr, empty  # exit 0, as Restate
        # the CLI's dry run (admin API v3+): 201 for a new deployment, nothing stored; then 200 with its id
        dry = {"uri": peer.url, "use_http_11": True, "dry_run": True}
        preview = bare.admin_request("POST", "/deployments", dry)
        assert preview.status_code == 201 and preview.json()["services"], preview.text
        assert bare.admin_request("GET", "/deployments").json()["deployments"] == []
        dep = register_peer(restate, bare, peer, "--use-http1.1")
        again = bare.admin_request("POST", "/deployments", dry)
        assert again.status_code == 200 and again.json()["id"] == dep, again.text
        listed = restate.run("deployments", "list", "--extra", srv=bare).stdout
        assert re.search(rf"{re.escape(peer.url)}/?\s+HTTP\s+Active\s+0\s+{dep}", listed), listed
        for name in PEER_SERVICES:
            assert f"- {name} [1]" in listed, listed
        described = restate.run("deployments", "describe", dep, "--extra", srv=bare).stdout
        assert_described(described, dep, peer)
        assert re.search(r"Transport:\s+HTTP/1\.1", described), described
        assert re.search(r"Protocol Style:\s+Request/Response", described), described
        assert re.search(r"Status:\s+Active", described), described
        services = restate.run("services", "list", srv=bare).stdout
        for name in PEER_SERVICES:
            assert re.search(rf"\b{name}\s+1\b.*{dep}", services), services
        assert_remote_invocation_listed(restate, bare, dep, "Grace")
        # --force registers the endpoint again: a new revision of each service, one deployment listed
        forced = restate.run("deployments", "register", "--force", "--use-http1.1", peer.url, srv=bare).stdout
        assert "already known to the server" in forced or "SERVICES THAT WILL BE UPDATED" in forced, forced
        assert re.search(r"PeerGreeter\s+2\b", forced), forced
        after = bare.admin_request("GET", "/deployments").json()["deployments"]
        assert len(after) == 1 and {s["revision"] for s in after[0]["services"]} == {2}, after
        unreachable = restate.run("deployments", "register", "http://127.0.0.1:1", srv=bare, ok=False)
        assert (
            unreachable.returncode != 0 and "cannot reach http://127.0.0.1:1/discover" in unreachable.stderr
        )
        removed = restate.run("deployments", "remove", "--force", after[0]["id"], srv=bare).stdout
        assert f"Deployment {after[0]['id']} removed successfully" in removed, removed
        gone = restate.run("deployments", "list", srv=bare)
        assert "No deployments were found!" in gone.stdout + gone.stderr, gone
    finally:
        bare.kill()
