"""The load generator: wrk Lua scripts, one wrk run and its JSON summary, wrk's version."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from lib.workloads import Workload

WRK_INSTALL_HINT = (
    "wrk (the HTTP load generator) is not installed; bench/run.py installs nothing by itself.\n"
    "Install it with:  sudo apt-get update && sudo apt-get install -y wrk   (Debian/Ubuntu)\n"
    "              or:  brew install wrk                                   (macOS)"
)


class HasIngress(Protocol):
    @property
    def ingress_url(self) -> str: ...


_LUA_TAIL = r"""
non2xx = 0
first_bad = ""
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then
      first_bad = (status .. " " .. string.sub(body or "", 1, 300)):gsub('[^%w %p]', ' '):gsub('[\\"]', "'")
    end
  end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function done(summary, latency, requests)
  local bad, sample = 0, ""
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
    if sample == "" then sample = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"status":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,"first_bad":"%s"}\n',
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean, sample))
end
"""


def wrk_script(w: Workload, seed: int) -> str:
    """Lua for wrk: the request, a per-thread count of non-2xx answers, and a JSON summary line."""
    lines = ['wrk.method = "POST"']
    if w.body is not None:
        lines += [f"wrk.body = {_lua_str(w.body)}", 'wrk.headers["Content-Type"] = "application/json"']
    else:
        lines += ['wrk.body = ""']
    if w.keys:
        prefix, suffix = w.path.split("{key}")
        lines += [
            f"function init(args) math.randomseed({seed}) end",
            "function request()",
            f"  return wrk.format(nil, {_lua_str(prefix)} .. 'k' .. math.random(1, {w.keys}) .. {_lua_str(suffix)})",
            "end",
        ]
    else:
        lines += [f"wrk.path = {_lua_str(w.path)}"]
    return "\n".join(lines) + "\n" + _LUA_TAIL


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(target: HasIngress, script: Path, conns: int, seconds: int, timeout_s: int) -> dict[str, Any]:
    """One wrk run against the target's ingress; a target of several nodes (``ingress_urls``, bench/cluster.py)
    gets one wrk per node at once, the connections split between them, and the summaries merged."""
    urls: list[str] = list(getattr(target, "ingress_urls", None) or [target.ingress_url])
    if len(urls) == 1:
        return _wrk_one(urls[0], script, conns, seconds, timeout_s)
    shares = [conns // len(urls) + (1 if i < conns % len(urls) else 0) for i in range(len(urls))]
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        parts = list(
            pool.map(
                lambda u_c: _wrk_one(u_c[0], script, u_c[1], seconds, timeout_s),
                zip(urls, shares, strict=True),
            )
        )
    return merge_wrk(parts)


def merge_wrk(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts add up; the duration is the longest; a percentile is the request-weighted mean of the parts'
    (exact only when they are alike, as wrk's histograms are not kept) and the max is the max."""
    total = sum(p["requests"] for p in parts) or 1
    merged: dict[str, Any] = {k: v for k, v in parts[0].items() if not isinstance(v, (int, float))}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if not all(isinstance(v, (int, float)) for v in values):
            continue
        if key in ("duration_us", "max_us"):
            merged[key] = max(values)
        elif key.startswith("p") and key.endswith("_us") or key == "mean_us":
            merged[key] = sum(p[key] * p["requests"] for p in parts) / total
        else:
            merged[key] = sum(values)
    merged["first_bad"] = next((p["first_bad"] for p in parts if p.get("first_bad")), "")
    merged["parts"] = len(parts)
    return merged


def _wrk_one(url: str, script: Path, conns: int, seconds: int, timeout_s: int) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_b, err_b = proc.communicate(timeout=seconds + timeout_s + 60)
    out, err = out_b.decode(errors="replace"), err_b.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{out}\n{err}")
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            data: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            data["socket_errors"] = data["connect"] + data["read"] + data["write"] + data["timeout"]
            return data
    raise RuntimeError(f"wrk printed no summary: {' '.join(cmd)}\n{out}\n{err}")


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return (out.stdout + out.stderr).splitlines()[0].strip() if (out.stdout + out.stderr) else "wrk"
