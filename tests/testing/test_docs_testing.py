"""docs/testing.md's full pytest example runs as printed, in a pytest of its own (as a user's project would
run it: examples/trial.py next to it, the plugin from the installed package)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"


def _block(first_line: str) -> str:
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"no python block starting with {first_line!r} in {DOC}")


def test_the_full_example_passes(tmp_path: Path) -> None:
    (tmp_path / "test_trial.py").write_text(_block("# test_trial.py"))
    shutil.copy(ROOT / "examples" / "trial.py", tmp_path / "trial.py")
    run = subprocess.run(
        [
            sys.executable,
            *(
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:schemathesis",
                "-p",
                "no:hypothesispytest",
                "-W",
                "error",
            ),
            *("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"),
            "test_trial.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout, run.stdout


def test_readme_links_the_page() -> None:
    assert "(docs/testing.md)" in (ROOT / "README.md").read_text()


async def test_the_readme_snippet_runs() -> None:
    """README "Testing your handlers": its snippet, with the imports it leaves out."""
    import importlib.util
    from datetime import timedelta

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Testing your handlers") :]
    (code,) = re.findall(r"```python\n(.*?)```", section[: section.index("\n## ", 3)], re.S)
    spec = importlib.util.spec_from_file_location("readme_trial", ROOT / "examples" / "trial.py")
    assert spec is not None and spec.loader is not None
    trial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trial)
    namespace: dict[str, object] = {"trial": trial, "timedelta": timedelta}
    exec(compile(code, "README.md", "exec"), namespace)
    await namespace["test_trial_charges_once"]()  # type: ignore[operator]
    assert trial.CHARGED == ["ada@example.com"]
