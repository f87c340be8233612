"""The SQLite store's storage keys: invocations and journals are keyed by a creation-order ``seq`` that is
never reused, a failed transaction leaves no stale key behind, a data dir of schema 1 is upgraded in place,
and one of a newer schema is refused with a message that says what to do."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from unbroken.core import journal as j
from unbroken.core.invocation import Invocation, Status
from unbroken.core.schema import OnMaxAttempts, RetryOverride, ServiceKind, ServiceOverride, Target
from unbroken.core.storage import Timer, TimerKind
from unbroken.storage.sqlite import SqliteStore, StoreVersionError, _inv_encoder

NOW = 1_700_000_000_000


def _inv(inv_id: str, status: Status = Status.SCHEDULED) -> Invocation:
    return Invocation(
        id=inv_id,
        target=Target("Svc", "h"),
        service_kind=ServiceKind.SERVICE,
        handler_kind=None,
        status=status,
        created_at_ms=NOW,
        modified_at_ms=NOW,
        random_seed=7,
        journal_length=1,
    )


def _create(store: SqliteStore, inv_id: str, arg: bytes = b"1") -> None:
    with store.transaction() as txn:
        txn.append_journal(inv_id, 0, j.InputCommand([], arg), NOW)
        txn.put_invocation(_inv(inv_id))


def _seqs(store: SqliteStore) -> list[tuple[str, int]]:
    return store.conn.execute("SELECT id, seq FROM invocation ORDER BY seq").fetchall()


def test_new_invocations_get_increasing_keys_and_journal_follows_them(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path))
    for n in ("inv_c", "inv_a", "inv_b"):
        _create(store, n, n.encode())
    assert [i for i, _ in _seqs(store)] == ["inv_c", "inv_a", "inv_b"]  # creation order, not id order
    with store.transaction() as txn:
        assert txn.journal("inv_a") == [j.InputCommand([], b"inv_a")]
        assert txn.get_invocation("inv_b") == _inv("inv_b")
    orphans = store.conn.execute("SELECT count(*) FROM journal WHERE seq NOT IN (SELECT seq FROM invocation)")
    assert orphans.fetchone()[0] == 0


def test_update_keeps_the_key_and_a_recreated_id_gets_a_fresh_one(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path))
    _create(store, "inv_wf")
    ((_, first),) = _seqs(store)
    with store.transaction() as txn:
        inv = txn.get_invocation("inv_wf")
        assert inv is not None
        inv.status = Status.RUNNING
        txn.put_invocation(inv)
    assert _seqs(store) == [("inv_wf", first)]
    with store.transaction() as txn:  # purge, then the same (workflow) id runs again
        txn.delete_journal("inv_wf")
        txn.delete_invocation("inv_wf")
    _create(store, "inv_wf", b"2")
    ((_, second),) = _seqs(store)
    assert second > first
    reopened = SqliteStore(str(tmp_path))  # after a restart too: keys only grow
    _create(reopened, "inv_next")
    assert _seqs(reopened)[-1][1] > second
    with reopened.transaction() as txn:
        assert txn.journal("inv_wf") == [j.InputCommand([], b"2")]


def test_a_rolled_back_transaction_leaves_no_stale_key(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path))
    with pytest.raises(RuntimeError), store.transaction() as txn:
        txn.append_journal("inv_x", 0, j.InputCommand([], b"lost"), NOW)
        txn.put_invocation(_inv("inv_x"))
        raise RuntimeError("storage failed mid-batch")
    assert _seqs(store) == []
    with store.transaction() as txn:
        assert txn.get_invocation("inv_x") is None
        assert txn.journal("inv_x") == []
    _create(store, "inv_x", b"kept")
    with store.transaction() as txn:
        assert txn.journal("inv_x") == [j.InputCommand([], b"kept")]


_SCHEMA_1 = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE invocation (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, service TEXT NOT NULL, service_key TEXT, handler TEXT NOT NULL,
    created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, data BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX invocation_expiry ON invocation(expires_at) WHERE expires_at > 0;
CREATE INDEX invocation_active ON invocation(status) WHERE status != 'completed';
CREATE TABLE journal (
    id TEXT NOT NULL, idx INTEGER NOT NULL, entry BLOB NOT NULL, appended_at INTEGER NOT NULL,
    PRIMARY KEY (id, idx)
) WITHOUT ROWID;
"""


def test_a_schema_1_data_dir_is_upgraded_in_place(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "unbroken.db")
    conn.executescript(_SCHEMA_1)
    for n, created in (("inv_late", NOW + 5), ("inv_early", NOW)):
        conn.execute(
            "INSERT INTO invocation VALUES (?, 'scheduled', 'Svc', NULL, 'h', ?, ?, 0, ?)",
            (n, created, created, _inv_encoder.encode(_inv(n))),
        )
        conn.execute(
            "INSERT INTO journal VALUES (?, 0, ?, ?)",
            (n, j.encode_entry(j.InputCommand([], n.encode())), created),
        )
    conn.commit()
    conn.close()
    store = SqliteStore(str(tmp_path))
    assert [i for i, _ in _seqs(store)] == ["inv_early", "inv_late"]
    with store.transaction() as txn:
        assert txn.journal("inv_late") == [j.InputCommand([], b"inv_late")]
        assert txn.get_invocation("inv_early") == _inv("inv_early")
    assert store.conn.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone() == ("5",)
    with store.transaction() as txn:
        for n in ("inv_early", "inv_late"):
            inv = txn.get_invocation(n)
            assert inv is not None
            inv.status = Status.RUNNING
            txn.put_invocation(inv)
    assert store.running_invocation_ids() == ["inv_early", "inv_late"]


