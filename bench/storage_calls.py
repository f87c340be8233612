"""Storage calls per record type: ``python bench/storage_calls.py``.

Applies one record of each common type to the memory store through a wrapper that counts every call the
state machine makes on the transaction, and prints a table (reads and writes per table). The figure the
identity map in ``core/state_machine/step.py`` is judged by: on a networked backend each call is a round trip.
Run it against another tree with ``PYTHONPATH=<tree>/src python bench/storage_calls.py``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.ids import InvocationId
from unbroken.core.schema import HandlerKind, HandlerSchema, Schemas, ServiceKind, ServiceSchema, Target
from unbroken.core.state_machine import apply
from unbroken.storage.memory import MemoryStore

NOW_MS = 1_800_000_000_000
SCHEMAS = Schemas(
    {
        "Svc": ServiceSchema("Svc", ServiceKind.SERVICE, {"h": HandlerSchema("h", None)}),
        "Obj": ServiceSchema(
            "Obj", ServiceKind.VIRTUAL_OBJECT, {"ex": HandlerSchema("ex", HandlerKind.EXCLUSIVE)}
        ),
    }
)
# Calls that read (the rest write).
READS = {
    "get_invocation",
    "journal",
    "state_all",
    "lock_holder",
    "get_timer",
    "get_promise",
    "expired_invocations",
    "has_signal",
    "inbox_pop",
}


class Counting:
    """Forwards every attribute of a transaction, counting the method calls."""

    def __init__(self, txn: Any, counts: Counter[str]) -> None:
        self._txn = txn
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._txn, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._counts[name] += 1
            return attr(*args, **kwargs)

        return counted


class Run:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.n = 0

    def new_id(self) -> str:
        self.n += 1
        return str(InvocationId.new(7, self.n.to_bytes(10, "big"), NOW_MS))

    def apply(self, record: r.Record) -> Counter[str]:
        counts: Counter[str] = Counter()
        with self.store.transaction() as txn:
            apply(Counting(txn, counts), record, NOW_MS, SCHEMAS)  # type: ignore[arg-type]
        return counts


def scenario() -> list[tuple[str, Counter[str]]]:
    run = Run()
    out: list[tuple[str, Counter[str]]] = []

    def step(name: str, record: r.Record) -> None:
        out.append((name, run.apply(record)))

    caller = run.new_id()
    step("Invoke (new, service)", r.Invoke(caller, Target("Svc", "h"), b"1", (), None, 0, 1, "result", 7))
    step("ProposeRunCompletion", r.ProposeRunCompletion(caller, 1, 1, j.Result(value=b"x")))
    step("Command Call", r.JournalCommand(caller, 1, j.CallCommand("Svc", "h", b"2", [], None, None, 2, 3)))
    child = _child_of(run, caller)
    step(
        "Command Output (callee, answers caller)",
        r.JournalCommand(child, 1, j.OutputCommand(j.Result(value=b"4"))),
    )
    step("Command Sleep", r.JournalCommand(caller, 1, j.SleepCommand(NOW_MS + 1000, 4)))
    timer_id = max(run.store.timers(), key=lambda t: t.timer_id).timer_id
    step("TimerFired (sleep)", r.TimerFired(timer_id))
    step("ResolveSignal", r.ResolveSignal(caller, 17, j.Result(value=b"s"), 0))
    step("Command Output (top level)", r.JournalCommand(caller, 1, j.OutputCommand(j.Result(value=b"5"))))
    obj = run.new_id()
    step("Invoke (new, keyed)", r.Invoke(obj, Target("Obj", "ex", "k"), b"1", (), None, 0, 2, "result", 7))
    step("Command SetState", r.JournalCommand(obj, 1, j.SetStateCommand("n", b"1")))
    return out


def _child_of(run: Run, caller: str) -> str:
    with run.store.transaction() as txn:
        inv = txn.get_invocation(caller)
    assert inv is not None and inv.children
    return str(inv.children[-1])


def main() -> None:
    rows = scenario()
    print(
        "| record | invocation reads | invocation writes | journal reads | other reads | other writes | total |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, c in rows:
        inv_r, inv_w, jr = c["get_invocation"], c["put_invocation"], c["journal"]
        other_r = sum(v for k, v in c.items() if k in READS) - inv_r - jr
        other_w = sum(v for k, v in c.items() if k not in READS) - inv_w
        print(f"| {name} | {inv_r} | {inv_w} | {jr} | {other_r} | {other_w} | {sum(c.values())} |")


if __name__ == "__main__":
    main()
