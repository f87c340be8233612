"""Install the Restate anchor for ``bench/compare`` into the scratch folder ``bench/.anchor/`` (git-ignored).

    python bench/anchor.py            # install what is missing, print the paths
    python bench/anchor.py --check    # only say whether it is installed (exit 1 if not)

What goes there, exactly the versions of ../shared/bench/WORKLOADS.md:
  * npm ``@restatedev/restate-server@1.7.12`` (``npm install --prefix bench/.anchor``); the binary comes in its
    optional dependency ``@restatedev/restate-server-linux-x64`` and is run directly (no node wrapper process).
    Install scripts are not run (``--ignore-scripts``: the only one is a telemetry ping of a dependency).
  * a venv ``bench/.anchor/venv`` with ``restate-sdk==1.2.0`` and ``hypercorn`` to serve ``bench/services.py``
    through ``bench/anchor_services.py``. The official SDK is used only there, never by Unbroken.

Nothing under bench/.anchor/ is ever committed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ANCHOR_DIR = BENCH_DIR / ".anchor"

RESTATE_SERVER_VERSION = "1.7.12"
RESTATE_SDK_VERSION = "1.2.0"
HYPERCORN_VERSION = "0.18.0"  # the version the harness was validated with; any recent one works
_NPM_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


class AnchorError(RuntimeError):
    """The anchor could not be installed or is not usable; the message says why (with the tool's output)."""


@dataclass(frozen=True)
class Anchor:
    root: Path
    server_bin: Path
    python: Path
    hypercorn: Path
    server_version: str
    sdk_version: str
    hypercorn_version: str

    def describe(self) -> dict[str, str]:
        return {
            "restate_server": self.server_version,
            "restate_sdk": self.sdk_version,
            "hypercorn": self.hypercorn_version,
            "server_bin": str(self.server_bin),
            "python": str(self.python),
        }


def _platform_pkg() -> str:
    arch = _NPM_ARCH.get(platform.machine().lower())
    system = platform.system().lower()
    if arch is None or system not in ("linux", "darwin"):
        raise AnchorError(f"no restate-server npm binary for {platform.system()}/{platform.machine()}")
    return f"@restatedev/restate-server-{system}-{arch}"


def _paths(root: Path) -> tuple[Path, Path, Path]:
    server_bin = root / "node_modules" / _platform_pkg() / "bin" / "restate-server"
    venv = root / "venv"
    return server_bin, venv / "bin" / "python", venv / "bin" / "hypercorn"


def _run(cmd: list[str], timeout: float, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except FileNotFoundError as exc:
        raise AnchorError(f"{cmd[0]} not found ({exc}); it is needed to install the anchor") from None
    except subprocess.TimeoutExpired:
        raise AnchorError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        raise AnchorError(
            f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout + proc.stderr


def _server_version(server_bin: Path) -> str | None:
    if not server_bin.exists():
        return None
    try:
        out = _run([str(server_bin), "--version"], timeout=30)
    except AnchorError:
        return None
    return out.split()[-1] if out.split() else None


def _python_versions(python: Path) -> dict[str, str] | None:
    if not python.exists():
        return None
    code = (
        "import json, importlib.metadata as m\n"
        "print(json.dumps({p: m.version(p) for p in ('restate-sdk', 'hypercorn')}))"
    )
    try:
        return dict(json.loads(_run([str(python), "-c", code], timeout=60).strip().splitlines()[-1]))
    except (AnchorError, ValueError, IndexError):
        return None


def find(root: Path = ANCHOR_DIR) -> Anchor | None:
    """The installed anchor, or None if anything is missing or of the wrong version."""
    server_bin, python, hypercorn = _paths(root)
    version = _server_version(server_bin)
    pyv = _python_versions(python)
    if version != RESTATE_SERVER_VERSION or pyv is None or pyv.get("restate-sdk") != RESTATE_SDK_VERSION:
        return None
    if not hypercorn.exists():
        return None
    return Anchor(root, server_bin, python, hypercorn, version, pyv["restate-sdk"], pyv["hypercorn"])


def install(root: Path = ANCHOR_DIR, log: Callable[[str], object] = print) -> Anchor:
    """Install whatever is missing into ``root`` and return the anchor; raises AnchorError with the reason."""
    root.mkdir(parents=True, exist_ok=True)
    server_bin, python, _ = _paths(root)
    if _server_version(server_bin) != RESTATE_SERVER_VERSION:
        log(f"anchor: npm install @restatedev/restate-server@{RESTATE_SERVER_VERSION} into {root} ...")
        _run(
            [
                "npm",
                "install",
                "--prefix",
                str(root),
                "--save-exact",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--include=optional",
                f"@restatedev/restate-server@{RESTATE_SERVER_VERSION}",
            ],
            timeout=900,
        )
        got = _server_version(server_bin)
        if got != RESTATE_SERVER_VERSION:
            raise AnchorError(
                f"npm installed no runnable {server_bin} (version {got!r}); the binary comes in the optional "
                f"dependency {_platform_pkg()}: was it skipped (e.g. npm config omit=optional)?"
            )
    pyv = _python_versions(python)
    if pyv is None or pyv.get("restate-sdk") != RESTATE_SDK_VERSION or "hypercorn" not in pyv:
        venv = root / "venv"
        log(f"anchor: venv {venv} with restate-sdk=={RESTATE_SDK_VERSION} hypercorn=={HYPERCORN_VERSION} ...")
        if not python.exists():
            _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                f"restate-sdk=={RESTATE_SDK_VERSION}",
                f"hypercorn=={HYPERCORN_VERSION}",
            ],
            timeout=900,
        )
    anchor = find(root)
    if anchor is None:
        raise AnchorError(f"installed into {root} but the anchor is still not usable (see the output above)")
    return anchor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report whether the anchor is installed")
    p.add_argument("--dir", default=str(ANCHOR_DIR), help="scratch folder (default bench/.anchor)")
    args = p.parse_args(argv)
    root = Path(args.dir)
    try:
        anchor = find(root) if args.check else install(root)
    except AnchorError as exc:
        print(f"anchor NOT installed: {exc}", file=sys.stderr)
        return 1
    if anchor is None:
        print(f"anchor not installed in {root} (run: python bench/anchor.py)")
        return 1
    print(json.dumps(anchor.describe(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
