"""Unbroken: durable execution for Python, with restate-sdk's API (``import unbroken as restate``)."""

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from unbroken.testing import harness as _harness

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


def test_harness(
    app: App,
    follow_logs: bool = False,
    restate_image: str = "docker.io/restatedev/restate:latest",
    always_replay: bool = False,
    disable_retries: bool = False,
) -> "_harness.RestateTestHarness":
    """restate-sdk's test harness without Docker: the engine in a thread of this process, real HTTP on
    free ports, virtual time (``unbroken.testing.harness``). ``with restate.test_harness(app) as harness:
    harness.ingress_client().post("/greeter/greet", json="Alice")``."""
    from unbroken.testing.harness import test_harness as make

    return make(app, follow_logs, restate_image, always_replay, disable_retries)


test_harness.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, whatever its name


def create_test_harness(
    app: App,
    follow_logs: bool = False,
    restate_image: str = "docker.io/restatedev/restate:latest",
    always_replay: bool = False,
    disable_retries: bool = False,
    journal_value_codec: JournalValueCodec | None = None,
) -> AbstractAsyncContextManager[HarnessEnvironment]:
    """``async with restate.create_test_harness(app) as env: await env.client.service_call(greet, arg="Ada")``
    (restate-sdk's; ``env.ingress_url``, ``env.admin_api_url`` too)."""
    from unbroken.testing.harness import create_test_harness as make

    return make(app, follow_logs, restate_image, always_replay, disable_retries, journal_value_codec)


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
    "create_test_harness",
    "gather",
    "getLogger",
    "is_internal_exception",
    "logging",
    "select",
    "test_harness",
    "wait_completed",
]
