"""The public API is small and pinned: restate-sdk's names, so ``import unbroken as restate`` works."""

from __future__ import annotations

import unbroken

EXPECTED = {
    "App",
    "BytesSerde",
    "Context",
    "DefaultSerde",
    "DurablePromise",
    "HarnessEnvironment",
    "HttpError",
    "InvocationRetryPolicy",
    "JournalValueCodec",
    "JournalValueCodecProvider",
    "JsonSerde",
    "NonDeterminismError",
    "ObjectContext",
    "ObjectSharedContext",
    "PydanticJsonSerde",
    "Request",
    "RestateClient",
    "RestateClientSendHandle",
    "RestateDurableCallFuture",
    "RestateDurableFuture",
    "RestateDurableSleepFuture",
    "RestateLoggingFilter",
    "RetryableError",
    "RunOptions",
    "ScopedContext",
    "SdkInternalBaseException",
    "SendHandle",
    "Serde",
    "Service",
    "TerminalError",
    "VirtualObject",
    "Workflow",
    "WorkflowContext",
    "WorkflowSharedContext",
    "app",
    "as_completed",
    "create_client",
    "create_test_harness",
    "gather",
    "getLogger",
    "is_internal_exception",
    "logging",
    "select",
    "test_harness",
    "wait_completed",
}


def test_exported_names_are_pinned() -> None:
    assert set(unbroken.__all__) == EXPECTED
    for name in unbroken.__all__:
        assert hasattr(unbroken, name), name


def test_restate_module_paths_exist() -> None:
    from unbroken.exceptions import TerminalError
    from unbroken.serde import DefaultSerde, JsonSerde

    assert TerminalError is unbroken.TerminalError
    assert DefaultSerde is unbroken.DefaultSerde and JsonSerde is unbroken.JsonSerde


def test_terminal_error_signature_matches_restate_sdk() -> None:
    err = unbroken.TerminalError("nope", status_code=418)
    assert (err.message, err.status_code, str(err)) == ("nope", 418, "nope")
    assert unbroken.TerminalError("x").status_code == 500


def test_restate_module_paths_users_import_from() -> None:
    from unbroken.client import create_client
    from unbroken.context import ScopedContext, SendHandle
    from unbroken.logging import RestateLoggingFilter, getLogger
    from unbroken.object import VirtualObject
    from unbroken.retry_policy import InvocationRetryPolicy

    assert SendHandle is unbroken.SendHandle and ScopedContext is unbroken.ScopedContext
    assert VirtualObject is unbroken.VirtualObject and InvocationRetryPolicy is unbroken.InvocationRetryPolicy
    assert getLogger is unbroken.getLogger and RestateLoggingFilter is unbroken.RestateLoggingFilter
    assert create_client is unbroken.create_client


def test_journal_value_codec_is_refused_not_ignored() -> None:
    import pytest

    with pytest.raises(ValueError, match="journal_value_codec is not supported"):
        unbroken.app([], journal_value_codec=object())


def _imports_after(code: str, *args: str) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, *args, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_works_without_hypercorn() -> None:
    # sys.modules[name] = None makes "import name" fail as if it were not installed
    code = "import sys; sys.modules['hypercorn'] = None; import unbroken; print(unbroken.app([]) is not None)"
    assert _imports_after(code) == "True"


def test_import_brings_hypercorn_asyncio_like_restate_sdk_but_not_for_the_cli() -> None:
    import pytest

    pytest.importorskip("hypercorn")
    assert _imports_after("import sys, unbroken; print('hypercorn.asyncio' in sys.modules)") == "True"
    code = "import sys; sys.argv = ['/venv/bin/unbroken']; import unbroken; print('hypercorn' in sys.modules)"
    assert _imports_after(code) == "False"


TESTING_EXPECTED = {
    "Divergence",
    "EngineCrashed",
    "ExportedInvocation",
    "RequestRefused",
    "TestClient",
    "TestEngine",
    "check_journal",
    "crash_at_every_journal_index",
}
PYTEST_FIXTURES = {
    "unbroken_app",
    "unbroken_engine_options",
    "unbroken_engine",
    "unbroken_client",
    "unbroken_harness",
}


def test_testing_kit_names_are_pinned() -> None:
    import unbroken.testing

    assert set(unbroken.testing.__all__) == TESTING_EXPECTED
    for name in unbroken.testing.__all__:
        assert getattr(unbroken.testing, name) is not None, name


def test_pytest_plugin_is_registered_with_its_fixtures() -> None:
    from importlib.metadata import entry_points

    from unbroken.testing import pytest_plugin

    (plugin,) = [e for e in entry_points(group="pytest11") if e.name == "unbroken"]
    assert plugin.value == "unbroken.testing.pytest_plugin"
    assert PYTEST_FIXTURES <= set(vars(pytest_plugin))


def test_harness_names_and_parameters_are_restate_sdks() -> None:
    """Read from restate-sdk 1.2.0's source: importing its harness needs testcontainers (Docker's)."""
    import ast
    import importlib.util
    import inspect
    from pathlib import Path

    spec = importlib.util.find_spec("restate.harness")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    theirs = {
        node.name: [a.arg for a in node.args.args]
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    for ours in (unbroken.test_harness, unbroken.create_test_harness):
        assert list(inspect.signature(ours).parameters) == theirs[ours.__name__]
    assert list(unbroken.HarnessEnvironment.__dataclass_fields__) == [
        "ingress_url",
        "admin_api_url",
        "client",
    ]
