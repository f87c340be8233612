"""Unbroken: durable execution for Python, with restate-sdk's API (``import unbroken as restate``)."""

from unbroken.sdk.app import App, app
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
from unbroken.sdk.serde import BytesSerde, DefaultSerde, JsonSerde, PydanticJsonSerde, Serde
from unbroken.sdk.service import InvocationRetryPolicy, Service, VirtualObject, Workflow

__version__ = "0.1.0"

__all__ = [
    "App",
    "BytesSerde",
    "Context",
    "DefaultSerde",
    "DurablePromise",
    "InvocationRetryPolicy",
    "JsonSerde",
    "NonDeterminismError",
    "ObjectContext",
    "ObjectSharedContext",
    "PydanticJsonSerde",
    "Request",
    "RestateDurableCallFuture",
    "RestateDurableFuture",
    "RestateDurableSleepFuture",
    "RetryableError",
    "RunOptions",
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
    "gather",
    "is_internal_exception",
    "select",
    "wait_completed",
]
