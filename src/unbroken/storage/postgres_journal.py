"""Journals on PostgreSQL, cached by their partition's leader.

A new attempt replays its invocation's whole journal (``lifecycle.start``): a queued invocation taking its
key's lock, a suspended one woken, a retry. Read from the server, that is a round trip on the event loop in
the middle of the batch, and a batch that has read mid-way can no longer go as one simple query
(``postgres_batch.py``): on a hot key it was one of every invocation's two commits. While a node leads a
partition no other node writes its rows (``postgres_lease.py``), so the journals it wrote (from their first
entry) or read are what the table holds, as with the invocation rows and the keys (``postgres_keys.py``).

``JournalCache`` (the store's) holds such journals, whole, for the leadership they were read or written
under: emptied with the other caches when the led partitions or their epochs change, or when it holds more
than ``pg_journal_cache_bytes_max`` of encoded entries. A journal over ``pg_journal_cache_journal_bytes_max``
is not kept, and a completed invocation's is dropped (no attempt replays it again). A batch's appends sit in
its overlay (``JournalRowsTransaction.journals``), merged only once its COMMIT succeeded; an append to a
journal not known marks it unknown, and a read of it then goes to the server after the batch's writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unbroken.core import limits
from unbroken.core.errors import violated
from unbroken.core.journal import Entry, Notification, decode_entry, encode_entry
from unbroken.storage.postgres_batch import ADD_SIGNAL, APPEND_JOURNAL, DELETE_JOURNAL, DELETE_SIGNALS, Kind
from unbroken.storage.postgres_keys import written


@dataclass(slots=True)
class Journal:
    """A whole journal: its entries in index order, and their encoded size (the cache's bound)."""

    entries: list[Entry]
    size: int

    def copy(self) -> Journal:
        return Journal(list(self.entries), self.size)  # entries are frozen: shared


class JournalCache:
    """Whole journals of the led partitions' invocations (bounded; see the module)."""

    def __init__(self) -> None:
        self.journals: dict[str, Journal] = {}
        self.size = 0  # encoded bytes held

    def clear(self) -> None:
        self.journals.clear()
        self.size = 0

    def full(self) -> bool:
        return self.size > limits.pg_journal_cache_bytes_max

    def merge(self, journals: dict[str, Journal | None]) -> None:
        """A batch committed: its overlay is what the rows hold now (None: not known, or not to keep)."""
        for invocation_id, journal in journals.items():
            old = self.journals.pop(invocation_id, None)
            if old is not None:
                self.size -= old.size
            if journal is not None and journal.size <= limits.pg_journal_cache_journal_bytes_max:
                self.journals[invocation_id] = journal
                self.size += journal.size


class JournalRowsTransaction:
    """The journal of ``PostgresTransaction`` through the leader's ``JournalCache`` (``core.storage``)."""

    __slots__ = ()
    journals: dict[str, Journal | None]  # this batch's journals after its writes (None: unknown, or dropped)
    epochs: dict[int, int]  # the leadership the batch started under

    # the transaction's plumbing (``PostgresTransaction``)
    def _journal_cache(self) -> JournalCache:
        raise NotImplementedError

    def _inv_part(self, invocation_id: str) -> int:
        raise NotImplementedError

    def _w(self, part: int, kind: Kind, row: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def _all(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def journal(self, invocation_id: str) -> list[Entry]:
        if invocation_id in self.journals:
            known = self.journals[invocation_id]
        else:
            known = self._journal_cache().journals.get(invocation_id)
        if known is not None:
            return list(known.entries)
        part = self._inv_part(invocation_id)
        rows = self._all(  # after the batch's writes: its own appends are in it
            "SELECT idx, entry FROM journal WHERE part = %s AND invocation_id = %s ORDER BY idx",
            (part, invocation_id),
        )
        entries, size = [], 0
        for expected, (idx, data) in enumerate(rows):
            if idx != expected:
                violated(f"{invocation_id}: journal gap at {expected} (found {idx})")
            entries.append(decode_entry(bytes(data)))
            size += len(data)
        read = Journal(entries, size)
        if invocation_id in self.journals:  # written by the batch, unknown before: known now
            self.journals[invocation_id] = read.copy()
        elif part in self.epochs and size <= limits.pg_journal_cache_journal_bytes_max:
            cache = self._journal_cache()  # committed rows of a partition led here
            cache.merge({invocation_id: read.copy()})
        return entries

    def append_journal(self, invocation_id: str, index: int, entry: Entry, appended_at_ms: int) -> None:
        part = self._inv_part(invocation_id)
        data = encode_entry(entry)
        self._w(part, APPEND_JOURNAL, (part, invocation_id, index, data, appended_at_ms))
        if type(entry) is Notification and entry.signal_idx:
            self._w(part, ADD_SIGNAL, (part, invocation_id, entry.signal_idx))
        if index == 0:  # a new journal: known whole from here
            self.journals[invocation_id] = Journal([entry], len(data))
            return
        journal = self._written_journal(invocation_id)
        if journal is None:
            return
        if len(journal.entries) != index:
            violated(f"{invocation_id}: appending entry {index} to a journal of {len(journal.entries)}")
        journal.entries.append(entry)
        journal.size += len(data)

    def _written_journal(self, invocation_id: str) -> Journal | None:
        """The journal this batch's next append goes to (a copy of the cached one), None if not known."""
        return written(self.journals, self._journal_cache().journals, invocation_id, Journal.copy)

    def delete_journal(self, invocation_id: str) -> None:
        self._delete_journal(self._inv_part(invocation_id), invocation_id)

    def _delete_journal(self, part: int, invocation_id: str) -> None:
        self._w(part, DELETE_JOURNAL, (part, invocation_id))
        self._w(part, DELETE_SIGNALS, (part, invocation_id))
        self.journals[invocation_id] = None  # dropped from the cache at the commit

    def forget_journal(self, invocation_id: str) -> None:
        """Its invocation completed: no attempt replays it again, the cache need not hold it."""
        self.journals[invocation_id] = None
