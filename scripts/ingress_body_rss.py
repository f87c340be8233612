"""Memory of large request bodies: the server's RSS before, at peak and after N concurrent calls.

    .venv/bin/python scripts/ingress_body_rss.py [--calls 16] [--mib 30] [--path /Echo/echo] [--shape string]

Starts ``unbroken serve tests/apps/semantics.py`` on a fresh data dir, sends ``--calls`` requests at once,
each a JSON body of ``--mib`` MiB (a string, or an array of small numbers) (a 503 is retried after its
Retry-After, as a client should), and prints VmRSS before, VmHWM (the peak) and VmRSS once all answered,
from /proc (Linux only). ``--path awakeable`` resolves an awakeable of an invocation that does not exist:
the body is read and checked by the ingress, then answered 404, which isolates the ingress's own cost.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.harness import Server
from unbroken.core.ids import InvocationId, awakeable_id


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024  # kB -> MiB
    return out


def _call(url: str, body: bytes) -> tuple[int, int]:
    """(final status, 503s seen)."""
    refused = 0
    with httpx.Client(timeout=300) as client:
        while True:
            resp = client.post(url, content=body, headers={"content-type": "application/json"})
            if resp.status_code != 503:
                return resp.status_code, refused
            refused += 1
            time.sleep(float(resp.headers.get("retry-after", "1")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=16)
    parser.add_argument("--mib", type=int, default=30)
    parser.add_argument("--path", default="/Echo/echo")
    parser.add_argument("--shape", choices=["string", "array"], default="string")
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    body = b'"' + b"x" * (size - 2) + b'"' if args.shape == "string" else b"[" + b"1," * (size // 2 - 1) + b"1]"
    if args.path == "awakeable":
        args.path = f"/restate/awakeables/{awakeable_id(InvocationId.for_workflow('Nobody', 'k'), 17)}/resolve"
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server("tests/apps/semantics.py", Path(tmp) / "data").start()
        try:
            assert srv.proc is not None
            before = _status(srv.proc.pid)
            started = time.monotonic()
            with ThreadPoolExecutor(args.calls) as pool:
                results = list(pool.map(lambda _: _call(srv.ingress + args.path, body), range(args.calls)))
            elapsed = time.monotonic() - started
            time.sleep(1.0)  # let the writer thread and the allocator settle before reading RSS
            after = _status(srv.proc.pid)
        finally:
            srv.kill()
    statuses = sorted({status for status, _ in results})
    print(f"{args.calls} calls x {args.mib} MiB {args.shape} to {args.path[:30]}: statuses {statuses}, "
          f"503s retried {sum(r for _, r in results)}, {elapsed:.1f} s")
    print(f"RSS before {before['VmRSS']} MiB, peak {after['VmHWM']} MiB, after {after['VmRSS']} MiB")


if __name__ == "__main__":
    main()
