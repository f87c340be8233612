from __future__ import annotations

import os
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from unbroken.cli.app_loader import AppLoadError, load_app
from unbroken.cli.main import cli
from unbroken.config import Config

# A stand-in for unbroken.sdk.app.App, recognised structurally by the loader.
FAKE_APP_CLASS = """
class App:
    def __init__(self, name):
        self.name = name
        self.services = []
"""


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Restore sys.path, forget modules imported from tmp_path; clear config env vars."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in list(os.environ):
        if name.startswith(("UNBROKEN_", "RESTATE_")):
            monkeypatch.delenv(name)
    yield
    root = str(tmp_path)
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(root):
            del sys.modules[name]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# ----------------------------------------------------------------------------- load_app


def test_load_from_file_path_with_sibling_import(tmp_path: Path) -> None:
    write(tmp_path / "proj" / "helpers_for_greeter.py", FAKE_APP_CLASS + "GREETING = 'hi'\n")
    path = write(
        tmp_path / "proj" / "greeter_app.py",
        """
        from helpers_for_greeter import App, GREETING
        other = 42
        greeter = App(GREETING)
        """,
    )
    app = load_app(str(path))
    assert type(app).__name__ == "App"
    assert app.name == "hi"  # type: ignore[attr-defined]


def test_file_prefers_attribute_named_app(tmp_path: Path) -> None:
    path = write(tmp_path / "two_apps.py", FAKE_APP_CLASS + "first = App('first')\napp = App('named')\n")
    assert load_app(str(path)).name == "named"  # type: ignore[attr-defined]


def test_load_from_relative_file_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "examples" / "rel_greeter.py", FAKE_APP_CLASS + "app = App('rel')\n")
    monkeypatch.chdir(tmp_path)
    assert load_app("examples/rel_greeter.py").name == "rel"  # type: ignore[attr-defined]


def test_load_file_with_attr(tmp_path: Path) -> None:
    path = write(tmp_path / "file_attr.py", FAKE_APP_CLASS + "app = App('a')\nother = App('b')\n")
    assert load_app(f"{path}:other").name == "b"  # type: ignore[attr-defined]


def test_load_module_attr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "loaderpkg" / "__init__.py", "")
    write(
        tmp_path / "loaderpkg" / "services.py",
        FAKE_APP_CLASS
        + """
class Holder:
    inner = App('dotted')

my_app = App('mine')
""",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_app("loaderpkg.services:my_app").name == "mine"  # type: ignore[attr-defined]
    assert load_app("loaderpkg.services:Holder.inner").name == "dotted"  # type: ignore[attr-defined]


def test_load_module_with_app_attribute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "loaderpkg2" / "__init__.py", "")
    write(tmp_path / "loaderpkg2" / "main.py", FAKE_APP_CLASS + "zzz = App('other')\napp = App('the-app')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_app("loaderpkg2.main").name == "the-app"  # type: ignore[attr-defined]


def test_load_module_finds_first_app_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "loader_first_app.py", FAKE_APP_CLASS + "x = 1\nsvc_app = App('found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_app("loader_first_app").name == "found"  # type: ignore[attr-defined]


def test_module_from_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "cwd_module_app.py", FAKE_APP_CLASS + "app = App('cwd')\n")
    monkeypatch.chdir(tmp_path)
    sys.path[:] = [p for p in sys.path if p not in ("", str(tmp_path))]
    assert load_app("cwd_module_app").name == "cwd"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec_suffix", "fragment"),
    [
        ("does_not_exist.py", "file not found"),
        ("no_app.py", "no 'app' attribute"),
        ("no_app.py:missing", "attribute 'missing' not found"),
    ],
)
def test_load_errors(tmp_path: Path, spec_suffix: str, fragment: str) -> None:
    write(tmp_path / "no_app.py", "x = 1\n")
    with pytest.raises(AppLoadError, match=fragment):
        load_app(str(tmp_path / spec_suffix))


def test_missing_module() -> None:
    with pytest.raises(AppLoadError, match="module not found: no_such_pkg_xyz.mod"):
        load_app("no_such_pkg_xyz.mod")


