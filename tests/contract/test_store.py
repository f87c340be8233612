"""The storage contract: what every backend (``tests/backends.py:BACKENDS``) must do, table by table.

Each test runs against each backend. Covered: reads, writes and scans of every table, that a transaction
reads its own writes, that nothing of a rolled-back transaction (or one whose block raised) remains, the
orderings the state machine relies on (journal by index, inbox FIFO, recovery oldest first, timer ids only
growing), for durable backends that everything committed, and nothing else, is there after a reopen, and
for stores several partitions share that transactions open at once are isolated from each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import BACKENDS, CONCURRENT, DURABLE, Opener, opener
from unbroken.core import journal as j
from unbroken.core.errors import TransactionConflict
from unbroken.core.invocation import Invocation, Sink, Status
from unbroken.core.schema import OnMaxAttempts, RetryOverride, ServiceKind, ServiceOverride, Target
from unbroken.core.storage import Promise, Store, Timer, TimerKind, Transaction

NOW = 1_700_000_000_000


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    yield from opener(request, tmp_path)


@pytest.fixture
def store(stores: Opener) -> Store:
    return stores()


@pytest.fixture(params=CONCURRENT, ids=lambda b: b.name)
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    yield from opener(request, tmp_path)


@pytest.fixture(params=DURABLE, ids=lambda b: b.name)
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    yield from opener(request, tmp_path)


def _inv(inv_id: str, status: Status = Status.SCHEDULED, key: str | None = None, **kw: object) -> Invocation:
    kind = ServiceKind.VIRTUAL_OBJECT if key is not None else ServiceKind.SERVICE
    return Invocation(
        id=inv_id,
        target=Target("Svc", "h", key),
        service_kind=kind,
        handler_kind=None,
        status=status,
        created_at_ms=NOW,
        modified_at_ms=NOW,
        random_seed=7,
        journal_length=1,
        **kw,  # type: ignore[arg-type]
    )


def _completed(inv_id: str, expires_at_ms: int, journal_expires_at_ms: int = 0) -> Invocation:
    return _inv(
        inv_id,
        Status.COMPLETED,
        result=j.Result(value=b"ok"),
        expires_at_ms=expires_at_ms,
        journal_expires_at_ms=journal_expires_at_ms,
    )


def _create(store: Store, inv: Invocation) -> None:
    with store.transaction() as txn:
        txn.append_journal(inv.id, 0, j.InputCommand([], b"in"), NOW)
        txn.put_invocation(inv)


def _signal(idx: int) -> j.Notification:
    return j.Notification("signal", 0, idx, j.Result(value=b"s"))


# ------------------------------------------------------------------------------------------ invocations
def test_invocation_rows_read_back_equal_update_and_delete(store: Store) -> None:
    with store.transaction() as txn:
        assert txn.get_invocation("inv_a") is None
    _create(store, _inv("inv_a", key="k1"))
    with store.transaction() as txn:
        inv = txn.get_invocation("inv_a")
        assert inv == _inv("inv_a", key="k1")
        assert inv is not None
        inv.status, inv.attempts = Status.RUNNING, 1
        txn.put_invocation(inv)
        assert txn.get_invocation("inv_a") == inv  # a transaction reads its own writes
    with store.transaction() as txn:
        assert txn.get_invocation("inv_a") == inv
        txn.delete_invocation("inv_a")
        assert txn.get_invocation("inv_a") is None
        assert txn.journal("inv_a") == []  # the journal goes with the row
    with store.transaction() as txn:
        assert txn.get_invocation("inv_a") is None


def test_rows_read_back_are_copies_not_the_stored_object(store: Store) -> None:
    inv = _inv("inv_a")
    _create(store, inv)
    inv.attempts = 99  # changing the written object changes nothing stored
    with store.transaction() as txn:
        read = txn.get_invocation("inv_a")
        assert read is not None and read.attempts == 0
        read.attempts = 5
        assert txn.get_invocation("inv_a") == _inv("inv_a")


def test_expired_invocations_scans_what_the_sweep_has_work_on(store: Store) -> None:
    _create(store, _completed("inv_old", expires_at_ms=NOW + 10))
    _create(store, _completed("inv_journal_due", expires_at_ms=NOW + 100, journal_expires_at_ms=NOW + 5))
    _create(store, _completed("inv_later", expires_at_ms=NOW + 1000))
    _create(store, _completed("inv_never", expires_at_ms=0))
    _create(store, _inv("inv_running", Status.RUNNING))
    with store.transaction() as txn:
        assert sorted(txn.expired_invocations(NOW + 10, 100)) == ["inv_journal_due", "inv_old"]
        assert txn.expired_invocations(NOW + 4, 100) == []
        assert len(txn.expired_invocations(NOW + 5000, 2)) == 2  # the limit bounds the scan
        assert sorted(txn.expired_invocations(NOW + 5000, 100)) == ["inv_journal_due", "inv_later", "inv_old"]


def test_running_invocations_are_listed_oldest_first_for_recovery(store: Store) -> None:
    for inv_id in ("inv_c", "inv_a", "inv_b", "inv_d"):
        _create(store, _inv(inv_id))
    with store.transaction() as txn:
        for inv_id in ("inv_b", "inv_c", "inv_d"):  # set running in another order than created
            inv = txn.get_invocation(inv_id)
            assert inv is not None
            inv.status, inv.attempts = Status.RUNNING, 1
            txn.put_invocation(inv)
    assert store.running_invocation_ids() == ["inv_c", "inv_b", "inv_d"]


# ----------------------------------------------------------------------------------------------- journal
def test_journal_reads_back_in_index_order_per_invocation(store: Store) -> None:
    entries: list[j.Entry] = [
        j.InputCommand([j.Header("h", "v")], b"in"),
        j.SleepCommand(NOW + 5, 1),
        j.Notification("sleep", 1, 0, j.Result()),
    ]
    with store.transaction() as txn:
        for i, entry in enumerate(entries):
            txn.append_journal("inv_a", i, entry, NOW + i)
        txn.append_journal("inv_b", 0, j.InputCommand([], b"other"), NOW)
        assert txn.journal("inv_a") == entries
    with store.transaction() as txn:
        assert txn.journal("inv_a") == entries
        assert txn.journal("inv_b") == [j.InputCommand([], b"other")]
        assert txn.journal("inv_unknown") == []
        txn.delete_journal("inv_a")
        assert txn.journal("inv_a") == [] and txn.journal("inv_b") == [j.InputCommand([], b"other")]


def test_signals_are_indexed_with_the_journal_and_go_with_it(store: Store) -> None:
    _create(store, _inv("inv_a"))
    with store.transaction() as txn:
        assert not txn.has_signal("inv_a", 17)
        txn.append_journal("inv_a", 1, _signal(17), NOW)
        txn.append_journal("inv_a", 2, j.Notification("call", 3, 0, j.Result()), NOW)
        assert txn.has_signal("inv_a", 17)  # read your writes
    with store.transaction() as txn:
        assert txn.has_signal("inv_a", 17)
        assert not txn.has_signal("inv_a", 3) and not txn.has_signal("inv_a", 18)
        assert not txn.has_signal("inv_unknown", 17)
        txn.delete_journal("inv_a")
        assert not txn.has_signal("inv_a", 17)
    _create(store, _inv("inv_b"))
    with store.transaction() as txn:
        txn.append_journal("inv_b", 1, _signal(4), NOW)
    with store.transaction() as txn:
        txn.delete_invocation("inv_b")
    with store.transaction() as txn:
        assert not txn.has_signal("inv_b", 4)


# ------------------------------------------------------------------------------------------------- state
def test_state_is_per_service_and_key(store: Store) -> None:
    with store.transaction() as txn:
        txn.state_set("Obj", "k1", "a", b"1")
        txn.state_set("Obj", "k1", "b", b"2")
        txn.state_set("Obj", "k2", "a", b"other key")
        txn.state_set("Other", "k1", "a", b"other service")
        txn.state_set("Obj", "k1", "a", b"1 again")  # overwrite
        assert txn.state_all("Obj", "k1") == {"a": b"1 again", "b": b"2"}
    with store.transaction() as txn:
        assert txn.state_all("Obj", "k1") == {"a": b"1 again", "b": b"2"}
        txn.state_clear("Obj", "k1", "a")
        txn.state_clear("Obj", "k1", "never set")
        assert txn.state_all("Obj", "k1") == {"b": b"2"}
        txn.state_clear_all("Obj", "k1")
        assert txn.state_all("Obj", "k1") == {}
        assert txn.state_all("Obj", "k2") == {"a": b"other key"}
        assert txn.state_all("Other", "k1") == {"a": b"other service"}
        assert txn.state_all("Obj", "unknown") == {}


def test_one_state_entry_and_the_names_are_read_alone(store: Store) -> None:
    """Lazy state reads one entry (or only the names) of a key, never the whole state."""
    with store.transaction() as txn:
        txn.state_set("Obj", "k1", "b", b"2")
        txn.state_set("Obj", "k1", "a", b"1")
        txn.state_set("Obj", "k2", "c", b"other key")
        txn.state_set("Other", "k1", "d", b"other service")
    with store.transaction() as txn:
        assert txn.state_get("Obj", "k1", "a") == b"1"
        assert txn.state_get("Obj", "k1", "c") is None
        assert txn.state_get("Obj", "unknown", "a") is None
        assert txn.state_keys("Obj", "k1") == ["a", "b"]
        assert txn.state_keys("Obj", "unknown") == []
        txn.state_clear("Obj", "k1", "a")
        assert txn.state_get("Obj", "k1", "a") is None and txn.state_keys("Obj", "k1") == ["b"]


# -------------------------------------------------------------------------------------- lock and inbox
def test_lock_holder_is_set_replaced_and_released_per_key(store: Store) -> None:
    with store.transaction() as txn:
        assert txn.lock_holder("Obj", "k") is None
        txn.set_lock_holder("Obj", "k", "inv_a")
        txn.set_lock_holder("Obj", "k2", "inv_b")
        assert txn.lock_holder("Obj", "k") == "inv_a"
    with store.transaction() as txn:
        assert txn.lock_holder("Obj", "k") == "inv_a"
        txn.set_lock_holder("Obj", "k", "inv_c")
        assert txn.lock_holder("Obj", "k") == "inv_c"
        txn.set_lock_holder("Obj", "k", None)
        assert txn.lock_holder("Obj", "k") is None
        assert txn.lock_holder("Obj", "k2") == "inv_b" and txn.lock_holder("Other", "k2") is None


def test_inbox_is_fifo_per_key_across_transactions(store: Store) -> None:
    with store.transaction() as txn:
        assert txn.inbox_pop("Obj", "k") is None
        for inv_id in ("inv_3", "inv_1", "inv_2"):
            txn.inbox_push("Obj", "k", inv_id, NOW)
        txn.inbox_push("Obj", "other", "inv_x", NOW)
    with store.transaction() as txn:
        txn.inbox_push("Obj", "k", "inv_4", NOW + 1)
        txn.inbox_remove("Obj", "k", "inv_1")  # cancelled while queued
        txn.inbox_remove("Obj", "k", "inv_never_queued")
        assert txn.inbox_pop("Obj", "k") == "inv_3"
    with store.transaction() as txn:
        assert [txn.inbox_pop("Obj", "k") for _ in range(3)] == ["inv_2", "inv_4", None]
        assert txn.inbox_pop("Obj", "other") == "inv_x"


# ------------------------------------------------------------------------------------------------ timers
def test_timers_are_stored_listed_and_deleted_with_ids_that_only_grow(store: Store) -> None:
    with store.transaction() as txn:
        first = txn.add_timer(NOW + 50, TimerKind.SLEEP, "inv_a", 3)
        second = txn.add_timer(NOW + 10, TimerKind.RETRY, "inv_b", 0)
        assert second > first
        assert txn.get_timer(first) == Timer(first, NOW + 50, TimerKind.SLEEP, "inv_a", 3)
    assert sorted(store.timers(), key=lambda t: t.timer_id) == [
        Timer(first, NOW + 50, TimerKind.SLEEP, "inv_a", 3),
        Timer(second, NOW + 10, TimerKind.RETRY, "inv_b", 0),
    ]
    with store.transaction() as txn:
        txn.delete_timer(second)
        txn.delete_timer(second)  # deleting twice is harmless (a timer fired twice)
        assert txn.get_timer(second) is None
        third = txn.add_timer(NOW, TimerKind.INVOKE, "inv_c", 0)
        assert third > second  # never reused
    assert sorted(t.timer_id for t in store.timers()) == [first, third]


def test_timer_windows_are_range_scans_in_fire_order_of_committed_timers(store: Store) -> None:
    with store.transaction() as txn:
        ids = {at: txn.add_timer(NOW + at, TimerKind.SLEEP, f"inv_{at}", 1) for at in (30, 10, 20, 10_000)}
        same_time = txn.add_timer(NOW + 10, TimerKind.RETRY, "inv_same", 0)  # ties go by id
    order = [ids[10], same_time, ids[20], ids[30], ids[10_000]]
    assert [t.timer_id for t in store.timers_after(None, 100)] == order
    first = store.timers_after(None, 2)
    assert [t.timer_id for t in first] == order[:2]
    last = (first[-1].fire_at_ms, first[-1].timer_id)
    assert [t.timer_id for t in store.timers_after(last, 2)] == order[2:4]
    assert store.timers_after((NOW + 10_000, ids[10_000]), 5) == []
    txn = store.begin()  # a timer of an open transaction is not in a window: it may yet roll back
    txn.add_timer(NOW, TimerKind.SLEEP, "inv_open", 1)
    assert [t.timer_id for t in store.timers_after(None, 100)] == order
    txn.rollback()
    assert [t.timer_id for t in store.timers_after(None, 100)] == order


# ---------------------------------------------------------------------------------------------- promises
def test_promises_are_per_workflow_and_cleared_together(store: Store) -> None:
    waiting = Promise(None, (Sink("inv_a", 2), Sink("inv_b", 5)))
    done = Promise(j.Result(failure=j.Failure(500, "no")))
    with store.transaction() as txn:
        assert txn.get_promise("Wf", "k", "p") is None
        txn.put_promise("Wf", "k", "p", waiting)
        txn.put_promise("Wf", "k", "q", done)
        txn.put_promise("Wf", "k2", "p", done)
        assert txn.get_promise("Wf", "k", "p") == waiting
    with store.transaction() as txn:
        assert txn.get_promise("Wf", "k", "p") == waiting and txn.get_promise("Wf", "k", "q") == done
        txn.put_promise("Wf", "k", "p", done)  # completed: replaces the waiters
        assert txn.get_promise("Wf", "k", "p") == done
        txn.clear_promises("Wf", "k")
        assert txn.get_promise("Wf", "k", "p") is None and txn.get_promise("Wf", "k", "q") is None
        assert txn.get_promise("Wf", "k2", "p") == done


OVERRIDE = ServiceOverride(
    journal_retention_ms=0, retry_policy=RetryOverride(on_max_attempts=OnMaxAttempts.KILL)
)


def test_service_overrides_are_per_service_replaced_whole_and_listed(store: Store) -> None:
    with store.transaction() as txn:
        assert txn.get_service_override("Svc") is None
        txn.put_service_override("Svc", ServiceOverride(public=False))
        txn.put_service_override("Svc", OVERRIDE)  # replaces: merging is the state machine's job
        txn.put_service_override("Other", ServiceOverride(inactivity_timeout_ms=500))
        assert txn.get_service_override("Svc") == OVERRIDE
    assert store.service_overrides() == {"Svc": OVERRIDE, "Other": ServiceOverride(inactivity_timeout_ms=500)}


# ---------------------------------------------------------------------------------------- transactions
def _touch_all(t: Transaction) -> int:
    """One write in each table, not committed: the caller commits or rolls back. Returns the timer id."""
    t.append_journal("inv_t", 0, j.InputCommand([], b"in"), NOW)
    t.put_invocation(_inv("inv_t"))
    t.append_journal("inv_base", 1, _signal(9), NOW)
    t.state_set("Obj", "k", "n", b"1")
    t.set_lock_holder("Obj", "k", "inv_t")
    t.inbox_push("Obj", "k", "inv_q", NOW)
    t.put_promise("Wf", "k", "p", Promise(j.Result()))
    t.put_service_override("Svc", OVERRIDE)
    return t.add_timer(NOW, TimerKind.SLEEP, "inv_t", 1)


def _assert_untouched(store: Store, timer_id: int) -> None:
    with store.transaction() as txn:
        assert txn.get_invocation("inv_t") is None and txn.journal("inv_t") == []
        assert txn.journal("inv_base") == [j.InputCommand([], b"in")]
        assert not txn.has_signal("inv_base", 9)
        assert txn.state_all("Obj", "k") == {}
        assert txn.lock_holder("Obj", "k") is None
        assert txn.inbox_pop("Obj", "k") is None
        assert txn.get_promise("Wf", "k", "p") is None
        assert txn.get_timer(timer_id) is None
        assert txn.get_service_override("Svc") is None
    assert store.timers() == [] and store.service_overrides() == {}


def _assert_all_there(store: Store, timer_id: int) -> None:
    with store.transaction() as txn:
        assert txn.get_invocation("inv_t") == _inv("inv_t")
        assert txn.journal("inv_t") == [j.InputCommand([], b"in")]
        assert txn.journal("inv_base") == [j.InputCommand([], b"in"), _signal(9)]
        assert txn.has_signal("inv_base", 9)
        assert txn.state_all("Obj", "k") == {"n": b"1"}
        assert txn.lock_holder("Obj", "k") == "inv_t"
        assert txn.get_promise("Wf", "k", "p") == Promise(j.Result())
        assert txn.get_timer(timer_id) == Timer(timer_id, NOW, TimerKind.SLEEP, "inv_t", 1)
        assert txn.get_service_override("Svc") == OVERRIDE
    assert store.service_overrides() == {"Svc": OVERRIDE}
    with store.transaction() as txn:  # last: popping changes the inbox
        assert txn.inbox_pop("Obj", "k") == "inv_q"


def test_rollback_leaves_no_trace_in_any_table_and_the_store_goes_on(store: Store) -> None:
    _create(store, _inv("inv_base"))
    txn = store.begin()
    timer_id = _touch_all(txn)
    txn.rollback()
    _assert_untouched(store, timer_id)
    txn = store.begin()  # the next transaction works
    timer_id = _touch_all(txn)
    txn.commit()
    _assert_all_there(store, timer_id)


def test_a_block_that_raises_rolls_back(store: Store) -> None:
    _create(store, _inv("inv_base"))
    timer_ids: list[int] = []
    with pytest.raises(RuntimeError, match="apply failed"), store.transaction() as txn:
        timer_ids.append(_touch_all(txn))
        raise RuntimeError("apply failed")
    _assert_untouched(store, timer_ids[0])


def test_commit_makes_every_write_visible_to_the_next_transaction(store: Store) -> None:
    _create(store, _inv("inv_base"))
    txn = store.begin()
    timer_id = _touch_all(txn)
    txn.commit()
    _assert_all_there(store, timer_id)


def test_a_rolled_back_new_row_leaves_its_id_free(store: Store) -> None:
    """A backend caching keys (SQLite's seq cache) must forget those of rolled-back rows."""
    txn = store.begin()
    txn.append_journal("inv_r", 0, j.InputCommand([], b"lost"), NOW)
    txn.put_invocation(_inv("inv_r"))
    txn.rollback()
    _create(store, _inv("inv_r", Status.SCHEDULED, key="k"))
    with store.transaction() as txn:
        assert txn.get_invocation("inv_r") == _inv("inv_r", key="k")
        assert txn.journal("inv_r") == [j.InputCommand([], b"in")]


# ---------------------------------------------------------------------- transactions open at once
def _other_partition(txn: Transaction) -> None:
    """Another partition's batch: rows of its own invocation and key only, as partitions own disjoint ones."""
    txn.append_journal("inv_o", 0, j.InputCommand([], b"other"), NOW)
    txn.put_invocation(_inv("inv_o", key="o"))
    txn.state_set("Obj", "o", "n", b"2")
    txn.set_lock_holder("Obj", "o", "inv_o")
    txn.inbox_push("Obj", "o", "inv_p", NOW)


def _sees_nothing_of_touch_all(txn: Transaction, timer_id: int) -> None:
    assert txn.get_invocation("inv_t") is None and txn.journal("inv_t") == []
    assert txn.journal("inv_base") == [j.InputCommand([], b"in")] and not txn.has_signal("inv_base", 9)
    assert txn.state_all("Obj", "k") == {} and txn.lock_holder("Obj", "k") is None
    assert txn.get_timer(timer_id) is None and txn.get_promise("Wf", "k", "p") is None
    assert txn.get_service_override("Svc") is None


def _other_partition_is_there(store: Store) -> None:
    with store.transaction() as txn:
        assert txn.get_invocation("inv_o") == _inv("inv_o", key="o")
        assert txn.journal("inv_o") == [j.InputCommand([], b"other")]
        assert txn.state_all("Obj", "o") == {"n": b"2"} and txn.lock_holder("Obj", "o") == "inv_o"
    with store.transaction() as txn:
        assert txn.inbox_pop("Obj", "o") == "inv_p"


def test_a_rollback_undoes_its_own_writes_only_and_never_shows_them(shared: Opener) -> None:
    """Two partitions' batches, both open (one waits for its commit while the other applies): the second
    sees nothing the first wrote, commits, and the first's rollback leaves the second's rows in place."""
    store = shared()
    _create(store, _inv("inv_base"))
    first = store.begin()
    timer_id = _touch_all(first)
    second = store.begin()
    _sees_nothing_of_touch_all(second, timer_id)
    _other_partition(second)
    second.commit()
    first.rollback()
    _assert_untouched(store, timer_id)
    _other_partition_is_there(store)


def test_a_commit_publishes_its_own_writes_only(shared: Opener) -> None:
    """The other order: the second partition's batch rolls back while the first's is open, then the first
    commits: every row of the first is there, none of the second's, and neither saw the other's."""
    store = shared()
    _create(store, _inv("inv_base"))
    first = store.begin()
    timer_id = _touch_all(first)
    second = store.begin()
    _other_partition(second)
    assert first.get_invocation("inv_o") is None and first.state_all("Obj", "o") == {}
    _sees_nothing_of_touch_all(second, timer_id)
    second.rollback()
    first.commit()
    _assert_all_there(store, timer_id)
    with store.transaction() as txn:
        assert txn.get_invocation("inv_o") is None and txn.journal("inv_o") == []
        assert txn.state_all("Obj", "o") == {} and txn.inbox_pop("Obj", "o") is None


def test_two_transactions_writing_one_row_do_not_both_commit(shared: Opener) -> None:
    """Both see the lock free and take it (two partitions' batches at once, one admitting a call to an object
    the other owns): the second commit fails with ``TransactionConflict``, rolled back whole, and its batch
    applied again sees the first's lock. A push and a pop of one inbox, neither reading first, alike."""
    store = shared()
    first, second = store.begin(), store.begin()
    assert first.lock_holder("Obj", "k") is None and second.lock_holder("Obj", "k") is None
    first.set_lock_holder("Obj", "k", "inv_a")
    second.set_lock_holder("Obj", "k", "inv_b")
    second.state_set("Obj", "other", "n", b"1")
    first.commit()
    with pytest.raises(TransactionConflict):
        second.commit()
    with store.transaction() as again:
        assert again.lock_holder("Obj", "k") == "inv_a" and again.state_all("Obj", "other") == {}
    first, second = store.begin(), store.begin()
    first.inbox_push("Obj", "k", "inv_q", NOW)
    assert second.inbox_pop("Obj", "k") is None
    second.set_lock_holder("Obj", "k", None)  # nothing queued: the lock is released
    first.commit()
    with pytest.raises(TransactionConflict):
        second.commit()
    with store.transaction() as again:
        assert again.lock_holder("Obj", "k") == "inv_a" and again.inbox_pop("Obj", "k") == "inv_q"


def test_a_row_read_after_another_commit_is_written_without_conflict(shared: Opener) -> None:
    """Open before the other's commit, but reading the row after it: it saw the latest, nothing is lost."""
    store = shared()
    first, second = store.begin(), store.begin()
    first.state_set("Obj", "k", "n", b"1")
    first.commit()
    assert second.state_get("Obj", "k", "n") == b"1"
    second.state_set("Obj", "k", "n", b"2")
    second.commit()
    with store.transaction() as txn:
        assert txn.state_all("Obj", "k") == {"n": b"2"}


# ------------------------------------------------------------------------------------------ durability
def test_committed_writes_survive_a_reopen_and_rolled_back_ones_do_not(durable: Opener) -> None:
    store = durable("data")
    _create(store, _inv("inv_base"))
    txn = store.begin()
    timer_id = _touch_all(txn)
    txn.commit()
    lost = store.begin()
    lost.put_invocation(_inv("inv_lost"))
    lost.state_set("Obj", "lost", "n", b"1")
    lost.rollback()
    store.close()
    reopened = durable("data")
    _assert_all_there(reopened, timer_id)
    with reopened.transaction() as txn:
        assert txn.get_invocation("inv_lost") is None and txn.state_all("Obj", "lost") == {}
        assert (
            txn.add_timer(NOW, TimerKind.SLEEP, "inv_t", 2) > timer_id
        )  # timer ids keep growing after a restart


def test_an_open_transaction_is_lost_when_the_store_closes(durable: Opener) -> None:
    store = durable("data")
    txn = store.begin()
    txn.put_invocation(_inv("inv_open"))
    store.close()  # the process stops before the commit
    with durable("data").transaction() as txn:
        assert txn.get_invocation("inv_open") is None


def test_the_leadership_seam_of_a_store_leading_alone(store: Store) -> None:
    """A store used by one node leads every one of its partitions, and a partition key maps to one of them;
    a one-node store (SQLite, memory) has one partition and no cluster; PostgreSQL's alone leads them all."""
    keys = [0, 1, 2**63, 2**64 - 1]
    parts = {store.partition_of(key) for key in keys}
    view = store.cluster()
    count = 1 if view is None else view.partitions
    assert parts <= set(range(count)) and store.partition_of(0) == 0
    assert store.partition_of(2**64 - 1) == count - 1
    assert all(store.leads(part) for part in range(count))
    calls: list[tuple[frozenset[int], frozenset[int]]] = []
    store.on_leadership(lambda gained, lost: calls.append((gained, lost)))
    assert calls == []  # nothing changes for a node alone
    if view is not None:
        (node,) = [n for n in view.nodes if n.alive]
        assert all(view.leader_of(part) == node for part in range(count))
