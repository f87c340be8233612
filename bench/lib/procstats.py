"""What /proc says about the processes under test and the machine; the machine and git revision."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import threading
from pathlib import Path
from typing import Any

from lib import ROOT

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])


def proc_status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def dir_bytes(path: Path) -> tuple[int, int]:
    """(apparent size, allocated size) of every file under ``path``."""
    apparent = allocated = 0
    for p in path.rglob("*"):
        try:
            st = p.stat()
        except FileNotFoundError:  # e.g. a -shm/-wal file removed mid-walk
            continue
        if p.is_file():
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def host_busy_ticks() -> int:
    """Non-idle CPU time of the whole machine (all cores), in clock ticks, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal


def proc_write_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:  # /proc/<pid>/io needs ptrace rights over the process; ours are our children
        pass
    return 0


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class RssSampler:
    """Peak VmRSS of each process of a target, polled every 50 ms while a cell runs (VmHWM is whole-life)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak_kib = {k: 0 for k in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        for k, pid in self.pids.items():
            try:
                self.peak_kib[k] = max(self.peak_kib[k], proc_status_kib(pid, "VmRSS"))
            except OSError:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
