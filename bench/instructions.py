"""Instructions per call, A/B between two git revisions: ``bench/instructions.py A B``.

    python bench/instructions.py b85f351 HEAD                       # W1, W2, W3a, W5
    python bench/instructions.py main HEAD --workloads W1 --calls 500

Wall-clock A/B (``bench/ab.py``) is only as good as the machine is quiet; this one is not disturbed by other
load. Each build's server runs under valgrind's callgrind with instrumentation off; after start-up and a
warm-up, instrumentation is switched on (``callgrind_control -i on``) for exactly ``--calls`` calls sent over
``--connections`` keep-alive connections, then off again; the count is the server process's instructions
(all its threads, user space: the kernel's side of the fsync and the sockets is not counted) divided by the
calls. The same build measured twice gives the same figure to within ~0.5%. It answers "does B execute more
code per call than A", not "is B slower": thread hand-offs, syscalls and waits do not count.

Needs valgrind (Debian's package). Each revision is checked out into a detached git worktree (removed at
the end); the server is started with ``PYTHONPATH=<worktree>/src`` and this checkout's bench/services.py.
Exit status: 0 done, B within 5% of A everywhere; 1 a run failed; 2 some workload costs B more than 5%.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab import check_import, checkout, git  # noqa: E402
from lib import BENCH_DIR, ROOT  # noqa: E402
from lib.report import md_table  # noqa: E402
from lib.targets import free_port  # noqa: E402
from lib.workloads import WORKLOADS  # noqa: E402

MORE = 1.05  # B/A instructions over this is the "slowdown beyond 5%" the issue forbids
WARMUP_CALLS = 200
START_TIMEOUT_S = 300  # a server under callgrind starts ~30x slower than without


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/instructions.py", description=__doc__.split("\n\n")[0])
    p.add_argument("rev_a", metavar="A")
    p.add_argument("rev_b", metavar="B")
    p.add_argument("--workloads", default="W1,W2,W3a,W5")
    p.add_argument("--calls", type=int, default=1000, help="calls measured per workload (default 1000)")
    p.add_argument("--connections", type=int, default=16)
    return p.parse_args(argv)


def _drive(port: int, path: str, body: bytes, calls: int, connections: int) -> None:
    """``calls`` POSTs over ``connections`` keep-alive connections; every answer must be 2xx."""
    errors: list[str] = []

    def worker(count: int, first: int) -> None:
        try:
            _calls(port, path, body, range(first, first + count), errors)
        except OSError as exc:
            errors.append(f"{path}: {exc}")

    share = calls // connections
    threads = [threading.Thread(target=worker, args=(share, k * share)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} failed calls, e.g. {errors[0]}")


def _calls(port: int, path: str, body: bytes, keys: range, errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for i in keys:
            conn.request(
                "POST", path.replace("{key}", str(i % 1000)), body, {"content-type": "application/json"}
            )
            answer = conn.getresponse()
            answer.read()
            if not 200 <= answer.status < 300:
                errors.append(f"{path}: {answer.status}")
    finally:
        conn.close()


def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            _calls(port, "/Bench/noop", b"{}", range(1), [])
            return
        except OSError:
            time.sleep(0.2)  # another process's socket: there is no event to wait on
    raise RuntimeError("server under callgrind did not answer in time")


def measure(src: Path, path: str, body: bytes, args: argparse.Namespace, tmp: Path) -> int:
    """Instructions per call of the server built from ``src`` (see the module's doc)."""
    out = tmp / "callgrind.out"
    port, admin = free_port(), free_port()
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    cmd += [sys.executable, "-m", "unbroken.cli.main", "serve", str(BENCH_DIR / "services.py")]
    cmd += ["--data-dir", str(tmp / "data"), "--ingress-bind", f"127.0.0.1:{port}"]
    cmd += ["--admin-bind", f"127.0.0.1:{admin}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNBROKEN_", "RESTATE_"))}
    env["PYTHONPATH"] = str(src)
    with open(tmp / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_ready(proc, port)
        _drive(port, path, body, WARMUP_CALLS, args.connections)
        control = ["callgrind_control", str(proc.pid)]
        subprocess.run([*control[:1], "-i", "on", *control[1:]], check=True, capture_output=True, timeout=60)
        _drive(port, path, body, args.calls, args.connections)
        subprocess.run([*control[:1], "-i", "off", *control[1:]], check=True, capture_output=True, timeout=60)
        subprocess.run([*control[:1], "-d", *control[1:]], check=True, capture_output=True, timeout=120)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    total = sum(_total(f) for f in tmp.glob("callgrind.out*"))
    return total // (args.calls // args.connections * args.connections)


def _total(dump: Path) -> int:
    match = re.search(r"^totals: (\d+)", dump.read_text(errors="replace"), re.MULTILINE)
    return int(match.group(1)) if match else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 1
    wanted = args.workloads.split(",")
    workloads = [w for w in WORKLOADS.values() if w.wid in wanted]
    tmp = Path(tempfile.mkdtemp(prefix="unbroken-instr-"))
    rows, worse = [], False
    try:
        builds = {}
        for side, rev in (("A", args.rev_a), ("B", args.rev_b)):
            checkout(rev, tmp / f"wt-{side}")
            builds[side] = tmp / f"wt-{side}" / "src"
            check_import(builds[side])
        for w in workloads:
            body = (w.body or "").encode()
            per_call = {}
            for side in ("A", "B"):
                run_dir = tmp / f"{w.wid}-{side}"
                run_dir.mkdir()
                per_call[side] = measure(builds[side], w.path, body, args, run_dir)
            ratio = per_call["B"] / per_call["A"]
            worse |= ratio > MORE
            rows.append([w.wid, w.description, f"{per_call['A']:,}", f"{per_call['B']:,}", f"{ratio:.3f}"])
            print(f"{w.wid}: A {per_call['A']:,} B {per_call['B']:,} instructions a call (B/A {ratio:.3f})")
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for side in ("A", "B"):
            if (tmp / f"wt-{side}").exists():
                git("worktree", "remove", "--force", str(tmp / f"wt-{side}"))
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"A = {args.rev_a}, B = {args.rev_b}; {args.calls} calls over {args.connections} connections")
    print(md_table(["workload", "what", "instructions/call A", "B", "B/A"], rows))
    return 2 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
