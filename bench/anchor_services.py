"""bench/services.py served by the official restate-sdk, for the Restate anchor of bench/compare.

services.py is written with the restate-sdk API behind ``import unbroken as restate``; this shim runs the
same source with that one line replaced by ``import restate`` (restate-sdk 1.2.0, installed only in the
scratch venv ``bench/.anchor/venv`` by ``bench/anchor.py``). Serve it with hypercorn:
``bench/.anchor/venv/bin/hypercorn --config <cfg.toml> anchor_services:app`` from ``bench/``.
"""

from pathlib import Path

_SOURCE = Path(__file__).resolve().with_name("services.py")
_UNBROKEN_IMPORT = "import unbroken as restate\n"


def _load() -> dict[str, object]:
    text = _SOURCE.read_text()
    if _UNBROKEN_IMPORT not in text:
        raise RuntimeError(f"{_SOURCE} no longer contains {_UNBROKEN_IMPORT.strip()!r}; update {__file__}")
    namespace: dict[str, object] = {"__name__": "bench_services", "__file__": str(_SOURCE)}
    code = compile(text.replace(_UNBROKEN_IMPORT, "import restate\n", 1), str(_SOURCE), "exec")
    exec(code, namespace)  # noqa: S102 - our own source file, only the SDK import differs
    return namespace


app = _load()["app"]