def test_a_data_dir_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "unbroken.db")
    conn.executescript(
        "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL); INSERT INTO meta VALUES ('schema_version', '99');"
    )
    conn.close()
    with pytest.raises(StoreVersionError, match="schema 99.*newer Unbroken"):
        SqliteStore(str(tmp_path))


def test_deleting_the_invocation_takes_its_journal_in_either_order(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path))
    _create(store, "inv_a")
    _create(store, "inv_b")
    with store.transaction() as txn:
        txn.delete_invocation("inv_a")  # before its journal
        txn.delete_journal("inv_a")
        txn.delete_journal("inv_b")
        txn.delete_invocation("inv_b")
        assert txn.journal("inv_a") == [] and txn.get_invocation("inv_b") is None
    assert store.conn.execute("SELECT count(*) FROM journal").fetchone() == (0,)
    assert _seqs(store) == []


def test_the_blob_leaves_out_the_id_and_reads_back_whole(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path))
    inv = _inv("inv_1LongEnoughToSpotInABlob")
    inv.target = Target("Obj", "h", "key-1")
    inv.service_kind = ServiceKind.VIRTUAL_OBJECT
    inv.created_at_ms, inv.modified_at_ms = NOW, NOW + 3
    with store.transaction() as txn:
        txn.append_journal(inv.id, 0, j.InputCommand([], b"1"), NOW)
        txn.put_invocation(inv)
    (blob,) = store.conn.execute("SELECT data FROM invocation").fetchone()
    assert inv.id.encode() not in blob
    with store.transaction() as txn:
        assert txn.get_invocation(inv.id) == inv


def test_row_times_are_the_records_not_the_database_clock(tmp_path: Path) -> None:
    """The journal's and the inbox's times come from the record being applied (``Step.now_ms``): a replay
    or a simulation under virtual time writes the same rows. They were ``julianday('now')``."""
    store = SqliteStore(str(tmp_path))
    with store.transaction() as txn:
        txn.append_journal("inv_a", 0, j.InputCommand([], b"1"), 1234)
        txn.inbox_push("Obj", "k", "inv_a", 5678)
    assert store.conn.execute("SELECT appended_at FROM journal").fetchall() == [(1234,)]
    assert store.conn.execute("SELECT created_at FROM inbox").fetchall() == [(5678,)]


def test_a_schema_2_data_dir_gets_the_signal_index_of_its_journals(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path))
    _create(store, "inv_a")
    with store.transaction() as txn:
        txn.append_journal("inv_a", 1, j.Notification("signal", 0, 17, j.Result(value=b"s")), NOW)
        txn.append_journal("inv_a", 2, j.Notification("call", 4, 0, j.Result()), NOW)
    store.conn.executescript("DROP TABLE signal; UPDATE meta SET v = '2' WHERE k = 'schema_version';")
    store.close()
    upgraded = SqliteStore(str(tmp_path))
    assert upgraded.conn.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone() == ("5",)
    with upgraded.transaction() as txn:
        assert txn.has_signal("inv_a", 17)
        assert not txn.has_signal("inv_a", 4)
        assert len(txn.journal("inv_a")) == 3


OLD_OVERRIDES = {  # what ``service_overrides.json`` held, written by Unbroken before schema 4
    "Vote": {
        "idempotency_retention_ms": 10_800_000,
        "inactivity_timeout_ms": 500,
        "retry_policy": {"max_attempts": 4, "on_max_attempts": "kill"},
    },
    "Gone": {"public": False},
    "Broken": {"inactivity_timeout_ms": "soon"},
}


def test_a_schema_3_data_dir_opens_and_its_side_file_of_overrides_moves_into_the_store(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path))
    _create(store, "inv_a")
    with store.transaction() as txn:
        timer_id = txn.add_timer(NOW, TimerKind.SLEEP, "inv_a", 1)
    store.conn.executescript(
        "DROP TABLE service_override; UPDATE meta SET v = '3' WHERE k = 'schema_version';"
    )
    store.close()
    (tmp_path / "service_overrides.json").write_text(json.dumps(OLD_OVERRIDES))

    upgraded = SqliteStore(str(tmp_path))
    assert upgraded.conn.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone() == ("5",)
    assert not (tmp_path / "service_overrides.json").exists()
    vote = ServiceOverride(
        idempotency_retention_ms=10_800_000,
        inactivity_timeout_ms=500,
        retry_policy=RetryOverride(max_attempts=4, on_max_attempts=OnMaxAttempts.KILL),
    )
    assert upgraded.service_overrides() == {
        "Vote": vote,
        "Gone": ServiceOverride(public=False),
    }  # Broken: ignored
    with (
        upgraded.transaction() as txn
    ):  # the rows of schema 3 read as before; timer kinds are the same strings
        assert txn.get_timer(timer_id) == Timer(timer_id, NOW, TimerKind.SLEEP, "inv_a", 1)
        assert txn.get_invocation("inv_a") is not None
    upgraded.close()
    assert SqliteStore(str(tmp_path)).service_overrides()["Vote"] == vote  # imported once, kept


def test_a_side_file_left_by_a_crash_after_the_import_adds_nothing_over_newer_rows(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path))
    with store.transaction() as txn:
        txn.put_service_override("Vote", ServiceOverride(inactivity_timeout_ms=9_000))
    store.close()
    (tmp_path / "service_overrides.json").write_text(json.dumps(OLD_OVERRIDES))
    reopened = SqliteStore(str(tmp_path))
    assert reopened.service_overrides()["Vote"] == ServiceOverride(inactivity_timeout_ms=9_000)
    assert not (tmp_path / "service_overrides.json").exists()


def test_an_unreadable_side_file_stops_the_open_saying_which_file(tmp_path: Path) -> None:
    (tmp_path / "service_overrides.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="service_overrides.json"):
        SqliteStore(str(tmp_path))
