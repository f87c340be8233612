"""README.md's tour, run as printed: its start command, then every ``$ curl …`` of the tour against a real
server, each output compared with the one the README shows (invocation ids, secrets and timestamps masked).

Only the address changes (``localhost:8080`` becomes the test server's port), and the verification secret,
which the README copies from its server log, is taken from this server's log the same way.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import ROOT, Server, wait_until

README = ROOT / "README.md"
TOUR_HEADING = "## A 5-minute tour with curl"
COMMAND_S = 60.0  # one curl of the tour (a call that waits for a workflow to finish)
SETTLE_S = 15.0  # a read whose README output comes after asynchronous work (sends, timers) gets this long
_SECRET = re.compile(r'body "([0-9a-f-]{36})"')
_MASKS = [
    (re.compile(r"inv_[0-9A-Za-z]+"), "inv_…"),
    (re.compile(r"sign_[0-9A-Za-z_-]+"), "sign_…"),
    (re.compile(r"\d{9,}\.\d+"), "<timestamp>"),
]


@dataclass
class Step:
    command: str  # as printed, continuation lines joined
    expected: list[str]  # the output lines the README shows


def tour_section() -> str:
    text = README.read_text()
    start = text.index(TOUR_HEADING)
    end = text.index("\n## ", start + len(TOUR_HEADING))
    return text[start:end]


def bash_blocks(section: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def steps(section: str) -> list[Step]:
    """Every ``$ command`` of the tour with the lines printed under it."""
    out: list[Step] = []
    for lines in bash_blocks(section):
        current: Step | None = None  # lines of a block before its first "$" are not outputs (a start command)
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.startswith("$ "):
                if current is not None:
                    current.expected.append(line)
                continue
            command = line[2:]
            while command.endswith("\\"):
                command = command[:-1] + " " + lines[i].strip()
                i += 1
            current = Step(command, [])
            out.append(current)
    return out


def start_command(section: str) -> str:
    starts = [line for block in bash_blocks(section) for line in block if "unbroken serve" in line]
    assert len(starts) == 1, starts
    return starts[0]


def mask(text: str) -> str:
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def normalise(lines: list[str]) -> list[str]:
    return [mask(line.rstrip("\r")) for line in lines if line.strip("\r")]


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The README's start command, with the test's ports and a data dir of the test's own.
    words = shlex.split(start_command(tour_section()).split("#", 1)[0])
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    args = [w for w in words if "=" not in w or w.startswith("-")]
    assert args[:3] == ["unbroken", "serve", "examples/demo.py"], args
    assert args[3:] == ["--data-dir", ".unbroken-tour"], args
    srv = Server(args[2], tmp_path_factory.mktemp("tour") / ".unbroken-tour", env=env).start()
    yield srv
    srv.kill()


def run(command: str, srv: Server) -> list[str]:
    shell = command.replace("localhost:8080", f"127.0.0.1:{srv.ingress_port}")
    proc = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=COMMAND_S, cwd=ROOT)
    assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
    return normalise(proc.stdout.splitlines())


def is_read(command: str) -> bool:
    """A command that changes nothing (no body, no POST): safe to repeat while asynchronous work settles."""
    return " -d " not in command and "-X POST" not in command


def secret_from_log(srv: Server, user: str) -> str:
    def find() -> str | None:
        for line in srv.log_path.read_text(errors="replace").splitlines():
            if f"verification email to {user}@" in line and (m := _SECRET.search(line)):
                return m.group(1)
        return None

    found: str = wait_until(find, timeout=SETTLE_S, what=f"the verification email of {user} in the log")
    return found


def test_the_readme_tour_runs_as_printed(tour: Server) -> None:
    section = tour_section()
    all_steps = steps(section)
    assert len(all_steps) >= 30, [s.command for s in all_steps]  # the parser found the whole tour
    secrets: dict[str, str] = {}  # the README's secret -> this server's
    for step in all_steps:
        command = step.command
        for printed, real in secrets.items():
            command = command.replace(printed, real)
        expected = normalise(step.expected)
        sleep = re.match(r"sleep (\d+); (.*)", command)
        if sleep:  # the README's own pause (the session timeout at work), then the command
            time.sleep(int(sleep.group(1)))
            command = sleep.group(2)
        got = run(command, tour)
        deadline = time.monotonic() + SETTLE_S
        while got != expected and is_read(command) and time.monotonic() < deadline:
            time.sleep(0.2)  # polling another process's state: there is no event to await across processes
            got = run(command, tour)
        assert got == expected, (
            f"$ {step.command}\nREADME:\n" + "\n".join(expected) + "\ngot:\n" + "\n".join(got)
        )
        if "/UserSignup/" in command and "/run/send" in command:
            user = re.search(r"/UserSignup/(\w+)/run", command).group(1)  # type: ignore[union-attr]
            printed = _SECRET.search(section)
            if user == "alice" and printed is not None:
                secrets[printed.group(1)] = secret_from_log(tour, user)


def test_the_tour_parser_reads_continuations_and_outputs() -> None:
    section = "```bash\n$ curl -s a \\\n       -d 1\nout1\n$ curl b\n```\n"
    assert steps(section) == [Step("curl -s a  -d 1", ["out1"]), Step("curl b", [])]


def readme_section(heading: str) -> str:
    text = README.read_text()
    start = text.index(heading)
    return text[start : text.index("\n## ", start + len(heading))]


def test_the_first_handler_runs_as_printed(tmp_path: Path) -> None:
    """README "Your first durable handler": the file saved as the README says, `unbroken serve greeter.py` with the
    `unbroken` that `source .venv/bin/activate` puts on the PATH, then its curl and the answer it shows."""
    section = readme_section("## Your first durable handler")
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    assert code.startswith("# greeter.py") and "Save this as `greeter.py`" in section
    (tmp_path / "greeter.py").write_text(code)
    lines = [line for block in bash_blocks(section) for line in block]
    serve = next(line for line in lines if line.startswith("unbroken serve"))
    srv = Server(str(tmp_path / "greeter.py"), tmp_path / ".unbroken")
    venv_bin = Path(sys.executable).parent  # what `source .venv/bin/activate` puts first on the PATH
    assert (venv_bin / "unbroken").exists()
    cmd = [
        *shlex.split(serve.split("#", 1)[0]),
        "--ingress-bind",
        f"127.0.0.1:{srv.ingress_port}",
        "--admin-bind",
        f"127.0.0.1:{srv.admin_port}",
    ]
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(srv.log_path, "ab") as log:
        srv.proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        srv._wait_ready()
        curl = next(line for line in lines if line.startswith("curl "))
        answer = next(line for line in lines if line.startswith("# "))[2:]
        assert run(curl, srv) == [answer]
        bad = re.search(r"`(curl -X POST\s+localhost:8080/Greeter/greet)`", section)
        assert bad is not None, "the README shows what an empty body answers"
        shown = re.search(r"answers `(\d+) (input validation error: [^`]+)`", section)
        assert shown is not None
        status = run(" ".join(bad.group(1).split()) + " -s -o /dev/null -w '%{http_code}'", srv)
        body = run(" ".join(bad.group(1).split()) + " -s", srv)
        assert status == [shown.group(1)]
        assert json.loads(body[0])["message"] == " ".join(shown.group(2).split())
    finally:
        srv.kill()
