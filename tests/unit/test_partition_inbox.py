"""Cross-partition effects through the partition inbox, in the pure state machine.

Two memory-store views of the same rows (``MemoryStore.peer``) each lead one of two partitions, as two
nodes would. An effect of an invocation on one whose partition the other view leads becomes a record in
that partition's inbox (the view's write to it would be a broken invariant), and applying the inbox there
gives the same rows as one node leading both ("direct") applying the same records.
"""

from __future__ import annotations

from typing import Any

import pytest

from unbroken.core import actions as a
from unbroken.core import journal as j
from unbroken.core import records as r
from unbroken.core.ids import InvocationId, awakeable_id, child_invocation_id, partition_key_for_key
from unbroken.core.invocation import Status
from unbroken.core.schema import HandlerKind, HandlerSchema, Schemas, ServiceKind, ServiceSchema, Target
from unbroken.core.state_machine import apply
from unbroken.core.storage import TimerKind
from unbroken.storage.codec import decode_invocation
from unbroken.storage.memory import MemoryStore

NOW = 1_700_000_000_000
SCHEMAS = Schemas(
    {
        "Svc": ServiceSchema("Svc", ServiceKind.SERVICE, {"h": HandlerSchema("h", None)}),
        "Obj": ServiceSchema(
            "Obj",
            ServiceKind.VIRTUAL_OBJECT,
            {"ex": HandlerSchema("ex", HandlerKind.EXCLUSIVE), "sh": HandlerSchema("sh", HandlerKind.SHARED)},
        ),
    }
)


def _key_in(part: int) -> str:
    """A key of an object whose partition (of two) is ``part``."""
    n = 0
    while (partition_key_for_key(f"k{n}") * 2) >> 64 != part:
        n += 1
    return f"k{n}"


KEY_B = _key_in(1)  # an object partition 1 holds
KEY_A = _key_in(0)


class Cluster:
    """``split``: two views, A leads partition 0, B partition 1; else one store leading both."""

    def __init__(self, split: bool) -> None:
        if split:
            self.a = MemoryStore(partitions=2, led={0})
            self.views = [self.a, self.a.peer({1})]
        else:
            self.a = MemoryStore()
            self.views = [self.a]
        self.sent = 0

    def view_of(self, invocation_id: str) -> MemoryStore:
        return next(v for v in self.views if v.leads_id(invocation_id))

    def apply(self, record: r.Record, invocation_id: str) -> list[a.Action]:
        """Apply on the view leading ``invocation_id``, then deliver every inbox until none holds a record."""
        with self.view_of(invocation_id).transaction() as txn:
            actions = apply(txn, record, NOW, SCHEMAS)
        return actions + self.pump()

    def pump(self) -> list[a.Action]:
        actions: list[a.Action] = []
        moved = True
        while moved:
            moved = False
            for view in self.views:
                with view.transaction() as txn:
                    for record in txn.take_inbox(100):
                        self.sent += 1
                        moved = True
                        actions += apply(txn, record, NOW, SCHEMAS)
        return actions

    def inv(self, invocation_id: str) -> Any:
        data = self.a.invocations.get(invocation_id)
        return None if data is None else decode_invocation(data, invocation_id)

    def journal(self, invocation_id: str) -> list[j.Entry]:
        with self.view_of(invocation_id).transaction() as txn:
            return txn.journal(invocation_id)

    def rows(self) -> tuple[dict[str, Any], dict[str, list[bytes]], Any, Any, list[Any]]:
        """Every row that matters, to compare the split run with the direct one (timer ids aside)."""
        invs = {i: decode_invocation(b, i) for i, b in self.a.invocations.items()}
        timers = sorted((t.fire_at_ms, t.kind, t.invocation_id) for t in self.a.timer_rows.values())
        return invs, dict(self.a.journals), dict(self.a.locks), dict(self.a.inboxes), timers


def _caller(c: Cluster, part: int = 0, n: int = 1) -> str:
    """A running invocation of Svc/h whose partition is ``part``."""
    inv_id = str(InvocationId.new((2**63) * part + n, n.to_bytes(10, "big"), NOW))
    c.apply(r.Invoke(inv_id, Target("Svc", "h"), b"in"), inv_id)
    return inv_id


def _command(c: Cluster, inv_id: str, command: j.Command, **kw: Any) -> list[a.Action]:
    attempt = c.inv(inv_id).attempts
    return c.apply(r.JournalCommand(inv_id, attempt, command, **kw), inv_id)


def _call(key: str, slot: int = 1, **kw: Any) -> j.CallCommand:
    return j.CallCommand("Obj", "ex", b"arg", [], key, None, slot, slot + 1, **kw)


def _callee(caller: str, key: str, slot: int = 1) -> str:
    return child_invocation_id(caller, Target("Obj", "ex", key), HandlerKind.EXCLUSIVE, None, slot)


def _both(scenario: Any) -> tuple[Cluster, Cluster]:
    direct, split = Cluster(False), Cluster(True)
    scenario(direct)
    scenario(split)
    assert split.sent > 0 and direct.sent == 0  # the split run went through the inbox
    assert split.rows() == direct.rows()
    assert not split.a.partition_inbox  # everything sent was applied
    return direct, split


def test_a_call_and_its_result_cross_partitions_and_end_as_on_one_node() -> None:
    def scenario(c: Cluster) -> None:
        caller = _caller(c)
        _command(c, caller, _call(KEY_B))
        callee = _callee(caller, KEY_B)
        assert c.inv(callee).status is Status.RUNNING
        assert c.inv(caller).children == [callee]
        _command(c, callee, j.OutputCommand(j.Result(value=b"done")))

    direct, split = _both(scenario)
    caller = next(i for i, inv in split.rows()[0].items() if inv.target.service == "Svc")
    last = split.journal(caller)[-1]
    assert last == j.Notification("call", 2, 0, j.Result(value=b"done"))


