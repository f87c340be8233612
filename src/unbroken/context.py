"""``unbroken.context``: the same module path as ``restate.context``."""

from unbroken.sdk.context import (
    AttemptFinishedEvent,
    Context,
    DurablePromise,
    KeyValueStore,
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

__all__ = [
    "AttemptFinishedEvent",
    "Context",
    "DurablePromise",
    "KeyValueStore",
    "ObjectContext",
    "ObjectSharedContext",
    "Request",
    "RestateDurableCallFuture",
    "RestateDurableFuture",
    "RestateDurableSleepFuture",
    "RunOptions",
    "ScopedContext",
    "SendHandle",
    "WorkflowContext",
    "WorkflowSharedContext",
]