def test_missing_dependency_inside_app_is_not_masked(tmp_path: Path) -> None:
    path = write(tmp_path / "needs_dep.py", "import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        load_app(str(path))


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def fake_serve(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Config]]:
    """Inject a fake ``unbroken.server`` module recording serve() calls."""
    calls: list[tuple[Any, Config]] = []
    module = types.ModuleType("unbroken.server")

    def serve(app: Any, config: Config, on_listening: Any = None) -> None:
        calls.append((app, config))
        if on_listening is not None:
            on_listening()  # the dev banner, printed once the ports are bound

    module.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "unbroken.server", module)
    return calls


def test_cli_serve_file(tmp_path: Path, fake_serve: list[tuple[Any, Config]]) -> None:
    path = write(tmp_path / "cli_greeter.py", FAKE_APP_CLASS + "app = App('greeter')\n")
    result = CliRunner().invoke(
        cli,
        [
            "serve",
            str(path),
            "--ingress-bind",
            "127.0.0.1:18080",
            "--admin-bind",
            "127.0.0.1:19070",
            "--data-dir",
            str(tmp_path / "data"),
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(fake_serve) == 1
    app, config = fake_serve[0]
    assert app.name == "greeter"
    assert config.ingress_bind == "127.0.0.1:18080"
    assert config.admin_bind == "127.0.0.1:19070"
    assert config.data_dir == str(tmp_path / "data")
    assert config.log_level == "debug"
    assert config.log_format == "json"
    assert config.dev is False


def test_cli_dev_module_attr_with_config_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_serve: list[tuple[Any, Config]]
) -> None:
    write(tmp_path / "cli_dev_mod.py", FAKE_APP_CLASS + "my = App('dev')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config_file = write(
        tmp_path / "unbroken.toml",
        '[ingress]\nbind-address = "127.0.0.1:1"\n[admin]\nbind-address = "127.0.0.1:2"\n',
    )
    result = CliRunner().invoke(
        cli,
        ["dev", "cli_dev_mod:my", "--config", str(config_file), "--admin-bind", "127.0.0.1:3"],
        env={"UNBROKEN_WORKER__INVOKER__INACTIVITY_TIMEOUT": "10s"},
    )
    assert result.exit_code == 0, result.output
    app, config = fake_serve[0]
    assert app.name == "dev"
    assert config.dev is True
    assert config.ingress_bind == "127.0.0.1:1"  # from file
    assert config.admin_bind == "127.0.0.1:3"  # flag beats file
    assert config.inactivity_timeout_ms == 10_000  # from env


def test_cli_missing_file(tmp_path: Path, fake_serve: list[tuple[Any, Config]]) -> None:
    missing = str(tmp_path / "nope.py")
    result = CliRunner().invoke(cli, ["serve", missing])
    assert result.exit_code == 2
    assert result.stderr == f"error: cannot load app {missing!r}: file not found: {missing}\n"
    assert result.stdout == ""
    assert fake_serve == []


def test_cli_module_without_app(tmp_path: Path, fake_serve: list[tuple[Any, Config]]) -> None:
    path = write(tmp_path / "cli_empty.py", "x = 1\n")
    result = CliRunner().invoke(cli, ["dev", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot load app {str(path)!r}: no 'app' attribute")
    assert result.stderr.count("\n") == 1
    assert fake_serve == []


def test_cli_bad_flag_value(tmp_path: Path, fake_serve: list[tuple[Any, Config]]) -> None:
    path = write(tmp_path / "cli_ok.py", FAKE_APP_CLASS + "app = App('x')\n")
    result = CliRunner().invoke(cli, ["serve", str(path), "--ingress-bind", "nope"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid configuration: --ingress-bind: expected a bind address")
    assert fake_serve == []


def test_cli_app_import_error_shows_traceback(tmp_path: Path, fake_serve: list[tuple[Any, Config]]) -> None:
    path = write(tmp_path / "cli_boom.py", "raise RuntimeError('boom at import')\n")
    result = CliRunner().invoke(cli, ["serve", str(path)])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().endswith(
        f"error: cannot load app {str(path)!r}: RuntimeError: boom at import"
    )
    assert fake_serve == []


def test_cli_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"unbroken {version('unbroken')}"


def test_cli_module_import_is_light() -> None:
    import subprocess

    code = (
        "import sys, unbroken.cli.main; "
        # the package itself exports the SDK (restate-sdk's names); the engine and servers load lazily
        "heavy = [m for m in sys.modules if m.startswith(('unbroken.runtime', "
        "'unbroken.storage', 'unbroken.ingress', 'unbroken.admin', 'uvicorn', 'httpx', 'pydantic'))]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
