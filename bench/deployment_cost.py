"""The SDK side of Restate's service protocol, measured: restate-server 1.7.12 driving bench/services.py
written once, served by hypercorn (HTTP/2) with restate-sdk 1.2.0 (its Rust shared core) and with Unbroken's
SDK (``app.deployment()``, pure Python). Same server, same handlers, same load: what differs is the SDK.

    python bench/deployment_cost.py                      # W1 and W2, 16 connections, 3 s warm-up + 10 s
    python bench/deployment_cost.py --workloads W1 --duration 5

For each side and workload: a warm-up wrk run, then a measured one; the figures are wrk's calls per second and
latency, and the CPU time (utime+stime from /proc) per call of the SDK process (hypercorn) and of
restate-server. CPU per call is the steadier figure on a loaded machine. restate-server comes from
scripts/restate-server (npm), restate-sdk and hypercorn from this venv (the test extras).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anchor as anchor_mod  # noqa: E402
from lib import ROOT  # noqa: E402
from lib.procstats import CLK_TCK, cpu_ticks  # noqa: E402
from lib.restate_side import RestateSide  # noqa: E402
from lib.workloads import WORKLOADS  # noqa: E402
from lib.wrk import run_wrk, wrk_script  # noqa: E402


class Side(RestateSide):
    def __init__(self, workdir: Path, anchor: anchor_mod.Anchor, label: str, service_app: str) -> None:
        super().__init__(workdir, anchor)
        self.label = label
        self.service_app = service_app


def _anchor() -> anchor_mod.Anchor:
    done = subprocess.run(
        [str(ROOT / "scripts" / "restate-server")], capture_output=True, text=True, timeout=400
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr.strip())
    hypercorn = Path(sys.executable).with_name("hypercorn")
    return anchor_mod.Anchor(
        ROOT, Path(done.stdout.strip()), Path(sys.executable), hypercorn, "1.7.12", "1.2.0", "this venv's"
    )


def measure(
    side: Side, workload: str, conns: int, warmup: int, duration: int, work: Path
) -> dict[str, float]:
    w = WORKLOADS[workload]
    script = work / f"{workload}.lua"
    script.write_text(wrk_script(w, seed=7))
    run_wrk(side, script, conns, warmup, 30)
    assert side.server is not None and side.service is not None
    srv0, svc0 = cpu_ticks(side.server.pid), cpu_ticks(side.service.pid)
    out = run_wrk(side, script, conns, duration, 30)
    srv1, svc1 = cpu_ticks(side.server.pid), cpu_ticks(side.service.pid)
    ok = out["requests"] - out["non2xx"]
    calls = max(ok, 1)
    return {
        "calls/s": ok / (out["duration_us"] / 1e6),
        "p50 ms": out["p50_us"] / 1000,
        "p99 ms": out["p99_us"] / 1000,
        "SDK CPU ms/call": (svc1 - svc0) / CLK_TCK * 1000 / calls,
        "server CPU ms/call": (srv1 - srv0) / CLK_TCK * 1000 / calls,
        "errors": out["non2xx"] + out["socket_errors"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="W1,W2")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    anchor = _anchor()
    wanted = [name for name, w in WORKLOADS.items() if w.wid in args.workloads.split(",")]
    rows: list[tuple[str, str, dict[str, float]]] = []
    for label, app in (
        ("restate-sdk 1.2.0", "anchor_services:app"),
        ("Unbroken SDK", "deployment_services:deployment"),
    ):
        with tempfile.TemporaryDirectory(prefix="deployment-cost-") as tmp:
            side = Side(Path(tmp), anchor, label, app)
            try:
                side.start()
                for name in wanted:
                    rows.append(
                        (
                            label,
                            WORKLOADS[name].wid,
                            measure(side, name, args.connections, args.warmup, args.duration, Path(tmp)),
                        )
                    )
                    print(rows[-1], flush=True)
            finally:
                side.stop()
    keys = list(rows[0][2])
    print(
        f"\n| SDK (restate-server 1.7.12, hypercorn h2c, {args.connections} connections) | workload | "
        + " | ".join(keys)
        + " |"
    )
    print("|---|---|" + "---|" * len(keys))
    for label, wl, fig in rows:
        print(
            f"| {label} | {wl} | "
            + " | ".join(f"{fig[k]:.2f}" if k != "errors" else str(int(fig[k])) for k in keys)
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
