"""Services of bench/scale.py: the benchmark's Bench and Counter (bench/services.py, unchanged) plus ScaleWf.

``unbroken serve bench/scale_services.py`` puts bench/ on sys.path, so ``services`` is bench/services.py: W2
measured by the scale figures is the very handler bench/run.py measures. Written with the restate-sdk 1.2
API, like services.py.
"""

from datetime import timedelta
from typing import Any

from services import bench, counter  # bench/services.py (the loader puts its directory on sys.path)

import unbroken as restate

# The default inactivity timeout (60 s, as in Restate) keeps a waiting handler in memory for a minute before
# it suspends; one second makes "in flight" mean "suspended" (journal in the store, nothing in memory) soon
# after each start, which is the state these figures are about.
INACTIVITY = timedelta(seconds=1)
scale_wf = restate.Workflow("ScaleWf", inactivity_timeout=INACTIVITY)


@scale_wf.main()
async def run(ctx: restate.WorkflowContext, req: Any) -> str:
    """Suspend until ``release`` resolves the promise: an in-flight workflow costs only what is stored."""
    value: str = await ctx.promise("go", type_hint=str).value()
    return value


@scale_wf.handler()
async def release(ctx: restate.WorkflowSharedContext, value: str) -> str:
    await ctx.promise("go", type_hint=str).resolve(value)
    return "released"


# Figure 4 (``--only sleepers``): a million invocations suspended on one long durable timer each. One week is
# past any run, so none fires while it is measured; the same inactivity timeout makes each one suspend (its
# coroutine leaves memory, the timer stays in the store) a second after it starts.
SLEEP = timedelta(days=7)
scale_sleep = restate.Service("ScaleSleep", inactivity_timeout=INACTIVITY)


@scale_sleep.handler()
async def sleep(ctx: restate.Context, req: Any) -> None:
    await ctx.sleep(SLEEP)


app = restate.app([bench, counter, scale_wf, scale_sleep])
