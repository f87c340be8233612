"""The public API is small and pinned: restate-sdk's names, so ``import unbroken as restate`` works."""

from __future__ import annotations

import unbroken

EXPECTED = {
    "App", "BytesSerde", "Context", "DefaultSerde", "DurablePromise", "InvocationRetryPolicy", "JsonSerde",
    "NonDeterminismError", "ObjectContext", "ObjectSharedContext", "PydanticJsonSerde", "Request",
    "RestateDurableCallFuture", "RestateDurableFuture", "RestateDurableSleepFuture", "RetryableError",
    "RunOptions", "SdkInternalBaseException", "SendHandle", "Serde", "Service", "TerminalError",
    "VirtualObject", "Workflow", "WorkflowContext", "WorkflowSharedContext", "app", "as_completed",
    "gather", "is_internal_exception", "select", "wait_completed",
}  # fmt: skip


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