def test_the_write_to_a_partition_led_elsewhere_is_refused_so_no_route_is_missed() -> None:
    c = Cluster(True)
    caller = _caller(c)
    callee = _callee(caller, KEY_B)
    with pytest.raises(Exception, match="another node leads"):
        with c.a.transaction() as txn:
            txn.append_journal(callee, 0, j.InputCommand([], b""), NOW)


def test_a_delayed_send_arms_its_timer_on_the_callee_partition() -> None:
    def scenario(c: Cluster) -> None:
        caller = _caller(c)
        send = j.OneWayCallCommand("Obj", "ex", b"x", NOW + 5000, [], KEY_B, None, 1)
        _command(c, caller, send)
        callee = child_invocation_id(caller, Target("Obj", "ex", KEY_B), HandlerKind.EXCLUSIVE, None, 1)
        assert c.inv(callee).status is Status.SCHEDULED
        (timer,) = c.a.timer_rows.values()
        assert timer.kind is TimerKind.INVOKE and timer.invocation_id == callee
        assert c.view_of(callee).timers_after(None, 10) == [timer]
        c.apply(r.TimerFired(timer.timer_id), callee)
        assert c.inv(callee).status is Status.RUNNING

    _both(scenario)


def test_an_awakeable_resolved_by_a_handler_of_another_partition() -> None:
    def scenario(c: Cluster) -> None:
        waiter = _caller(c, part=1, n=2)
        resolver = _caller(c, part=0, n=3)
        awakeable = awakeable_id(InvocationId.parse(waiter), j.FIRST_AWAKEABLE_SIGNAL)
        c.apply(r.AttemptSuspended(waiter, 1, (), (j.FIRST_AWAKEABLE_SIGNAL,), awakeables=1), waiter)
        assert c.inv(waiter).status is Status.SUSPENDED
        _command(c, resolver, j.CompleteAwakeableCommand(awakeable, j.Result(value=b"yes")))
        assert c.inv(waiter).status is Status.RUNNING
        assert c.journal(waiter)[-1] == j.Notification(
            "signal", 0, j.FIRST_AWAKEABLE_SIGNAL, j.Result(b"yes")
        )

    _both(scenario)


def test_a_cancel_reaches_calls_in_another_partition_and_their_results_come_back() -> None:
    def scenario(c: Cluster) -> None:
        root = _caller(c)
        _command(c, root, _call(KEY_B))
        child = _callee(root, KEY_B)
        _command(c, child, _call(KEY_A, slot=5))  # and back: a grandchild in the root's partition
        grandchild = _callee(child, KEY_A, slot=5)
        c.apply(r.CancelInvocation(root), root)
        cancel = j.Notification("signal", 0, j.CANCEL_SIGNAL, j.Result())
        for inv_id in (root, child, grandchild):
            assert cancel in c.journal(inv_id), inv_id
        _command(c, grandchild, j.OutputCommand(j.Result(failure=j.Failure(409, "cancelled"))))
        _command(c, child, j.OutputCommand(j.Result(failure=j.Failure(409, "cancelled"))))
        assert c.journal(root)[-1] == j.Notification(
            "call", 2, 0, j.Result(failure=j.Failure(409, "cancelled"))
        )

    _both(scenario)


def test_a_kill_reaches_calls_in_another_partition() -> None:
    def scenario(c: Cluster) -> None:
        root = _caller(c)
        _command(c, root, _call(KEY_B))
        c.apply(r.KillInvocation(root), root)
        child = _callee(root, KEY_B)
        assert c.inv(child).status is Status.COMPLETED
        assert c.inv(child).result == j.Result(failure=j.Failure(409, "killed"))

    _both(scenario)


def test_attach_and_output_of_an_invocation_in_another_partition() -> None:
    def scenario(c: Cluster) -> None:
        caller = _caller(c)
        _command(c, caller, _call(KEY_B))
        callee = _callee(caller, KEY_B)
        other = _caller(c, part=0, n=9)
        _command(c, other, j.GetInvocationOutputCommand(callee, 1))
        _command(c, other, j.AttachInvocationCommand(callee, 2))
        _command(c, other, j.AttachInvocationCommand("inv_missing", 3))
        _command(c, callee, j.OutputCommand(j.Result(value=b"v")))
        journal = c.journal(other)
        assert j.Notification("output", 1, 0, j.Result()) in journal
        assert j.Notification("call", 2, 0, j.Result(value=b"v")) in journal
        missing = [e for e in journal if isinstance(e, j.Notification) and e.completion_id == 3]
        assert missing[0].result.failure is not None and missing[0].result.failure.code == 404

    _both(scenario)


def test_a_call_queued_behind_an_object_lock_in_another_partition() -> None:
    def scenario(c: Cluster) -> None:
        first, second = _caller(c, n=1), _caller(c, n=2)
        _command(c, first, _call(KEY_B))
        _command(c, second, _call(KEY_B))
        one, two = _callee(first, KEY_B), _callee(second, KEY_B)
        assert c.inv(one).status is Status.RUNNING and c.inv(two).status is Status.PENDING
        _command(c, one, j.OutputCommand(j.Result(value=b"1")))
        assert c.inv(two).status is Status.RUNNING

    _both(scenario)


def test_the_same_message_sent_twice_from_one_partition_is_one_row() -> None:
    store = MemoryStore(partitions=2, led={0})
    record = r.CancelInvocation("inv_x")
    with store.transaction() as txn:
        txn.send(2**63, record, 0)
        txn.send(2**63, record, 0)
    peer = store.peer({1})
    with peer.transaction() as txn:
        assert txn.take_inbox(10) == [record]
