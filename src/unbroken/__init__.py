"""Unbroken: durable execution for Python, with restate-sdk's API (``import unbroken as restate``)."""

from unbroken import logging
from unbroken.entry_codec import JournalValueCodec, JournalValueCodecProvider
from unbroken.sdk import asgi as _asgi
from unbroken.sdk.app import App, app
from unbroken.sdk.client import create_client
from unbroken.sdk.client_types import HttpError, RestateClient, RestateClientSendHandle
from unbroken.sdk.combinators import as_completed, gather, select, wait_completed
from unbroken.sdk.context import (
    Context,
    DurablePromise,
    ObjectContext,
    ObjectSharedContext,
    Request,
    RestateDurableCallFuture,
    RestateDurableFuture,
    RestateDurableSleepFuture,
    RunOptions,
    ScopedContext,
    SendHandle,
    WorkflowContext,
    WorkflowSharedContext,
)
from unbroken.sdk.exceptions import (
    NonDeterminismError,
    RetryableError,
    SdkInternalBaseException,
    TerminalError,
    is_internal_exception,
)
from unbroken.sdk.replay_logging import RestateLoggingFilter, getLogger
from unbroken.sdk.serde import BytesSerde, DefaultSerde, JsonSerde, PydanticJsonSerde, Serde
from unbroken.sdk.service import InvocationRetryPolicy, Service, VirtualObject, Workflow
from unbroken.types import HarnessEnvironment

__version__ = "0.1.0"


def _import_hypercorn_asyncio() -> None:
    """Like ``import restate`` with restate-sdk's harness extra installed: ``hypercorn.asyncio`` is imported
    as a side effect, and apps whose ``__main__`` does ``import hypercorn; hypercorn.asyncio.serve(app, conf)``
    rely on it. It costs ~0.2 s, so the ``unbroken`` command (which never uses hypercorn) skips it, and
    without hypercorn installed nothing happens."""
    import os
    import sys

    if os.path.basename(sys.argv[0] if sys.argv else "") == "unbroken":
        return  # the console script
    argv = getattr(sys, "orig_argv", [])
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1].startswith("unbroken."):
        return  # python -m unbroken.cli.main
    try:
        import hypercorn.asyncio  # noqa: F401
    except ImportError:
        pass


_import_hypercorn_asyncio()


def _embedded_node(app: App) -> _asgi.AsgiApp:
    """An App served over ASGI runs a whole node; imported on first use: ``import unbroken`` must not pay
    for the engine."""
    from unbroken.embedded import EmbeddedNode

    return EmbeddedNode(app)


_asgi.install_node_factory(_embedded_node)

__all__ = [
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
    "gather",
    "getLogger",
    "is_internal_exception",
    "logging",
    "select",
    "wait_completed",
]
